"""What the writers of the shipped validation sets (``python -m edgeaudio.plugins.<task>.<kind>_sets
--ship``) share: the folder they rewrite, the licence summary of the clips a set was made from, the
``SOURCES.json`` they write beside it, and their command line."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgeaudio.errors import EdgeAudioError, report


def cleared(folder: Path, suffix: str = "") -> Path:
    """``folder``, made if missing, without the files it held whose names end in ``suffix``."""
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.iterdir():
        if old.name.endswith(suffix):
            old.unlink()
    return folder


def licence_summary(clips: list[dict[str, Any]]) -> dict[str, Any]:
    """Per Debian package of ``clips`` (entries of a corpus's SOURCES.json: file, package,
    version, licence, ...) its version and the licences of those clips, and all their licences."""
    packages: dict[str, Any] = {}
    for clip in clips:
        entry = packages.setdefault(clip["package"], {"version": clip["version"], "licences": []})
        entry["licences"] = sorted({*entry["licences"], clip["licence"]})
    return {"packages": dict(sorted(packages.items())), "licences": sorted({clip["licence"] for clip in clips})}


def write_sources(folder: Path, sources: dict[str, Any], made: str, log: Callable[[str], None], drawn: str = "clips") -> None:
    """Write ``sources`` (with its ``clips`` and ``licences``) as ``folder/SOURCES.json``, and log
    what was ``made`` from how many clips under which licences."""
    (folder / "SOURCES.json").write_text(json.dumps(sources, indent=1) + "\n")
    log(f"{folder}: {made} from {len(sources['clips'])} {drawn}, licences {', '.join(sources['licences'])}")


def ship_main(
    command: str,
    doc: str,
    what: str,
    ship: Callable[[argparse.Namespace], object],
    argv: list[str] | None = None,
    options: dict[str, dict[str, Any]] | None = None,
) -> int:
    """The ``command --ship`` of a set writer: ``doc``'s first line as its description, ``options``
    (flag: ``add_argument`` keywords) beside ``--ship``, and ``ship(args)`` run with its errors
    reported as the CLI reports them."""
    parser = argparse.ArgumentParser(prog=command, description=doc.split("\n")[0])
    parser.add_argument("--ship", action="store_true", required=True, help=f"write the shipped {what}")
    for flag, keywords in (options or {}).items():
        parser.add_argument(flag, **keywords)
    args = parser.parse_args(argv)
    try:
        ship(args)
    except EdgeAudioError as exc:
        return report(exc)
    return 0
