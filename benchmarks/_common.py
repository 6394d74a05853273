"""What the benchmark scripts share: the bundled scene, the CLI as a command, and exporting a
task's shipped weights to measure them.

The scripts run as ``python benchmarks/<script>.py``, which puts this folder on Python's path, so
they import this module as ``_common``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable, Sequence

ROOT = Path(__file__).resolve().parents[1]
SCENE = ROOT / "examples" / "scenes" / "respeaker-4mic-scene.wav"  # 20 s, ReSpeaker 4-mic, events in every second
EDGEAUDIO = [sys.executable, "-m", "edgeaudio.cli"]  # the CLI of this Python's environment


def export_shipped(
    task: str,
    out: Path,
    precisions: Sequence[str] | None = None,
    backends: Sequence[str] | None = None,
    log: Callable[[str], None] = lambda message: None,
) -> Path:
    """Export ``task``'s shipped weights into ``out`` for this host (the x86-cpu target's backends
    and precisions, or just ``backends`` and ``precisions``), print the export's notes (targets
    skipped, precisions the accuracy gate dropped) and return ``out``."""
    from edgeaudio.exporters.pipeline import export_task, plan_export
    from edgeaudio.tasks import get_task

    plan, _ = plan_export("x86-cpu", precisions, backends)
    result = export_task(get_task(task), plan, out, log=log)
    for note in result.notes:
        print(f"export: {note}")
    return out
