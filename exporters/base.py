"""The protocol every export target implements, and the registry lookup.

A target turns the fp32 ONNX graph (already checked against torch) into its backend's artifact at
one precision. It declares what it supports as data; the pipeline decides what to build and judges it.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Sequence

import numpy as np

from edgeaudio import registry
from edgeaudio.errors import UsageError
from edgeaudio.task import Graph

Feeds = dict[str, np.ndarray]


class ExportTarget:
    """``name``: target name; ``backend``: the artifact backend name it writes into the manifest;
    ``precisions``: what it can build; ``runs_here``: whether artifacts can be checked on the
    exporting host (TensorRT engines are built on the device, so its artifacts are not)."""

    name: ClassVar[str] = ""
    backend: ClassVar[str] = ""
    precisions: ClassVar[tuple[str, ...]] = ("fp32",)
    runs_here: ClassVar[bool] = True
    description: ClassVar[str] = ""

    @classmethod
    def available(cls) -> tuple[bool, str]:
        """Whether this target's toolchain is installed here, and why (not) in one line."""
        raise NotImplementedError

    def build(
        self, graph: Graph, onnx_path: Path, precision: str, out_dir: Path, calibration: Sequence[Feeds]
    ) -> dict[str, str]:
        """Write the artifact for ``graph`` at ``precision`` under ``out_dir``.

        Returns the artifact's files as ``{role: path relative to out_dir}`` (e.g. ``{"model": ...}``).
        """
        raise NotImplementedError


def export_targets() -> dict[str, type[ExportTarget]]:
    return {cls.name: cls for cls in registry.collect("register_export_targets", registry.subclass_check(ExportTarget))}


def get_export_target(name: str) -> type[ExportTarget]:
    found = export_targets()
    if name not in found:
        known = ", ".join(sorted(found)) or "none (are plugins disabled by EDGEAUDIO_LOAD_PLUGINS?)"
        raise UsageError(f"unknown export target '{name}'; known: {known}")
    return found[name]


def keep_float_nodes(onnx_path: Path, graph: Graph) -> list[str]:
    """Names of ONNX nodes INT8 must leave in float: those under the graph's ``keep_float`` scopes
    or of its listed op types (torch names nodes after module scopes, e.g. ``/frontend/Conv``)."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    scopes = [s for s in graph.keep_float if s.startswith("/")]
    op_types = {s for s in graph.keep_float if not s.startswith("/")}
    return [
        node.name
        for node in model.graph.node
        if node.op_type in op_types or any(node.name.startswith(scope) for scope in scopes)
    ]
