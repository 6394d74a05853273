"""Bundles: the only thing a runtime reads.

A bundle is a directory holding ``manifest.json`` and the files it lists (graphs per backend and
precision, optional reference weights, reports), each verified by sha256 before use. The single-file
form is a tar archive (``.eab``) of that directory; unpacking refuses members that would escape it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from edgeaudio.errors import BundleError

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
ARCHIVE_SUFFIX = ".eab"


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class Bundle:
    """A verified bundle on disk: ``root`` directory and its parsed ``manifest``."""

    root: Path
    manifest: dict[str, Any]

    @property
    def task_name(self) -> str:
        return self.manifest["task"]["name"]

    def path(self, relative: str) -> Path:
        return self.root / relative

    def graph(self, name: str) -> dict[str, Any]:
        for graph in self.manifest["graphs"]:
            if graph["name"] == name:
                return graph
        raise BundleError(f"bundle {self.root} has no graph '{name}'")

    def artifacts(self) -> list[tuple[str, str]]:
        """(backend, precision) pairs available for every graph, in manifest order."""
        per_graph = [
            [(a["backend"], a["precision"]) for a in graph["artifacts"]] for graph in self.manifest["graphs"]
        ]
        common = [pair for pair in per_graph[0] if all(pair in others for others in per_graph[1:])]
        return list(dict.fromkeys(common))

    def size_bytes(self) -> int:
        return sum((self.root / rel).stat().st_size for rel in self.manifest["files"]) + (
            self.root / MANIFEST
        ).stat().st_size


def write_manifest(root: str | os.PathLike, manifest: dict[str, Any]) -> Path:
    """Hash every file under ``root`` into ``manifest['files']`` and write ``manifest.json``."""
    root = Path(root)
    files = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.name != MANIFEST):
        files[path.relative_to(root).as_posix()] = sha256_file(path)
    manifest = dict(manifest, schema_version=SCHEMA_VERSION, files=files)
    target = root / MANIFEST
    target.write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")
    return target


def load_bundle(location: str | os.PathLike, extract_to: str | os.PathLike | None = None) -> Bundle:
    """Open a bundle directory or ``.eab`` archive and verify its schema and every file hash."""
    location = Path(location)
    if not location.exists():
        raise BundleError(f"no bundle at {location}", hint="run `edgeaudio export <task>` to create one")
    if location.is_file():
        location = unpack_archive(location, extract_to)
    manifest_path = location / MANIFEST
    if not manifest_path.is_file():
        raise BundleError(f"{location} is not a bundle: {MANIFEST} is missing")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{manifest_path} is not valid JSON ({exc})", hint="re-export the bundle") from exc
    _check_schema(manifest, manifest_path)
    _verify_files(location, manifest)
    return Bundle(location, manifest)


def _check_schema(manifest: dict[str, Any], path: Path) -> None:
    version = manifest.get("schema_version")
    if not isinstance(version, int):
        raise BundleError(f"{path} has no integer schema_version", hint="re-export the bundle")
    if version > SCHEMA_VERSION:
        raise BundleError(
            f"bundle schema {version} is newer than this edgeaudio understands ({SCHEMA_VERSION})",
            hint='upgrade: pip install -U edgeaudio',
        )
    for key in ("task", "graphs", "files", "audio"):
        if key not in manifest:
            raise BundleError(f"{path} lacks '{key}'", hint="re-export the bundle")


def _verify_files(root: Path, manifest: dict[str, Any]) -> None:
    for relative, expected in manifest["files"].items():
        path = _inside(root, relative)
        if not path.is_file():
            raise BundleError(f"bundle {root} is missing {relative}", hint="re-export or re-copy the bundle")
        actual = sha256_file(path)
        if actual != expected:
            raise BundleError(
                f"bundle file {relative} was modified (sha256 {actual[:12]}… != {expected[:12]}…)",
                hint="the bundle is corrupt or tampered with; re-export it from a trusted checkpoint",
            )
    referenced = {
        path for graph in manifest["graphs"] for artifact in graph["artifacts"] for path in artifact["files"].values()
    }
    unlisted = referenced - set(manifest["files"])
    if unlisted:
        raise BundleError(f"manifest references files it does not hash: {sorted(unlisted)}")


def _inside(root: Path, relative: str) -> Path:
    """Resolve ``relative`` under ``root`` and refuse anything that escapes it."""
    pure = PurePosixPath(relative)
    if pure.is_absolute() or ".." in pure.parts:
        raise BundleError(f"bundle path '{relative}' escapes the bundle directory", hint="refusing an unsafe bundle")
    return root / pure


def pack_archive(bundle_dir: str | os.PathLike, archive: str | os.PathLike) -> Path:
    """Write the single-file form (a tar of the directory's contents, manifest first)."""
    bundle = load_bundle(bundle_dir)
    archive = Path(archive)
    with tarfile.open(archive, "w") as tar:
        tar.add(bundle.root / MANIFEST, arcname=MANIFEST)
        for relative in bundle.manifest["files"]:
            tar.add(bundle.root / relative, arcname=relative)
    return archive


def unpack_archive(archive: Path, extract_to: str | os.PathLike | None = None) -> Path:
    """Unpack an ``.eab`` into ``extract_to`` (default: a cache dir keyed by the archive's hash)."""
    if extract_to is None:
        cache = Path(os.environ.get("EDGEAUDIO_CACHE", Path.home() / ".cache" / "edgeaudio"))
        extract_to = cache / "bundles" / sha256_file(archive)[:16]
    target = Path(extract_to)
    if (target / MANIFEST).is_file():
        return target
    try:
        tar = tarfile.open(archive, "r")
    except tarfile.TarError as exc:
        raise BundleError(f"{archive} is not a bundle archive ({exc})", hint="re-export the bundle") from exc
    staging = Path(tempfile.mkdtemp(prefix=".unpack-", dir=_ensure_dir(target.parent)))
    try:
        with tar:
            for member in tar.getmembers():
                _check_member(member, archive)
            tar.extractall(staging, filter="data")
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target


def _check_member(member: tarfile.TarInfo, archive: Path) -> None:
    pure = PurePosixPath(member.name)
    if pure.is_absolute() or ".." in pure.parts:
        raise BundleError(
            f"archive {archive.name} entry '{member.name}' escapes the bundle directory",
            hint="refusing an unsafe archive; get the bundle from a trusted source",
        )
    if not (member.isfile() or member.isdir()):
        raise BundleError(
            f"archive {archive.name} entry '{member.name}' is a link or device, not a file",
            hint="refusing an unsafe archive; get the bundle from a trusted source",
        )


def _ensure_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path
