"""Sinks for located sound events: the DCASE CSV (``run --format dcase``) and an azimuth-over-time
plot (``run --plot out.png``), registered for every task whose results are events.

Both take the per-frame items SELD decodes to, ``{"frame", "time_s", "events": [{"class",
"azimuth", "elevation", "confidence", "track"}]}``, and need the task's ``classes`` to number them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

from edgeaudio.errors import UsageError, require
from edgeaudio.live.sinks import ResultFormat, Sink, SinkOption, TextLinesSink, result_items
from edgeaudio.staging import write_atomically
from edgeaudio.task import ResultKind, Task


def _event_classes(task: Task, what: str) -> list[str]:
    classes = task.classes
    if not classes or not task.array:
        raise UsageError(f"{what} is for tasks that locate classed sound events (seld), not '{task.name}'",
                         hint="leave it out for this task")
    return list(classes)


class DcaseCsvSink(TextLinesSink):
    """DCASE 2022/23 output rows, one per active event and frame of 100 ms:
    ``frame,class_index,track,azimuth,elevation`` with integer degrees; to ``path`` or stdout."""

    noun = "DCASE row"

    def __init__(self, path: str | Path | None, task: Task):
        self.index = {name: i for i, name in enumerate(_event_classes(task, "--format dcase"))}
        super().__init__(path)

    def lines_of(self, results: list[Any]) -> Iterator[str]:
        for item in result_items(results):
            for event in item["events"]:
                yield (f"{item['frame']},{self.index[event['class']]},{event['track']},"
                       f"{round(event['azimuth'])},{round(event['elevation'])}")


class AzimuthPlotSink(Sink):
    """Azimuth over time, one colour per class, drawn to a PNG when the run ends (matplotlib)."""

    def __init__(self, path: str | Path, task: Task):
        self.classes = _event_classes(task, "--plot")
        require("matplotlib")
        from matplotlib.backend_bases import FigureCanvasBase

        self.path = Path(path)
        formats = FigureCanvasBase.get_supported_filetypes()
        if self.path.suffix.lstrip(".").lower() not in formats:
            raise UsageError(f"--plot {path}: matplotlib cannot write '{self.path.suffix or 'no extension'}' files",
                             hint=f"name a file ending in one of: {', '.join('.' + f for f in sorted(formats))}")
        self.points: dict[str, list[tuple[float, float]]] = {}
        self.last_time = 0.0
        self._written = False

    def write(self, results: list[Any]) -> None:
        for item in result_items(results):
            self.last_time = max(self.last_time, item["time_s"])
            for event in item["events"]:
                self.points.setdefault(event["class"], []).append((item["time_s"], event["azimuth"]))

    def abort(self) -> None:
        self._written = True  # a failed run draws nothing

    def close(self) -> None:
        if self._written:
            return
        self._written = True
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        figure, axes = plt.subplots(figsize=(10, 4.5))
        colours = plt.get_cmap("tab20")
        for name in sorted(self.points, key=self.classes.index):
            times, azimuths = zip(*self.points[name])
            axes.scatter(times, azimuths, s=8, color=colours(self.classes.index(name) % 20), label=name)
        axes.set(xlim=(0, max(self.last_time, 0.1) + 0.1), ylim=(-180, 180), yticks=range(-180, 181, 60),
                 xlabel="time (s)", ylabel="azimuth (deg)", title="sound events: azimuth over time")
        axes.grid(alpha=0.3)
        if self.points:
            axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, markerscale=2)
        try:  # beside the target, renamed into place once drawn
            write_atomically(self.path, lambda path: figure.savefig(
                path, dpi=100, bbox_inches="tight", format=self.path.suffix.lstrip(".") or "png"))
        finally:
            plt.close(figure)

    def summary(self) -> str | None:
        events = sum(len(p) for p in self.points.values())
        return f"plotted {events} event frame(s) of {len(self.points)} class(es) to {self.path}"


DCASE_FORMAT = ResultFormat(
    "dcase", "DCASE CSV rows instead of JSON lines: frame,class,track,azimuth,elevation", ResultKind.EVENTS,
    lambda path, task: DcaseCsvSink(path, task),
)
AZIMUTH_PLOT = SinkOption("plot", "Draw azimuth over time per class to this PNG.", ResultKind.EVENTS,
                          lambda path, task: AzimuthPlotSink(path, task))
