"""Checks for tasks that take audio: STREAM (streaming graph), CLIP (whole clips), both."""

from __future__ import annotations

from typing import Mapping

import numpy as np

from edgeaudio.task import InputKind, Task
from edgeaudio.testing.common import (
    CLIP_SECONDS,
    WINDOW_SECONDS,
    _chunk_sizes,
    _describe,
    _in_chunks,
    _json_checked,
    _merge,
    _require,
    _require_refused,
    _schema,
    _stream_raw,
    _streaming_spec,
    _unwindowed,
    _waveform,
)


class AudioChecks:
    """Mixed into ``Conformance``: the checks for audio-in tasks."""

    # -- STREAM ---------------------------------------------------------------------------------
    def _check_stream_equals_session(self, task: Task) -> str:
        from edgeaudio.exporters.onnx import compare_outputs
        from edgeaudio.runtime import load

        bundle = self._bundle(task)
        spec = _streaming_spec(bundle.manifest)
        _require(spec is not None, f"task '{task.name}' has input_kind STREAM but its bundle has no streaming graph")
        audio, rate = self._audio(task)
        block = spec["streaming"]["block"]
        checked = []
        for backend, precision in self._artifacts(bundle):
            session = load(bundle, backend=backend, precision=precision)
            offline = session.process_raw(audio, rate)
            _require(offline, f"{backend}/{precision}: Session.process_raw returned no outputs")
            for chunk in _chunk_sizes(block):
                streamed = _stream_raw(session, audio, rate, chunk)
                report = compare_outputs(offline, streamed, spec["atol"], spec["rtol"])
                bad = {name: r.get("shape", r["max_abs"]) for name, r in report.items() if not r["ok"]}
                _require(not bad, f"{backend}/{precision}: streaming in chunks of {chunk} samples differs from "
                                  f"Session.process_raw: {bad} (atol {spec['atol']}, rtol {spec['rtol']})")
            checked.append(f"{backend}/{precision}")
        return f"{', '.join(checked)}; chunks {_chunk_sizes(block)} samples"

    # -- CLIP -----------------------------------------------------------------------------------
    def _check_clip_lengths(self, task: Task) -> str:
        from edgeaudio.runtime import load

        bundle = self._bundle(task)
        checked = []
        for backend, precision in self._artifacts(bundle):
            session = load(bundle, backend=backend, precision=precision)
            schema = None
            for seconds in CLIP_SECONDS:
                audio, rate = self._audio(task, seconds)
                what = f"{backend}/{precision} on a {seconds:g} s clip"
                raw = session.process_raw(audio, rate)
                _require(isinstance(raw, Mapping) and raw, f"{what}: Session.process_raw returned no outputs ({raw!r})")
                for name, value in raw.items():
                    value = np.asarray(value)
                    _require(value.dtype.kind not in "fc" or np.all(np.isfinite(value)), f"{what}: output '{name}' is not finite")
                found = _schema(_json_checked(session.process(audio, rate), f"{what}: Session.process result"))
                schema = _merge(schema, found, f"{what} vs the {CLIP_SECONDS[0]:g} s clip")
            checked.append(f"{backend}/{precision}")
        return f"{', '.join(checked)}; clips of {' and '.join(f'{s:g}' for s in CLIP_SECONDS)} s, schema {_describe(schema)}"

    def _check_window_equals_clip(self, task: Task) -> str:
        from edgeaudio.runtime import load

        bundle = self._bundle(task)
        session = load(bundle, backend=self.backends[0], precision="fp32")
        audio, rate = self._audio(task)
        stream = session.stream(every=WINDOW_SECONDS)
        window = int(round(WINDOW_SECONDS * rate))
        _require(getattr(stream, "block", None) == window,
                 f"Session.stream(every={WINDOW_SECONDS}) of a clip task gave {type(stream).__name__} with block "
                 f"{getattr(stream, 'block', None)}, expected windows of {window} samples")
        chunk = window // 3 + 1  # windows end inside chunks
        live = _in_chunks(stream, audio, rate, chunk)
        starts = range(0, audio.shape[1], window)
        _require(len(live) == len(starts), f"{len(live)} live result(s) for {audio.shape[1]} samples in windows of "
                                           f"{window}; expected {len(starts)}")
        for index, (start, result) in enumerate(zip(starts, live)):
            piece = audio[:, start : start + window]
            span = {"start_s": round(start / rate, 3), "end_s": round((start + piece.shape[1]) / rate, 3)}
            whole = session.process(piece, rate)
            expected = {**span, **whole} if isinstance(whole, dict) else {**span, "result": whole}
            got = _json_checked(result, f"live result #{index}")
            want = _json_checked(expected, f"Session.process result of window #{index}")
            _require(got == want, f"live result #{index} ({span['start_s']}-{span['end_s']} s) differs from "
                                  f"Session.process on the same window: {str(got)[:200]} vs {str(want)[:200]}")
        return f"{len(live)} window(s) of {WINDOW_SECONDS:g} s in chunks of {chunk} samples equal whole-clip results"

    # -- audio in -------------------------------------------------------------------------------
    def _check_bad_input(self, task: Task) -> str:
        from edgeaudio.runtime import load

        bundle = self._bundle(task)
        session = load(bundle, backend=self.backends[0], precision="fp32")
        audio, rate = self._audio(task)
        cases = {
            f"{rate * 2} Hz audio (task expects {rate} Hz)": (audio, rate * 2),
            f"{task.channels + 1} channels (task expects {task.channels})": (np.concatenate([audio, audio[:1]]), rate),
            "empty audio (0 samples)": (audio[:, :0], rate),
            "audio containing NaN": (np.where(np.arange(audio.shape[1]) % 7 == 0, np.nan, audio).astype(np.float32), rate),
        }
        for what, (bad, bad_rate) in cases.items():
            _require_refused(f"Session.process with {what}", session.process, bad, bad_rate)
            _require_refused(f"{type(session.stream()).__name__}.accept with {what}", session.stream().accept, bad, bad_rate)
        return "; ".join(cases)

    def _check_decode_schema(self, task: Task) -> str:
        from edgeaudio.runtime import load

        bundle = self._bundle(task)
        session = load(bundle, backend=self.backends[0], precision="fp32")
        audio, rate = self._audio(task)
        offline = session.process(audio, rate)
        schema = _schema(_json_checked(offline, "Session.process result"))
        results = self._live(session, audio, rate)
        _require(results, f"{type(session.stream()).__name__} gave no results for {audio.shape[1]} samples")
        for index, result in enumerate(results):
            found = _json_checked(result, f"live result #{index}")
            if task.input_kind is InputKind.CLIP:
                found = _unwindowed(found, f"live result #{index}")
            schema = _merge(schema, _schema(found), f"live result #{index} vs earlier results")
        return f"offline and {len(results)} live result(s) share schema {_describe(schema)}"

    def _check_waveform_results(self, task: Task) -> str:
        from edgeaudio.runtime import load

        bundle = self._bundle(task)
        session = load(bundle, backend=self.backends[0], precision="fp32")
        audio, rate = self._audio(task)
        whole = _waveform(task, session.process(audio, rate), "the whole-clip result")
        _require(whole.shape[-1] == audio.shape[1],
                 f"results_to_audio of the whole-clip result has {whole.shape[-1]} samples for {audio.shape[1]} input "
                 "samples; waveform results must line up with their input")
        live = _waveform(task, self._live(session, audio, rate), "the live results")
        _require(live.shape == whole.shape,
                 f"results_to_audio of the live results is shaped {live.shape}, of the whole-clip result {whole.shape}")
        spec = _streaming_spec(bundle.manifest)
        if spec is None:
            return f"{whole.shape} finite audio, live and whole-clip alike"
        worst = float(np.max(np.abs(live - whole))) if whole.size else 0.0
        _require(np.allclose(live, whole, atol=spec["atol"], rtol=spec["rtol"]),
                 f"streamed audio differs from whole-clip audio by up to {worst:.2e} (atol {spec['atol']}, rtol {spec['rtol']})")
        return f"{whole.shape} finite audio; streamed equals whole-clip (max|err| {worst:.1e})"
