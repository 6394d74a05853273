"""Track ids for decoded SELD events: the same source keeps its id from frame to frame.

Multi-ACCDOA's three tracks are output slots, not identities: a source may move between slots,
and two sources of one class swap them. The tracker assigns ids causally, frame by frame, so a
streamed run and a whole-file run give the same ids. Per class, each event of a frame is matched
to a live track of that class (seen within ``max_gap`` frames) by the smallest angle between
directions, greedily, up to ``max_angle`` degrees; an event that matches none starts a new id.
Ids count up from 0 over the whole run and are never reused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

MAX_GAP_FRAMES = 5  # a source silent for up to 0.5 s keeps its id
MAX_ANGLE_DEG = 45.0  # farther than this in one step is another source


def unit_vector(azimuth_deg: float, elevation_deg: float) -> tuple[float, float, float]:
    """In plain floats: a handful per frame, where numpy's per-call cost would exceed the maths."""
    az, el = math.radians(azimuth_deg), math.radians(elevation_deg)
    return (math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el))


def _degrees(u: tuple[float, float, float], v: tuple[float, float, float]) -> float:
    return math.degrees(math.acos(min(1.0, max(-1.0, u[0] * v[0] + u[1] * v[1] + u[2] * v[2]))))


@dataclass
class _Track:
    ident: int
    cls: int
    direction: tuple[float, float, float]
    last_frame: int


@dataclass
class Tracker:
    max_gap: int = MAX_GAP_FRAMES
    max_angle: float = MAX_ANGLE_DEG
    _tracks: list[_Track] = field(default_factory=list)
    _next: int = 0

    def assign(self, frame: int, events: list[tuple[int, float, float]]) -> list[int]:
        """Ids for one frame's events ``(class, azimuth_deg, elevation_deg)``, in their order."""
        self._tracks = [t for t in self._tracks if frame - t.last_frame <= self.max_gap]
        directions = [unit_vector(az, el) for _, az, el in events]
        pairs = []
        for e, (cls, _, _) in enumerate(events):
            for t, track in enumerate(self._tracks):
                if track.cls == cls:
                    angle = _degrees(directions[e], track.direction)
                    if angle <= self.max_angle:
                        pairs.append((angle, e, t))
        ids: list[int | None] = [None] * len(events)
        taken = set()
        for _, e, t in sorted(pairs):
            if ids[e] is None and t not in taken:
                ids[e] = self._tracks[t].ident
                taken.add(t)
                self._tracks[t].direction, self._tracks[t].last_frame = directions[e], frame
        for e, (cls, _, _) in enumerate(events):
            if ids[e] is None:
                ids[e] = self._next
                self._tracks.append(_Track(self._next, cls, directions[e], frame))
                self._next += 1
        return [int(i) for i in ids]
