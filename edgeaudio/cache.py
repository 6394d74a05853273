"""Where edgeaudio keeps what it builds (default bundles, engines, built data sets):
``EDGEAUDIO_CACHE``, else ``~/.cache/edgeaudio``."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    return Path(os.environ.get("EDGEAUDIO_CACHE", Path.home() / ".cache" / "edgeaudio"))
