"""Device profiles: compute targets and microphone arrays, read from validated YAML files.

A profile is one ``*.yaml`` file; its name is the file name without ``.yaml``. The built-in
``devices/`` directory is registered by the hook at the bottom of this module, through the same
``register_profiles`` hook a third-party plugin uses. Every file is checked strictly, because a
wrong mic position or channel index does not crash anything: it silently ruins localization.
Users write family names (``jetson``, ``respeaker``) as often as exact ones, so the lookups
resolve both and always say, in one line, which profile they chose and why.
"""

from __future__ import annotations

import functools
import importlib.resources
import os
import platform
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterable, Union

import yaml

from edgeaudio import registry
from edgeaudio.errors import EdgeAudioError, ProfileError, did_you_mean
from edgeaudio.hookspecs import hookimpl

BACKENDS = ("tensorrt", "openvino", "onnxruntime", "torch")
PRECISIONS = ("fp32", "fp16", "int8")
ARCHES = ("aarch64", "x86_64")
ACCELERATORS = ("gpu", "cpu")
SAMPLE_FORMATS = ("int16", "int24", "int32", "float32")
MAX_COORDINATE_M = 1.0  # an edge array fits in a metre; larger values are millimetres by mistake

_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")
_EXAMPLES_HINT = "compare with a built-in profile in the edgeaudio/devices package"


@dataclass(frozen=True)
class TargetProfile:
    """A compute target: what the export step builds for and the runtime picks a backend from."""

    name: str
    family: str
    arch: str
    accelerator: str
    backends: tuple[str, ...]
    precisions: tuple[str, ...]
    threads: int
    memory_gb: float
    description: str
    family_default: bool
    path: str
    kind: ClassVar[str] = "target"


@dataclass(frozen=True)
class ArrayProfile:
    """A microphone array: geometry for training and localization, capture settings for live audio."""

    name: str
    family: str
    positions: tuple[tuple[float, float, float], ...]
    channel_map: tuple[int, ...]
    native_rate: int
    capture_channels: int
    sample_format: str
    portaudio_pattern: str
    description: str
    family_default: bool
    path: str
    kind: ClassVar[str] = "array"

    @property
    def num_mics(self) -> int:
        return len(self.positions)

    def positions_array(self):
        """Mic positions as a fresh (num_mics, 3) float64 array in metres (numpy is imported lazily)."""
        import numpy as np

        return np.array(self.positions, dtype=np.float64)

    def matches(self, device: dict) -> bool:
        """Whether a PortAudio device looks like this array and can deliver all its channels.

        The channel count matters as much as the name: a ReSpeaker USB array on its 1-channel
        firmware, or a miniDSP measurement mic, shares a name pattern but cannot feed this array.
        """
        name = str(device.get("name", ""))
        channels = int(device.get("max_input_channels", 0) or 0)
        return channels >= self.capture_channels and re.search(self.portaudio_pattern, name, re.I) is not None


Profile = Union[TargetProfile, ArrayProfile]


# --- field checks: each returns the cleaned value or raises _Invalid -----------------------------


class _Invalid(Exception):
    """A field value is wrong; the loader adds the file and field names."""

    def __init__(self, expectation: str, value: Any, hint: str = _EXAMPLES_HINT):
        super().__init__(expectation)
        self.expectation = expectation
        self.value = value
        self.hint = hint


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _Invalid("must be a non-empty string", value)
    return value


def _lowercase_name(value: Any) -> str:
    if not isinstance(value, str) or not _NAME.match(value):
        raise _Invalid("must be a lowercase name of letters, digits and '-'", value)
    return value


def _flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _Invalid("must be true or false", value)
    return value


def _positive_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise _Invalid("must be a positive integer", value)
    return value


def _positive_number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise _Invalid("must be a positive number", value)
    return float(value)


def _one_of(*options: str) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if value not in options:
            raise _Invalid(f"must be one of {', '.join(options)}", value)
        return value

    return check


def _ordered_subset(*options: str) -> Callable[[Any], tuple[str, ...]]:
    """A non-empty preference list drawn from ``options``, each at most once (order is meaning)."""

    def check(value: Any) -> tuple[str, ...]:
        known = isinstance(value, list) and all(isinstance(item, str) and item in options for item in value)
        if not known or not value or len(set(value)) != len(value):
            expectation = f"must be a list of distinct names among {', '.join(options)}, in order of preference"
            raise _Invalid(expectation, value)
        return tuple(value)

    return check


def _position(value: Any) -> tuple[float, float, float]:
    numbers = isinstance(value, list) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    if not numbers or len(value) != 3:
        hint = "write each mic as [x, y, z], e.g. [-0.0405, 0.0, 0.0]"
        raise _Invalid("must be a list of [x, y, z] triples in metres", value, hint)
    if any(abs(v) > MAX_COORDINATE_M for v in value):
        raise _Invalid(
            f"must be in metres (|coordinate| <= {MAX_COORDINATE_M})", value, "positions are metres, not millimetres"
        )
    return (float(value[0]), float(value[1]), float(value[2]))


def _positions(value: Any) -> tuple[tuple[float, float, float], ...]:
    if not isinstance(value, list) or not value:
        raise _Invalid("must be a non-empty list of [x, y, z] triples in metres", value)
    return tuple(_position(item) for item in value)


def _channel_map(value: Any) -> tuple[int, ...]:
    indices = isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value)
    if not indices or not value or len(set(value)) != len(value):
        raise _Invalid(
            "must be a non-empty list of distinct 0-based channel indices",
            value,
            "list the captured channel that carries each mic, in the order of positions",
        )
    return tuple(value)


def _regex(value: Any) -> str:
    _text(value)
    try:
        re.compile(value)
    except re.error as exc:
        raise _Invalid(f"must be a valid regular expression ({exc})", value) from None
    return value


_COMMON_FIELDS = {
    "kind": _one_of("target", "array"),
    "family": _lowercase_name,
    "description": _text,
    "family_default": _flag,
}

FIELDS: dict[str, dict[str, Callable[[Any], Any]]] = {
    "target": {
        **_COMMON_FIELDS,
        "arch": _one_of(*ARCHES),
        "accelerator": _one_of(*ACCELERATORS),
        "backends": _ordered_subset(*BACKENDS),
        "precisions": _ordered_subset(*PRECISIONS),
        "threads": _positive_int,
        "memory_gb": _positive_number,
    },
    "array": {
        **_COMMON_FIELDS,
        "positions": _positions,
        "channel_map": _channel_map,
        "native_rate": _positive_int,
        "capture_channels": _positive_int,
        "sample_format": _one_of(*SAMPLE_FORMATS),
        "portaudio_pattern": _regex,
    },
}


# --- reading one file ----------------------------------------------------------------------------


class _DuplicateField(yaml.YAMLError):
    def __init__(self, field: str, line: int):
        super().__init__(field)
        self.field = field
        self.line = line


class _StrictLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
    """Safe loader that refuses a key given twice: plain YAML silently keeps the last one.

    libyaml's parser when PyYAML was built with it: ten times faster than the pure-Python one.
    """


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: set[str] = set()
    for key_node, _ in node.value:
        if isinstance(key_node, yaml.ScalarNode):
            if key_node.value in seen:
                raise _DuplicateField(key_node.value, key_node.start_mark.line + 1)
            seen.add(key_node.value)
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _display(path: Path) -> str:
    """The path as a user would type it: relative to the working directory when inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def read_strict_yaml(path: Path, shown: str, error: type[EdgeAudioError], what: str, twice: str, twice_hint: str) -> Any:
    """The YAML document at ``path`` (shown to the user as ``shown``), a key given twice refused:
    every failure is one ``error`` naming the file, ``twice`` (a template with ``{field}`` and
    ``{line}``) and ``twice_hint`` for a duplicate key, ``what`` the file is when it cannot be read."""
    try:
        return yaml.load(path.read_text(encoding="utf-8"), Loader=_StrictLoader)
    except _DuplicateField as exc:
        raise error(f"{shown}: " + twice.format(field=exc.field, line=exc.line), hint=twice_hint) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        raise error(
            f"{shown}: not valid YAML at line {mark.line + 1}, column {mark.column + 1}: {exc.problem}",
            hint="check the indentation and the ':' after each field name",
        ) from None
    except (yaml.YAMLError, OSError, UnicodeDecodeError) as exc:
        raise error(f"{shown}: cannot read the {what}: {exc}") from None


def _read_yaml(path: Path) -> dict:
    shown = _display(path)
    data = read_strict_yaml(path, shown, ProfileError, "profile", "field '{field}' appears twice (line {line})",
                            "keep one of the two entries")
    if not isinstance(data, dict):
        raise ProfileError(f"{shown}: a profile must be a mapping of field: value", hint=_EXAMPLES_HINT)
    return data


def _parse(path: Path) -> Profile:
    """Read and validate one profile file, naming the file and the field in every error."""
    shown = _display(path)
    name = path.stem
    if not _NAME.match(name):
        raise ProfileError(
            f"{shown}: the file name '{name}' is the profile name and must be lowercase letters, digits and '-'",
            hint="rename the file, e.g. my-array.yaml",
        )
    data = _read_yaml(path)
    kind = data.get("kind")
    if kind not in FIELDS:
        problem = "is missing" if kind is None else f"must be 'target' or 'array', got {kind!r}"
        raise ProfileError(
            f"{shown}: field 'kind' {problem}",
            hint="kind: target for a compute target, kind: array for a microphone array",
        )
    values = _check_fields(shown, kind, data)
    profile_type = TargetProfile if kind == "target" else ArrayProfile
    if profile_type is ArrayProfile:
        _check_channels(shown, values)
    del values["kind"]
    return profile_type(name=name, path=str(path), **values)


def _check_fields(shown: str, kind: str, data: dict) -> dict[str, Any]:
    checks = FIELDS[kind]
    for field in data:
        if field not in checks:
            raise ProfileError(
                f"{shown}: unknown field '{field}' for a {kind} profile",
                hint=f"{did_you_mean(field, checks)}allowed fields: {', '.join(checks)}",
            )
    missing = [field for field in checks if field not in data]
    if missing:
        raise ProfileError(
            f"{shown}: missing field '{missing[0]}'", hint=f"a {kind} profile needs: {', '.join(checks)}"
        )
    values = {}
    for field, check in checks.items():
        try:
            values[field] = check(data[field])
        except _Invalid as exc:
            message = f"{shown}: field '{field}' {exc.expectation}, got {exc.value!r}"
            raise ProfileError(message, hint=exc.hint) from None
    return values


def _check_channels(shown: str, values: dict[str, Any]) -> None:
    """Cross-field checks of an array: every mic has a channel, and every channel is captured."""
    channel_map, positions, captured = values["channel_map"], values["positions"], values["capture_channels"]
    if len(channel_map) != len(positions):
        raise ProfileError(
            f"{shown}: field 'channel_map' lists {len(channel_map)} channels for {len(positions)} positions",
            hint="give exactly one channel index per mic position, in the same order",
        )
    out_of_range = [index for index in channel_map if index >= captured]
    if out_of_range:
        raise ProfileError(
            f"{shown}: field 'channel_map' index {out_of_range[0]} is out of range for "
            f"capture_channels {captured} (indices are 0-based)",
            hint="raise capture_channels to what the device delivers, or fix the index",
        )


# --- the set of all profiles ---------------------------------------------------------------------

_cache: dict[tuple[tuple[str, ...], tuple[str, ...]], dict[str, Profile]] = {}


def load_profiles(extra_paths: Iterable[str | os.PathLike] = ()) -> dict[str, Profile]:
    """Every profile registered by plugins plus ``extra_paths`` (files or directories), by name.

    Cached per set of paths; call ``clear_cache()`` after editing a file in the same process.
    Raises ProfileError for the first invalid file, a duplicate name, or a family without
    exactly one default.
    """
    registered = tuple(str(path) for path in registry.collect(
        "register_profiles", lambda p: None if isinstance(p, (str, os.PathLike)) else "which is not a path"))
    key = (registered, tuple(str(path) for path in extra_paths))
    if key not in _cache:
        _cache[key] = _load(registered + key[1])
    return dict(_cache[key])


def clear_cache() -> None:
    """Forget loaded profiles, so the next lookup rereads the files."""
    _cache.clear()


def _load(paths: Iterable[str]) -> dict[str, Profile]:
    """Parse every file once (a file registered twice is not a duplicate) and check across files."""
    profiles: dict[str, Profile] = {}
    seen: set[Path] = set()
    for path in paths:
        for file in _yaml_files(Path(path)):
            if file.resolve() in seen:
                continue
            seen.add(file.resolve())
            profile = _parse(file)
            if profile.name in profiles:
                raise ProfileError(
                    f"{_display(file)}: profile '{profile.name}' is already defined by "
                    f"{_display(Path(profiles[profile.name].path))}",
                    hint="profile names come from file names and must be unique; rename one file",
                )
            profiles[profile.name] = profile
    _check_family_defaults(profiles.values())
    return profiles


def _yaml_files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(path.glob("*.yaml"))
    if path.is_file():
        return [path]
    raise ProfileError(
        f"{_display(path)}: registered profile path does not exist",
        hint="register a *.yaml file or a directory of them",
    )


def _check_family_defaults(profiles: Iterable[Profile]) -> None:
    """Each family needs exactly one default, so that a family name always resolves."""
    families: dict[tuple[str, str], list[Profile]] = {}
    for profile in profiles:
        families.setdefault((profile.kind, profile.family), []).append(profile)
    for (_, family), members in families.items():
        defaults = [member for member in members if member.family_default]
        if len(defaults) != 1:
            blamed = defaults[1] if defaults else members[-1]
            names = ", ".join(member.name for member in (defaults or members))
            count = "more than one default" if defaults else "no default"
            raise ProfileError(
                f"{_display(Path(blamed.path))}: field 'family_default': family '{family}' has {count} ({names})",
                hint=f"set family_default: true on exactly one profile of family '{family}'",
            )


# --- lookups -------------------------------------------------------------------------------------


def get_target(name: str) -> tuple[TargetProfile, str]:
    """The compute target called ``name``, or its family's default, with a one-line reason."""
    targets = _of_kind(TargetProfile)
    if name in targets:
        return targets[name], f"using target '{name}' as named"
    members = _members(targets, name)
    if not members:
        raise _unknown(name, "compute target", targets)
    default = _family_default(members)
    return default, f"'{name}' is a family; using {default.name} (family default)"


def get_array(name: str, live_devices: list[dict] | None = None) -> tuple[ArrayProfile, str]:
    """The array called ``name``; for a family, the variant that is plugged in, else the default.

    ``live_devices`` are dicts as ``sounddevice.query_devices()`` returns them; when None,
    sounddevice is asked, and any failure to ask counts as no devices.
    """
    arrays = _of_kind(ArrayProfile)
    if name in arrays:
        return arrays[name], f"using array '{name}' as named"
    members = _members(arrays, name)
    if not members:
        raise _unknown(name, "microphone array", arrays)
    devices = query_live_devices() if live_devices is None else live_devices
    for member in sorted(members, key=lambda p: (not p.family_default, p.name)):
        device = next((d for d in devices if member.matches(d)), None)
        if device is not None:
            return member, f"'{name}' is a family; using {member.name} (matches connected device '{device['name']}')"
    default = _family_default(members)
    return default, (
        f"'{name}' is a family; no connected device matches a {name} variant, using {default.name} (family default)"
    )


def match_live_devices(live_devices: list[dict] | None = None) -> list[tuple[dict, ArrayProfile | None]]:
    """Each audio device paired with the array profile it fits, for ``edgeaudio devices --live``.

    When several profiles fit, the one using the most channels wins: a ReSpeaker USB array is
    also a usable mono mic, but reporting it as mono would hide its geometry. Devices with no
    inputs, or that fit no profile, are paired with None. ``live_devices=None`` asks sounddevice.
    """
    devices = query_live_devices() if live_devices is None else live_devices
    arrays = sorted(_of_kind(ArrayProfile).values(), key=lambda p: (-p.capture_channels, p.name))
    return [(device, next((a for a in arrays if a.matches(device)), None)) for device in devices]


def query_live_devices() -> list[dict]:
    """Audio devices PortAudio sees; empty when sounddevice or PortAudio is missing or fails."""
    try:
        import sounddevice

        return [dict(device) for device in sounddevice.query_devices()]
    except Exception:  # no sounddevice, no libportaudio2, no audio server: all mean "no devices"
        return []


def _of_kind(profile_type: type) -> dict:
    return {name: p for name, p in load_profiles().items() if isinstance(p, profile_type)}


def _members(profiles: dict, family: str) -> list:
    return [p for p in profiles.values() if p.family == family]


def _family_default(members: list):
    return next(member for member in members if member.family_default)


def _unknown(name: str, what: str, profiles: dict) -> ProfileError:
    other = load_profiles().get(name)
    if other is not None:
        other_what = "microphone array" if other.kind == "array" else "compute target"
        return ProfileError(f"'{name}' is a {other_what}, not a {what}", hint=f"known: {', '.join(sorted(profiles))}")
    families = sorted({p.family for p in profiles.values()})
    return ProfileError(
        f"unknown {what} '{name}'; known: {', '.join(sorted(profiles))} (families: {', '.join(families)})",
        hint="pick a known name, or add a profile YAML through a plugin's register_profiles hook",
    )


# --- this host -----------------------------------------------------------------------------------

_JETSON_MODELS = (("agx orin", "jetson-agx-orin"), ("orin nano", "jetson-orin-nano"))


def this_host() -> tuple[TargetProfile, str]:
    """``host_target()`` for this machine, detected once per process (a run asks for it when it
    picks the default bundle and again when it picks the backend)."""
    name, reason = _this_host()
    return get_target(name)[0], reason


@functools.lru_cache(maxsize=1)
def _this_host() -> tuple[str, str]:
    profile, reason = host_target()
    return profile.name, reason


def host_target(
    root: str | os.PathLike = "/", machine: str | None = None, path_env: str | None = None
) -> tuple[TargetProfile, str]:
    """The compute target this machine is, with the evidence, in one line.

    ``root`` prefixes the files read (/etc/nv_tegra_release, /proc/device-tree/model,
    /dev/nvidia0), ``machine`` replaces ``platform.machine()`` and ``path_env`` the PATH searched
    for nvidia-smi, so tests can fake any host.
    """
    root = Path(root)
    machine = _normalise_machine(machine or platform.machine())
    model = _read_model(root / "proc/device-tree/model")
    if "nvidia jetson" in model.lower() or (root / "etc/nv_tegra_release").exists():
        return _jetson(model)
    if model.startswith("Raspberry Pi 5"):
        return get_target("rpi5")[0], f"host is a {model}"
    if machine == "x86_64":
        gpu = _nvidia_evidence(root, path_env)
        if gpu:
            return get_target("x86-gpu")[0], f"host is x86_64 with an NVIDIA GPU ({gpu})"
        return get_target("x86-cpu")[0], "host is x86_64 without an NVIDIA GPU"
    if machine == "aarch64":
        seen = f" ({model})" if model else ""
        return get_target("rpi5")[0], f"host is aarch64{seen}, not a Jetson; using rpi5, the generic Arm CPU profile"
    raise ProfileError(
        f"no compute target profile fits this host's architecture '{machine}'",
        hint="name a target explicitly, e.g. --target x86-cpu",
    )


def _normalise_machine(machine: str) -> str:
    """platform.machine() spells the same CPU differently per OS (AMD64 on Windows, arm64 on macOS)."""
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(machine.lower(), machine.lower())


def _read_model(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8", "replace").strip("\x00 \n")
    except OSError:
        return ""


def _jetson(model: str) -> tuple[TargetProfile, str]:
    for keyword, name in _JETSON_MODELS:
        if keyword in model.lower():
            return get_target(name)[0], f"host is a {model}"
    default, _ = get_target("jetson")
    described = f"'{model}'" if model else "of unknown model"
    return default, f"host is a Jetson {described} without its own profile; using {default.name} (family default)"


def _nvidia_evidence(root: Path, path_env: str | None) -> str:
    if (root / "dev/nvidia0").exists():
        return "/dev/nvidia0"
    found = shutil.which("nvidia-smi", path=path_env)
    return f"nvidia-smi at {found}" if found else ""


@hookimpl
def register_profiles(register: Callable[[str], None]) -> None:
    """Register the built-in devices/ directory, installed as the package edgeaudio.devices."""
    register(str(importlib.resources.files("edgeaudio.devices")))
