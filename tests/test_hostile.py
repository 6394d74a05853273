"""Hostile input, as a careless user and as an attacker would give it: each case asserts the exact
outcome (the error line and its hint, the exit code), that the inputs are intact, and that
nothing is left behind in the output folder or the cache.

Families: data loss (outputs that would clobber inputs, failed runs, killed exports), silent
nonsense (numeric options, NaN, input the model cannot mean anything for), Unix manners (broken
pipe, SIGTERM, a folder named like a task), bundles (archives, manifests, signatures), plugins,
the cache, and messages. Most cases run the CLI in-process on the tiny task's bundle; the few
that need signals, pipes or a fresh import of the plugins run it as a subprocess, with the tiny
task installed there through a real entry point.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgeaudio import registry
from edgeaudio.bundle import MANIFEST, sha256_file, write_manifest
from edgeaudio.cli import cli
from edgeaudio.hookspecs import hookimpl

sf = pytest.importorskip("soundfile")
TESTS = Path(__file__).parent


# -- helpers ---------------------------------------------------------------------------------------


def invoke(*args, env=None):
    return CliRunner(env=env).invoke(cli, [str(a) for a in args], catch_exceptions=False, prog_name="edgeaudio")


def refused(result, code: int, error: str, hint: str | None = None) -> None:
    """One ``error:`` line equal to (or, for long paths, starting with) ``error``, a ``hint:``
    line, exit ``code``, and nothing that looks like a bug."""
    lines = result.stderr.splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    hints = [line for line in lines if line.startswith("hint: ")]
    assert result.exit_code == code, result.stderr
    assert len(errors) == 1 and errors[0].startswith(f"error: {error}"), result.stderr
    assert len(hints) == 1, result.stderr
    if hint is not None:
        assert hints[0] == f"hint: {hint}", hints[0]
    assert "looks like a bug" not in result.stderr and "Traceback" not in result.output


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def listing(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")) if folder.exists() else []


def wav(path: Path, audio, rate: int = 8000, subtype: str = "FLOAT") -> Path:
    sf.write(str(path), np.asarray(audio, np.float32).T, rate, subtype=subtype)
    return path


@pytest.fixture
def clip(tiny_plugin, tmp_path) -> Path:
    """A 2-channel 8 kHz input for the tiny task (0.3 s)."""
    return wav(tmp_path / "in.wav", tiny_plugin._clip(4, blocks=30))


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """A fresh, empty cache for this test only, so anything left in it shows."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("EDGEAUDIO_CACHE", str(folder))
    return folder


@pytest.fixture
def bundle(tiny_bundle, tmp_path) -> Path:
    copy = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, copy)
    return copy


@pytest.fixture
def site(tmp_path):
    """A folder on a subprocess's PYTHONPATH holding plugin modules and one distribution whose
    entry points name them (``tiny`` is always there); returns ``add(name, code)`` and the env."""
    folder = tmp_path / "site"
    folder.mkdir()
    entries = {"tiny": "tiny_task"}

    def write():
        dist = folder / "hostile_plugins-0.1.dist-info"
        dist.mkdir(exist_ok=True)
        (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: hostile-plugins\nVersion: 0.1\n")
        (dist / "entry_points.txt").write_text("[edgeaudio]\n" + "".join(f"{k} = {v}\n" for k, v in entries.items()))

    def add(name: str, code: str) -> None:
        (folder / f"{name}.py").write_text(textwrap.dedent(code))
        entries[name] = name
        write()

    write()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(folder), str(TESTS)])}
    return add, env


def run_cli(env, *args, **kwargs):
    return subprocess.run([sys.executable, "-m", "edgeaudio.cli", *map(str, args)], env=env, capture_output=True,
                          text=True, timeout=300, **kwargs)


# -- data loss -------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["--stream", "--offline"])
def test_output_equal_to_input_is_refused(tiny_bundle, clip, mode):
    before, folder = digest(clip), listing(clip.parent)
    result = invoke("run", tiny_bundle, "-i", clip, "-o", clip, mode)
    refused(result, 2, f"--output {clip} is the same file as --input; writing it would destroy that file",
            "write the results to another file than --input")
    assert digest(clip) == before and listing(clip.parent) == folder


def test_output_through_a_hard_link_or_dotdot_to_the_input_is_refused(tiny_bundle, clip):
    os.link(clip, clip.with_name("link.wav"))
    (clip.parent / "sub").mkdir()
    before, folder = digest(clip), listing(clip.parent)
    for target in (clip.with_name("link.wav"), clip.parent / "sub" / ".." / clip.name):
        result = invoke("run", tiny_bundle, "-i", clip, "-o", target)
        refused(result, 2, f"--output {target} is the same file as --input")
    assert digest(clip) == before and listing(clip.parent) == folder


def test_output_through_a_symlink_to_the_input_is_refused(tiny_bundle, clip):
    link = clip.with_name("link.jsonl")
    link.symlink_to(clip)
    before = digest(clip)
    refused(invoke("run", tiny_bundle, "-i", clip, "-o", link), 2, f"--output {link} is the same file as --input")
    assert digest(clip) == before and link.is_symlink()


@pytest.mark.skipif(not Path("/dev/full").is_char_device(), reason="needs Linux's /dev/full")
def test_a_full_device_as_output_is_written_in_place_and_survives(tiny_bundle, clip):
    """Writing beside the target and renaming would replace a device node (as root): a target
    that is no regular file is written directly, so /dev/full reports a full disk, and stays."""
    result = invoke("run", tiny_bundle, "-i", clip, "-o", "/dev/full")
    refused(result, 1, "No space left on device", "check the path, its permissions and the free space")
    assert Path("/dev/full").is_char_device() and not list(Path("/dev").glob(".full.*.partial"))


def test_output_inside_the_bundle_is_refused(bundle, clip):
    before = listing(bundle)
    manifest = digest(bundle / MANIFEST)
    result = invoke("run", bundle, "-i", clip, "-o", bundle / MANIFEST)
    refused(result, 2, f"--output {bundle / MANIFEST} is inside the bundle ({bundle.resolve()}); writing it would change that")
    assert listing(bundle) == before and digest(bundle / MANIFEST) == manifest


def test_nan_in_the_input_stops_the_run_and_keeps_the_old_output(tiny_bundle, tiny_plugin, tmp_path):
    audio = tiny_plugin._clip(4, blocks=30)
    audio[:, 1000] = np.nan
    source = wav(tmp_path / "nan.wav", audio)
    old = tmp_path / "results.jsonl"
    old.write_text('{"previous": "results"}\n')
    folder = listing(tmp_path)
    result = invoke("run", tiny_bundle, "-i", source, "-o", old)
    refused(result, 2, "file nan.wav holds NaN or infinite samples (at 0.10 s)",
            "check the recording; no result can come of such samples")
    assert old.read_text() == '{"previous": "results"}\n' and listing(tmp_path) == folder


class NanTask:
    """Built lazily (tiny_task imports torch): the tiny task whose decoded results hold NaN."""

    @staticmethod
    def make():
        import tiny_task

        class TinyNan(tiny_task.TinyTask):
            name = "tiny-nan"

            def decode(self, outputs, start_frame=0):
                return [{"frame": item["frame"], "score": float("nan")} for item in super().decode(outputs, start_frame)]

        return TinyNan


@pytest.fixture(scope="module")
def nan_bundle(tmp_path_factory):
    from edgeaudio.api import export
    from edgeaudio.testing import registered_plugin

    task = NanTask.make()

    class Plugin:
        @hookimpl
        def register_tasks(self, register):
            register(task)

    plugin = Plugin()
    out = tmp_path_factory.mktemp("nan") / "tiny-nan"
    with registered_plugin(plugin, "tiny-nan"):
        export("tiny-nan", target="x86-cpu", precisions=["fp32"], backends=["onnxruntime"], output=out, log=lambda m: None)
        yield out


@pytest.mark.parametrize("mode, where", [("--stream", " after 0.10 s of input"), ("--offline", "")])
def test_nan_results_are_an_error_and_leave_no_file(nan_bundle, clip, tmp_path, mode, where):
    out = tmp_path / "out" / "results.jsonl"
    result = invoke("run", nan_bundle, "-i", clip, "-o", out, mode)
    refused(result, 1, f"the model produced NaN{where}; nothing more was written and partial files were removed")
    assert listing(tmp_path / "out") == []


def test_a_killed_exports_staging_is_removed_by_the_next_export(tiny_plugin, tmp_path):
    from edgeaudio.api import export

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".export-{int(dead.stdout)}-abc123"
    live = tmp_path / f".export-{os.getpid()}-def456"  # this process: alive, so not touched
    for folder in (stale, live):
        (folder / "onnx").mkdir(parents=True)
    export("tiny", target="x86-cpu", precisions=["fp32"], backends=["onnxruntime"], output=tmp_path / "b", log=lambda m: None)
    assert listing(tmp_path).count(f".export-{os.getpid()}-def456") == 1
    assert not stale.exists() and (tmp_path / "b" / MANIFEST).is_file()
    shutil.rmtree(live)


def test_an_interrupted_export_leaves_nothing(tiny_plugin, tmp_path):
    from edgeaudio.api import export

    def interrupt(message):
        if "torch -> ONNX" in message:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        export("tiny", target="x86-cpu", precisions=["fp32"], output=tmp_path / "b", log=interrupt)
    assert listing(tmp_path) == []


# -- silent nonsense -------------------------------------------------------------------------------


@pytest.mark.parametrize("value, error", [
    ("0", "0.0 is not in the range 1<=x<=60000."),
    ("-5", "-5.0 is not in the range 1<=x<=60000."),
    ("nan", "'nan' is not a finite number."),
    ("inf", "inf is not in the range 1<=x<=60000."),
    ("1e9", "1000000000.0 is not in the range 1<=x<=60000."),
])  # fmt: skip
def test_chunk_ms_must_be_a_sane_number(tiny_bundle, clip, value, error):
    result = invoke("run", tiny_bundle, "-i", clip, "--chunk-ms", value)
    refused(result, 2, f"Invalid value for '--chunk-ms': {error}", "see `edgeaudio run --help`")


@pytest.mark.parametrize("option, value, error", [
    ("--seconds", "nan", "'nan' is not a finite number."),
    ("--seconds", "0", "0.0 is not in the range 0<x<=86400."),
    ("--every", "0.001", "0.001 is not in the range 0.1<=x<=3600."),
    ("--device-index", "-1", "-1 is not in the range 0<=x<=4095."),
])  # fmt: skip
def test_core_options_are_bounded(tiny_bundle, clip, option, value, error):
    refused(invoke("run", tiny_bundle, "-i", clip, option, value), 2, f"Invalid value for '{option}': {error}")


@pytest.mark.parametrize("option, value, error", [
    ("--steps", "100000", "100000 is not in the range 1<=x<=64."),
    ("--guidance", "nan", "'nan' is not a finite number."),
    ("--guidance", "1e30", "1e+30 is not in the range 0.0<=x<=50.0."),
    ("--candidates", "1000", "1000 is not in the range 1<=x<=8."),
])  # fmt: skip
def test_text_to_audio_options_are_bounded_before_any_work(tmp_path, cache, option, value, error):
    result = invoke("run", "tta", "a horn honks", option, value, "-o", tmp_path / "out.wav")
    refused(result, 2, f"Invalid value for '{option}': {error}")
    assert listing(tmp_path) == []  # no output, and no model exported into the cache


def test_a_window_shorter_than_the_task_needs_is_refused_before_any_work(tmp_path, cache):
    source = wav(tmp_path / "mono.wav", np.zeros((1, 16000)), 16000)
    result = invoke("run", "caption", "-i", source, "--every", "0.5")
    refused(result, 2, "--every 0.5 is shorter than the 1 s task 'caption' needs to mean anything", "use --every 1 or more")
    assert listing(cache) == []


@pytest.mark.parametrize("mode", ["--stream", "--offline"])
@pytest.mark.parametrize("make, warning", [
    (lambda c: c[:, :5], "warning: file {name} lasts 0.6 ms, shorter than the 10 ms the model needs to mean anything; "
                         "do not trust the results"),
    (lambda c: np.clip(c * 40, -1, 1), "sit at full scale: clipped audio; results may be unreliable"),
    (lambda c: c * 1e6, "e+05, above full scale (1.0), from 0.00 s: overloaded audio; results may be meaningless"),
])  # fmt: skip
def test_input_the_model_cannot_mean_anything_for_is_said(tiny_bundle, tiny_plugin, tmp_path, mode, make, warning):
    source = wav(tmp_path / "odd.wav", make(tiny_plugin._clip(4, blocks=30)))
    result = invoke("run", tiny_bundle, "-i", source, mode)
    assert result.exit_code == 0, result.stderr
    said = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
    assert len(said) == 1 and warning.format(name=source.name) in said[0], result.stderr


def test_a_header_that_promises_more_than_the_file_holds_is_said(tiny_bundle, tiny_plugin, tmp_path):
    full = wav(tmp_path / "full.wav", tiny_plugin._clip(4, blocks=300), subtype="PCM_16")
    cut = tmp_path / "cut.wav"
    cut.write_bytes(full.read_bytes()[: 44 + 4 * 500])  # the header claims 3 s, 500 frames remain
    for mode in ("--stream", "--offline"):
        result = invoke("run", tiny_bundle, "-i", cut, mode)
        assert result.exit_code == 0
        assert ("warning: the header of cut.wav claims 96000 bytes of audio but the file holds 2000 (truncated?); "
                "using the 500 frame(s) present (0.062 s)") in result.stderr


# -- Unix manners ----------------------------------------------------------------------------------


def test_a_closed_pipe_ends_the_run_quietly(site, tiny_bundle, tiny_plugin, tmp_path):
    _, env = site
    long = wav(tmp_path / "long.wav", tiny_plugin._clip(4, blocks=4000))
    command = f"{sys.executable} -m edgeaudio.cli run {tiny_bundle} -i {long} 2>{tmp_path / 'err'} | head -1"
    done = subprocess.run(["bash", "-c", f"set -o pipefail; {command} > /dev/null; echo ${{PIPESTATUS[0]}}"],
                          env=env, capture_output=True, text=True, timeout=300)
    stderr = (tmp_path / "err").read_text()
    assert done.stdout.strip() == "1"
    assert "error" not in stderr.lower() and "Traceback" not in stderr and "Exception ignored" not in stderr


TWO_MICS = """
kind: array
family: two-mic-test
family_default: true
description: two microphones no machine has
positions: [[-0.05, 0.0, 0.0], [0.05, 0.0, 0.0]]
channel_map: [0, 1]
capture_channels: 2
native_rate: 8000
sample_format: int16
portaudio_pattern: "^no such device at all$"
"""

SLOW_SOURCE = """
    import time
    from pathlib import Path

    import numpy as np
    from edgeaudio.hookspecs import hookimpl
    from edgeaudio.live.sources import Source, SourceKind

    class Slow(Source):
        realtime = True

        def __init__(self, request):
            super().__init__(request.sample_rate, request.channels, "a slow test tone")

        def _chunks(self):
            while True:
                time.sleep(0.05)
                yield np.full((self.channels, 400), 0.1, np.float32), time.monotonic()

    @hookimpl
    def register_sources(register):
        register(SourceKind("slow", "an endless paced tone", Slow))

    @hookimpl
    def register_profiles(register):
        register(str(Path(__file__).with_name("two-mic-test.yaml")))
"""


def test_sigterm_stops_a_live_run_and_keeps_its_results(site, tiny_bundle, tmp_path):
    add, env = site
    add("slowsource", SLOW_SOURCE)
    (Path(env["PYTHONPATH"].split(os.pathsep)[0]) / "two-mic-test.yaml").write_text(TWO_MICS)
    out = tmp_path / "out" / "live.jsonl"
    process = subprocess.Popen([sys.executable, "-m", "edgeaudio.cli", "run", tiny_bundle, "-i", "slow:", "--device",
                                "two-mic-test", "-o", out, "--stats"], env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (out.parent.exists() and any(out.parent.iterdir())) and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)
    process.send_signal(signal.SIGTERM)
    stderr = process.communicate(timeout=60)[1]
    assert process.returncode == 0, stderr
    assert "ended: interrupted" in stderr
    assert listing(out.parent) == ["live.jsonl"] and len(out.read_text().splitlines()) > 10


def test_a_folder_named_like_a_task_does_not_take_its_name(tiny_bundle, clip, tmp_path, monkeypatch, cache):
    shutil.copytree(tiny_bundle, tmp_path / "tiny")
    monkeypatch.chdir(tmp_path)
    result = invoke("run", "tiny", "-i", clip)
    refused(result, 2, "task 'tiny' ships no default weights", "train it first: edgeaudio train tiny")
    assert "note: 'tiny' is the task; for the bundle of that name, write ./tiny" in result.stderr
    assert invoke("run", "./tiny", "-i", clip).exit_code == 0


# -- bundles: archives -----------------------------------------------------------------------------


def _members(bundle: Path) -> list[tuple[str, bytes]]:
    listed = json.loads((bundle / MANIFEST).read_text())["files"]
    return [(MANIFEST, (bundle / MANIFEST).read_bytes())] + [(name, (bundle / name).read_bytes()) for name in listed]


def _tar(path: Path, members, mode="w") -> Path:
    with tarfile.open(path, mode) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            if callable(data):
                data(info)
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


def _refused_archive(archive: Path, clip: Path, cache: Path, error: str, hint: str) -> None:
    before = digest(archive)
    refused(invoke("run", archive, "-i", clip), 1, error, hint)
    assert listing(cache) == [] and digest(archive) == before  # nothing unpacked, nothing kept


UNSAFE = "refusing an unsafe archive; get the bundle from a trusted source"


def test_archive_member_the_manifest_does_not_list_is_refused(tiny_bundle, clip, cache, tmp_path):
    archive = _tar(tmp_path / "extra.eab", _members(tiny_bundle) + [("extra/payload.bin", b"\0" * 100_000)])
    _refused_archive(archive, clip, cache, "archive extra.eab entry 'extra/payload.bin' is not a file its manifest lists",
                     UNSAFE)


def test_archive_that_expands_far_beyond_its_size_is_refused(tiny_bundle, clip, cache, tmp_path):
    bomb = tmp_path / "bomb"
    shutil.copytree(tiny_bundle, bomb)
    with open(bomb / "zeros.bin", "wb") as handle:
        handle.truncate(30 << 20)
    manifest = json.loads((bomb / MANIFEST).read_text())
    write_manifest(bomb, {k: v for k, v in manifest.items() if k != "files"})
    archive = _tar(tmp_path / "bomb.eab", _members(bomb), mode="w:gz")
    size = archive.stat().st_size
    _refused_archive(archive, clip, cache, f"archive bomb.eab unpacks to more than {20 * (1 << 20)} bytes ({size} bytes packed;",
                     UNSAFE)


@pytest.mark.parametrize("inside, error", [
    (True, "half.eab is not a bundle archive, or is truncated (ReadError: unexpected end of data)"),
    (False, "half.eab is not a bundle archive, or is truncated (ReadError: empty file)"),
])  # fmt: skip
def test_truncated_archive_is_refused(tiny_bundle, clip, cache, tmp_path, inside, error):
    whole = tiny_bundle.with_suffix(".eab")
    with tarfile.open(whole) as tar:
        cut = tar.getmembers()[1].offset_data + 100 if inside else 0  # 100 bytes into the first graph file
    archive = tmp_path / "half.eab"
    archive.write_bytes(whole.read_bytes()[:cut])
    _refused_archive(archive, clip, cache, error,
                     "download or copy the archive again, or re-export it with `edgeaudio export --archive`")


def test_archive_must_start_with_its_manifest_and_hold_each_file_once(tiny_bundle, clip, cache, tmp_path):
    members = _members(tiny_bundle)
    first = _tar(tmp_path / "late.eab", members[1:] + members[:1])
    _refused_archive(first, clip, cache, f"archive late.eab does not start with manifest.json (first entry: '{members[1][0]}')",
                     "re-export it with `edgeaudio export --archive`; other tars are not bundle archives")
    twice = _tar(tmp_path / "twice.eab", members + members[1:2])
    _refused_archive(twice, clip, cache, f"archive twice.eab holds '{members[1][0]}' twice", UNSAFE)


def test_archive_with_too_many_members_is_refused(tiny_bundle, clip, cache, tmp_path):
    folders = [(f"d{i}", lambda info: setattr(info, "type", tarfile.DIRTYPE)) for i in range(5000)]
    archive = _tar(tmp_path / "many.eab", _members(tiny_bundle)[:1] + folders)
    _refused_archive(archive, clip, cache, "archive many.eab holds more than 4096 members", UNSAFE)


def _symlink(info):
    info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"


def _hardlink(info):
    info.type, info.linkname = tarfile.LNKTYPE, MANIFEST


def _fifo(info):
    info.type = tarfile.FIFOTYPE


@pytest.mark.parametrize("name, data, error", [
    ("../escaped.txt", b"x", "entry '../escaped.txt' escapes the bundle directory"),
    ("/tmp/absolute.txt", b"x", "entry '/tmp/absolute.txt' escapes the bundle directory"),
    ("weights.safetensors", _symlink, "entry 'weights.safetensors' is a link or device, not a file"),
    ("weights.safetensors", _hardlink, "entry 'weights.safetensors' is a link or device, not a file"),
    ("weights.safetensors", _fifo, "entry 'weights.safetensors' is a link or device, not a file"),
])  # fmt: skip
def test_archive_entries_that_escape_or_are_not_files_are_refused(tiny_bundle, clip, cache, tmp_path, name, data, error):
    archive = _tar(tmp_path / "unsafe.eab", _members(tiny_bundle)[:1] + [(name, data)])
    _refused_archive(archive, clip, cache, f"archive unsafe.eab {error}", UNSAFE)
    assert not (tmp_path / "escaped.txt").exists() and not Path("/tmp/absolute.txt").exists()


# -- bundles: manifests ----------------------------------------------------------------------------

SCHEMA_HINT = "re-export the bundle with `edgeaudio export`; a hand-edited manifest must keep its schema"
MISMATCH_HINT = ("re-export the bundle (an edited manifest no longer matches its graphs or task); if `edgeaudio "
                 "export` made it as it is, this is a bug: rerun with --debug and report it")


def _edit(bundle: Path, change) -> None:
    manifest = json.loads((bundle / MANIFEST).read_text())
    (bundle / MANIFEST).write_text(json.dumps(change(manifest)))


def _graph(field, value):
    def change(manifest):
        manifest["graphs"][0]["streaming"][field] = value
        return manifest

    return change


@pytest.mark.parametrize("change, error, hint", [
    (lambda m: {**m, "graphs": []}, "at graphs: [] needs at least 1 item(s)", SCHEMA_HINT),
    (lambda m: [m], "at the top level: [{", SCHEMA_HINT),
    (lambda m: {**m, "schema_version": -5}, "at schema_version: -5 must be at least 1", SCHEMA_HINT),
    (lambda m: {**m, "schema_version": True}, "at schema_version: true must be of type integer", SCHEMA_HINT),
    (_graph("block", 0), "at graphs/0/streaming/block: 0 must be at least 1", SCHEMA_HINT),
    (_graph("block", "80"), 'at graphs/0/streaming/block: "80" must be of type integer', SCHEMA_HINT),
    (lambda m: {**m, "files": {**m["files"], "weights.safetensors": "00"}},
     'at files/weights.safetensors: "00" must be a sha256 (64 hex digits)', SCHEMA_HINT),
])  # fmt: skip
def test_manifest_that_breaks_the_schema_is_one_clear_message(bundle, clip, change, error, hint):
    _edit(bundle, change)
    refused(invoke("run", bundle, "-i", clip), 1, f"{bundle / MANIFEST} is not a valid bundle manifest: {error}", hint)


def test_manifest_whose_names_do_not_add_up_is_refused(bundle, clip):
    _edit(bundle, _graph("audio_input", "nope"))
    refused(invoke("run", bundle, "-i", clip), 1, f"{bundle / MANIFEST} is not a consistent bundle manifest: graph 'main': "
            "streaming audio_input 'nope' is not one of its inputs",
            "re-export the bundle with `edgeaudio export`; a hand-edited manifest must stay consistent")


def test_manifest_that_disagrees_with_its_task_is_refused_at_load(bundle, clip):
    _edit(bundle, lambda m: {**m, "audio": {**m["audio"], "sample_rate": 16000}})
    refused(invoke("run", bundle, "-i", clip), 1,
            f"bundle {bundle} says 16000 Hz, 2 channel(s); task 'tiny' as configured there takes 8000 Hz, 2", MISMATCH_HINT)


def test_streaming_block_that_does_not_fit_the_graph_is_refused_at_load(bundle, clip):
    _edit(bundle, _graph("block", 7))
    result = invoke("run", bundle, "-i", clip, "--backend", "onnxruntime")
    refused(result, 1, f"bundle {bundle} does not run as its manifest describes: ", MISMATCH_HINT)


def test_flipped_byte_is_refused(bundle, clip):
    model = next(bundle.glob("onnxruntime/*.fp32.onnx"))
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 1
    model.write_bytes(bytes(data))
    refused(invoke("run", bundle, "-i", clip), 1, f"bundle file {model.relative_to(bundle).as_posix()} was modified",
            "the bundle is corrupt or tampered with; re-export it from a trusted checkpoint")


# -- bundles: signatures ---------------------------------------------------------------------------

NOT_SIGNED_HINT = ("get the bundle from a publisher whose key you trust, or sign it yourself: edgeaudio export TASK "
                   "--sign KEY (trust settings: --trust, EDGEAUDIO_TRUST, the trust folder)")


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("keys")
    for name in ("publisher", "stranger"):
        assert invoke("keygen", folder / name).exit_code == 0
    return folder


@pytest.fixture
def signed(tiny_bundle, keys, tmp_path) -> Path:
    from edgeaudio.signing import sign_bundle

    copy = tmp_path / "signed"
    shutil.copytree(tiny_bundle, copy)
    sign_bundle(copy, keys / "publisher.key")
    return copy


def test_keygen_writes_a_private_key_only_its_owner_reads_and_keeps_existing_keys(keys):
    assert (keys / "publisher.key").stat().st_mode & 0o777 == 0o600
    before = digest(keys / "publisher.key")
    refused(invoke("keygen", keys / "publisher"), 2, f"{keys / 'publisher.key'} exists; refusing to replace a key",
            "choose another name, or pass --force")
    assert digest(keys / "publisher.key") == before


def test_signed_export_runs_under_trust_as_folder_and_archive(tiny_plugin, keys, clip, tmp_path):
    out = tmp_path / "signed"
    result = invoke("export", "tiny", "--precision", "fp32", "--backend", "onnxruntime", "-o", out, "--archive",
                    "--sign", keys / "publisher.key")
    assert result.exit_code == 0, result.stderr
    for target in (out, out.with_suffix(".eab")):
        assert invoke("run", target, "-i", clip, "--trust", keys / "publisher.pub").exit_code == 0


@pytest.mark.parametrize("how", ["--trust", "EDGEAUDIO_TRUST", "trust folder"])
def test_unsigned_bundle_is_refused_under_any_trust_setting(tiny_bundle, keys, clip, tmp_path, how):
    args, env = [], {}
    if how == "--trust":
        args = ["--trust", keys / "publisher.pub"]
    elif how == "EDGEAUDIO_TRUST":
        env = {"EDGEAUDIO_TRUST": str(keys / "publisher.pub")}
    else:
        (tmp_path / "config" / "trusted-keys").mkdir(parents=True)
        shutil.copy(keys / "publisher.pub", tmp_path / "config" / "trusted-keys")
        env = {"EDGEAUDIO_CONFIG": str(tmp_path / "config")}
    result = invoke("run", tiny_bundle, "-i", clip, *args, env=env)
    refused(result, 1, f"bundle {tiny_bundle} is not signed, and a trust setting requires a signature", NOT_SIGNED_HINT)


def test_bundle_signed_by_an_untrusted_key_is_refused(signed, keys, clip):
    from edgeaudio.signing import key_id, load_public_key

    signer, trusted = (key_id(load_public_key(keys / f"{n}.pub")) for n in ("publisher", "stranger"))
    result = invoke("run", signed, "-i", clip, "--trust", keys / "stranger.pub")
    refused(result, 1, f"bundle {signed} is signed by key {signer}, which is not trusted here (trusted: {trusted} "
            f"({keys / 'stranger.pub'} via --trust))")


def test_changed_file_with_a_rewritten_hash_breaks_the_signature(signed, keys, clip):
    """The attack sha256 alone cannot stop: change a graph and write its new hash into the manifest."""
    model = next(signed.glob("onnxruntime/*.fp32.onnx"))
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 1
    model.write_bytes(bytes(data))
    _edit(signed, lambda m: {**m, "files": {**m["files"], model.relative_to(signed).as_posix(): sha256_file(model)}})
    assert invoke("run", signed, "-i", clip).exit_code == 0  # without a trust setting: integrity only, as documented
    result = invoke("run", signed, "-i", clip, "--trust", keys / "publisher.pub")
    refused(result, 1, f"bundle {signed}: the signature by ",
            "the bundle is corrupt or tampered with; get it again from its publisher")
    assert "does not match its manifest (changed after signing)" in result.stderr


def test_malformed_signature_is_refused(signed, keys, clip):
    (signed / "manifest.sig").write_text('{"algorithm": "ed25519", "key_id": "x", "signature": "%%%"}')
    result = invoke("run", signed, "-i", clip, "--trust", keys / "publisher.pub")
    refused(result, 1, f"bundle {signed} has a malformed signature (manifest.sig: ",
            "the bundle is corrupt or tampered with; get it again from its publisher")


def test_a_task_name_under_trust_is_refused_before_any_export(tiny_plugin, keys, clip, cache):
    result = invoke("run", "tiny", "-i", clip, "--trust", keys / "publisher.pub")
    refused(result, 1, "task 'tiny' runs its default bundle, which is unsigned, and a trust setting requires a signature",
            "export it signed and run that bundle: edgeaudio export tiny --sign KEY -o DIR")
    assert listing(cache) == []


@pytest.mark.parametrize("command", ["eval", "bench"])
def test_eval_and_bench_honour_trust(tiny_bundle, keys, command):
    result = invoke(command, tiny_bundle, "--trust", keys / "publisher.pub")
    refused(result, 1, f"bundle {tiny_bundle} is not signed, and a trust setting requires a signature", NOT_SIGNED_HINT)


def test_a_private_key_given_as_trust_is_refused(signed, keys, clip):
    result = invoke("run", signed, "-i", clip, "--trust", keys / "publisher.key")
    refused(result, 2, f"{keys / 'publisher.key'} is not a PEM public key", "trust the NAME.pub that `edgeaudio keygen` wrote")


# -- plugins ---------------------------------------------------------------------------------------


@pytest.fixture
def fresh_registry():
    registry.reset()
    yield
    registry.reset()


def test_a_second_task_of_the_same_name_is_reported_and_the_builtin_wins(fresh_registry, register_plugin, monkeypatch):
    from edgeaudio.task import Task
    from edgeaudio.tasks import task_classes

    class Impostor(Task):
        name = "seld"

    class Plugin:
        @hookimpl
        def register_tasks(self, register):
            register(Impostor)

    register_plugin(Plugin(), "impostor")
    builtin = task_classes()["seld"]
    assert builtin is not Impostor and builtin.__module__ == "edgeaudio.plugins.seld.task"
    listing_ = json.loads(invoke("plugins", "--json").stdout)["task_conflicts"]
    assert listing_ == [{"task": "seld", "used": "seld", "ignored": ["impostor"],
                         "why": "the built-in task wins; set EDGEAUDIO_TASK_PLUGINS=seld=PLUGIN to use another"}]
    assert "task CONFLICT 'seld': from 'seld', not from impostor" in invoke("doctor").output
    monkeypatch.setenv("EDGEAUDIO_TASK_PLUGINS", "seld=impostor")
    assert task_classes()["seld"] is Impostor


def test_plugins_that_exit_register_junk_or_misspell_hooks_are_reported_and_harmless(site, tiny_bundle, clip):
    add, env = site
    add("exiter", "import sys\nsys.exit(3)\n")
    add("junk", """
        from edgeaudio.hookspecs import hookimpl

        @hookimpl
        def register_tasks(register):
            register(42)

        @hookimpl
        def register_sinks(register):
            register("a sink")
    """)
    add("typo", """
        from edgeaudio.hookspecs import hookimpl

        @hookimpl
        def register_task(register):
            pass
    """)
    add("quitter", """
        from edgeaudio.hookspecs import hookimpl

        @hookimpl
        def register_commands(cli):
            raise SystemExit("bye")
    """)
    version = run_cli(env, "--version")
    assert version.returncode == 0 and version.stdout.startswith("edgeaudio, version ")
    listed = run_cli(env, "plugins")
    assert listed.returncode == 0
    failed = [line for line in listed.stdout.splitlines() if line.startswith("FAILED")]
    assert failed == [
        "FAILED exiter: SystemExit(3): the plugin tried to end the program",
        "FAILED typo: implements unknown hook 'register_task' (did you mean 'register_tasks'?); it is never called",
        "FAILED quitter: register_commands: SystemExit('bye'): the plugin tried to end the program",
        "FAILED junk: register_tasks: registered 42, which is not a subclass of edgeaudio.task.Task; ignored",
    ]
    ran = run_cli(env, "run", tiny_bundle, "-i", clip)
    assert ran.returncode == 0 and len(ran.stdout.splitlines()) == 30, ran.stderr


# -- cache -----------------------------------------------------------------------------------------


def test_an_unusable_cache_is_one_clear_error(tiny_bundle, clip, tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache should be")
    monkeypatch.setenv("EDGEAUDIO_CACHE", str(blocker))
    result = invoke("run", tiny_bundle.with_suffix(".eab"), "-i", clip)
    refused(result, 1, f"cannot use the cache folder {blocker / 'bundles'} (EDGEAUDIO_CACHE={blocker}): Not a directory",
            "set EDGEAUDIO_CACHE to a folder you can write to")
    assert blocker.read_text() == "a file where the cache should be"


def test_two_exports_to_one_folder_at_once_one_waits_then_fails_cleanly(site, tmp_path):
    _, env = site
    env = {**env, "EDGEAUDIO_CACHE": str(tmp_path / "cache")}
    out = tmp_path / "out" / "tiny"
    args = [sys.executable, "-m", "edgeaudio.cli", "export", "tiny", "--precision", "fp32", "--backend", "onnxruntime", "-o", out]
    runs = [subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outcomes = sorted((p.wait(timeout=300), p.stderr.read()) for p in runs)
    assert [code for code, _ in outcomes] == [0, 2]
    errors = [line for line in outcomes[1][1].splitlines() if line.startswith(("error:", "hint:"))]
    assert errors == [f"error: {out} exists and is not empty", "hint: choose another --output or remove it"]
    assert listing(tmp_path / "out") == ["tiny", *sorted(f"tiny/{p}" for p in listing(out))]


def test_a_refused_archive_leaves_no_folders_in_a_new_cache(tiny_bundle, clip, tmp_path, monkeypatch):
    cache = tmp_path / "new" / "cache"
    monkeypatch.setenv("EDGEAUDIO_CACHE", str(cache))
    archive = _tar(tmp_path / "extra.eab", _members(tiny_bundle) + [("extra.bin", b"x")])
    refused(invoke("run", archive, "-i", clip), 1, "archive extra.eab entry 'extra.bin' is not a file its manifest lists")
    assert not (tmp_path / "new").exists()


# -- messages --------------------------------------------------------------------------------------


def test_no_microphone_is_a_runtime_error_with_a_hint(tiny_bundle, tiny_plugin, register_plugin, tmp_path):
    profile = tmp_path / "two-mic-test.yaml"
    profile.write_text(TWO_MICS)

    class Profiles:
        @hookimpl
        def register_profiles(self, register):
            register(str(profile))

    from edgeaudio.profiles import clear_cache

    register_plugin(Profiles(), "two-mic")
    clear_cache()
    try:
        result = invoke("run", tiny_bundle, "--device", "two-mic-test", "--seconds", "1")
    finally:
        clear_cache()
    refused(result, 1, "no input device looks like array two-mic-test",
            "plug the array in and check `edgeaudio devices --live`, or choose a device with --device-index")


def test_an_output_path_that_cannot_exist_is_a_runtime_error(tiny_bundle, clip, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = invoke("run", tiny_bundle, "-i", clip, "-o", blocker / "out.jsonl")
    refused(result, 1, "", "check the path, its permissions and the free space")
    assert str(blocker) in result.stderr and blocker.read_text() == "x"


# -- numbers the field can compare -----------------------------------------------------------------


def test_evaluation_reports_carry_the_content_hash_of_their_data(tiny_bundle, tiny_plugin):
    """The reference implementations pin the metrics (tests/test_seld_metrics.py, test_caption.py);
    this pins the other half: a report names the data it scored, so new data is noticed."""
    from edgeaudio.fingerprint import content_hash

    first = json.loads(invoke("eval", tiny_bundle, "--json", "--backend", "onnxruntime", "--precision", "fp32").stdout)
    again = json.loads(invoke("eval", tiny_bundle, "--json", "--backend", "onnxruntime", "--precision", "fp32").stdout)
    data = tiny_plugin.TinyTask().validation_set()
    assert first["dataset_items"] == 8 and first["dataset_sha256"] == again["dataset_sha256"] == content_hash(data)
    data[3][0][0, 100] += 1e-3  # one sample of one clip
    assert content_hash(data) != first["dataset_sha256"]
    with pytest.raises(TypeError, match="cannot hash the content of a object"):
        content_hash([object()])
    manifest = json.loads((tiny_bundle / MANIFEST).read_text())
    assert manifest["reports"]["gate"]["validation_sha256"] == first["dataset_sha256"]
