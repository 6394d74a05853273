"""DCASE SELD metadata CSV: one row per active event per 100 ms label frame.

Row: ``frame, class, source_index, azimuth, elevation[, distance]`` with integer degrees (azimuth
counter-clockwise, 90 on the left) and distance in centimetres. STARSS22/23 files have five columns,
2024 files add the distance; both are read, and the distance is written when known.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from edgeaudio.errors import UsageError


@dataclass(frozen=True, order=True)
class EventRow:
    """One event active in one label frame, as DCASE writes it."""

    frame: int
    class_index: int
    source_index: int
    azimuth: int
    elevation: int
    distance: int | None = None


def write_csv(path: str | Path, rows: list[EventRow]) -> Path:
    """Write rows sorted by frame, class and source, without a header (as DCASE does)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        for row in sorted(rows):
            fields = [row.frame, row.class_index, row.source_index, row.azimuth, row.elevation]
            writer.writerow(fields if row.distance is None else fields + [row.distance])
    return path


def read_csv(path: str | Path) -> list[EventRow]:
    """Read a DCASE metadata CSV (5 or 6 columns, optional header); UsageError names a bad line."""
    return [row for _, row in read_csv_lines(path)]


def read_csv_lines(path: str | Path) -> list[tuple[int, EventRow]]:
    """``read_csv`` with each row's line number, for checks that name the line they refuse."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"no metadata CSV at {path}")
    rows = []
    with path.open(newline="") as f:
        for line_no, fields in enumerate(csv.reader(f), start=1):
            if not fields or (line_no == 1 and not fields[0].strip().lstrip("-").isdigit()):
                continue
            rows.append((line_no, _parse_row(fields, path, line_no)))
    return rows


def _parse_row(fields: list[str], path: Path, line_no: int) -> EventRow:
    if len(fields) not in (5, 6):
        raise UsageError(f"{path.name} line {line_no}: expected 5 or 6 columns, found {len(fields)}")
    try:
        numbers = [round(float(v)) for v in fields]
    except ValueError as exc:
        raise UsageError(f"{path.name} line {line_no}: not a number ({exc})") from exc
    return EventRow(*numbers)
