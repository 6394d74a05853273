"""Signed bundles: who made a bundle, beyond whether its files are intact.

The manifest lists every file of a bundle with its sha256, so a signature over the manifest's
exact bytes covers every file: change one byte of a graph and its hash no longer matches; rewrite
the hash too and the signature no longer verifies. Signatures are Ed25519 (``cryptography``),
stored beside the manifest as ``manifest.sig`` (JSON: algorithm, key id, base64 signature).

Keys: ``edgeaudio keygen NAME`` writes ``NAME.key`` (PKCS#8 PEM, readable by its owner only) and
``NAME.pub`` (SubjectPublicKeyInfo PEM); ``edgeaudio export ... --sign NAME.key`` signs.

Trust: public keys named by ``--trust PUBKEY`` (run, bench, eval), by ``EDGEAUDIO_TRUST`` (key
files or folders of ``*.pub``, separated by ``os.pathsep``) and the ``*.pub`` files in the trust
folder (``$EDGEAUDIO_CONFIG/trusted-keys``, default ``~/.config/edgeaudio/trusted-keys``). With
any trusted key, a bundle must carry a valid signature by one of them or it is refused; with
none, bundles are checked for integrity only (sha256), as before.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from edgeaudio.cache import config_root
from edgeaudio.errors import BundleError, UsageError

SIGNATURE = "manifest.sig"
TRUST_ENV = "EDGEAUDIO_TRUST"
TRUST_FOLDER = "trusted-keys"
ALGORITHM = "ed25519"
_TRUST_HINT = (f"get the bundle from a publisher whose key you trust, or sign it yourself: "
               f"edgeaudio export TASK --sign KEY (trust settings: --trust, {TRUST_ENV}, the trust folder)")


def key_id(public_key) -> str:
    """The first 16 hex digits of the sha256 of the raw 32-byte public key."""
    from cryptography.hazmat.primitives import serialization

    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def generate_keys(stem: str | os.PathLike, overwrite: bool = False) -> tuple[Path, Path, str]:
    """Write a new key pair as ``STEM.key`` (private, mode 0600) and ``STEM.pub``; returns both
    paths and the key id. Existing files are kept unless ``overwrite``."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    stem = Path(stem)
    private_path, public_path = stem.with_name(stem.name + ".key"), stem.with_name(stem.name + ".pub")
    existing = [p for p in (private_path, public_path) if p.exists()]
    if existing and not overwrite:
        raise UsageError(f"{existing[0]} exists; refusing to replace a key", hint="choose another name, or pass --force")
    private = Ed25519PrivateKey.generate()
    private_pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption())
    public_pem = private.public_key().public_bytes(serialization.Encoding.PEM,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo)
    private_path.parent.mkdir(parents=True, exist_ok=True)
    private_path.unlink(missing_ok=True)
    descriptor = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(private_pem)
    public_path.write_bytes(public_pem)
    return private_path, public_path, key_id(private.public_key())


def load_private_key(path: str | os.PathLike):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    data = _read_key_file(path, "signing key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise UsageError(f"{path} is not an unencrypted PEM private key ({exc})",
                         hint="make one with `edgeaudio keygen NAME` and sign with NAME.key") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise UsageError(f"{path} is a {type(key).__name__}, not an Ed25519 key", hint="make one with `edgeaudio keygen NAME`")
    return key


def load_public_key(path: str | os.PathLike):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    data = _read_key_file(path, "public key")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise UsageError(f"{path} is not a PEM public key ({exc})",
                         hint="trust the NAME.pub that `edgeaudio keygen` wrote") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise UsageError(f"{path} is a {type(key).__name__}, not an Ed25519 public key",
                         hint="trust the NAME.pub that `edgeaudio keygen` wrote")
    return key


def _read_key_file(path: str | os.PathLike, what: str) -> bytes:
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"no {what} at {path}", hint="make a key pair with `edgeaudio keygen NAME`")
    if path.stat().st_size > 64 * 1024:
        raise UsageError(f"{path} is too large to be a {what}", hint="name the NAME.key / NAME.pub that `edgeaudio keygen` wrote")
    return path.read_bytes()


def sign_bundle(root: str | os.PathLike, private_key_path: str | os.PathLike) -> str:
    """Sign ``root/manifest.json`` as it is on disk; writes ``root/manifest.sig``; returns the key id."""
    key = load_private_key(private_key_path)
    manifest = (Path(root) / "manifest.json").read_bytes()
    signature = key.sign(manifest)
    kid = key_id(key.public_key())
    record = {"algorithm": ALGORITHM, "key_id": kid, "signature": base64.b64encode(signature).decode()}
    (Path(root) / SIGNATURE).write_text(json.dumps(record) + "\n")
    return kid


@dataclass(frozen=True)
class Trust:
    """The public keys a bundle must be signed by, and where each came from; empty: no trust
    setting, so bundles are checked for integrity only."""

    keys: tuple[tuple[str, object, str], ...] = ()  # (key id, Ed25519PublicKey, source)

    @property
    def active(self) -> bool:
        return bool(self.keys)

    def describe(self) -> str:
        return ", ".join(f"{kid} ({source})" for kid, _, source in self.keys)


def trust_setting(extra: Sequence[str | os.PathLike] | None = None) -> Trust:
    """The trusted keys: ``extra`` (``--trust``), ``EDGEAUDIO_TRUST`` and the trust folder."""
    sources: list[tuple[Path, str]] = [(Path(p), "--trust") for p in extra or ()]
    for item in filter(None, os.environ.get(TRUST_ENV, "").split(os.pathsep)):
        sources += [(p, TRUST_ENV) for p in _key_files(Path(item), TRUST_ENV)]
    folder = config_root() / TRUST_FOLDER
    if folder.is_dir():
        sources += [(p, str(folder)) for p in sorted(folder.glob("*.pub"))]
    keys = {}
    for path, source in sources:
        key = load_public_key(path)
        keys.setdefault(key_id(key), (key, f"{path} via {source}"))
    return Trust(tuple((kid, key, source) for kid, (key, source) in keys.items()))


def _key_files(path: Path, source: str) -> Iterable[Path]:
    if path.is_dir():
        return sorted(path.glob("*.pub"))
    if not path.exists():
        raise UsageError(f"{source} names {path}, which does not exist", hint=f"fix or unset {source}")
    return [path]


def verify(root: Path, manifest_bytes: bytes, trust: Trust) -> str | None:
    """Under an active ``trust``, check ``root/manifest.sig`` against ``manifest_bytes``; returns
    the signer's key id (None when no trust is set). Refuses an unsigned bundle, a malformed
    signature, an unknown signer and a signature that does not match the manifest."""
    if not trust.active:
        return None
    from cryptography.exceptions import InvalidSignature

    path = root / SIGNATURE
    if not path.is_file():
        raise BundleError(f"bundle {root} is not signed, and a trust setting requires a signature", hint=_TRUST_HINT)
    try:
        record = json.loads(path.read_text())
        kid, signature = record["key_id"], base64.b64decode(record["signature"], validate=True)
        if record.get("algorithm") != ALGORITHM:
            raise ValueError(f"algorithm {record.get('algorithm')!r}, not {ALGORITHM}")
    except (ValueError, KeyError, TypeError, binascii.Error, UnicodeDecodeError) as exc:
        raise BundleError(f"bundle {root} has a malformed signature ({SIGNATURE}: {exc})",
                          hint="the bundle is corrupt or tampered with; get it again from its publisher") from exc
    known = {k: key for k, key, _ in trust.keys}
    if kid not in known:
        raise BundleError(f"bundle {root} is signed by key {kid}, which is not trusted here (trusted: {trust.describe()})",
                          hint="trust the publisher's public key (--trust KEY.pub) if you mean to, or get a bundle they signed")
    try:
        known[kid].verify(signature, manifest_bytes)
    except InvalidSignature as exc:
        raise BundleError(f"bundle {root}: the signature by {kid} does not match its manifest (changed after signing)",
                          hint="the bundle is corrupt or tampered with; get it again from its publisher") from exc
    return kid
