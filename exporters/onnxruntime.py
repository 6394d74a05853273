"""ONNX Runtime target: fp32 ONNX as checked, or INT8 QDQ ONNX calibrated on the task's data."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Iterator, Sequence

from edgeaudio.errors import ExportError, require
from edgeaudio.exporters.base import ExportTarget, Feeds, keep_float_nodes
from edgeaudio.hookspecs import hookimpl
from edgeaudio.task import Graph


class _Reader:
    """ORT's CalibrationDataReader protocol over a list of feeds."""

    def __init__(self, feeds: Sequence[Feeds]):
        self._iter: Iterator[Feeds] = iter(feeds)

    def get_next(self):
        return next(self._iter, None)


# What ONNX Runtime's CPU kernels run faster in INT8. Q/DQ pairs around the other ops (Add, Mul,
# Concat, activations) only add work there: quantizing every op type left seld's INT8 graph at
# 1.04x fp32's time per 100 ms block and enhance's at 0.92x; these three, 0.97x and 0.87x
# (per-channel weights, front ends in float, 1 thread; README "Performance").
FAST_INT8_OPS = ["Conv", "MatMul", "Gemm"]


def quantize_qdq(graph: Graph, onnx_path: Path, target: Path, calibration: Sequence[Feeds], symmetric: bool,
                 op_types: Sequence[str] | None = None) -> None:
    """Static INT8 QDQ quantization with per-channel weights, leaving the graph's ``keep_float``
    nodes (and ``Pad``, which would quantize the raw waveform) in float. ``symmetric``
    activations are what TensorRT needs; ``op_types``: quantize only these (None: every op
    type the quantizer knows)."""
    require("onnxruntime")
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if not calibration:
        raise ExportError(f"INT8 needs calibration data and task graph '{graph.name}' provided none")
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(_at_least_opset_13(onnx_path, Path(tmp))), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(target),
            _Reader(calibration),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QInt8 if symmetric else QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=True,
            calibrate_method=CalibrationMethod.MinMax,
            nodes_to_exclude=keep_float_nodes(prepared, graph),
            op_types_to_quantize=list(op_types) if op_types else None,
            extra_options={"ActivationSymmetric": symmetric, "WeightSymmetric": True},
        )


PER_CHANNEL_OPSET = 13  # DequantizeLinear's per-channel ``axis`` needs opset 13


def _at_least_opset_13(onnx_path: Path, tmp: Path) -> Path:
    """``onnx_path``, or a copy converted to opset 13 when it is older (a graph a task brings, such
    as an opset-12 export): per-channel weights would otherwise make an invalid graph."""
    onnx = require("onnx")
    model = onnx.load(str(onnx_path))
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), PER_CHANNEL_OPSET)
    if opset >= PER_CHANNEL_OPSET:
        return onnx_path
    from onnx import version_converter

    converted = tmp / "opset13.onnx"
    onnx.save(version_converter.convert_version(model, PER_CHANNEL_OPSET), str(converted))
    return converted


class OnnxRuntimeTarget(ExportTarget):
    name = "onnxruntime"
    backend = "onnxruntime"
    precisions = ("fp32", "int8")
    description = "ONNX files for ONNX Runtime: fp32, INT8 QDQ (static calibration)"

    @classmethod
    def available(cls) -> tuple[bool, str]:
        try:
            import onnxruntime
        except ImportError:
            return False, "onnxruntime is not installed"
        return True, f"onnxruntime {onnxruntime.__version__}"

    def build(self, graph: Graph, onnx_path: Path, precision: str, out_dir: Path, calibration: Sequence[Feeds]):
        relative = f"onnxruntime/{graph.name}.{precision}.onnx"
        target = out_dir / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        if precision == "fp32":
            target.write_bytes(onnx_path.read_bytes())
        elif precision == "int8":
            quantize_qdq(graph, onnx_path, target, calibration, symmetric=False, op_types=FAST_INT8_OPS)
        else:
            raise ExportError(f"onnxruntime target cannot build {precision}; it builds {self.precisions}")
        return {"model": relative}


@hookimpl
def register_export_targets(register):
    register(OnnxRuntimeTarget)
