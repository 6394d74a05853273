"""The bundles the package ships beside its weights (``weights/*.eab``): a task name runs them with
no export and no torch, they are used only while they were made from the very weights beside them,
and re-exporting the weights gives graphs that match them."""

from __future__ import annotations

import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest

from edgeaudio.api import default_bundle, open_session, shipped_bundle
from edgeaudio.bundle import MANIFEST, load_bundle, sha256_file
from edgeaudio.exporters.shipped import BACKEND, PRECISION, shipped_location, shipping_tasks

FIRST_PARTY = ["bwe", "caption", "enhance", "seld", "tta"]
TASKS = shipping_tasks(FIRST_PARTY)
IDS = [f"{t.name}-{t.array}" if t.array else t.name for t in TASKS]


def _manifest(archive: Path) -> dict:
    with tarfile.open(archive) as tar:
        return json.loads(tar.extractfile(MANIFEST).read())


def test_every_first_party_task_ships_a_bundle_for_each_of_its_weights():
    assert {t.name for t in TASKS} == set(FIRST_PARTY)
    assert {t.array for t in TASKS if t.name == "seld"} == {"respeaker-4mic", "respeaker-usb"}
    for task in TASKS:
        archive = shipped_location(task.default_checkpoint())
        manifest = _manifest(archive)
        assert manifest["provenance"]["checkpoint_sha256"] == sha256_file(task.default_checkpoint()), archive
        assert {(a["backend"], a["precision"]) for g in manifest["graphs"] for a in g["artifacts"]} == {(BACKEND, PRECISION)}


@pytest.mark.parametrize("task", TASKS, ids=IDS)
def test_a_task_name_runs_its_shipped_bundle_without_exporting(task, tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEAUDIO_CACHE", str(tmp_path / "cache"))
    told: list[str] = []
    path, made_for = default_bundle(task.name, log=told.append, array=task.array)
    assert path == shipped_location(task.default_checkpoint()) and made_for.config == task.config
    assert not told, f"exported instead: {told}"
    session = open_session(task.name, array=task.array, log=told.append)
    assert (session.backend, session.precision) == (BACKEND, PRECISION)
    assert not (tmp_path / "cache" / "default-bundles").exists()


@pytest.fixture
def weights_copy(tmp_path):
    """The seld weights, sidecar and shipped bundle copied side by side into a folder of their own."""
    task = next(t for t in TASKS if t.name == "seld" and t.array == "respeaker-4mic")
    source = Path(task.default_checkpoint())
    for path in (source, source.with_suffix(".json"), shipped_location(source)):
        shutil.copy(path, tmp_path / path.name)
    return task, tmp_path / source.name


def test_the_bundle_is_used_only_for_the_weights_it_was_made_from(weights_copy):
    task, checkpoint = weights_copy
    assert shipped_bundle(task, checkpoint) == checkpoint.with_suffix(".eab")
    data = bytearray(checkpoint.read_bytes())
    data[-1] ^= 1  # one bit of one weight: retrained weights
    checkpoint.write_bytes(bytes(data))
    assert shipped_bundle(task, checkpoint) is None


def test_the_bundle_is_used_only_for_the_config_it_was_made_for(weights_copy):
    task, checkpoint = weights_copy
    other = type(task)({**task.config, "classes": task.classes[:-1]})
    assert shipped_bundle(other, checkpoint) is None
    checkpoint.with_suffix(".eab").unlink()
    assert shipped_bundle(task, checkpoint) is None


@pytest.mark.slow
@pytest.mark.parametrize("task", TASKS, ids=IDS)
def test_shipped_graphs_match_a_fresh_export_of_the_weights(task, tmp_path, monkeypatch):
    """Re-export the weights exactly as the shipped bundle was made; every graph of the shipped
    bundle gives the fresh one's outputs on the graph's example inputs, within its tolerance."""
    from edgeaudio.exporters.shipped import write_shipped_bundle
    from edgeaudio.runtime import load

    monkeypatch.setenv("EDGEAUDIO_CACHE", str(tmp_path / "cache"))
    checkpoint = task.default_checkpoint()
    fresh = write_shipped_bundle(task, log=lambda message: None, target=tmp_path / "fresh.eab")
    shipped = load_bundle(shipped_location(checkpoint), extract_to=tmp_path / "shipped")
    assert shipped.manifest["provenance"]["checkpoint_sha256"] == sha256_file(checkpoint)
    assert shipped.manifest["task"]["version"] == task.version
    runners = [load(bundle, backend=BACKEND, precision=PRECISION).runner for bundle in (shipped, fresh)]
    for graph in task.graphs(task.load_model(checkpoint)):
        spec = shipped.graph(graph.name)
        for key in ("inputs", "outputs", "state", "streaming"):
            assert spec[key] == load_bundle(fresh).graph(graph.name)[key], f"{graph.name}: {key} changed"
        have, want = (runner.graph(graph.name).run(graph.example_inputs) for runner in runners)
        for name, value in want.items():
            assert have[name].shape == value.shape, f"{graph.name}/{name}"
            assert np.allclose(have[name], value, atol=graph.atol, rtol=graph.rtol), (
                f"{graph.name}/{name}: shipped differs from a fresh export by {np.abs(have[name] - value).max():.3g} "
                f"(atol {graph.atol}); rewrite the bundles: python -m edgeaudio.exporters.shipped {task.name}")
