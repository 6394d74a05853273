"""OpenVINO target: IR at fp32, fp16 (compressed weights), or INT8 through NNCF post-training
quantization that ignores the graph's ``keep_float`` scopes (DFT front end, phase maths)."""

from __future__ import annotations

import contextlib
import logging
import re
import sys
from pathlib import Path
from typing import Sequence

from edgeaudio.backends.openvino import shared_core
from edgeaudio.errors import ExportError, require
from edgeaudio.exporters.base import ExportTarget, Feeds
from edgeaudio.hookspecs import hookimpl
from edgeaudio.task import Graph


def _ignored_scope(graph: Graph):
    nncf = require("nncf")
    patterns = [re.escape(s) + ".*" for s in graph.keep_float if s.startswith("/")]
    types = [s for s in graph.keep_float if not s.startswith("/")]
    return nncf.IgnoredScope(patterns=patterns, types=types, validate=False)


class OpenVinoTarget(ExportTarget):
    name = "openvino"
    backend = "openvino"
    precisions = ("fp32", "fp16", "int8")
    description = "OpenVINO IR: fp32, fp16, INT8 (NNCF post-training quantization)"

    @classmethod
    def available(cls) -> tuple[bool, str]:
        try:
            import openvino
        except ImportError:
            return False, 'openvino is not installed (pip install "edgeaudio[openvino]")'
        try:
            import nncf  # noqa: F401
        except ImportError:
            return True, f"openvino {openvino.__version__} (no nncf: INT8 unavailable)"
        return True, f"openvino {openvino.__version__} with nncf"

    def build(self, graph: Graph, onnx_path: Path, precision: str, out_dir: Path, calibration: Sequence[Feeds]):
        ov = require("openvino")
        if precision not in self.precisions:
            raise ExportError(f"openvino target cannot build {precision}; it builds {self.precisions}")
        model = ov.convert_model(str(onnx_path))
        if precision == "int8":
            if not calibration:
                raise ExportError(f"INT8 needs calibration data and task graph '{graph.name}' provided none")
            nncf = require("nncf")
            nncf.set_log_level(logging.WARNING)
            shared_core()  # exists before NNCF's own Core, so their lifetimes nest (see shared_core)
            with contextlib.redirect_stdout(sys.stderr):  # NNCF's progress bars would mix into results
                model = nncf.quantize(
                    model,
                    nncf.Dataset(list(calibration)),
                    subset_size=len(calibration),
                    ignored_scope=_ignored_scope(graph),
                )
        relative = f"openvino/{graph.name}.{precision}.xml"
        target = out_dir / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        # save_model compresses to fp16 unless told not to; only the fp16 artifact should be.
        ov.save_model(model, str(target), compress_to_fp16=(precision == "fp16"))
        return {"xml": relative, "bin": relative[:-4] + ".bin"}


@hookimpl
def register_export_targets(register):
    register(OpenVinoTarget)
