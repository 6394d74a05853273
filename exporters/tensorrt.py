"""TensorRT target: ONNX files from which the device builds its own engine at first load.

An engine only runs on the GPU model and TensorRT version that built it, so exporting one on a
workstation would produce something a Jetson cannot load. The bundle carries ONNX instead: the fp32
graph for fp32 and fp16 (TensorRT lowers precision while building), and for int8 a QDQ graph with
symmetric scales (TensorRT's explicit quantization only accepts zero points of 0). The tensorrt
backend builds and caches the engine on the device (``edgeaudio.backends.tensorrt``).

Because the artifacts are ONNX under the role ``model``, hosts without a GPU judge the INT8 graph
through ONNX Runtime (``proxy_backend``); the pipeline does not run the artifacts itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from edgeaudio.errors import ExportError
from edgeaudio.exporters.base import ExportTarget, Feeds
from edgeaudio.exporters.onnxruntime import quantize_qdq
from edgeaudio.hookspecs import hookimpl
from edgeaudio.task import Graph


class TensorRTTarget(ExportTarget):
    name = "tensorrt"
    backend = "tensorrt"
    precisions = ("fp32", "fp16", "int8")
    runs_here = False
    proxy_backend = "onnxruntime"
    description = "ONNX for TensorRT (fp32, fp16, INT8 symmetric QDQ); the engine is built on the device"

    @classmethod
    def available(cls) -> tuple[bool, str]:
        return True, (
            "writes ONNX files; the TensorRT engine is built on the device at first load "
            "(that needs TensorRT there, not here)"
        )

    def build(self, graph: Graph, onnx_path: Path, precision: str, out_dir: Path, calibration: Sequence[Feeds]):
        if precision not in self.precisions:
            raise ExportError(f"tensorrt target cannot build {precision}; it builds {self.precisions}")
        relative = f"tensorrt/{graph.name}.{precision}.onnx"
        target = out_dir / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        if precision == "int8":
            quantize_qdq(graph, onnx_path, target, calibration, symmetric=True)
        else:
            target.write_bytes(onnx_path.read_bytes())
        return {"model": relative}


@hookimpl
def register_export_targets(register):
    register(TensorRTTarget)
