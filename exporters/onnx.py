"""torch -> ONNX, then a parity check of every output against torch on the example inputs.

The legacy TorchScript exporter (``dynamo=False``) is used on purpose: it exports the conv-DFT
front ends and GRUs with a dynamic time axis, where the dynamo exporter fails (REFERENCE.md).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Mapping

import numpy as np

from edgeaudio.errors import ExportError, require
from edgeaudio.task import Graph


def export_onnx(graph: Graph, path: Path) -> Path:
    """Write ``graph`` as ONNX at ``path`` (copying it when the task brings its own ONNX)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if graph.module is None:
        if not graph.onnx_path:
            raise ExportError(f"graph '{graph.name}' has neither a torch module nor an ONNX file")
        path.write_bytes(Path(graph.onnx_path).read_bytes())
        return path
    torch = require("torch")
    args = tuple(torch.from_numpy(np.ascontiguousarray(graph.example_inputs[n])) for n in graph.input_names)
    module = graph.module.eval()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation and tracer chatter
        try:
            torch.onnx.export(
                module,
                args,
                str(path),
                input_names=graph.input_names,
                output_names=graph.output_names,
                dynamic_axes=graph.dynamic_axes(),
                opset_version=graph.opset,
                dynamo=False,
            )
        except Exception as exc:
            raise ExportError(f"torch -> ONNX failed for graph '{graph.name}': {exc}") from exc
    return path


def torch_outputs(graph: Graph, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    torch = require("torch")
    args = [torch.from_numpy(np.ascontiguousarray(feeds[n])) for n in graph.input_names]
    with torch.inference_mode():
        out = graph.module.eval()(*args)
    if not isinstance(out, (tuple, list)):
        out = (out,)
    return {name: value.numpy() for name, value in zip(graph.output_names, out)}


def compare_outputs(
    reference: Mapping[str, np.ndarray], candidate: Mapping[str, np.ndarray], atol: float, rtol: float
) -> dict[str, dict[str, float | bool]]:
    """Per output: max absolute error, max error relative to the reference's scale, and pass/fail."""
    report = {}
    for name, ref in reference.items():
        got = candidate[name]
        if got.shape != ref.shape:
            report[name] = {"max_abs": float("inf"), "ok": False, "shape": f"{got.shape} != {ref.shape}"}
            continue
        err = np.abs(got.astype(np.float64) - ref.astype(np.float64))
        scale = float(np.max(np.abs(ref))) or 1.0
        ok = bool(np.all(err <= atol + rtol * np.abs(ref)))
        report[name] = {"max_abs": float(err.max(initial=0.0)), "max_rel": float(err.max(initial=0.0) / scale), "ok": ok}
    return report


def check_onnx_parity(graph: Graph, path: Path) -> dict[str, dict[str, float | bool]]:
    """Run the exported file in ONNX Runtime on the example inputs and compare with torch.

    Raises ExportError naming the outputs that differ beyond the graph's tolerance. Tasks that
    bring their own ONNX have no torch reference; their parity is checked across backends later.
    """
    if graph.module is None:
        return {}
    ort = require("onnxruntime")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = dict(zip(graph.output_names, session.run(graph.output_names, dict(graph.example_inputs))))
    report = compare_outputs(torch_outputs(graph, graph.example_inputs), got, graph.atol, graph.rtol)
    bad = {name: r["max_abs"] for name, r in report.items() if not r["ok"]}
    if bad:
        raise ExportError(
            f"ONNX output differs from torch for graph '{graph.name}': {bad} (atol {graph.atol})",
            hint="an op exports differently; check the graph or raise the task's tolerance with a reason",
        )
    return report
