"""Where edgeaudio keeps what it builds (default bundles, engines, built data sets):
``EDGEAUDIO_CACHE``, else ``~/.cache/edgeaudio``; and what the user configures (trusted signing
keys): ``EDGEAUDIO_CONFIG``, else ``~/.config/edgeaudio``.

Two processes building the same thing (two first runs of a task, two exports to one folder) take
the same ``lock`` first: the second waits, then finds the work done or fails with a clear message,
instead of racing the first to a rename.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from edgeaudio.errors import EdgeAudioError

CACHE_ENV = "EDGEAUDIO_CACHE"
CONFIG_ENV = "EDGEAUDIO_CONFIG"


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "edgeaudio"))


def config_root() -> Path:
    return Path(os.environ.get(CONFIG_ENV, Path.home() / ".config" / "edgeaudio"))


def cache_dir(*parts: str) -> Path:
    """``cache_root() / parts``, created and checked writable; an unusable location (a file, a
    read-only folder, no permission) is one clear error naming it and how to move the cache."""
    folder = cache_root().joinpath(*parts)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        where = f"{CACHE_ENV}={os.environ[CACHE_ENV]}" if CACHE_ENV in os.environ else "the default cache"
        raise EdgeAudioError(f"cannot use the cache folder {folder} ({where}): {exc.strerror or exc}",
                             hint=f"set {CACHE_ENV} to a folder you can write to") from exc
    return folder


def lock(key: str, timeout: float = -1):
    """An inter-process lock (``filelock``) named by ``key`` (e.g. an output folder's absolute
    path), kept in the cache's ``locks`` folder so no lock file lands beside the user's output.
    Use as a context manager; ``timeout`` -1 waits as long as the holder works."""
    from filelock import FileLock

    name = hashlib.sha256(key.encode()).hexdigest()[:24]
    return FileLock(str(cache_dir("locks") / f"{name}.lock"), timeout=timeout)
