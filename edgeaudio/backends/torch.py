"""Torch backend: the reference. Rebuilds the task's model from the bundle's safetensors weights
and runs the graph's module eagerly, so export parity and benchmark ratios have a baseline."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from edgeaudio.backends.base import Backend, GraphRunner
from edgeaudio.errors import BundleError, require
from edgeaudio.hookspecs import hookimpl


class TorchGraph(GraphRunner):
    def __init__(self, module, input_names: list[str], output_names: list[str], threads: int | None):
        self.torch = require("torch", "torch")
        if threads:
            self.torch.set_num_threads(int(threads))
        self.module = module.eval()
        self.input_names = input_names
        self.output_names = output_names

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        args = [self.torch.from_numpy(np.ascontiguousarray(feeds[name])) for name in self.input_names]
        with self.torch.inference_mode():
            out = self.module(*args)
        if not isinstance(out, (tuple, list)):
            out = (out,)
        return {name: value.detach().cpu().numpy() for name, value in zip(self.output_names, out)}


class TorchBackend(Backend):
    name = "torch"
    artifact = "torch"
    description = "PyTorch eager (reference; needs the task plugin and torch)"

    @classmethod
    def available(cls) -> tuple[bool, str]:
        try:
            import torch
        except ImportError:
            return False, 'torch is not installed (pip install "edgeaudio[torch]")'
        return True, f"torch {torch.__version__}"

    def load_graph(self, bundle, graph: Mapping[str, Any], artifact: Mapping[str, Any], task) -> GraphRunner:
        model = task.load_model(str(bundle.path(artifact["files"]["weights"])))
        for spec in task.graphs(model):
            if spec.name == graph["name"]:
                if spec.module is None:
                    raise BundleError(f"graph '{spec.name}' has no torch module (it was brought as ONNX)")
                names_in = [t["name"] for t in graph["inputs"]]
                names_out = [t["name"] for t in graph["outputs"]]
                return TorchGraph(spec.module, names_in, names_out, self.options.get("threads"))
        raise BundleError(f"task '{task.name}' no longer defines graph '{graph['name']}'", hint="re-export the bundle")


@hookimpl
def register_backends(register):
    register(TorchBackend)
