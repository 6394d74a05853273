"""Task ``vad``: silero's voice activity detector, brought as ONNX, streamed by edgeaudio.

There is no torch model: the graph is silero's own ONNX file from the installed ``silero-vad``
package, wrapped into a streaming graph (``streaming_graph``), so the export pipeline checks each
backend's artifact against ONNX Runtime on that file instead of against torch. ``decode`` turns
the segments the graph reports into ``{"start_s", "end_s"}`` dicts.
"""

from __future__ import annotations

import hashlib
import json
import math
from functools import cached_property
from importlib import resources
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from edgeaudio.errors import UsageError
from edgeaudio.task import Graph, MetricGate, StatePair, Streaming, Task, TensorSpec
from edgeaudio_vad import streaming_graph
from edgeaudio_vad.streaming_graph import CONTEXT, FRAME, HIDDEN, Hysteresis

RATE = 16000
FRAME_S = FRAME / RATE
SILERO_FILE = "silero_vad/data/silero_vad_16k_sequence.onnx"
STATE = [StatePair("context", "context_out"), StatePair("h", "hn"), StatePair("c", "cn"), StatePair("segmenter", "segmenter_out")]
EXAMPLE_FRAMES = 120  # 3.8 s of the shipped clip: its first utterance and the silence after it
SCORE_STEP_S = 0.01  # resolution of the frame-level F1 in evaluate()


def silero_onnx() -> Path:
    """silero's sequence model inside the installed wheel, found without importing silero_vad
    (which imports torch)."""
    try:
        path = Path(distribution("silero-vad").locate_file(SILERO_FILE))
    except PackageNotFoundError as exc:
        raise UsageError("the vad task needs the silero-vad package", hint="pip install silero-vad") from exc
    if not path.is_file():
        raise UsageError(f"silero-vad is installed but has no {SILERO_FILE}", hint='pip install "silero-vad>=6,<7"')
    return path


def shipped_clip() -> tuple[np.ndarray, list[dict[str, Any]]]:
    """The shipped espeak-ng clip as [1, samples] float32, and where its speech really is."""
    import soundfile as sf

    data = resources.files("edgeaudio_vad") / "data"
    audio, _ = sf.read(str(data / "speech.wav"), dtype="float32", always_2d=True)
    return np.ascontiguousarray(audio.T), json.loads((data / "speech.json").read_text())["speech"]


def _zero_state() -> dict[str, np.ndarray]:
    return {
        "context": np.zeros((1, 1, CONTEXT), np.float32),
        "h": np.zeros((1, 1, HIDDEN), np.float32),
        "c": np.zeros((1, 1, HIDDEN), np.float32),
        "segmenter": np.zeros((1, 3), np.float32),
    }


class VadTask(Task):
    name = "vad"
    version = "1"
    description = "voice activity detection: speech segments (silero VAD v6, 16 kHz, streaming)"
    sample_rate = RATE
    channels = 1
    gate = MetricGate("speech_f1", max_drop=0.02)

    def default_config(self) -> dict[str, Any]:
        """silero's own defaults: threshold 0.5, off at threshold - 0.15, 100 ms silence, 250 ms speech."""
        return {"onset": 0.5, "offset": 0.35, "min_silence_ms": 100, "min_speech_ms": 250}

    def load_model(self, checkpoint: str | None = None) -> None:
        """No torch model: this task brings its graph as ONNX."""
        return None

    def default_checkpoint(self) -> str:
        """silero's ONNX file stands for the weights, so the default bundle (``edgeaudio run vad``)
        is keyed by its hash and rebuilt when the silero-vad package changes it."""
        return str(silero_onnx())

    @cached_property
    def hysteresis(self) -> Hysteresis:
        return Hysteresis(
            onset=float(self.config["onset"]),
            offset=float(self.config["offset"]),
            min_silence=math.ceil(self.config["min_silence_ms"] / 1000 / FRAME_S),
            min_speech=math.ceil(self.config["min_speech_ms"] / 1000 / FRAME_S),
        )

    def graphs(self, model: None) -> list[Graph]:
        audio, _ = shipped_clip()
        example = audio[None, :, : EXAMPLE_FRAMES * FRAME]
        return [
            Graph(
                name="vad",
                inputs=[
                    TensorSpec("audio", (1, 1, "samples")),
                    TensorSpec("context", (1, 1, CONTEXT)),
                    TensorSpec("h", (1, 1, HIDDEN)),
                    TensorSpec("c", (1, 1, HIDDEN)),
                    TensorSpec("segmenter", (1, 3)),
                ],
                outputs=[
                    TensorSpec("probs", (1, "frames")),
                    TensorSpec("segments", (1, "frames", 2)),
                    TensorSpec("context_out", (1, 1, CONTEXT)),
                    TensorSpec("hn", (1, 1, HIDDEN)),
                    TensorSpec("cn", (1, 1, HIDDEN)),
                    TensorSpec("segmenter_out", (1, 3)),
                ],
                example_inputs={"audio": np.ascontiguousarray(example), **_zero_state()},
                onnx_path=str(self._streaming_onnx()),
                state=STATE,
                streaming=Streaming("audio", block=FRAME, time_axes={"probs": 1, "segments": 1}),
                # INT8 leaves in float the STFT front end, the framing, the segmenter's counters and
                # the LSTM that carries the state ("LSTM" in ONNX, "LSTMSequence" in OpenVINO)
                keep_float=["/stft/", "/frames/", "/segmenter/", "LSTM", "LSTMSequence"],
            )
        ]

    def _streaming_onnx(self) -> Path:
        """The wrapper graph, built once per silero file and hysteresis setting into the cache."""
        from edgeaudio.cache import cache_root

        source = silero_onnx()
        key = hashlib.sha256(source.read_bytes() + repr(self.hysteresis).encode()).hexdigest()[:16]
        target = cache_root() / "plugins" / "vad" / f"silero-vad-streaming-{key}.onnx"
        if not target.is_file():
            streaming_graph.build(source, self.hysteresis, target)
        return target

    def calibration_data(self, count: int = 32) -> Iterable[dict[str, dict[str, np.ndarray]]]:
        """The shipped clip in consecutive pieces, each with the state the graph carries into it.

        Mid-stream states matter: calibrated on zero states only, INT8 gives the LSTM state
        inputs a zero range and a stream loses its memory at every call.
        """
        import onnxruntime as ort

        audio, _ = shipped_clip()
        session = ort.InferenceSession(str(self._streaming_onnx()), providers=["CPUExecutionProvider"])
        outputs = [o.name for o in session.get_outputs()]
        piece = max(1, audio.shape[1] // FRAME // count) * FRAME
        state = _zero_state()
        for start in range(0, piece * count, piece):
            feeds = {"audio": np.ascontiguousarray(audio[None, :, start : start + piece]), **state}
            if feeds["audio"].shape[2] < piece:
                return
            yield {"vad": feeds}
            result = dict(zip(outputs, session.run(outputs, feeds)))
            state = {pair.input: result[pair.output] for pair in STATE}

    def validation_set(self) -> list[tuple[np.ndarray, list[dict[str, Any]]]]:
        return [shipped_clip()]

    def evaluate(self, runner, dataset) -> dict[str, float]:
        """Frame-level F1 of the decoded segments against the true speech, at 10 ms steps."""
        graph = runner.streaming_graph()
        hits = found = truth = 0
        for audio, speech in dataset:
            segments = self.decode(graph.run_offline(audio))
            steps = np.arange(0, audio.shape[1] / RATE, SCORE_STEP_S)
            got, want = _inside(steps, segments), _inside(steps, speech)
            hits += int(np.sum(got & want))
            found += int(np.sum(got))
            truth += int(np.sum(want))
        return {"speech_f1": 2 * hits / (found + truth) if found + truth else 1.0}

    def decode(self, outputs: Mapping[str, np.ndarray], start_frame: int = 0) -> list[dict[str, float]]:
        """The segments that closed in these frames, in seconds from the start of the audio."""
        rows = outputs["segments"][0]
        segments = []
        for index in np.flatnonzero(rows[:, 0] >= 0):
            frame = start_frame + int(index)
            start, end = frame - int(rows[index, 0]), frame - int(rows[index, 1])
            segments.append({"start_s": round(start * FRAME_S, 3), "end_s": round(end * FRAME_S, 3)})
        return segments


def _inside(times: np.ndarray, segments: list[Mapping[str, Any]]) -> np.ndarray:
    inside = np.zeros(times.shape, bool)
    for segment in segments:
        inside |= (times >= segment["start_s"]) & (times < segment["end_s"])
    return inside
