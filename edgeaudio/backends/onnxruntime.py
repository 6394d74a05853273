"""ONNX Runtime backend: runs ``onnxruntime`` artifacts (fp32 and INT8 QDQ ONNX files)."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from edgeaudio.backends.base import Backend, GraphRunner
from edgeaudio.errors import require
from edgeaudio.hookspecs import hookimpl


class OrtGraph(GraphRunner):
    def __init__(self, path: str, threads: int | None, providers: list[str]):
        ort = require("onnxruntime")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(path, sess_options=options, providers=providers)
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        values = self.session.run(self.output_names, {name: feeds[name] for name in self.input_names})
        return dict(zip(self.output_names, values))

    def bare_call(self):
        return lambda feeds: self.session.run(None, feeds)


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"
    artifact = "onnxruntime"
    description = "ONNX Runtime (CPU; CUDA provider when onnxruntime-gpu is installed)"

    @classmethod
    def available(cls) -> tuple[bool, str]:
        try:
            import onnxruntime as ort
        except ImportError:
            return False, 'onnxruntime is not installed (pip install onnxruntime)'
        return True, f"onnxruntime {ort.__version__}, providers {', '.join(ort.get_available_providers())}"

    def load_graph(self, bundle, graph: Mapping[str, Any], artifact: Mapping[str, Any]) -> GraphRunner:
        ort = require("onnxruntime")
        wanted = self.options.get("providers") or ["CUDAExecutionProvider", "CPUExecutionProvider"]
        providers = [p for p in wanted if p in ort.get_available_providers()] or ["CPUExecutionProvider"]
        return OrtGraph(str(bundle.path(artifact["files"]["model"])), self.options.get("threads"), providers)


@hookimpl
def register_backends(register):
    register(OnnxRuntimeBackend)
