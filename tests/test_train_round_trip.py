"""Every first-party trainer, as a user runs it: ``edgeaudio train TASK`` data parallel under
``torchrun --nproc_per_node 2`` (gloo on CPU) on a folder of the user's own data, then ``edgeaudio
export TASK --checkpoint RUN``, then ``edgeaudio run`` on an input shipped in the repository, with
nothing edited in between. One process writes and prints: one weights file, one result table on
stdout, and with stderr going to a file, one line per epoch there and in log.jsonl.

The command line trains a task's default model size; the harness swaps in the tiny sizes of the
task's own tests (the same code at a fraction of the cost), which the run's sidecar then carries
to export like any other config. Below: a caption model trained without event labels, and the
trainers' data readers refusing input that does not fit before training starts (STARSS's are in
test_starss.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]
VALIDATION = ROOT / "plugins" / "enhance" / "validation"

HARNESS = """
import json, sys
from edgeaudio.tasks import task_classes
name, sizes = sys.argv[1], json.loads(sys.argv[2])
cls = task_classes()[name]
default_config = cls.default_config
cls.default_config = lambda self: {**default_config(self), **sizes}
from edgeaudio.cli import cli
cli.main(["train", name, *sys.argv[3:]], prog_name="edgeaudio")
"""


def _seld(tmp_path, toy):
    from test_seld_task import TINY, _procedural_library

    library = _procedural_library(tmp_path / "library")
    sizes = {k: v for k, v in TINY.items() if k != "classes"}  # the classes are the library's
    args = ["--library", library, "--hours", 20 / 3600, "--test-scenes", 2, "--epochs", 2, "--batch-size", 2, "--workers", 1]
    return sizes, args, {"model": 2}, ["--input", ROOT / "examples" / "scenes" / "respeaker-4mic-scene.wav"]


def _enhance(tmp_path, toy):
    from test_enhance import TINY

    args = ["--pairs", VALIDATION, "--test-clips", 2, "--epochs", 2, "--items", 8, "--seconds", 1, "--batch-size", 2]
    return TINY, args, {"model": 2}, ["--input", VALIDATION / "noisy" / "0003.wav", "-o", tmp_path / "out.wav"]


def _bwe(tmp_path, toy):
    from test_bwe import TINY, _tiny_corpus

    corpus = _tiny_corpus(tmp_path / "corpus")
    args = ["--corpus", corpus, "--epochs", 2, "--items", 8, "--batch-size", 2]
    return TINY, args, {"model": 2}, ["--input", VALIDATION / "clean" / "0003.wav", "-o", tmp_path / "out.wav", "--offline"]


def _caption(tmp_path, toy):
    from test_caption import SMALL

    args = ["--library", toy, "--clips", 8, "--test-clips", 2, "--epochs", 2, "--batch-size", 2]
    return SMALL, args, {"model": 2}, ["--input", VALIDATION / "clean" / "0003.wav", "--offline"]


def _tta(tmp_path, toy):
    from test_tta import SMALL

    args = ["--library", toy, "--part", "all", "--judge-epochs", 1, "--vocoder-epochs", 1, "--vocoder-clips", 4,
            "--epochs", 2, "--clips", 4, "--batch-size", 2]
    run_args = ["a horn honks", "-o", tmp_path / "out.wav", "--seconds", 1, "--steps", 2, "--candidates", 1]
    return SMALL, args, {"generator": 2, "vocoder": 1}, run_args


SETUPS = {"seld": _seld, "enhance": _enhance, "bwe": _bwe, "caption": _caption, "tta": _tta}


@pytest.mark.slow
@pytest.mark.parametrize("task", SETUPS)
def test_torchrun_train_then_export_then_run(task, tmp_path, toy_event_folder):
    from edgeaudio.cli import cli

    sizes, args, epochs, run_args = SETUPS[task](tmp_path, toy_event_folder)
    run, bundle, script = tmp_path / "run", tmp_path / "bundle", tmp_path / "harness.py"
    script.write_text(HARNESS)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script),
               task, json.dumps(sizes), "-o", str(run), "--no-progress", *map(str, args)]
    with open(tmp_path / "train.err", "w") as stderr:  # stderr is a file, as under nohup or a batch scheduler
        done = subprocess.run(command, stdout=subprocess.PIPE, stderr=stderr, text=True, timeout=600,
                              env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parent)})
    err = (tmp_path / "train.err").read_text()
    assert done.returncode == 0, err[-4000:]

    assert done.stdout.count("run:") == 1 and f"export:   edgeaudio export {task} --checkpoint {run}" in done.stdout
    assert err.count("weights: ") == 1  # rank 1 trained its share and said nothing
    for part, count in epochs.items():
        prefix = "" if part == "model" else f"[{part}] "
        assert [line.split("  ")[0] for line in err.splitlines() if line.startswith(f"{prefix}epoch ")] == \
            [f"{prefix}epoch {e}/{count}" for e in range(1, count + 1)]
    logged = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert len(logged) == sum(epochs.values()) + (1 if task == "tta" else 0)  # tta: the judge's epoch as well
    sidecar = json.loads((run / "weights.json").read_text())
    assert sidecar["processes"] == 2 and sidecar["task"] == task and sidecar["metrics"]
    assert {name: part["epochs"] for name, part in sidecar["training"].items()} == epochs
    assert sorted(p.name for p in run.glob("weights.*")) == ["weights.json", "weights.safetensors"]

    exported = CliRunner().invoke(cli, ["export", task, "--checkpoint", str(run), "--precision", "fp32",
                                        "--backend", "onnxruntime", "-o", str(bundle)])
    assert exported.exit_code == 0, exported.output
    ran = CliRunner().invoke(cli, ["run", str(bundle), *map(str, run_args)])
    assert ran.exit_code == 0, ran.output
    if (tmp_path / "out.wav").exists():
        audio, rate = sf.read(tmp_path / "out.wav", dtype="float32")
        assert rate == 16000 and len(audio) > 0 and np.all(np.isfinite(audio))
    else:
        assert [json.loads(line) for line in ran.stdout.splitlines() if line.startswith("{")]


@pytest.mark.slow
def test_a_caption_model_trained_without_event_labels_reports_no_events(tmp_path):
    """Real captioned audio (the Clotho layout) whose captions name none of the event classes:
    the model gets no tagging head, and its results carry no events."""
    from test_caption import SMALL

    import edgeaudio.plugins.caption as plugin
    from edgeaudio.api import export
    from edgeaudio.plugins.caption.task import CaptionTrainOptions
    from edgeaudio.tasks import get_task
    from edgeaudio.testing import registered_plugin

    rng = np.random.default_rng(0)
    audio_dir = tmp_path / "clips"
    audio_dir.mkdir()
    captions = ["water drips slowly into a bucket", "wind blows through the trees", "a door creaks open slowly",
                "rain falls softly on leaves", "footsteps cross a wooden floor"]
    rows = ["file_name,caption_1,caption_2"]
    for i in range(10):
        sf.write(audio_dir / f"clip{i}.wav", (0.1 * rng.standard_normal(16000 * 2)).astype(np.float32), 16000)
        rows.append(f"clip{i}.wav,{captions[i % 5]},{captions[(i + 1) % 5]}")
    (tmp_path / "captions.csv").write_text("\n".join(rows) + "\n")
    options = CaptionTrainOptions(captions_csv=str(tmp_path / "captions.csv"), audio_dir=str(audio_dir), test_clips=2,
                                  epochs=1, batch_size=4, progress=False)
    with registered_plugin(plugin, "caption"):
        get_task("caption", SMALL).train(str(tmp_path / "run"), options)
        assert json.loads((tmp_path / "run" / "weights.json").read_text())["config"]["tags"] == []
        export("caption", precisions=["fp32"], backends=["onnxruntime"], checkpoint=str(tmp_path / "run"),
               output=tmp_path / "bundle", log=lambda m: None)
        import edgeaudio

        result = edgeaudio.load(tmp_path / "bundle", backend="onnxruntime").process(
            sf.read(audio_dir / "clip0.wav", dtype="float32")[0], 16000)
    assert "caption" in result and "events" not in result


# -- every trainer's reader checks its input before training ------------------------------------------


def test_enhance_pairs_must_line_up_and_be_wideband(tmp_path):
    from edgeaudio.errors import UsageError
    from edgeaudio.plugins.enhance.data import read_pairs

    for side in ("noisy", "clean"):
        (tmp_path / side).mkdir()
    sf.write(tmp_path / "noisy" / "a.wav", np.zeros(16000, np.float32), 16000)
    sf.write(tmp_path / "clean" / "a.wav", np.zeros(15000, np.float32), 16000)
    with pytest.raises(UsageError, match=r"noisy/a.wav \(16000 samples at 16000 Hz\) and .*clean/a.wav \(15000 at 16000 Hz\)"):
        read_pairs(tmp_path)
    for side in ("noisy", "clean"):
        sf.write(tmp_path / side / "a.wav", np.zeros(8000, np.float32), 8000)
    with pytest.raises(UsageError, match=r"noisy/a.wav is 8000 Hz, below the model's 16000 Hz"):
        read_pairs(tmp_path)


def test_caption_rows_without_a_caption_name_their_line(tmp_path):
    from edgeaudio.errors import UsageError
    from edgeaudio.plugins.caption.data import read_clotho

    (tmp_path / "captions.csv").write_text("file_name,caption_1,caption_2\na.wav,a dog barks,a dog\nb.wav,,\n")
    with pytest.raises(UsageError, match=r"captions.csv line 3: b.wav has no caption"):
        read_clotho(tmp_path / "captions.csv", tmp_path)


def test_a_bwe_corpus_missing_files_is_refused(tmp_path):
    from test_bwe import _tiny_corpus

    from edgeaudio.errors import UsageError
    from edgeaudio.plugins.bwe.data import read_corpus

    corpus = _tiny_corpus(tmp_path / "corpus")
    (corpus / "a" / "3.flac").unlink()
    with pytest.raises(UsageError, match=r"SOURCES.json lists 1 file\(s\) that are not there, e.g. .*a/3.flac"):
        read_corpus(corpus)
