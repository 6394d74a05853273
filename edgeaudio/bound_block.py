"""One block of a streaming graph per call, in place: what a Stream runs on each whole block
when its backend binds arrays (``GraphRunner.bind``; ONNX Runtime's IOBinding).

A plain call turns every input into the backend's tensor and every output into a new array,
each time; a bound call reads and writes arrays fixed once. The block's audio is copied into
``audio`` (where the graph reads it, and where the task's checks read it first), the state
alternates between two sets of arrays (a call reads one and writes the other), and the frames
land in arrays of their own, copied out per call since the next call writes them again.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np


class BoundBlock:
    def __init__(self, audio: np.ndarray, sets: list[dict[str, np.ndarray]], frames: dict[str, np.ndarray], calls: list[Any]):
        self.audio = audio[0]  # [channels, block]: where the caller puts each block
        self._sets, self._frames, self._calls, self._next = sets, frames, calls, 0

    @classmethod
    def create(cls, graph, channels: int, frames: Mapping[str, np.ndarray],
               state: Mapping[str, np.ndarray]) -> "BoundBlock | None":
        """Bound calls of ``graph`` (a LoadedGraph) for one block of ``channels``, with buffers
        shaped as one block's ``frames`` and ``state`` came out of a plain call; None where the
        backend does not bind."""
        streaming = graph.streaming
        audio = np.zeros((1, channels, streaming.block), np.float32)
        sets = [{name: np.zeros_like(value, order="C") for name, value in state.items()} for _ in range(2)]
        outputs = {name: np.zeros_like(value, order="C") for name, value in frames.items()}
        calls = []
        for k in (0, 1):
            written = {pair.output: sets[1 - k][pair.input] for pair in graph.state}
            call = graph.bind({streaming.audio_input: audio, **sets[k]}, {**outputs, **written})
            if call is None:
                return None
            calls.append(call)
        return cls(audio, sets, outputs, calls)

    def __call__(self, state: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """The block in ``audio`` from ``state``: its frames and the next state (one of this
        object's sets, read by the next call as it is; any other state is copied in first)."""
        k = self._next
        current = self._sets[k]
        if state is not current:
            for name, value in current.items():
                np.copyto(value, state[name])
        self._calls[k]()
        self._next = 1 - k
        return {name: value.copy() for name, value in self._frames.items()}, self._sets[1 - k]
