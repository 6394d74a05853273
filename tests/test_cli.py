"""The command line end to end on the tiny task: export -> run -> bench -> eval, listings, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from edgeaudio.backends.base import backends
from edgeaudio.cli import cli
from edgeaudio.exporters.base import export_targets
from edgeaudio.profiles import host_target


@pytest.fixture
def runner():
    return CliRunner()


def invoke(runner, *args):
    return runner.invoke(cli, [str(a) for a in args], catch_exceptions=False)


def test_plugins_json(runner):
    result = invoke(runner, "plugins", "--json")
    assert result.exit_code == 0
    data = json.loads(result.output)
    assert any(p["name"] == "backend.onnxruntime" and p["hooks"] == ["register_backends"] for p in data["plugins"])
    assert data["failed"] == []


def test_devices_lists_profiles_and_host(runner):
    result = invoke(runner, "devices", "--json")
    data = json.loads(result.output)
    names = {p["name"] for p in data["profiles"]}
    assert {"jetson-orin-nano", "x86-cpu", "rpi5", "respeaker-4mic", "minidsp-uma8", "mono"} <= names
    host = host_target()[0].name
    assert data["host"]["profile"] == host
    human = invoke(runner, "devices").output
    assert "respeaker-6mic" in human and f"this host: {host}" in human


def test_doctor_reports_backends_and_why_not(runner):
    data = json.loads(invoke(runner, "doctor", "--json").output)
    assert data["host_profile"]["name"] == host_target()[0].name
    for section, registered in (("backends", backends()), ("export_targets", export_targets())):
        status = {row["name"]: row for row in data[section]}
        assert set(status) == set(registered)
        for name, cls in registered.items():
            ok, why = cls.available()
            assert status[name]["ok"] is ok, f"{section} {name}: doctor says {status[name]}, available() says {ok} ({why})"
            assert status[name]["ok"] or status[name]["why"], f"{section} {name} is unavailable without a reason"
    backend_ok = {row["name"]: row["ok"] for row in data["backends"]}
    assert backend_ok["onnxruntime"]  # a core dependency: every host has it
    assert {"onnxruntime", "openvino", "tensorrt", "torch"} <= set(backend_ok)
    assert {row["name"] for row in data["export_targets"]} >= {"onnxruntime", "openvino", "tensorrt"}


def _write_wav(path, audio, rate):
    import soundfile as sf

    sf.write(str(path), audio.T, rate)
    return path


def test_export_run_bench_eval(runner, tiny_plugin, tmp_path):
    bundle = tmp_path / "tiny"
    result = invoke(runner, "export", "tiny", "--target", "x86", "--precision", "fp32", "--precision", "int8", "-o", bundle, "--archive")
    assert result.exit_code == 0, result.output
    assert "x86-cpu" in result.output and (tmp_path / "tiny.eab").is_file()

    wav = _write_wav(tmp_path / "in.wav", tiny_plugin._clip(4, blocks=25), 8000)
    streamed = invoke(runner, "run", bundle, "-i", wav, "--backend", "onnxruntime", "--precision", "fp32")
    offline = invoke(runner, "run", bundle, "-i", wav, "--backend", "onnxruntime", "--precision", "fp32", "--offline")
    assert streamed.exit_code == 0 and offline.exit_code == 0
    stream_lines = [json.loads(line) for line in streamed.stdout.splitlines()]
    offline_lines = [json.loads(line) for line in offline.stdout.splitlines()]
    assert [line["frame"] for line in stream_lines] == list(range(25))
    assert stream_lines == offline_lines

    report = json.loads(invoke(runner, "bench", bundle, "--seconds", "2", "--json").stdout)
    rows = {(r["backend"], r["precision"]): r for r in report["rows"]}
    assert set(rows) >= {("torch", "fp32"), ("onnxruntime", "fp32"), ("openvino", "int8")}
    assert rows[("torch", "fp32")]["speedup_vs_torch"] == 1.0
    assert rows[("onnxruntime", "fp32")]["parity_max_abs"] < 1e-5
    assert all(r["p50_ms"] > 0 and r["p99_ms"] >= r["p50_ms"] and r["rtf"] > 0 and r["peak_rss_mb"] > 0 for r in rows.values())
    # each row in its own process (the in-process tiny plugin registered there too), the runtime
    # timed against its backend's own calls on the same inputs, whole clip and one block at a time
    assert report["peak_rss_isolated"] and rows[("onnxruntime", "fp32")]["chunk_ms"] == 10.0
    for name in ("onnxruntime", "openvino"):
        assert rows[(name, "fp32")]["overhead_clip"] > 0.5 and rows[(name, "fp32")]["overhead_stream"] > 0.5
    assert rows[("torch", "fp32")]["overhead_clip"] is None

    metrics = json.loads(invoke(runner, "eval", bundle, "--backend", "openvino", "--precision", "int8", "--json").stdout)
    assert metrics["metrics"]["agreement_db"] > 40


def test_run_resamples_files_and_says_so(runner, tiny_bundle, tiny_plugin, tmp_path):
    import soxr

    audio = tiny_plugin._clip(4, blocks=25)
    wav = _write_wav(tmp_path / "in16k.wav", soxr.resample(audio.T, 8000, 16000).T, 16000)
    result = invoke(runner, "run", tiny_bundle, "-i", wav, "--backend", "onnxruntime", "--precision", "fp32")
    assert result.exit_code == 0
    assert "resampled in16k.wav from 16000 Hz to 8000 Hz" in result.stderr


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda p: _write_wav(p, np.zeros((1, 800), np.float32), 8000), "expects 2"),
        (lambda p: p.write_bytes(b"RIFF....WAVEjunk") and p, "cannot read"),
        (lambda p: _write_wav(p, np.zeros((2, 0), np.float32), 8000), "no samples"),
    ],
)
def test_bad_input_file_gives_one_line_and_exit_2(runner, tiny_bundle, tiny_plugin, tmp_path, make, message):
    path = tmp_path / "bad.wav"
    make(path)
    result = invoke(runner, "run", tiny_bundle, "-i", path)
    assert result.exit_code == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and message in errors[0]
    assert "Traceback" not in result.output


def test_tampered_bundle_exits_1_with_hint(runner, tiny_bundle, tiny_plugin, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(tiny_bundle, copy)
    next(copy.glob("openvino/*.xml")).write_text("<evil/>")
    result = invoke(runner, "run", copy, "-i", tmp_path / "missing.wav")
    assert result.exit_code == 1
    assert "was modified" in result.stderr and "hint:" in result.stderr


def test_unknown_task_and_target_are_usage_errors(runner, tiny_plugin):
    assert invoke(runner, "export", "nope").exit_code == 2
    result = invoke(runner, "export", "tiny", "--target", "toaster")
    assert result.exit_code == 2 and "toaster" in result.stderr


def test_debug_shows_traceback(runner, tiny_plugin):
    from edgeaudio.errors import UsageError

    with pytest.raises(UsageError):
        runner.invoke(cli, ["--debug", "export", "nope"], catch_exceptions=False)
