"""Bundles refuse what they must: tampered files, newer schemas, unsafe archives."""

from __future__ import annotations

import io
import json
import shutil
import tarfile

import pytest

from edgeaudio.bundle import MANIFEST, SCHEMA_VERSION, load_bundle, pack_archive
from edgeaudio.errors import BundleError


@pytest.fixture
def bundle_copy(tiny_bundle, tmp_path):
    target = tmp_path / "copy"
    shutil.copytree(tiny_bundle, target)
    return target


def test_manifest_describes_the_bundle(tiny_bundle):
    manifest = load_bundle(tiny_bundle).manifest
    assert manifest["schema_version"] == SCHEMA_VERSION
    assert manifest["task"]["name"] == "tiny" and manifest["task"]["version"] == "1"
    assert manifest["audio"] == {"sample_rate": 8000, "channels": 2, "array": None}
    graph = manifest["graphs"][0]
    assert {a["backend"] + "/" + a["precision"] for a in graph["artifacts"]} == {
        "torch/fp32", "onnxruntime/fp32", "onnxruntime/int8", "openvino/fp32", "openvino/int8"}
    assert graph["state"] == [{"input": "tail", "output": "tail_out"}, {"input": "hidden", "output": "hidden_out"}]
    assert manifest["reports"]["parity"]["main"]["onnx/fp32"]["scores"]["ok"] is True
    assert manifest["provenance"]["torch_version"].startswith("2.13")
    assert all(len(digest) == 64 for digest in manifest["files"].values())


def test_tampered_file_is_refused(bundle_copy):
    onnx_file = next(bundle_copy.glob("onnxruntime/*.fp32.onnx"))
    onnx_file.write_bytes(onnx_file.read_bytes() + b"\0")
    with pytest.raises(BundleError, match="was modified"):
        load_bundle(bundle_copy)


def test_missing_file_is_refused(bundle_copy):
    next(bundle_copy.glob("openvino/*.bin")).unlink()
    with pytest.raises(BundleError, match="missing"):
        load_bundle(bundle_copy)


def test_newer_schema_is_refused(bundle_copy):
    manifest = json.loads((bundle_copy / MANIFEST).read_text())
    manifest["schema_version"] = SCHEMA_VERSION + 1
    (bundle_copy / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="newer") as info:
        load_bundle(bundle_copy)
    assert "upgrade" in info.value.hint


def test_manifest_path_escaping_is_refused(bundle_copy):
    manifest = json.loads((bundle_copy / MANIFEST).read_text())
    manifest["files"]["../outside.onnx"] = "0" * 64
    (bundle_copy / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="escapes"):
        load_bundle(bundle_copy)


def test_corrupt_manifest_is_refused(bundle_copy):
    (bundle_copy / MANIFEST).write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        load_bundle(bundle_copy)


def test_archive_round_trip(tiny_bundle, tmp_path):
    archive = pack_archive(tiny_bundle, tmp_path / "tiny.eab")
    unpacked = load_bundle(archive, extract_to=tmp_path / "unpacked")
    assert unpacked.manifest["files"] == load_bundle(tiny_bundle).manifest["files"]


def _archive_with(tmp_path, member: tarfile.TarInfo, payload: bytes = b"x"):
    archive = tmp_path / "evil.eab"
    with tarfile.open(archive, "w") as tar:
        tar.addfile(member, io.BytesIO(payload) if member.isfile() else None)
    return archive


def test_archive_entry_escaping_is_refused(tmp_path):
    member = tarfile.TarInfo("../../escaped.txt")
    member.size = 1
    with pytest.raises(BundleError, match="escapes the bundle directory"):
        load_bundle(_archive_with(tmp_path, member), extract_to=tmp_path / "out")
    assert not (tmp_path / "escaped.txt").exists()


def test_archive_absolute_entry_is_refused(tmp_path):
    member = tarfile.TarInfo("/tmp/absolute.txt")
    member.size = 1
    with pytest.raises(BundleError, match="escapes"):
        load_bundle(_archive_with(tmp_path, member), extract_to=tmp_path / "out")


def test_archive_symlink_is_refused(tmp_path):
    member = tarfile.TarInfo("manifest.json")
    member.type = tarfile.SYMTYPE
    member.linkname = "/etc/passwd"
    with pytest.raises(BundleError, match="link"):
        load_bundle(_archive_with(tmp_path, member), extract_to=tmp_path / "out")


def test_not_an_archive_is_refused(tmp_path):
    junk = tmp_path / "junk.eab"
    junk.write_bytes(b"definitely not tar" * 100)
    with pytest.raises(BundleError, match="not a bundle archive"):
        load_bundle(junk, extract_to=tmp_path / "out")
