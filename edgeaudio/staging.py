"""Writing so that nothing is left half-done: work happens beside its target under a hidden name
and is renamed into place on success, removed on failure.

A process killed outright (SIGKILL, power loss) cannot clean up after itself, so staging names
carry the writer's process id, and the next writer in the same folder removes those whose process
is gone. Renames stay within one folder, so they are atomic on POSIX file systems.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Callable

_STAGING = re.compile(r"^\.(?P<purpose>[a-z]+)-(?P<pid>\d+)-[^/]+$")
_PARTIAL = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.partial$")


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def staging_dir(parent: Path, purpose: str) -> Path:
    """A fresh hidden folder ``.PURPOSE-PID-XXXX`` in ``parent`` (created), after removing the
    ones of the same purpose that dead processes left there."""
    parent.mkdir(parents=True, exist_ok=True)
    clean_stale(parent, purpose)
    return Path(tempfile.mkdtemp(prefix=f".{purpose}-{os.getpid()}-", dir=parent))


def clean_stale(parent: Path, purpose: str) -> list[Path]:
    """Remove the ``.PURPOSE-PID-*`` folders in ``parent`` whose process no longer runs; returns them."""
    removed = []
    if not parent.is_dir():
        return removed
    for entry in parent.iterdir():
        match = _STAGING.match(entry.name)
        if match and match["purpose"] == purpose and entry.is_dir() and not process_alive(int(match["pid"])):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


class PendingFile:
    """``target`` written as ``.NAME.PID.partial`` beside it: ``commit()`` renames it onto the
    target, ``discard()`` removes it. Partial files of ``target`` from dead processes are removed
    when a new one is made.

    A symbolic link is followed (the file it points to is replaced, not the link). A target that
    exists and is no regular file (``/dev/stdout``, a FIFO, a device) is written directly, since
    renaming onto it would replace the device node instead of writing to it."""

    def __init__(self, target: str | os.PathLike):
        self.done = False
        if Path(target).exists() and not Path(target).is_file():
            self.target = self.path = Path(target)  # written in place: nothing to rename or remove
            self.done = True
            return
        self.target = Path(os.path.realpath(target))
        self.target.parent.mkdir(parents=True, exist_ok=True)
        for entry in self.target.parent.glob(f".{glob_escape(self.target.name)}.*.partial"):
            match = _PARTIAL.match(entry.name)
            if match and match["name"] == self.target.name and not process_alive(int(match["pid"])):
                entry.unlink(missing_ok=True)
        self.path = self.target.with_name(f".{self.target.name}.{os.getpid()}.partial")

    def commit(self) -> Path:
        if not self.done:
            self.done = True
            os.replace(self.path, self.target)
        return self.target

    def discard(self) -> None:
        if not self.done:
            self.done = True
            self.path.unlink(missing_ok=True)


def write_atomically(target: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """``write(path)`` into a ``PendingFile`` beside ``target``, renamed onto it once ``write``
    returns and removed if it raises; returns the target's path. ``path`` has no meaningful
    suffix: a writer that reads the format from the name must be told it."""
    pending = PendingFile(target)
    try:
        write(pending.path)
        return pending.commit()
    finally:
        pending.discard()


def glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)
