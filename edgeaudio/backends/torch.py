"""Torch backend: the reference. Runs a graph's torch module eagerly on the bundle's safetensors
weights, so export parity and benchmark ratios have a baseline. The module comes from the
``modules`` option (the runtime asks the task plugin for it); this backend knows no task."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from edgeaudio.backends.base import Backend, GraphRunner
from edgeaudio.errors import BundleError, require
from edgeaudio.hookspecs import hookimpl


class TorchGraph(GraphRunner):
    def __init__(self, module, input_names: list[str], output_names: list[str], threads: int | None):
        self.torch = require("torch")
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
            return False, 'torch is not installed (pip install "edgeaudio[export]")'
        return True, f"torch {torch.__version__}"

    def load_graph(self, bundle, graph: Mapping[str, Any], artifact: Mapping[str, Any]) -> GraphRunner:
        modules = self.options.get("modules")
        if modules is None:
            raise BundleError("the torch backend needs the graph's module (option 'modules'); load bundles with edgeaudio.load")
        module = modules(graph["name"], str(bundle.path(artifact["files"]["weights"])))
        names_in = [t["name"] for t in graph["inputs"]]
        names_out = [t["name"] for t in graph["outputs"]]
        return TorchGraph(module, names_in, names_out, self.options.get("threads"))


@hookimpl
def register_backends(register):
    register(TorchBackend)
