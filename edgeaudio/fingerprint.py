"""A content hash of an evaluation set, so a report says which data its numbers came from.

Validation and test sets are built in memory (synthesized scenes, composed clips, read pairs), and a
change of recipe, library or seed changes the numbers without changing any file name. Every report
that scores a set carries ``content_hash(set)``: two reports with the same hash scored the same
samples, labels and captions; a different hash says the data moved, instead of the figures
drifting silently.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np


def content_hash(value: Any) -> str:
    """sha256 (hex) over the content of ``value``: numpy arrays (dtype, shape, bytes), strings,
    numbers, None, lists/tuples, mappings (in key order), dataclasses (name and fields) and paths
    (the file's bytes, or the path itself for a folder or a missing file). Raises TypeError for
    anything else, rather than hashing an object's address."""
    digest = hashlib.sha256()
    _feed(digest, value)
    return digest.hexdigest()


def _feed(digest, value: Any) -> None:
    if isinstance(value, np.ndarray):
        array = np.ascontiguousarray(value)
        digest.update(f"a{array.dtype.str}{array.shape}".encode())
        digest.update(array.tobytes())
    elif isinstance(value, np.generic):
        _feed(digest, value.item())
    elif isinstance(value, bool) or value is None:
        digest.update(f"c{value}".encode())
    elif isinstance(value, int):
        digest.update(f"i{value};".encode())
    elif isinstance(value, float):
        digest.update(f"f{value.hex() if math.isfinite(value) else value};".encode())
    elif isinstance(value, str):
        data = value.encode()
        digest.update(f"s{len(data)};".encode() + data)
    elif isinstance(value, bytes):
        digest.update(f"b{len(value)};".encode() + value)
    elif isinstance(value, Path):
        if value.is_file():
            digest.update(b"p" + hashlib.sha256(value.read_bytes()).digest())
        else:
            _feed(digest, value.as_posix())
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        digest.update(f"d{type(value).__name__}{{".encode())
        for field in dataclasses.fields(value):
            _feed(digest, field.name)
            _feed(digest, getattr(value, field.name))
        digest.update(b"}")
    elif isinstance(value, Mapping):
        digest.update(f"m{len(value)}{{".encode())
        for key in sorted(value, key=repr):
            _feed(digest, key)
            _feed(digest, value[key])
        digest.update(b"}")
    elif isinstance(value, (list, tuple)):
        digest.update(f"l{len(value)}[".encode())
        for item in value:
            _feed(digest, item)
        digest.update(b"]")
    else:
        raise TypeError(f"cannot hash the content of a {type(value).__name__}")
