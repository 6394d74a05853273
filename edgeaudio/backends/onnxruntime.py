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
        # On the CPU provider alone, the session's compiled call itself: what InferenceSession.run
        # adds in Python (a missing-input check, which run's own lookup below makes; OrtValue and
        # WebGPU graph-capture checks; the fallback to another provider when one fails) costs
        # ~4 us per call right after a graph call, 3 % of a 16 ms enhancement block. Any other
        # provider, or an onnxruntime without that attribute, takes the public call.
        self._cpu_only = self.session.get_providers() == ["CPUExecutionProvider"]
        self._run = getattr(self.session, "_sess", None) if self._cpu_only else None

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        inputs = {name: feeds[name] for name in self.input_names}
        if self._run is not None:
            try:
                values = self._run.run(self.output_names, inputs, None)
            except (TypeError, AttributeError):  # not the call this onnxruntime has: the public one from now on
                self._run = None
                values = self.session.run(self.output_names, inputs)
        else:
            values = self.session.run(self.output_names, inputs)
        return dict(zip(self.output_names, values))

    def bind(self, inputs: Mapping[str, np.ndarray], outputs: Mapping[str, np.ndarray]):
        """An IOBinding of the arrays (CPU provider alone): ONNX Runtime reads and writes them in
        place, with no array made or converted per call. On SELD blocks that took 1-4 % off the
        compiled call itself, besides the runtime's dicts and conversions around it."""
        if not self._cpu_only:
            return None
        binding = self.session.io_binding()
        for bind, arrays in ((binding.bind_input, inputs), (binding.bind_output, outputs)):
            for name, value in arrays.items():
                bind(name, "cpu", 0, value.dtype.type, value.shape, value.ctypes.data)
        run = self.session.run_with_iobinding

        def call(bound=(inputs, outputs)):  # the arrays live as long as the call that writes them
            run(binding)

        return call

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
