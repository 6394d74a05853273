"""Debian packages the event library is cut from: installing them, their versions, and the licence
of each installed file (from the package's machine-readable copyright file, or stated per sound
where a package bundles sounds into one file)."""

from __future__ import annotations

import fnmatch
import re
import subprocess
from functools import lru_cache
from pathlib import Path

from edgeaudio.errors import UsageError

# Licences of packages whose copyright file is not machine-readable, read by hand from that file.
STATED_LICENCES = {"fillets-ng-data-nl": "GPL-2"}


def apt_install(packages: list[str]) -> None:
    """Install what is missing; refresh the package lists once if apt does not know a package."""
    if not packages:
        return
    command = ["apt-get", "install", "-y", "--no-install-recommends", *packages]
    if subprocess.run(command).returncode == 0:
        return
    subprocess.run(["apt-get", "update"], check=False)
    if subprocess.run(command).returncode != 0:
        raise UsageError(f"apt-get could not install {' '.join(packages)}", hint="run as root on Debian 12 or later")


def installed_version(package: str) -> str | None:
    """The installed version of a Debian package, or None when it is not installed."""
    result = subprocess.run(
        ["dpkg-query", "-W", "-f=${Status}|${Version}", package], capture_output=True, text=True, check=False
    )
    status, _, version = result.stdout.partition("|")
    return version if result.returncode == 0 and status.endswith("installed") else None


_LICENCE_PHRASES = [
    (r"Creative Commons Attribution[- ]Share ?Alike 3\.0", "CC-BY-SA-3.0"),
    (r"Creative Commons Attribution 3\.0", "CC-BY-3.0"),
    (r"Creative Commons Zero 1\.0|CC0", "CC0-1.0"),
    (r"[Pp]ublic [Dd]omain", "public-domain"),
]


def licence_from_text(text: str) -> str | None:
    """The short name of the licence a sound's own description states after ``License:``, if known."""
    match = re.search(r"License:(.*)", text)
    for pattern, spdx in _LICENCE_PHRASES:
        if match and re.search(pattern, match.group(1)):
            return spdx
    return None


def file_licence(package: str, path: Path) -> str | None:
    """Licence of an installed file from the package's DEP-5 copyright file (last match wins).

    Debian's patterns name upstream paths (``stereo/bell.oga``), so a pattern matches an installed
    path that ends with it. Packages without a machine-readable file use STATED_LICENCES.
    """
    stanzas = dep5_stanzas(Path(f"/usr/share/doc/{package}/copyright"))
    if stanzas is None:
        return STATED_LICENCES.get(package)
    licence = None
    for patterns, stanza_licence in stanzas:
        if any(p == "*" or fnmatch.fnmatch(str(path), f"*/{p}") for p in patterns):
            licence = stanza_licence
    return licence


@lru_cache(maxsize=None)
def dep5_stanzas(copyright_file: Path) -> list[tuple[list[str], str]] | None:
    """(Files patterns, License short name) per stanza, or None when the file is not DEP-5."""
    if not copyright_file.is_file():
        return None
    text = copyright_file.read_text(errors="replace")
    if not text.startswith("Format:"):
        return None
    stanzas = []
    for paragraph in re.split(r"\n[ \t]*\n", text):
        fields = dict(re.findall(r"^(Files|License):[ \t]*(.*(?:\n[ \t]+.*)*)", paragraph, flags=re.MULTILINE))
        if "Files" in fields and "License" in fields:
            stanzas.append((fields["Files"].split(), fields["License"].splitlines()[0].strip()))
    return stanzas
