"""The tiny streaming task through export -> bundle -> load -> Session and Stream on every backend."""

from __future__ import annotations

import re

import numpy as np
import pytest

import edgeaudio
from edgeaudio.backends.base import backends
from edgeaudio.errors import AudioInputError, BundleError, UsageError

BACKENDS = [("onnxruntime", "fp32"), ("onnxruntime", "int8"), ("openvino", "fp32"), ("openvino", "int8"), ("torch", "fp32")]


@pytest.fixture
def clip(tiny_plugin):
    return tiny_plugin._clip(7, blocks=41)


@pytest.fixture
def reference(tiny_plugin, tiny_bundle, clip):
    return edgeaudio.load(tiny_bundle, backend="torch").process_raw(clip, 8000)["scores"]


@pytest.mark.parametrize("backend,precision", BACKENDS)
def test_session_matches_torch(tiny_bundle, clip, reference, backend, precision):
    session = edgeaudio.load(tiny_bundle, backend=backend, precision=precision)
    scores = session.process_raw(clip, 8000)["scores"]
    assert scores.shape == reference.shape == (1, 41, 3)
    tolerance = 1e-5 if precision == "fp32" else 2e-2  # int8 is judged by the gate; here a sanity bound
    assert np.max(np.abs(scores - reference)) < tolerance


@pytest.mark.parametrize("backend,precision", BACKENDS)
@pytest.mark.parametrize("chunk", [1, 37, 80, 500])
def test_stream_equals_session(tiny_bundle, clip, backend, precision, chunk):
    session = edgeaudio.load(tiny_bundle, backend=backend, precision=precision)
    offline = session.process_raw(clip, 8000)["scores"]
    stream = session.stream(keep_outputs=True)
    results = []
    for offset in range(0, clip.shape[1], chunk):
        results.extend(stream.accept(clip[:, offset : offset + chunk]))
    results.extend(stream.flush())
    streamed = stream.outputs()["scores"]
    assert streamed.shape == offline.shape
    assert np.max(np.abs(streamed - offline)) < 1e-5
    frames = [item["frame"] for result in results for item in result]
    assert frames == list(range(offline.shape[1]))


def test_onnxruntime_on_cpu_runs_the_session_itself_with_the_same_outputs(tiny_bundle, tiny_plugin, clip):
    """On the CPU provider the runner calls the session's compiled call, past InferenceSession.run's
    Python checks; its outputs are the public call's to the bit, and without that call it takes
    the public one."""
    session = edgeaudio.load(tiny_bundle, backend="onnxruntime", precision="fp32")
    graph = session.runner.streaming_graph()
    runner = graph.runner
    assert runner._run is runner.session._sess  # CPU only here: the direct call
    feeds = {**graph.initial_state(), graph.streaming.audio_input: clip[None, :, :800]}
    missing = {name: value for name, value in feeds.items() if name != graph.streaming.audio_input}
    public = dict(zip(runner.output_names, runner.session.run(None, feeds)))
    outputs = []
    for direct in (runner._run, None):
        runner._run = direct
        outputs.append(runner.run(feeds))
        with pytest.raises(KeyError):  # a missing input is named before the session is called
            runner.run(missing)
    runner._run = object()  # an onnxruntime whose private session has another call: the public one from then on
    outputs.append(runner.run(feeds))
    assert runner._run is None
    for out in outputs:
        assert list(out) == list(public) and all(np.array_equal(out[name], value) for name, value in public.items())


def _other_signature(*args):
    raise TypeError("infer() takes 2 positional arguments but 4 were given")


def test_openvino_hands_plain_arrays_to_the_request_with_the_same_outputs(tiny_bundle, tiny_plugin, clip):
    """Inputs already of the port's type, C-contiguous and writable, go to the request's compiled
    call as tensors made here; any other input sends the call through InferRequest.infer. The
    outputs are infer's to the bit either way."""
    session = edgeaudio.load(tiny_bundle, backend="openvino", precision="fp32")
    graph = session.runner.streaming_graph()
    runner, audio_input = graph.runner, graph.streaming.audio_input
    feeds = {**graph.initial_state(), audio_input: np.ascontiguousarray(clip[None, :, :800])}
    public = dict(zip(runner.output_names, runner.request.infer(feeds, share_inputs=True).to_tuple()))
    strided = np.repeat(feeds[audio_input], 2, axis=2)[:, :, ::2]
    read_only = feeds[audio_input].copy()
    read_only.flags.writeable = False
    assert runner._direct(feeds) is not None
    for odd in (strided, read_only, feeds[audio_input].astype(np.float64)):
        assert runner._direct({**feeds, audio_input: odd}) is None  # infer's dispatch copies or converts these
    for inputs in (feeds, {**feeds, audio_input: strided}, {**feeds, audio_input: read_only}):
        out = runner.run(inputs)
        assert list(out) == list(public) and all(np.array_equal(out[name], value) for name, value in public.items())
    runner._infer = _other_signature  # an OpenVINO whose compiled call changed: infer from then on
    out = runner.run(feeds)
    assert runner._dtypes is None and all(np.array_equal(out[name], value) for name, value in public.items())


def test_partial_last_block_is_padded_like_offline(tiny_bundle, tiny_plugin):
    session = edgeaudio.load(tiny_bundle, backend="onnxruntime", precision="fp32")
    audio = tiny_plugin._clip(3, blocks=10)[:, :-13]
    stream = session.stream(keep_outputs=True)
    stream.accept(audio)
    stream.flush()
    np.testing.assert_allclose(stream.outputs()["scores"], session.process_raw(audio, 8000)["scores"], atol=1e-6)


@pytest.mark.parametrize("latency", [0, 1, 80, 150])
def test_a_lagging_graph_is_drained_at_the_end_of_input(tiny_bundle, tiny_plugin, latency):
    """A task whose output lags by ``latency`` samples gets that much silence after its input,
    in a Session and when a Stream is flushed, and keeps just the frames the input accounts for."""
    session = edgeaudio.load(tiny_bundle, backend="onnxruntime", precision="fp32")
    session.task.latency = latency
    audio = tiny_plugin._clip(3, blocks=10)[:, :-13]
    offline = session.process_raw(audio, 8000)["scores"]
    block = session.runner.streaming_graph().streaming.block
    assert offline.shape[1] == -(-(audio.shape[1] + latency) // block)
    silence_fed = edgeaudio.load(tiny_bundle, backend="onnxruntime", precision="fp32")
    padded = silence_fed.process_raw(np.pad(audio, ((0, 0), (0, latency))), 8000)["scores"]
    np.testing.assert_allclose(offline, padded, atol=1e-6)
    stream = session.stream(keep_outputs=True)
    stream.accept(audio[:, :333])
    stream.accept(audio[:, 333:])
    stream.flush()
    assert stream.flush() == []
    np.testing.assert_allclose(stream.outputs()["scores"], offline, atol=1e-6)
    with pytest.raises(UsageError, match="flushed"):
        stream.accept(audio)


def _auto_backend(bundle) -> str:
    """What ``backend="auto"`` must pick on this host: the first backend of the host profile's
    order, then the fallbacks, that the bundle has an artifact for and that runs here."""
    from edgeaudio.profiles import host_target
    from edgeaudio.runtime import FALLBACK_ORDER

    profile, registered = host_target()[0], backends()
    in_bundle = {backend for backend, _ in bundle.artifacts()}
    order = [*profile.backends, *(name for name in FALLBACK_ORDER if name not in profile.backends)]
    return next(name for name in order
                if name in registered and registered[name].artifact in in_bundle and registered[name].available()[0])  # fmt: skip


def test_auto_backend_is_the_fastest_measured_and_says_why(tiny_bundle, tiny_plugin):
    """``auto`` times every usable backend x precision of the bundle on this host (never the
    torch reference while another runs it), takes the fastest, quotes the times, and keeps the
    measurement for the next load; ``--backend`` / ``--precision`` override it."""
    from edgeaudio.profiles import host_target

    session = edgeaudio.load(tiny_bundle)
    timed = {name: float(ms) for name, ms in re.findall(r"(\w+/\w+) ([\d.e+-]+) ms", session.reason)}
    assert set(timed) == {"onnxruntime/fp32", "onnxruntime/int8", "openvino/fp32", "openvino/int8"}
    assert f"{session.backend}/{session.precision}" == min(timed, key=timed.get)
    assert session.reason.startswith(f"{session.backend}/{session.precision}: fastest of the usable backends for "
                                     f"host profile {host_target()[0].name}")
    again = edgeaudio.load(tiny_bundle)
    assert (again.backend, again.precision) == (session.backend, session.precision)
    assert "as measured on this host" in again.reason and "streamed in 10 ms blocks" in again.reason
    assert edgeaudio.load(tiny_bundle, precision="fp32").precision == "fp32"
    assert edgeaudio.load(tiny_bundle, backend="openvino", precision="int8").reason == "backend 'openvino' requested"


def test_a_precision_no_faster_than_fp32_is_not_a_default(tiny_bundle, tiny_plugin):
    """The speed check beside the accuracy gate: each lower precision that passed it is timed
    against fp32 on the same backend, and one that is not faster is kept but not the default."""
    manifest = edgeaudio.load(tiny_bundle, backend="onnxruntime", precision="fp32").bundle.manifest
    speed = manifest["reports"]["speed"]
    assert set(speed["candidates"]) == {"onnxruntime/int8", "openvino/int8"} and speed["probe"].startswith("1 s streamed")
    for name, row in speed["candidates"].items():
        backend = name.split("/")[0]
        assert row["vs_fp32"] == pytest.approx(row["ms"] / speed["ms"][f"{backend}/fp32"], abs=1e-3)
        assert row["faster"] == (row["vs_fp32"] <= 1 - speed["margin"])
        assert manifest["default_precision"][backend] == ("int8" if row["faster"] else "fp32")
        said = any(note.startswith(f"{name} is not faster than fp32 here") for note in manifest["reports"]["notes"])
        assert said == (not row["faster"])


def test_archive_loads_like_directory(tiny_bundle, tiny_plugin, clip):
    from_dir = edgeaudio.load(tiny_bundle, backend="onnxruntime", precision="fp32").process_raw(clip, 8000)
    from_archive = edgeaudio.load(tiny_bundle.with_suffix(".eab"), backend="onnxruntime", precision="fp32").process_raw(clip, 8000)
    np.testing.assert_array_equal(from_dir["scores"], from_archive["scores"])


def test_int8_passed_the_gate(tiny_bundle, tiny_plugin):
    gate = edgeaudio.load(tiny_bundle, backend="torch").bundle.manifest["reports"]["gate"]
    assert gate["reference"]["agreement_db"] == 100.0
    for name in ("onnxruntime/int8", "openvino/int8"):
        candidate = gate["candidates"][name]
        assert candidate["passed"] and candidate["drop"] <= 60.0


def test_strict_gate_falls_back_to_fp32(tiny_plugin, tmp_path, monkeypatch):
    from edgeaudio.task import MetricGate

    monkeypatch.setattr(tiny_plugin.TinyTask, "gate", MetricGate("agreement_db", max_drop=1.0))
    result = edgeaudio.export("tiny", target="x86-cpu", backends=["onnxruntime"], output=tmp_path / "b", log=lambda m: None)
    artifacts = {(a["backend"], a["precision"]) for a in result.manifest["graphs"][0]["artifacts"]}
    assert ("onnxruntime", "int8") not in artifacts and ("onnxruntime", "fp32") in artifacts
    assert result.manifest["default_precision"]["onnxruntime"] == "fp32"
    assert any("onnxruntime/int8 rejected" in n and "falls back" in n for n in result.notes)
    assert not list((tmp_path / "b" / "onnxruntime").glob("*.int8.onnx"))
    assert edgeaudio.load(tmp_path / "b").precision == "fp32"


@pytest.mark.parametrize(
    "audio,rate,message",
    [
        (np.zeros((2, 800), np.float32), 16000, "expects 8000 Hz"),
        (np.zeros((1, 800), np.float32), 8000, "expects 2"),
        (np.zeros((2, 0), np.float32), 8000, "empty"),
        (np.full((2, 800), np.nan, np.float32), 8000, "NaN"),
    ],
)
def test_bad_audio_is_refused_clearly(tiny_bundle, tiny_plugin, audio, rate, message):
    session = edgeaudio.load(tiny_bundle, backend="onnxruntime", precision="fp32")
    with pytest.raises(AudioInputError, match=message):
        session.process(audio, rate)
    with pytest.raises(AudioInputError, match=message):
        session.stream().accept(audio, rate)


def test_task_version_mismatch_is_refused(tiny_bundle, tiny_plugin, monkeypatch):
    monkeypatch.setattr(tiny_plugin.TinyTask, "version", "2")
    with pytest.raises(BundleError, match="version 1, installed is 2"):
        edgeaudio.load(tiny_bundle)


def test_missing_artifact_is_explained(tiny_bundle, tiny_plugin):
    with pytest.raises(BundleError, match="no openvino/fp16"):
        edgeaudio.load(tiny_bundle, backend="openvino", precision="fp16")


def test_unknown_task_names_installed_ones(tiny_plugin):
    with pytest.raises(UsageError, match="installed tasks: .*tiny"):
        edgeaudio.export("nope", log=lambda m: None)


def test_evaluate_api(tiny_bundle, tiny_plugin):
    metrics = edgeaudio.evaluate(tiny_bundle, backend="openvino", precision="fp32")
    assert metrics["agreement_db"] > 80


def test_jetson_export_defers_engines_and_falls_back_here(tiny_plugin, tmp_path):
    result = edgeaudio.export("tiny", target="jetson", output=tmp_path / "j", log=lambda m: None)
    assert result.manifest["target"] == "jetson-orin-nano"
    artifacts = {(a["backend"], a["precision"]) for a in result.manifest["graphs"][0]["artifacts"]}
    assert {("tensorrt", "fp16"), ("tensorrt", "int8"), ("onnxruntime", "int8")} <= artifacts
    assert result.manifest["reports"]["gate"]["candidates"]["tensorrt/int8"]["passed"]
    assert any(n.startswith("tensorrt/fp16: gate not measurable here") for n in result.notes)
    session = edgeaudio.load(tmp_path / "j")
    assert session.backend == _auto_backend(session.bundle)
    assert "openvino" not in {backend for backend, _ in session.bundle.artifacts()}
    tensorrt_ok, why = backends()["tensorrt"].available()
    if not tensorrt_ok:  # asking for it where it cannot run says why (the reason doctor gives)
        assert session.backend == "onnxruntime"
        with pytest.raises(edgeaudio.errors.BackendUnavailable, match=re.escape(why)):
            edgeaudio.load(tmp_path / "j", backend="tensorrt")


def test_signals_still_work_after_openvino_int8_export(tmp_path):
    """OpenVINO Cores destroyed out of order leave a dangling signal stack; the next Ctrl-C or
    SIGCHLD then segfaults. Exporting in a child process shows the process survives a signal."""
    import subprocess
    import sys
    import textwrap
    from pathlib import Path

    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        import tiny_task, edgeaudio
        from edgeaudio import registry
        registry.register(tiny_task, "tiny")
        edgeaudio.export("tiny", target="x86-cpu", backends=["openvino"], output={str(tmp_path / "b")!r}, log=lambda m: None)
        edgeaudio.load({str(tmp_path / "b")!r}, backend="openvino", precision="int8")
        signal.signal(signal.SIGUSR1, lambda *args: print("handled", flush=True))
        os.kill(os.getpid(), signal.SIGUSR1)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "handled" in done.stdout, done.stderr[-1500:]


def _plain_calls(graph) -> list[int]:
    """A counter of ``graph``'s plain calls (``run``), left in place on the graph."""
    calls, run = [0], graph.run

    def counted(feeds):
        calls[0] += 1
        return run(feeds)

    graph.run = counted
    return calls


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_whole_blocks_run_in_place_with_the_plain_calls_outputs(tiny_bundle, tiny_plugin, clip, precision):
    """On ONNX Runtime, after a stream's first one-block call, every call of one block runs bound
    in place (BoundBlock), whether the chunk was that block or completed one: no plain call,
    outputs equal to plain calls' to the bit, whatever calls of several blocks came in between
    (their state is copied into the bound arrays), and each kept frame a copy of its own."""
    chunks = [80, 80, 37, 43, 80, 241, 80, 80, 19, 61, 80] + [80] * 25
    blocks = [1, 1, 0, 1, 1, 3, 1, 1, 0, 1, 1] + [1] * 25  # the blocks each chunk completes
    kept = []
    for bind in (True, False):
        session = edgeaudio.load(tiny_bundle, backend="onnxruntime", precision=precision)
        graph = session.runner.streaming_graph()
        if not bind:
            graph.bind_block = lambda *args: None
        calls = _plain_calls(graph)
        stream, offset, made = session.stream(keep_outputs=True), 0, []
        for size in chunks:
            before = calls[0]
            stream.accept(clip[:, offset : offset + size])
            made.append(calls[0] - before)
            offset += size
        stream.flush()
        kept.append(stream.outputs()["scores"])
        plain = [min(n, 1) for n in blocks]  # a chunk of several blocks makes one plain call
        assert made == (plain[:1] + [0 if n == 1 else p for n, p in zip(blocks[1:], plain[1:])] if bind else plain)
    assert kept[0].shape == (1, 37, 3) and np.array_equal(kept[0], kept[1])  # 2881 samples: 37 blocks


def test_a_bad_block_on_the_bound_path_is_refused_and_changes_nothing(tiny_bundle, tiny_plugin, clip):
    session = edgeaudio.load(tiny_bundle, backend="onnxruntime", precision="fp32")
    streams = [session.stream(keep_outputs=True) for _ in range(2)]
    bad = clip[:, 80:160].copy()
    bad[1, 7] = np.inf
    for index, stream in enumerate(streams):
        for offset in range(0, 800, 80):
            if index == 0 and offset == 400:
                with pytest.raises(AudioInputError, match="NaN or infinite"):
                    stream.accept(bad)
                with pytest.raises(AudioInputError, match="expects 8000 Hz"):
                    stream.accept(clip[:, offset : offset + 80], 16000)
            stream.accept(clip[:, offset : offset + 80])
    assert streams[0]._bound is not None
    assert np.array_equal(streams[0].outputs()["scores"], streams[1].outputs()["scores"])
    assert streams[0].samples_in == streams[1].samples_in == 800


def test_bench_sees_every_block_call_of_a_stream(tiny_bundle, tiny_plugin, clip):
    """The calls bench replays on the bare backend are recorded with binding off (a bound call
    bypasses ``run``): one per block; afterwards streams bind again."""
    from edgeaudio.bench import _Recorder, _stream_pass

    session = edgeaudio.load(tiny_bundle, backend="onnxruntime", precision="fp32")
    recorder = _Recorder(session)
    with recorder:
        made = _stream_pass(session, clip, 80, recorder)
    assert made == [1] * 41 + [0] and len(recorder.calls) == 41  # the flush: nothing left to run
    stream = session.stream()
    for offset in (0, 80):
        stream.accept(clip[:, offset : offset + 80])
    assert stream._bound is not None
