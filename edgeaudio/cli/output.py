"""Printing helpers shared by commands: JSON for machines, aligned tables for people."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import click


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> str:
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def note(message: str) -> None:
    """Progress and choices go to stderr so stdout stays clean for results."""
    click.echo(message, err=True)


def recorded_array(input_spec: str | None) -> str | None:
    """The array an input file declares in its header (edgeaudio's WAV comment), if any."""
    if input_spec is None or input_spec == "mic" or not Path(input_spec).is_file():
        return None
    from edgeaudio.audio.recording_array import declared_array

    return declared_array(input_spec)
