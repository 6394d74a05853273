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
        # InferRequest.infer turns each input into a tensor in Python (a dispatch per value, a
        # look-up of the request's tensor and of its type): streamed, that cost 9 % of a SELD
        # block's graph call (6 inputs) and 14 % of an enhancement block's. An array already of
        # the port's type, C-contiguous and writable, is one that dispatch shares as it is; such
        # inputs are wrapped here and handed to the request's compiled call (the one infer makes);
        # anything else, and ports of a type the dispatch converts (bf16, strings), take infer.
        ov = require("openvino")
        types = [port.get_element_type() for port in self.compiled.inputs]
        plain = all(t not in (ov.Type.bf16, ov.Type.string, ov.Type.dynamic) for t in types)
        self._infer = getattr(super(ov.InferRequest, self.request), "infer", None)  # what InferRequest.infer calls
        plain = plain and self._infer is not None
        self._dtypes = [(name, np.dtype(t.to_dtype())) for name, t in zip(self.input_names, types)] if plain else None
        self._tensor = ov.Tensor
        self._held: dict[str, Any] = {}

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        # Inputs are read in place (shared, as a plain CompiledModel call does); outputs are
        # copied out of the request's tensors (share_outputs=False), so a state fed back next call
        # never aliases the tensor that call writes. Looking outputs up by port costs more than that.
        tensors = self._direct(feeds)
        if tensors is None:
            results = self.request.infer({name: feeds[name] for name in self.input_names}, share_inputs=True)
            return dict(zip(self.output_names, results.to_tuple()))
        self._held = tensors  # kept until the next call, as infer keeps its inputs for the request
        try:
            values = self._infer(tensors, False, True).values()
        except (TypeError, AttributeError):  # not the call this OpenVINO has: infer from now on
            self._dtypes = None
            return self.run(feeds)
        return dict(zip(self.output_names, values))

    def _direct(self, feeds: Mapping[str, np.ndarray]) -> dict[str, Any] | None:
        """The inputs as tensors sharing their arrays, or None where infer's dispatch would do more."""
        if self._dtypes is None:
            return None
        tensors = {}
        for name, dtype in self._dtypes:
            value = feeds[name]
            if type(value) is not np.ndarray or value.dtype != dtype or not value.ndim:
                return None
            flags = value.flags
            if not (flags.c_contiguous and flags.writeable):
                return None
            tensors[name] = self._tensor(value, shared_memory=True)
        return tensors

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
