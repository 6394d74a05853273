"""Bundles: the only thing a runtime reads.

A bundle is a directory holding ``manifest.json`` and the files it lists (graphs per backend and
precision, optional reference weights, reports), each verified by sha256 before use; the manifest
itself is checked against one JSON schema (``MANIFEST_SCHEMA``) first, so a malformed field is one
message naming it. Optionally ``manifest.sig`` signs the manifest (``edgeaudio.signing``); under a
trust setting an unsigned or badly signed bundle is refused.

The single-file form is a tar archive (``.eab``) of that directory, manifest first. Unpacking
reads it as a stream and stops at the first member that is not a regular file the manifest lists
(so nothing it does not name is ever written), that escapes the directory, or that takes the
archive past the limits on members, total size and expansion over the archive's own size; it
unpacks into a staging folder that is removed on refusal, so a refused archive leaves nothing in
the cache.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import lzma
import os
import shutil
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from edgeaudio.errors import BundleError
from edgeaudio.signing import SIGNATURE, Trust, trust_setting, verify

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
ARCHIVE_SUFFIX = ".eab"

# Archive limits: far above any real bundle (the largest here is ~15 MB), far below what fills a disk.
MAX_MEMBERS = 4096
MAX_UNPACKED_BYTES = 4 << 30
MAX_MANIFEST_BYTES = 16 << 20
MAX_EXPANSION = 20  # unpacked bytes per byte of archive: a plain tar is ~1, compressed graphs ~1.1-3
_UNSAFE = "refusing an unsafe archive; get the bundle from a trusted source"

_NAME = {"type": "string", "minLength": 1, "maxLength": 256}
_PRECISION = {"enum": ["fp32", "fp16", "int8"]}
_TENSOR = {
    "type": "object", "required": ["name", "shape"],
    "properties": {"name": _NAME, "dtype": _NAME,
                   "shape": {"type": "array", "maxItems": 16,
                             "items": {"anyOf": [{"type": "integer", "minimum": 0}, _NAME]}}},
}
_GRAPH = {
    "type": "object", "required": ["name", "inputs", "outputs", "artifacts"],
    "properties": {
        "name": _NAME,
        "inputs": {"type": "array", "minItems": 1, "items": _TENSOR},
        "outputs": {"type": "array", "minItems": 1, "items": _TENSOR},
        "state": {"type": "array", "items": {"type": "object", "required": ["input", "output"],
                                             "properties": {"input": _NAME, "output": _NAME}}},
        "streaming": {"anyOf": [{"type": "null"}, {
            "type": "object", "required": ["audio_input", "block", "time_axes"],
            "properties": {"audio_input": _NAME, "block": {"type": "integer", "minimum": 1, "maximum": 1 << 22},
                           "time_axes": {"type": "object",
                                         "additionalProperties": {"type": "integer", "minimum": 0, "maximum": 16}},
                           "frames_per_block": {"type": "integer", "minimum": 1, "maximum": 1 << 16}}}]},
        "atol": {"type": "number", "minimum": 0},
        "rtol": {"type": "number", "minimum": 0},
        "axes": {"type": "object", "additionalProperties": {
            "type": "array", "minItems": 3, "maxItems": 3, "items": {"type": "integer", "minimum": 0}}},
        "artifacts": {"type": "array", "minItems": 1, "items": {
            "type": "object", "required": ["backend", "precision", "files"],
            "properties": {"backend": _NAME, "precision": _PRECISION,
                           "files": {"type": "object", "minProperties": 1, "additionalProperties": _NAME}}}},
    },
}
MANIFEST_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["schema_version", "task", "audio", "graphs", "files"],
    "properties": {
        "schema_version": {"type": "integer", "minimum": 1},
        "format": {"const": "edgeaudio-bundle"},
        "task": {"type": "object", "required": ["name", "version"],
                 "properties": {"name": _NAME, "version": {"type": "string", "maxLength": 64},
                                "plugin": {"type": ["string", "null"]}, "plugin_version": {"type": ["string", "null"]}}},
        "audio": {"type": "object", "required": ["sample_rate", "channels"],
                  "properties": {
                      "sample_rate": {"type": "integer", "minimum": 1000, "maximum": 768000},
                      "channels": {"type": "integer", "minimum": 1, "maximum": 256},
                      "array": {"anyOf": [{"type": "null"}, {
                          "type": "object", "required": ["name", "positions"],
                          "properties": {"name": _NAME, "positions": {"type": "array", "minItems": 1, "items": {
                              "type": "array", "minItems": 2, "maxItems": 3, "items": {"type": "number"}}}}}]}}},
        "target": {"type": "string"},
        "graphs": {"type": "array", "minItems": 1, "maxItems": 64, "items": _GRAPH},
        "files": {"type": "object", "maxProperties": MAX_MEMBERS,
                  "additionalProperties": {"type": "string", "pattern": "^[0-9a-f]{64}$"}},
        "default_precision": {"type": "object", "additionalProperties": _PRECISION},
        "reports": {"type": "object"},
        "provenance": {"type": "object", "properties": {"config": {"type": ["object", "null"]}}},
    },
}


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
    """Hash every file under ``root`` into ``manifest['files']`` and write ``manifest.json``
    (a signature of an earlier manifest is removed: it would no longer match)."""
    root = Path(root)
    (root / SIGNATURE).unlink(missing_ok=True)
    files = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.name != MANIFEST):
        files[path.relative_to(root).as_posix()] = sha256_file(path)
    manifest = dict(manifest, schema_version=SCHEMA_VERSION, files=files)
    target = root / MANIFEST
    target.write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")
    return target


def load_bundle(location: str | os.PathLike, extract_to: str | os.PathLike | None = None,
                trust: Trust | None = None) -> Bundle:
    """Open a bundle directory or ``.eab`` archive and verify its schema, its signature (under a
    trust setting: ``trust``, else the environment's, see ``edgeaudio.signing``) and every file hash."""
    location = Path(location)
    if not location.exists():
        raise BundleError(f"no bundle at {location}", hint="run `edgeaudio export <task>` to create one")
    trust = trust if trust is not None else trust_setting()
    if location.is_file():
        location = unpack_archive(location, extract_to)
    manifest_path = location / MANIFEST
    if not manifest_path.is_file():
        raise BundleError(f"{location} is not a bundle: {MANIFEST} is missing",
                          hint="give the folder that holds manifest.json, or a .eab archive")
    raw = _read_manifest_bytes(manifest_path)
    manifest = parse_manifest(raw, manifest_path)
    verify(location, raw, trust)
    _verify_files(location, manifest)
    return Bundle(location, manifest)


def _read_manifest_bytes(path: Path) -> bytes:
    if path.stat().st_size > MAX_MANIFEST_BYTES:
        raise BundleError(f"{path} is {path.stat().st_size} bytes, more than a manifest can be ({MAX_MANIFEST_BYTES})",
                          hint=_UNSAFE)
    return path.read_bytes()


def parse_manifest(raw: bytes, path: Path | str) -> dict[str, Any]:
    """The manifest in ``raw`` (the bytes of ``path``), checked against ``MANIFEST_SCHEMA``: one
    message naming the first field that is wrong, and what it should be."""
    try:
        manifest = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path} is not valid JSON ({exc})", hint="re-export the bundle") from exc
    if isinstance(manifest, dict):
        version = manifest.get("schema_version")
        if isinstance(version, int) and not isinstance(version, bool) and version > SCHEMA_VERSION:
            raise BundleError(
                f"bundle schema {version} is newer than this edgeaudio understands ({SCHEMA_VERSION})",
                hint='upgrade: pip install -U edgeaudio',
            )
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import best_match

    error = best_match(Draft202012Validator(MANIFEST_SCHEMA).iter_errors(manifest))
    if error is not None:
        where = "/".join(str(part) for part in error.absolute_path) or "the top level"
        raise BundleError(f"{path} is not a valid bundle manifest: at {where}: {_plain_message(error)}",
                          hint="re-export the bundle with `edgeaudio export`; a hand-edited manifest must keep its schema")
    _check_references(manifest, path)
    return manifest


def _plain_message(error) -> str:
    """What is wrong, in words, without printing a whole sub-document."""
    value, shown = error.validator_value, json.dumps(error.instance)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    rules = {
        "minItems": lambda: f"needs at least {value} item(s)",
        "maxItems": lambda: f"holds at most {value} item(s)",
        "minProperties": lambda: f"needs at least {value} entry(ies)",
        "maxProperties": lambda: f"holds at most {value} entries",
        "type": lambda: f"must be of type {value if isinstance(value, str) else ' or '.join(value)}",
        "minimum": lambda: f"must be at least {value}",
        "maximum": lambda: f"must be at most {value}",
        "enum": lambda: f"must be one of {', '.join(map(json.dumps, value))}",
        "const": lambda: f"must be {json.dumps(value)}",
        "pattern": lambda: "must be a sha256 (64 hex digits)" if "0-9a-f" in str(value) else "has the wrong form",
        "minLength": lambda: "must not be empty",
        "maxLength": lambda: f"is longer than {value} characters",
    }
    return f"{shown} {rules[error.validator]()}" if error.validator in rules else error.message


def _check_references(manifest: dict[str, Any], path: Path | str) -> None:
    """What the schema cannot say: every name a graph's state and streaming spec use is one of its
    inputs or outputs, and every file an artifact names is hashed in ``files``."""
    problems = []
    for graph in manifest["graphs"]:
        inputs, outputs = {t["name"] for t in graph["inputs"]}, {t["name"] for t in graph["outputs"]}
        where = f"graph '{graph['name']}'"
        for pair in graph.get("state", []):
            if pair["input"] not in inputs or pair["output"] not in outputs:
                problems.append(f"{where}: state pair {pair['input']} <- {pair['output']} names no such input/output")
        streaming = graph.get("streaming")
        if streaming:
            if streaming["audio_input"] not in inputs:
                problems.append(f"{where}: streaming audio_input '{streaming['audio_input']}' is not one of its inputs")
            problems += [f"{where}: streaming time axis of '{name}', which is not one of its outputs"
                         for name in streaming["time_axes"] if name not in outputs]
    referenced = {p for graph in manifest["graphs"] for artifact in graph["artifacts"] for p in artifact["files"].values()}
    unlisted = referenced - set(manifest["files"])
    if unlisted:
        problems.append(f"artifacts name files the manifest does not hash: {sorted(unlisted)}")
    if problems:
        raise BundleError(f"{path} is not a consistent bundle manifest: {problems[0]}",
                          hint="re-export the bundle with `edgeaudio export`; a hand-edited manifest must stay consistent")


def _verify_files(root: Path, manifest: dict[str, Any]) -> None:
    for relative, expected in manifest["files"].items():
        path = _inside(root, relative)
        if not path.is_file():
            raise BundleError(f"bundle {root} is missing {relative}", hint="re-export or re-copy the bundle")
        if path.is_symlink() or not path.resolve().is_relative_to(root.resolve()):
            raise BundleError(f"bundle file {relative} is a link to somewhere else", hint=_UNSAFE)
        actual = sha256_file(path)
        if actual != expected:
            raise BundleError(
                f"bundle file {relative} was modified (sha256 {actual[:12]}… != {expected[:12]}…)",
                hint="the bundle is corrupt or tampered with; re-export it from a trusted checkpoint",
            )


def _inside(root: Path, relative: str) -> Path:
    """Resolve ``relative`` under ``root`` and refuse anything that escapes it."""
    pure = PurePosixPath(relative)
    if pure.is_absolute() or ".." in pure.parts:
        raise BundleError(f"bundle path '{relative}' escapes the bundle directory", hint="refusing an unsafe bundle")
    return root / pure


def pack_archive(bundle_dir: str | os.PathLike, archive: str | os.PathLike) -> Path:
    """Write the single-file form: a tar of the manifest, its signature when there is one, and
    every file the manifest lists, in that order; written beside ``archive`` and renamed on success."""
    from edgeaudio.staging import write_atomically

    bundle = load_bundle(bundle_dir, trust=Trust())

    def write(path: Path) -> None:
        with tarfile.open(path, "w") as tar:
            tar.add(bundle.root / MANIFEST, arcname=MANIFEST)
            if (bundle.root / SIGNATURE).is_file():
                tar.add(bundle.root / SIGNATURE, arcname=SIGNATURE)
            for relative in bundle.manifest["files"]:
                tar.add(bundle.root / relative, arcname=relative)

    return write_atomically(archive, write)


def unpack_archive(archive: Path, extract_to: str | os.PathLike | None = None) -> Path:
    """Unpack an ``.eab`` into ``extract_to`` (default: a cache dir keyed by the archive's hash);
    see the module doc for what is refused. The caller verifies hashes and signature."""
    from edgeaudio.cache import cache_dir, cache_root
    from edgeaudio.staging import staging_dir

    target = Path(extract_to) if extract_to is not None else cache_root() / "bundles" / sha256_file(archive)[:16]
    if (target / MANIFEST).is_file():
        return target
    created = [p for p in (target.parent, *target.parent.parents) if not p.exists()]
    if extract_to is None:
        cache_dir("bundles")  # a clear error for an unusable cache
    staging = staging_dir(target.parent, "unpack")
    try:
        _extract(archive, staging)
        try:
            staging.rename(target)
        except OSError:
            if not (target / MANIFEST).is_file():  # not another process that unpacked it first
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
        if not (target / MANIFEST).is_file():
            for folder in created:  # a refused archive leaves no empty folders behind either
                with contextlib.suppress(OSError):
                    folder.rmdir()
    return target


def _extract(archive: Path, staging: Path) -> None:
    """Stream ``archive`` into ``staging``: the manifest first, then only the files it lists."""
    size = archive.stat().st_size
    budget = min(MAX_UNPACKED_BYTES, MAX_EXPANSION * max(size, 1 << 20))
    try:
        with tarfile.open(archive, "r|*") as tar:
            listed: set[str] | None = None
            seen: set[str] = set()
            unpacked = 0
            for count, member in enumerate(tar, 1):
                if count > MAX_MEMBERS:
                    raise BundleError(f"archive {archive.name} holds more than {MAX_MEMBERS} members", hint=_UNSAFE)
                name = _check_member(member, archive)
                if member.isdir():
                    continue
                if listed is None and name != MANIFEST:
                    raise BundleError(f"archive {archive.name} does not start with {MANIFEST} (first entry: '{name}')",
                                      hint="re-export it with `edgeaudio export --archive`; other tars are not bundle archives")
                if listed is not None and name not in listed:
                    raise BundleError(f"archive {archive.name} entry '{name}' is not a file its manifest lists", hint=_UNSAFE)
                if name in seen:
                    raise BundleError(f"archive {archive.name} holds '{name}' twice", hint=_UNSAFE)
                seen.add(name)
                unpacked += member.size
                if unpacked > budget:
                    raise BundleError(
                        f"archive {archive.name} unpacks to more than {budget} bytes ({size} bytes packed; limits: "
                        f"{MAX_UNPACKED_BYTES} bytes, {MAX_EXPANSION}x the archive)", hint=_UNSAFE)
                if name == MANIFEST and member.size > MAX_MANIFEST_BYTES:
                    raise BundleError(f"archive {archive.name}: its manifest is {member.size} bytes", hint=_UNSAFE)
                destination = staging.joinpath(*PurePosixPath(name).parts)
                destination.parent.mkdir(parents=True, exist_ok=True)
                source = tar.extractfile(member)
                with open(destination, "xb") as out:
                    shutil.copyfileobj(source, out, 1 << 20)
                if destination.stat().st_size != member.size:
                    raise BundleError(f"archive {archive.name} is truncated inside '{name}'",
                                      hint="download or copy the archive again")
                if name == MANIFEST:
                    manifest = parse_manifest(destination.read_bytes(), f"{archive.name}:{MANIFEST}")
                    listed = set(manifest["files"]) | {SIGNATURE}
    except (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError, gzip.BadGzipFile) as exc:
        raise BundleError(f"{archive.name} is not a bundle archive, or is truncated ({type(exc).__name__}: {exc})",
                          hint="download or copy the archive again, or re-export it with `edgeaudio export --archive`") from exc
    if listed is None:
        raise BundleError(f"archive {archive.name} holds no {MANIFEST}", hint="re-export it with `edgeaudio export --archive`")


def _check_member(member: tarfile.TarInfo, archive: Path) -> str:
    pure = PurePosixPath(member.name)
    if pure.is_absolute() or ".." in pure.parts:
        raise BundleError(f"archive {archive.name} entry '{member.name}' escapes the bundle directory", hint=_UNSAFE)
    if not (member.isfile() or member.isdir()):
        raise BundleError(f"archive {archive.name} entry '{member.name}' is a link or device, not a file", hint=_UNSAFE)
    return pure.as_posix().removeprefix("./")
