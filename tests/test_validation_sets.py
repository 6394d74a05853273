"""What the writers of the shipped validation sets share (plugins/shared/validation_sets.py): the
licence summary, the SOURCES.json they write, the folder they rewrite and their ``--ship`` command
line, checked against the committed sets and through the writers' own ``main``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgeaudio.errors import UsageError
from edgeaudio.plugins.shared.validation_sets import cleared, licence_summary, ship_main, write_sources

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = [ROOT / "plugins" / folder / "SOURCES.json"
           for folder in ("seld/validation/respeaker-4mic", "bwe/validation", "caption/validation")]  # fmt: skip


@pytest.mark.parametrize("path", SHIPPED, ids=lambda path: path.parent.relative_to(ROOT / "plugins").as_posix())
def test_each_shipped_set_rewrites_to_its_committed_bytes(path, tmp_path):
    """From the clips a committed SOURCES.json lists, the summary rebuilds its packages and
    licences in the same order, and writing it again gives the committed bytes and the log line."""
    committed = path.read_text()
    sources = json.loads(committed)
    summary = licence_summary(sources["clips"])
    assert summary == {"packages": sources["packages"], "licences": sources["licences"]}
    assert list(summary["packages"]) == list(sources["packages"])
    lines: list[str] = []
    write_sources(tmp_path, sources, "the set", lines.append, drawn="recordings")
    assert (tmp_path / "SOURCES.json").read_bytes() == path.read_bytes()
    assert lines == [f"{tmp_path}: the set from {len(sources['clips'])} recordings, licences {', '.join(sources['licences'])}"]


def test_the_summary_keeps_each_packages_first_version_and_sorts_licences():
    clips = [
        {"file": "b/1.flac", "package": "zeta", "version": "2", "licence": "GPL-2"},
        {"file": "a/1.flac", "package": "alpha", "version": "1.0", "licence": "CC0-1.0"},
        {"file": "b/2.flac", "package": "zeta", "version": "2", "licence": "CC-BY-3.0"},
        {"file": "a/2.flac", "package": "alpha", "version": "1.0", "licence": "CC0-1.0"},
    ]
    summary = licence_summary(clips)
    assert summary == {
        "packages": {"alpha": {"version": "1.0", "licences": ["CC0-1.0"]},
                     "zeta": {"version": "2", "licences": ["CC-BY-3.0", "GPL-2"]}},
        "licences": ["CC-BY-3.0", "CC0-1.0", "GPL-2"],
    }  # fmt: skip
    assert list(summary["packages"]) == ["alpha", "zeta"]
    assert licence_summary([]) == {"packages": {}, "licences": []}


def test_cleared_makes_the_folder_and_removes_only_the_named_files(tmp_path):
    folder = cleared(tmp_path / "a" / "b")
    assert folder.is_dir() and not list(folder.iterdir())
    for name in ("0000-x.flac", "0001-y.flac", "SOURCES.json"):
        (folder / name).write_text(name)
    assert cleared(folder, ".flac") == folder
    assert sorted(p.name for p in folder.iterdir()) == ["SOURCES.json"]
    cleared(folder)
    assert not list(folder.iterdir())


def test_ship_main_requires_ship_passes_options_and_reports_errors(capsys):
    calls = []
    option = {"--array": {"action": "append", "help": "array profile"}}
    assert ship_main("python -m writer", "Writes a set.\n\nMore.", "things", calls.append, ["--ship", "--array", "a", "--array", "b"], option) == 0
    assert [(args.ship, args.array) for args in calls] == [(True, ["a", "b"])]

    with pytest.raises(SystemExit) as exited:
        ship_main("python -m writer", "Writes a set.", "things", calls.append, [])
    assert exited.value.code == 2 and len(calls) == 1
    assert "the following arguments are required: --ship" in capsys.readouterr().err

    with pytest.raises(SystemExit):
        ship_main("python -m writer", "Writes a set.\n\nMore.", "things", calls.append, ["--help"], option)
    help_text = capsys.readouterr().out
    assert help_text.startswith("usage: python -m writer [-h] --ship [--array ARRAY]")
    assert "Writes a set.\n" in help_text and "More." not in help_text and "write the shipped things" in help_text

    def refuse(args):
        raise UsageError("the corpus is not built", hint="build it")

    assert ship_main("python -m writer", "Writes a set.", "things", refuse, ["--ship"]) == 2
    assert capsys.readouterr().err == "error: the corpus is not built\nhint: build it\n"


def test_the_writers_mains_report_errors_before_writing(monkeypatch, tmp_path, capsys):
    """The three writers' ``main`` through the shared command line, stopped by a real error before
    anything is written: an unknown array (seld), a corpus that is not built (bwe)."""
    from edgeaudio.plugins.bwe import data, speech_sets
    from edgeaudio.plugins.seld import scene_sets

    assert scene_sets.main(["--ship", "--array", "nosuch"]) == 2
    assert "error: unknown microphone array 'nosuch'" in capsys.readouterr().err

    monkeypatch.setattr(data, "corpus_folder", lambda: tmp_path / "corpus")
    assert speech_sets.main(["--ship"]) == 2
    err = capsys.readouterr().err
    assert f"error: the speech corpus is not built in {tmp_path / 'corpus'}" in err
    assert "hint: python -m edgeaudio.plugins.bwe.data --install" in err


@pytest.mark.parametrize("module, what", [("seld.scene_sets", "validation scenes"), ("bwe.speech_sets", "validation utterances"),
                                          ("caption.clip_sets", "validation clips")])  # fmt: skip
def test_each_writer_keeps_its_command_line(module, what, capsys):
    import importlib

    writer = importlib.import_module(f"edgeaudio.plugins.{module}")
    with pytest.raises(SystemExit) as exited:
        writer.main(["--help"])
    help_text = capsys.readouterr().out
    assert exited.value.code == 0 and help_text.startswith(f"usage: python -m edgeaudio.plugins.{module} [-h] --ship")
    assert f"write the shipped {what}" in help_text and writer.__doc__.split("\n")[0] in " ".join(help_text.split("\n"))
