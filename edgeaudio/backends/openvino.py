"""OpenVINO backend: runs ``openvino`` IR artifacts (fp32, fp16, INT8 from NNCF)."""

from __future__ import annotations

import functools
from typing import Any, Mapping

import numpy as np

from edgeaudio.backends.base import Backend, GraphRunner
from edgeaudio.errors import require
from edgeaudio.hookspecs import hookimpl

# The CPU plugin silently runs bf16 on CPUs with avx512_bf16 unless told otherwise; fp32 and
# int8 artifacts must run their float parts in f32 to match the reference.
_PRECISION_HINT = {"fp32": "f32", "int8": "f32", "fp16": "f16"}


@functools.lru_cache(maxsize=1)
def shared_core():
    """The one ``ov.Core`` of this process.

    OpenVINO's CPU plugin saves and restores the thread's alternate signal stack per Core; when
    two Cores with compiled models are destroyed out of creation order the stack is left dangling
    and the next signal (Ctrl-C, SIGCHLD) segfaults the process. One Core that lives as long as
    the process, created before any transient one (NNCF's), keeps lifetimes nested.
    """
    ov = require("openvino")
    return ov.Core()


class OpenVinoGraph(GraphRunner):
    def __init__(self, xml: str, device: str, precision: str, threads: int | None):
        core = shared_core()
        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": _PRECISION_HINT.get(precision, "f32")}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        self.compiled = core.compile_model(core.read_model(xml), device, config)
        self.request = self.compiled.create_infer_request()
        self.input_names = [port.get_any_name() for port in self.compiled.inputs]
        self.output_names = [port.get_any_name() for port in self.compiled.outputs]

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        # Inputs are read in place (share_inputs, as a plain CompiledModel call does); outputs are
        # copied out of the request's tensors (share_outputs=False), so a state fed back next call
        # never aliases the tensor that call writes. Looking outputs up by port costs more than that.
        results = self.request.infer({name: feeds[name] for name in self.input_names}, share_inputs=True)
        return dict(zip(self.output_names, results.to_tuple()))

    def bare_call(self):
        return self.compiled  # the plain CompiledModel call (its own request)


class OpenVinoBackend(Backend):
    name = "openvino"
    artifact = "openvino"
    description = "OpenVINO runtime (x86 CPU/GPU, ARM CPU)"

    @classmethod
    def available(cls) -> tuple[bool, str]:
        try:
            import openvino as ov
        except ImportError:
            return False, 'openvino is not installed (pip install "edgeaudio[openvino]")'
        devices = shared_core().available_devices
        return True, f"openvino {ov.__version__}, devices {', '.join(devices)}"

    def load_graph(self, bundle, graph: Mapping[str, Any], artifact: Mapping[str, Any]) -> GraphRunner:
        device = self.options.get("device", "CPU")
        xml = str(bundle.path(artifact["files"]["xml"]))
        return OpenVinoGraph(xml, device, artifact["precision"], self.options.get("threads"))


@hookimpl
def register_backends(register):
    register(OpenVinoBackend)
