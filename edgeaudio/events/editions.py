"""Editions of the built-in event library, and where each lives in the cache.

A model is evaluated on the held-out recordings of the edition it was trained on, so an edition,
once shipped weights depend on it, never changes. Edition 1 (233 clips of about 190 recordings) was
cut by an early draft of RECIPE; ``edition1.json`` lists its clips (source, entry, start, duration)
and edition 1 is cut again from that list. Edition 2 is RECIPE plus game and simulation packages
with many more animal, machinery, vehicle, crash and crowd recordings; it drops byte-identical
copies and doubles the size budget per class. Edition 3 is edition 2 with real horns (car horns,
klaxons, a boat horn) in place of two whistles, and more machinery; its other classes are edition
2's, clip for clip. Sidecars of shipped weights name their edition (``library_edition``; none means 1).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from edgeaudio.errors import UsageError
from edgeaudio.events.recipe import ADDED_IN_EDITION_2, ADDED_IN_EDITION_3, RECIPE, REMOVED_IN_EDITION_3, Source


def _edition(
    recipe: dict[str, list[Source]], added: dict[str, list[Source]], removed: dict[str, tuple[str, ...]] | None = None
) -> dict[str, list[Source]]:
    """A recipe plus the sources an edition adds, minus the OpenSFX entries it drops."""
    dropped = removed or {}
    return {
        label: [
            *(replace(s, entries=tuple(e for e in s.entries if e not in dropped.get(label, ()))) for s in sources),
            *added.get(label, []),
        ]
        for label, sources in recipe.items()
    }


EDITION_1 = Path(__file__).with_name("edition1.json")
_RECIPE_2 = _edition(RECIPE, ADDED_IN_EDITION_2)
# edition -> (recipe, seconds per class, clips per class); edition 1 is cut again from EDITION_1
EDITIONS: dict[int, tuple[dict[str, list[Source]], float, int] | None] = {
    1: None,
    2: (_RECIPE_2, 120.0, 96),
    3: (_edition(_RECIPE_2, ADDED_IN_EDITION_3, REMOVED_IN_EDITION_3), 120.0, 96),
}
LATEST_EDITION = max(EDITIONS)


def check_edition(edition: int) -> int:
    if edition not in EDITIONS:
        raise UsageError(
            f"no event library edition {edition}", hint=f"editions: {', '.join(map(str, EDITIONS))}"
        )
    return int(edition)


def training_edition(library: str | Path | None) -> int | None:
    """The edition a training run draws from: the latest built-in one by default, the edition
    whose cache folder ``library`` names, or None for a library folder of the user's own."""
    if not library:
        return LATEST_EDITION
    folder = Path(library).expanduser().resolve()
    return next((e for e in EDITIONS if builtin_dir(e).resolve() == folder), None)


def edition_of(sidecar: dict) -> int | None:
    """The library edition a sidecar's weights were trained on (written since edition 2; else 1);
    None when they were trained on a library of the user's own (the sidecar records None)."""
    for section in (sidecar.get("data") or {}, sidecar.get("config") or {}):
        if "library_edition" in section:
            edition = section["library_edition"]
            return None if edition is None else int(edition)
    return 1



def builtin_dir(edition: int = LATEST_EDITION) -> Path:
    """Where an edition of the built-in library lives, built or not: ``<edgeaudio cache>/events/builtin``
    for edition 1, ``.../builtin-v<N>`` for later ones."""
    from edgeaudio.cache import cache_root

    check_edition(edition)
    return cache_root() / "events" / ("builtin" if edition == 1 else f"builtin-v{edition}")


def is_built(folder: Path) -> bool:
    """SOURCES.json is written last, so its presence means a complete build."""
    return (Path(folder) / "SOURCES.json").is_file()
