"""Pipelines: one capture fanned out to several models (edgeaudio/live/pipeline.py).

The shipped home-monitor pipeline runs the real default bundles (SELD, enhancement, captions) on
ONNX Runtime: from the shipped scene, each stage's results must equal that stage run alone with
``edgeaudio run`` on the same input; live, on the PulseAudio null sink (as test_live_audio.py sets
it up), all three stages must keep real time. The scheduling tests use the tiny tasks, made slow
on purpose, on a file played in real time. Bad specs must each give one error naming the stage.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

sf = pytest.importorskip("soundfile")

from edgeaudio.errors import DeviceLost  # noqa: E402
from edgeaudio.hookspecs import hookimpl  # noqa: E402
from edgeaudio.live.sources import Source  # noqa: E402
from tiny_task import TinyClipTask, TinyTask  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "pipelines" / "home-monitor.yaml"
SCENE = ROOT / "examples" / "scenes" / "respeaker-4mic-scene.wav"
TINY_RATE = 8000


def cli(*args: str):
    from edgeaudio.cli import cli as group

    return CliRunner().invoke(group, [str(a) for a in args])


def stream_lines(text: str) -> tuple[list[dict], dict]:
    """The result stream's lines and the summary (the last line, with --json)."""
    *lines, last = text.splitlines()
    return [json.loads(line) for line in lines], json.loads(last)["summary"]


def by_stage(lines: list[dict], stage: str) -> list[dict]:
    return [line for line in lines if line["stage"] == stage]


def nondecreasing(values: list[float]) -> bool:
    return all(a <= b for a, b in zip(values, values[1:]))


# --- the spec: one clear error per mistake, naming the stage, before any model loads -------------

BAD_SPECS = [
    ("unknown task", "stages:\n  doa: {task: sled}\n",
     "stage 'doa': field 'task': 'sled' is neither an installed task", "did you mean 'seld'?"),
    ("reads a stage that does not exist", "stages:\n  speech: {task: enhance, input: 'capture[0]'}\n"
     "  words: {task: caption, input: speeches}\n",
     "stage 'words': field 'input' reads 'speeches', which is neither capture nor a stage", "did you mean 'speech'?"),
    ("a cycle", "stages:\n  a: {task: enhance, input: b}\n  b: {task: enhance, input: a}\n",
     "stage 'a': field 'input' makes a cycle: a -> b -> a", "must read capture"),
    ("a mono task fed four channels",
     "capture: {array: respeaker-4mic}\nstages:\n  speech: {task: enhance, input: capture}\n",
     "stage 'speech': task 'enhance' takes 1 channel(s) but field 'input' (capture) gives 4", "input: capture[0]"),
    ("a rate mismatch", "capture: {array: respeaker-4mic, sample_rate: 8000}\nstages:\n  doa: {task: seld}\n",
     "stage 'doa': task 'seld' takes 16000 Hz audio but its input 'capture' is 8000 Hz", "sample_rate: 16000"),
    ("reads a stage that returns no audio", "stages:\n  doa: {task: seld}\n  words: {task: caption, input: doa}\n",
     "stage 'words': field 'input' reads stage 'doa', whose results are events, not audio", "returns a waveform"),
    ("an array model given other mics", "stages:\n  doa: {task: seld, input: 'capture[1,0,2,3]'}\n",
     "stage 'doa': task 'seld' was trained for the geometry of array respeaker-4mic", "input: capture"),
    ("a window for a streaming task", "stages:\n  doa: {task: seld, every: 5s}\n",
     "stage 'doa': field 'every' is for whole-clip tasks", "chunk"),
    ("a skipping stage that others read", "stages:\n  speech: {task: enhance, input: 'capture[0]', drop: skip}\n"
     "  words: {task: caption, input: speech}\n",
     "stage 'speech': field 'drop' is skip, but stage 'words' reads", "drop: never"),
    ("a text task", "stages:\n  sfx: {task: tta, input: 'capture[0]'}\n",
     "stage 'sfx': task 'tta' generates audio from a text prompt and takes no audio", "takes audio"),
    ("audio that goes nowhere", "stages:\n  speech: {task: enhance, input: 'capture[0]'}\n",
     "stage 'speech': the audio of task 'enhance' goes nowhere", "wav"),
    ("a WAV of events", "stages:\n  doa: {task: seld, sinks: [{wav: doa.wav}]}\n",
     "stage 'doa': field 'sinks': task 'seld' returns events, not audio, so it cannot go to wav", "jsonl"),
    ("a misspelt field", "stages:\n  words: {task: caption, input: 'capture[0]', evry: 5s}\n",
     "stage 'words': unknown field 'evry'", "did you mean 'every'?"),
    ("a bad duration", "stages:\n  words: {task: caption, input: 'capture[0]', every: five seconds}\n",
     "stage 'words': field 'every' must be a duration such as 5s or 500ms, got 'five seconds'", "500ms"),
    ("a bad policy", "stages:\n  doa: {task: seld, drop: sometimes}\n",
     "stage 'doa': field 'drop' must be never or skip", "skip"),
    ("a bad input", "stages:\n  doa: {task: seld, input: 'capture[one]'}\n",
     "stage 'doa': field 'input' must list 0-based channel numbers", "capture[0]"),
    ("a channel the capture lacks", "stages:\n  speech: {task: enhance, input: 'capture[4]', sinks: [{wav: s.wav}]}\n",
     "stage 'speech': field 'input' picks channel 4 of the capture (respeaker-4mic, 4 mics), which has channels 0-3",
     "0-based"),
    ("an unknown sink", "stages:\n  doa: {task: seld, sinks: [{midi: out.mid}]}\n",
     "stage 'doa': field 'sinks': unknown sink 'midi' for task 'seld'", "dcase"),
]


@pytest.mark.parametrize("text, message, hint", [case[1:] for case in BAD_SPECS], ids=[case[0] for case in BAD_SPECS])
def test_bad_spec_gives_one_error_naming_the_stage(tmp_path, text, message, hint):
    spec = tmp_path / "bad.yaml"
    spec.write_text(text)
    started = time.monotonic()
    result = cli("run", spec, "--input", SCENE)
    assert result.exit_code == 2, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    hints = [line for line in result.stderr.splitlines() if line.startswith("hint:")]
    assert len(errors) == 1 and f"bad.yaml: {message}" in errors[0], result.stderr
    assert len(hints) == 1 and hint in hints[0], result.stderr
    assert "exporting" not in result.stderr and time.monotonic() - started < 10  # no model was loaded


def test_a_stage_naming_a_broken_bundle_is_refused_naming_the_stage(tmp_path):
    (tmp_path / "broken.eab").write_bytes(b"not a tar")
    spec = tmp_path / "bad.yaml"
    spec.write_text("stages:\n  doa: {task: seld}\n  other: {task: ./broken.eab}\n")
    result = cli("run", spec, "--input", SCENE)
    assert result.exit_code == 1, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "bad.yaml: stage 'other': broken.eab is not a bundle archive" in errors[0], errors
    assert "hint: download or copy the archive again" in result.stderr and not result.stdout


def test_a_field_given_twice_names_it_and_its_line(tmp_path):
    spec = tmp_path / "twice.yaml"
    spec.write_text("stages:\n  doa: {task: seld}\n  doa: {task: seld}\n")
    result = cli("run", spec)
    assert result.exit_code == 2
    assert "twice.yaml: 'doa' appears twice (line 3)" in result.stderr and "hint: a stage name" in result.stderr


def test_the_shipped_spec_reads_as_documented():
    from edgeaudio.live.pipeline_spec import CAPTURE, InputRef, SinkSpec, load_spec

    spec = load_spec(EXAMPLE)
    assert [stage.name for stage in spec.stages] == ["seld", "enhance", "caption"]
    seld, enhance, caption = spec.stages
    assert spec.capture.array == "respeaker-4mic"
    assert seld.input == InputRef(CAPTURE, None, False, "capture") and seld.drop == "never"
    assert enhance.input == InputRef(CAPTURE, (0,), False, "capture[0]")
    assert enhance.sinks == (SinkSpec("wav", "home-monitor-enhanced.wav"),)
    assert caption.input.source == "enhance" and caption.every == 5.0 and caption.drop == "skip"
    assert [stage.name for stage in spec.readers("enhance")] == ["caption"]


def test_pipeline_help_lists_its_options():
    result = cli("run", EXAMPLE, "--help")
    assert result.exit_code == 0
    assert "PIPELINE.yaml" in result.output and "--realtime" in result.output and "--stats" in result.output


# --- the shipped pipeline on the shipped scene: each stage as if it ran alone --------------------


@pytest.mark.slow
def test_each_stage_equals_the_stage_alone_on_the_scene(tmp_path, monkeypatch):
    """The home-monitor pipeline from the scene file, and each task run alone by ``edgeaudio run``
    on the same input: SELD on the 4-channel scene, enhancement on its channel 0, captions (5 s
    windows) on the enhanced audio. Results equal exactly; timestamps rise; nothing dropped."""
    monkeypatch.chdir(tmp_path)
    backend = ("--backend", "onnxruntime", "--precision", "fp32")
    result = cli("run", EXAMPLE, "--input", SCENE, "--json", "--stats", *backend)
    assert result.exit_code == 0, result.output
    lines, summary = stream_lines(result.stdout)

    audio, rate = sf.read(str(SCENE), dtype="float32")
    sf.write(str(tmp_path / "mic0.wav"), audio[:, 0], rate, subtype="FLOAT")
    alone = {
        "seld": cli("run", "seld", "--input", SCENE, "-o", tmp_path / "seld.jsonl", *backend),
        "enhance": cli("run", "enhance", "--input", tmp_path / "mic0.wav", "-o", tmp_path / "enhanced.wav", *backend),
        "caption": cli("run", "caption", "--input", tmp_path / "enhanced.wav", "--every", "5", "-o",
                       tmp_path / "captions.jsonl", *backend),
    }  # fmt: skip
    for name, run in alone.items():
        assert run.exit_code == 0, f"{name}: {run.output}"

    def jsonl(path: Path) -> list[dict]:
        return [json.loads(line) for line in path.read_text().splitlines()]

    assert [line["result"] for line in by_stage(lines, "seld")] == jsonl(tmp_path / "seld.jsonl")
    assert len(by_stage(lines, "seld")) == 200
    piped, _ = sf.read(str(tmp_path / "home-monitor-enhanced.wav"), dtype="float32")
    single, _ = sf.read(str(tmp_path / "enhanced.wav"), dtype="float32")
    assert piped.shape == single.shape == (20 * rate,) and np.array_equal(piped, single)
    captions = [line["result"] for line in by_stage(lines, "caption")]
    assert captions == jsonl(tmp_path / "captions.jsonl") and len(captions) == 4
    assert all(caption["caption"] for caption in captions)

    for stage in ("seld", "caption"):
        times = [line["time_s"] for line in by_stage(lines, stage)]
        assert times == sorted(set(times)), f"{stage}: timestamps must rise"
    assert [line["time_s"] for line in by_stage(lines, "caption")] == [5.0, 10.0, 15.0, 20.0]
    assert summary["drops"] == 0 and summary["capture"]["dropped_samples"] == 0 and not summary["fell_behind"]
    for name, stage in summary["stages"].items():
        assert stage["drops"] == 0 and stage["audio_seconds"] == 20.0, name
    assert summary["stages"]["enhance"]["results"] == 201  # 200 chunks and the flush of the filter's tail
    assert "stage    task" in result.stderr and "fell behind real time: no" in result.stderr


@pytest.mark.slow
def test_a_beam_of_the_mics_feeds_a_mono_model(tmp_path, monkeypatch):
    """``beam(capture)``: the mean of the array's mics, as if that mean were the input file."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "beam.yaml").write_text(
        "stages:\n  speech: {task: enhance, input: beam(capture), sinks: [{wav: beam.wav}]}\n")
    backend = ("--backend", "onnxruntime", "--precision", "fp32")
    piped = cli("run", tmp_path / "beam.yaml", "--input", SCENE, "--json", *backend)
    assert piped.exit_code == 0, piped.output
    audio, rate = sf.read(str(SCENE), dtype="float32")
    sf.write(str(tmp_path / "mean.wav"), audio.mean(axis=1, dtype=np.float32), rate, subtype="FLOAT")
    alone = cli("run", "enhance", "--input", tmp_path / "mean.wav", "-o", tmp_path / "alone.wav", *backend)
    assert alone.exit_code == 0, alone.output
    beamed, _ = sf.read(str(tmp_path / "beam.wav"), dtype="float32")
    single, _ = sf.read(str(tmp_path / "alone.wav"), dtype="float32")
    assert len(beamed) == 20 * rate and np.array_equal(beamed, single)
    assert json.loads(piped.stdout.splitlines()[-1])["summary"]["stages"]["speech"]["input"] == "beam(capture)"


# --- scheduling, with tiny tasks made slow on purpose --------------------------------------------


class SlowClipTask(TinyClipTask):
    """The tiny whole-clip task with a model that takes ``seconds_per_window`` per window."""

    name = "tiny-slow"
    seconds_per_window = 1.0

    def process(self, runner, audio):
        time.sleep(type(self).seconds_per_window)
        return super().process(runner, audio)


class SlowStreamTask(TinyTask):
    """The tiny streaming task whose decode takes ``seconds_per_call`` per call."""

    name = "tiny-slow-stream"
    seconds_per_call = 0.2

    def decode(self, outputs, start_frame=0):
        time.sleep(type(self).seconds_per_call)
        return super().decode(outputs, start_frame)


class NanStreamTask(TinyTask):
    """The tiny streaming task whose results turn NaN from frame ``nan_from`` on: a model gone bad."""

    name = "tiny-nan"
    nan_from = 50

    def decode(self, outputs, start_frame=0):
        rows = super().decode(outputs, start_frame)
        return [{**row, "level": float("nan") if row["frame"] >= self.nan_from else 0.0} for row in rows]


class TinyPipelinePlugin:
    """The tiny tasks and a two-mic array profile for them."""

    def __init__(self, profiles: Path):
        self.profiles = profiles

    @hookimpl
    def register_tasks(self, register):
        for cls in (TinyTask, SlowClipTask, SlowStreamTask, NanStreamTask):
            register(cls)

    @hookimpl
    def register_profiles(self, register):
        register(str(self.profiles))


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory):
    """The plugin (registered while the fixture lives) and a bundle of each tiny task."""
    from edgeaudio.api import export
    from edgeaudio.testing import registered_plugin

    root = tmp_path_factory.mktemp("pipeline-tiny")
    (root / "profiles").mkdir()
    (root / "profiles" / "pipe-test.yaml").write_text(
        "kind: array\nfamily: pipe-test\ndescription: two mics for the pipeline tests\nfamily_default: true\n"
        "positions: [[-0.05, 0.0, 0.0], [0.05, 0.0, 0.0]]\nchannel_map: [0, 1]\nnative_rate: 8000\n"
        "capture_channels: 2\nsample_format: float32\nportaudio_pattern: '^no-such-device$'\n"
    )
    with registered_plugin(TinyPipelinePlugin(root / "profiles"), "pipeline-tiny"):
        for task in ("tiny", "tiny-slow", "tiny-slow-stream", "tiny-nan"):
            export(task, target="x86-cpu", precisions=["fp32"], backends=["onnxruntime"], output=root / task,
                   log=lambda message: None)
        yield root


def tiny_input(path: Path, seconds: float) -> Path:
    t = np.arange(round(seconds * TINY_RATE)) / TINY_RATE
    noise = 0.05 * np.random.default_rng(0).standard_normal((t.size, 2))
    sf.write(str(path), (0.3 * np.sin(2 * np.pi * 700 * t)[:, None] + noise).astype(np.float32), TINY_RATE,
             subtype="FLOAT")
    return path


def tiny_pipeline(tmp_path: Path, root: Path, stages: str):
    from edgeaudio.api import pipeline

    spec = tmp_path / "tiny.yaml"
    spec.write_text("capture: {array: pipe-test}\nstages:\n" + stages.format(root=root))
    return pipeline(spec, backend="onnxruntime", log=lambda message: None)


class Collected:
    """``on_result`` for a run: every result with its stage and time."""

    def __init__(self):
        self.rows: list[tuple[str, float, dict]] = []

    def __call__(self, stage, time_s, result):
        self.rows.append((stage, time_s, result))

    def of(self, stage: str) -> list[tuple[float, dict]]:
        return [(time_s, result) for name, time_s, result in self.rows if name == stage]


def test_a_slow_stage_skips_windows_counted_while_the_others_keep_real_time(tiny_world, tmp_path, monkeypatch):
    monkeypatch.setattr(SlowClipTask, "seconds_per_window", 1.0)  # a 0.5 s window takes 1 s: RTF 2
    pipe = tiny_pipeline(tmp_path, tiny_world, "  fast: {{task: {root}/tiny}}\n"
                         "  slow: {{task: {root}/tiny-slow, every: 0.5s, queue: 0.5s, drop: skip}}\n")
    results, messages = Collected(), []
    summary = pipe.run(tiny_input(tmp_path / "in.wav", 4.0), realtime=True, on_result=results, log=messages.append)

    fast, slow = summary["stages"]["fast"], summary["stages"]["slow"]
    frames = [result["frame"] for _, result in results.of("fast")]
    assert frames == list(range(400))  # 4 s at 8 kHz in 80-sample blocks: every frame, in order
    assert nondecreasing([time_s for time_s, _ in results.of("fast")])
    assert fast["drops"] == 0 and not fast["fell_behind"] and fast["processing_rtf"] < 0.5
    assert fast["latency_ms"]["p95"] < 150, fast["latency_ms"]  # a 100 ms chunk's result out well within real time

    assert slow["drops"] >= 2 and slow["results"] + slow["drops"] == 8, slow
    assert slow["dropped_seconds"] == 0.5 * slow["drops"] and slow["fell_behind"]
    assert summary["drops"] == slow["drops"] and summary["fell_behind"] and summary["capture"]["dropped_samples"] == 0
    spans = [(result["start_s"], result["end_s"], time_s) for time_s, result in results.of("slow")]
    assert all(end - start == 0.5 and end == time_s and start * 2 == int(start * 2) for start, end, time_s in spans)
    assert [start for start, _, _ in spans] == sorted(set(start for start, _, _ in spans))
    warnings = [m for m in messages if m.startswith("warning: stage 'slow' is falling behind real time: skipped")]
    assert warnings and "window" in warnings[0]


def test_a_stage_that_never_drops_loses_nothing_and_says_it_fell_behind(tiny_world, tmp_path, monkeypatch):
    monkeypatch.setattr(SlowClipTask, "seconds_per_window", 0.4)  # a 0.25 s window takes 0.4 s
    pipe = tiny_pipeline(tmp_path, tiny_world, "  fast: {{task: {root}/tiny}}\n"
                         "  slow: {{task: {root}/tiny-slow, every: 0.25s, queue: 0.25s, drop: never}}\n")
    results, messages = Collected(), []
    summary = pipe.run(tiny_input(tmp_path / "in.wav", 2.0), realtime=True, on_result=results, log=messages.append)

    slow = summary["stages"]["slow"]
    assert slow["drops"] == 0 and slow["results"] == 8 and slow["audio_seconds"] == 2.0
    assert [result["start_s"] for _, result in results.of("slow")] == [0.25 * k for k in range(8)]
    assert slow["waited_seconds"] > 0 and slow["fell_behind"] and summary["fell_behind"]
    assert [result["frame"] for _, result in results.of("fast")] == list(range(200))
    assert any("stage 'slow' is falling behind real time: its queue is full" in m for m in messages)


def test_a_streaming_stage_that_skips_starts_again_after_the_gap(tiny_world, tmp_path, monkeypatch):
    monkeypatch.setattr(SlowStreamTask, "seconds_per_call", 0.2)  # 0.2 s per 100 ms chunk: RTF 2
    pipe = tiny_pipeline(tmp_path, tiny_world, "  slow: {{task: {root}/tiny-slow-stream, queue: 0.3s, drop: skip}}\n")
    results = Collected()
    summary = pipe.run(tiny_input(tmp_path / "in.wav", 3.0), realtime=True, on_result=results, log=lambda message: None)

    slow = summary["stages"]["slow"]
    assert slow["drops"] >= 3 and slow["restarts"] >= 1 and slow["fell_behind"]
    assert slow["audio_seconds"] + slow["dropped_seconds"] == pytest.approx(3.0)
    times = sorted(set(time_s for time_s, _ in results.of("slow")))
    assert nondecreasing([time_s for time_s, _ in results.of("slow")])
    assert all(abs(t * 10 - round(t * 10)) < 1e-9 for t in times)  # ends of 100 ms capture chunks
    assert any(b - a > 0.15 for a, b in zip(times, times[1:]))  # the clock runs on across a gap
    frames = [result["frame"] for _, result in results.of("slow")]
    assert frames.count(0) == slow["restarts"] + 1  # each fresh stream numbers its frames from 0
    assert len(frames) == round(slow["audio_seconds"] * 100)


def test_a_stage_runs_on_its_thread_budget_and_chunk(tiny_world, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    pipe = tiny_pipeline(tmp_path, tiny_world, "  one: {{task: {root}/tiny, threads: 1, chunk: 250ms}}\n"
                         "  free: {{task: {root}/tiny, input: 'capture[1,0]', sinks: [{{jsonl: free.jsonl}}]}}\n")
    results = Collected()
    summary = pipe.run(tiny_input(tmp_path / "in.wav", 1.0), on_result=results, log=lambda message: None)
    assert pipe.sessions["one"].runner.backend.options.get("threads") == 1
    assert "threads" not in pipe.sessions["free"].runner.backend.options
    assert [result["frame"] for _, result in results.of("one")] == list(range(100))
    # at least 250 ms per model call: three 100 ms capture chunks at a time, then the rest
    assert sorted(set(time_s for time_s, _ in results.of("one"))) == [0.3, 0.6, 0.9, 1.0]
    assert summary["stages"]["free"]["results"] == 100 and not results.of("free")  # its own sink only
    assert len(Path("free.jsonl").read_text().splitlines()) == 100


def test_a_stage_gone_nan_fails_the_run_and_leaves_no_partial_file(tiny_world, tmp_path):
    """NaN in one stage's results is refused before any sink or stage sees it, and the failed run
    aborts every sink and the result stream: no file appears, hidden or not, not even the good
    stage's."""
    from edgeaudio.errors import ModelOutputError

    out = tmp_path / "out"
    out.mkdir()
    pipe = tiny_pipeline(tmp_path, tiny_world,
                         f"  good: {{{{task: {{root}}/tiny, sinks: [{{{{jsonl: {out}/good.jsonl}}}}]}}}}\n"
                         f"  bad: {{{{task: {{root}}/tiny-nan, sinks: [json, {{{{jsonl: {out}/bad.jsonl}}}}]}}}}\n")
    said = r"^stage 'bad': the model produced NaN after 0\.\d+ s of the stage's input"
    with pytest.raises(ModelOutputError, match=said) as failed:
        pipe.run(tiny_input(tmp_path / "in.wav", 2.0), output=str(out / "all.jsonl"), log=lambda message: None)
    assert failed.value.hint
    assert sorted(p.name for p in out.iterdir()) == []


def test_a_bundle_shared_by_stages_is_opened_and_verified_once(tiny_world, tmp_path, monkeypatch):
    """Checking the spec, finding the capture's array and opening the sessions all use one opened
    bundle: its files are hashed (and an archive unpacked) once, not once per step and stage."""
    import edgeaudio.bundle
    import edgeaudio.runtime

    opened = []

    def counted(location, *args, **kwargs):
        opened.append(Path(location))
        return real(location, *args, **kwargs)

    real = edgeaudio.bundle.load_bundle
    monkeypatch.setattr(edgeaudio.bundle, "load_bundle", counted)
    monkeypatch.setattr(edgeaudio.runtime, "load_bundle", counted)
    spec = tmp_path / "shared.yaml"
    spec.write_text(f"capture: {{array: pipe-test}}\nstages:\n  a: {{task: {tiny_world}/tiny}}\n"
                    f"  b: {{task: {tiny_world}/tiny, chunk: 200ms}}\n")
    from edgeaudio.api import pipeline

    pipe = pipeline(spec, backend="onnxruntime", log=lambda message: None)
    assert opened == [tiny_world / "tiny"]
    assert pipe.sessions["a"].bundle is pipe.sessions["b"].bundle and pipe.sessions["a"] is not pipe.sessions["b"]


class VanishingDevice(Source):
    """A live 2-mic source that delivers ``seconds`` of audio in 100 ms blocks, then is unplugged."""

    realtime = True

    def __init__(self, seconds: float):
        super().__init__(TINY_RATE, 2, "a device that goes away")
        self.blocks = round(seconds * 10)

    def _chunks(self):
        rng = np.random.default_rng(1)
        for _ in range(self.blocks):
            time.sleep(0.1)
            yield (0.1 * rng.standard_normal((2, TINY_RATE // 10))).astype(np.float32), time.monotonic()
        raise DeviceLost("input device 'test' stopped delivering audio", hint="check the cable")


def test_a_lost_device_ends_the_run_with_every_result_so_far(tiny_world, tmp_path, monkeypatch):
    monkeypatch.setattr(SlowClipTask, "seconds_per_window", 0.01)
    pipe = tiny_pipeline(tmp_path, tiny_world, "  fast: {{task: {root}/tiny}}\n"
                         "  clips: {{task: {root}/tiny-slow, every: 0.4s}}\n")
    results = Collected()
    summary = pipe.run(VanishingDevice(1.0), on_result=results, log=lambda message: None)
    assert summary["ended"] == "device_lost" and "stopped delivering audio" in summary["error"]
    assert summary["audio_seconds"] == 1.0 and summary["drops"] == 0
    assert [result["frame"] for _, result in results.of("fast")] == list(range(100))
    spans = [(result["start_s"], result["end_s"]) for _, result in results.of("clips")]
    assert spans == [(0.0, 0.4), (0.4, 0.8), (0.8, 1.0)]  # the last, partial window too


# --- live: the shipped pipeline on a real PortAudio device (PulseAudio null sink) ----------------


@pytest.fixture(scope="module")
def pulse_device(tmp_path_factory):
    """A private PulseAudio server with test_live_audio.py's 4-channel null sink, and the index of
    PortAudio's ``pulse`` device recording it."""
    from test_live_audio import pulse_server

    with pulse_server(tmp_path_factory.mktemp("pipeline-pulse")) as found:
        yield found


@pytest.mark.slow
def test_the_shipped_pipeline_keeps_real_time_on_a_live_device(pulse_device, tmp_path, monkeypatch):
    """The scene played into the null sink, captured through PortAudio as a ReSpeaker 4-mic
    array: all three stages give results, timestamps rise, nothing is dropped or late."""
    from edgeaudio.api import pipeline

    server, index = pulse_device
    monkeypatch.chdir(tmp_path)
    pipe = pipeline(EXAMPLE, array="respeaker-4mic", backend="onnxruntime", precision="fp32", log=lambda m: None)
    results, messages = Collected(), []
    source = pipe.open_source("mic", device_index=index)
    player = server.play(SCENE)
    try:
        summary = pipe.run(source, seconds=7.0, on_result=results, log=messages.append)
    finally:
        player.kill()
        player.wait()

    assert summary["ended"] == "seconds" and summary["audio_seconds"] == 7.0 and summary["error"] is None
    assert summary["capture"]["dropped_samples"] == 0 and summary["capture"]["input_overflows"] == 0
    assert summary["drops"] == 0 and not summary["fell_behind"], summary
    assert not [m for m in messages if m.startswith("warning:")]
    seld = results.of("seld")
    assert [result["frame"] for _, result in seld] == list(range(70))
    assert any(result["events"] for _, result in seld)  # the scene's sounds start 2.7 s in
    captions = results.of("caption")
    assert [(result["start_s"], result["end_s"]) for _, result in captions] == [(0.0, 5.0), (5.0, 7.0)]
    assert all(result["caption"] for _, result in captions)
    for stage in ("seld", "caption"):
        assert nondecreasing([time_s for time_s, _ in results.of(stage)])
    enhanced, rate = sf.read("home-monitor-enhanced.wav", dtype="float32")
    assert rate == 16000 and len(enhanced) == 7 * 16000
    for name, stage in summary["stages"].items():
        assert stage["drops"] == 0 and not stage["fell_behind"] and stage["processing_rtf"] < 1, (name, stage)
        assert stage["latency_ms"]["p95"] < 1000, (name, stage["latency_ms"])
