"""Typed command-line options declared once, as a dataclass.

A plugin states what its trainer (or another step) accepts as a dataclass: each field has a type,
a default and ``field(metadata={"help": "..."})``. :func:`click_options` turns it into click
options, so the command line shows every option with its default and click itself refuses a
misspelled option or a value of the wrong type or range before any work starts;
:func:`from_click` turns click's parsed values back into the dataclass the plugin receives. The
same class serves Python callers, who construct it directly.

Field types: ``int``, ``float``, ``str``, ``bool`` (a ``--name/--no-name`` switch),
``Optional[...]`` of those (None is the default meaning "not given"), and ``list[...]`` or
``tuple[..., ...]`` of the scalars, written as one comma-separated value (``--classes dog,cat``,
the form recorded command lines repeat). Optional metadata: ``"min"`` / ``"max"`` (inclusive
bounds of an int or float) and ``"choices"`` (the allowed values of a str). Floats must be finite:
NaN or infinity in a learning rate only fails later, inside the work.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any, Mapping

import click

from edgeaudio.errors import UsageError


class _Finite:
    """Refuses NaN and infinities, which click's float types accept."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return number


class _FiniteFloat(_Finite, click.types.FloatParamType):
    pass


# Named as the plain types: click's "'x' is not a valid integer range" misleads; the help shows the range.
class _FiniteFloatRange(_Finite, click.FloatRange):
    name = "float"


class _IntRange(click.IntRange):
    name = "integer"


def finite_float(min: float | None = None, max: float | None = None, min_open: bool = False) -> click.ParamType:
    """A click float type with bounds (``min_open``: ``min`` itself excluded) that also refuses NaN
    and infinities, for the core commands' own options (``--chunk-ms``, ``--seconds``)."""
    return _FiniteFloatRange(min=min, max=max, min_open=min_open)


class _Separated(click.ParamType):
    """A list or tuple given as one comma-separated value, each item converted by ``item``."""

    def __init__(self, item: click.ParamType, container: type):
        self.item, self.container = item, container
        self.name = f"{item.name} list"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        items = value if isinstance(value, (list, tuple)) else [v.strip() for v in str(value).split(",") if v.strip()]
        return self.container(self.item.convert(item, param, ctx) for item in items)


def click_options(cls: type) -> list[click.Option]:
    """One click option per init field of the dataclass ``cls``: ``--field-name`` (stored under
    the field's name), its default shown in the help. Raises TypeError for a field click cannot
    express (no default, an unsupported type, bounds on a non-number), so a plugin's mistake
    shows when its options are first built rather than as a confusing parse."""
    hints = typing.get_type_hints(cls)
    return [_option(cls, f, hints[f.name]) for f in dataclasses.fields(cls) if f.init]


def from_click(cls: type, values: Mapping[str, Any]) -> Any:
    """The dataclass ``cls`` from click's parsed ``values`` (keyed by field name, as
    :func:`click_options` names them). Keys that are not fields (the command's own parameters)
    are left out, and fields without a value keep their defaults."""
    return cls(**{f.name: values[f.name] for f in dataclasses.fields(cls) if f.init and f.name in values})


def _option(cls: type, f: dataclasses.Field, annotation: Any) -> click.Option:
    where = f"{cls.__name__}.{f.name}"
    if f.default is not dataclasses.MISSING:
        default = f.default
    elif f.default_factory is not dataclasses.MISSING:
        default = f.default_factory()
    else:
        raise TypeError(f"{where} has no default; command-line options need one")
    flag = "--" + f.name.replace("_", "-")
    meta = f.metadata
    help_text = meta.get("help", "")
    annotation = _without_none(annotation)
    if annotation is bool:
        return click.Option([f"{flag}/--no-{flag[2:]}", f.name], default=default, show_default=True, help=help_text)
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (list, tuple):
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            raise TypeError(f"{where}: a tuple option must be tuple[X, ...]")
        item = _scalar(where, args[0] if args else str, meta)
        metavar = f"{item.name.upper()},..."
        return click.Option([flag, f.name], type=_Separated(item, origin), default=default, show_default=True,
                            metavar=metavar, help=help_text)
    return click.Option([flag, f.name], type=_scalar(where, annotation, meta), default=default, show_default=True,
                        help=help_text)


def _without_none(annotation: Any) -> Any:
    """``X`` for ``Optional[X]`` / ``X | None``; other annotations as they are."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        rest = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(rest) == 1:
            return rest[0]
    return annotation


def _scalar(where: str, annotation: Any, meta: Mapping[str, Any]) -> click.ParamType:
    bounds = {key: meta[key] for key in ("min", "max") if key in meta}
    if bounds and annotation not in (int, float):
        raise TypeError(f"{where}: min/max apply to int and float options only")
    if "choices" in meta and annotation is not str:
        raise TypeError(f"{where}: choices apply to str options only")
    if annotation is int:
        return _IntRange(**bounds) if bounds else click.INT
    if annotation is float:
        return _FiniteFloatRange(**bounds) if bounds else _FiniteFloat()
    if annotation is str:
        return click.Choice(list(meta["choices"])) if "choices" in meta else click.STRING
    raise TypeError(f"{where}: unsupported option type {annotation!r} (int, float, str, bool, Optional or list of them)")


def check(options: Any) -> None:
    """Refuse an options instance built in Python whose values break the bounds and choices its
    fields declare, as click refuses them on the command line: a trainer calls this before any
    data is built, so ``epochs=0`` fails at once rather than after minutes of synthesis."""
    for f in dataclasses.fields(options):
        if not f.init:
            continue
        value, meta, flag = getattr(options, f.name), f.metadata, "--" + f.name.replace("_", "-")
        items = value if isinstance(value, (list, tuple)) else [value]
        for item in (i for i in items if i is not None and not isinstance(i, bool)):
            problem = None
            if isinstance(item, (int, float)) and not math.isfinite(item):
                problem = f"{item!r} is not a finite number"
            elif "min" in meta and isinstance(item, (int, float)) and item < meta["min"]:
                problem = f"{item!r} is below the minimum {meta['min']}"
            elif "max" in meta and isinstance(item, (int, float)) and item > meta["max"]:
                problem = f"{item!r} is above the maximum {meta['max']}"
            elif "choices" in meta and item not in meta["choices"]:
                problem = f"{item!r} is not one of {', '.join(map(str, meta['choices']))}"
            if problem:
                raise UsageError(f"invalid value for {flag}: {problem}", hint=meta.get("help") or None)


def to_args(options: Any) -> list[str]:
    """The command-line options that give ``options`` (those that differ from their defaults), in
    field order and in the form :func:`click_options` parses: what a run records as its command."""
    args: list[str] = []
    for f in dataclasses.fields(options):
        if not f.init:
            continue
        value = getattr(options, f.name)
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else dataclasses.MISSING)
        if value == default or value is None:
            continue
        flag = "--" + f.name.replace("_", "-")
        if isinstance(value, bool):
            args.append(flag if value else "--no-" + flag[2:])
        elif isinstance(value, (list, tuple)):
            args += [flag, ",".join(str(v) for v in value)]
        else:
            args += [flag, str(value)]
    return args


def to_json(options: Any) -> dict[str, Any]:
    """The options' values by field name, JSON-friendly (tuples as lists)."""
    return {f.name: (list(v) if isinstance(v := getattr(options, f.name), tuple) else v)
            for f in dataclasses.fields(options) if f.init}
