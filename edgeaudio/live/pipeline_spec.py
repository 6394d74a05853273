"""Pipeline specs: one capture fanned out to several stages, read from a validated YAML file.

    capture:
      array: respeaker-4mic              # the microphone array; sample_rate: defaults to the stages'
    stages:
      seld:    {task: seld, input: capture, drop: never}
      enhance: {task: enhance, input: capture[0], sinks: [{wav: enhanced.wav}]}
      caption: {task: caption, input: enhance, every: 5s}

A spec is checked in two steps, every error naming the file, the stage and the field, with a hint:
``load_spec`` checks the file on its own (fields, values, which stage reads which, cycles), and
``check_tasks`` checks it against the tasks the stages name (what each takes and returns, channels,
rates, sinks) before any model is loaded. The YAML is read as the device profiles are (a field given
twice is an error, not a silent overwrite), with their field checks where they fit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

from edgeaudio.errors import EdgeAudioError, UsageError, did_you_mean
from edgeaudio.profiles import _Invalid, _display, _lowercase_name, _positive_int, read_strict_yaml
from edgeaudio.task import InputKind, ResultKind

if TYPE_CHECKING:
    from edgeaudio.bundle import Bundle
    from edgeaudio.profiles import ArrayProfile
    from edgeaudio.task import Task

CAPTURE = "capture"
NEVER, SKIP = "never", "skip"
DEFAULT_QUEUE_S = 2.0
README_HINT = "see 'Pipelines: one capture, many models' in edgeaudio's README"
BUILTIN_SINKS = ("json", "jsonl", "wav", "speaker", "udp")

_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s)?\s*$")
_INPUT = re.compile(r"^\s*(?:(?P<beam>beam)\(\s*(?P<inner>[^()]*?)\s*\)|(?P<plain>[^()]*?))\s*$")
_SOURCE = re.compile(r"^(?P<source>[a-z0-9][a-z0-9-]*)\s*(?:\[(?P<channels>[^\]]*)\])?$")


class PipelineSpecError(UsageError):
    """A pipeline spec that cannot run as written; the message names the file, stage and field."""


@dataclass(frozen=True)
class InputRef:
    """What a stage reads: the capture or another stage's waveform, all of its channels, some of
    them in a given order, or their mean (``beam``: delay-and-sum toward the array's broadside)."""

    source: str
    channels: tuple[int, ...] | None = None
    beam: bool = False
    text: str = CAPTURE

    def width(self, available: int) -> int:
        """Channels the stage receives from a source of ``available`` channels."""
        if self.beam:
            return 1
        return len(self.channels) if self.channels is not None else available

    def picks(self, available: int) -> list[int]:
        return list(self.channels) if self.channels is not None else list(range(available))


@dataclass(frozen=True)
class SinkSpec:
    """One destination of a stage's results: ``json`` (the pipeline's result stream), ``jsonl``,
    ``wav``, ``speaker``, ``udp``, or a result format or sink option a plugin registered."""

    kind: str
    value: Any = None


@dataclass(frozen=True)
class StageSpec:
    name: str
    task: str  # a task name or a bundle path, as written
    input: InputRef
    every: float | None = None  # seconds per window, for whole-clip tasks
    chunk: float | None = None  # least audio per model call, for streaming tasks (whole blocks)
    drop: str | None = None  # None: never for streaming tasks, skip for whole-clip tasks
    queue: float = DEFAULT_QUEUE_S  # most audio waiting for the stage, in seconds
    threads: int | None = None
    backend: str | None = None
    precision: str | None = None
    sinks: tuple[SinkSpec, ...] | None = None  # None: the result stream, except for waveforms

    def policy(self, task: Task) -> str:
        return self.drop or (SKIP if task.input_kind is InputKind.CLIP else NEVER)

    def default_sinks(self, task: Task) -> tuple[SinkSpec, ...]:
        if self.sinks is not None:
            return self.sinks
        return () if task.result_kind is ResultKind.WAVEFORM else (SinkSpec("json"),)


@dataclass(frozen=True)
class CaptureSpec:
    array: str | None = None
    sample_rate: int | None = None


@dataclass(frozen=True)
class PipelineSpec:
    name: str
    path: str  # the file (shown in errors); bundle paths in ``task`` are relative to its folder
    capture: CaptureSpec
    stages: tuple[StageSpec, ...]

    def stage(self, name: str) -> StageSpec:
        return next(stage for stage in self.stages if stage.name == name)

    def readers(self, source: str) -> list[StageSpec]:
        """The stages that read ``source`` (the capture or a stage), in file order."""
        return [stage for stage in self.stages if stage.input.source == source]


# --- reading and checking the file ---------------------------------------------------------------


TOP_FIELDS = ("capture", "stages")
CAPTURE_FIELDS = ("array", "sample_rate")
STAGE_FIELDS = ("task", "input", "every", "chunk", "drop", "queue", "threads", "backend", "precision", "sinks")
EXAMPLES = {
    "task": "a task name (`edgeaudio plugins` lists them) or a bundle's folder",
    "input": "capture (all mics), capture[0] (one), capture[0,2], beam(capture), or another stage's name",
    "every": "a duration such as 5s or 500ms",
    "chunk": "a duration such as 100ms",
    "queue": "a duration such as 2s",
    "drop": "never: every sample is processed (the capture waits); skip: a late window or chunk is dropped and counted",
    "threads": "threads: 1 gives the stage's model one thread",
    "backend": "e.g. backend: onnxruntime (`edgeaudio doctor` lists those that run here)",
    "precision": "e.g. precision: fp32",
    "sinks": "a list such as [json, {wav: out.wav}, {jsonl: results.jsonl}, {udp: 127.0.0.1:9000}, speaker]",
    "array": "a microphone array profile or family (`edgeaudio devices`), e.g. array: respeaker-4mic",
    "sample_rate": "the rate every stage reading the capture takes, e.g. sample_rate: 16000",
}


def load_spec(path: str | Path) -> PipelineSpec:
    """Read and check a pipeline spec file (everything that needs no task; see ``check_tasks``)."""
    path = Path(path)
    shown = _display(path)
    if not path.is_file():
        raise PipelineSpecError(f"no pipeline spec at {shown}", hint="give the path of a .yaml file; " + README_HINT)
    return parse_spec(_read_yaml(path, shown), name=path.stem, path=str(path))


def parse_spec(data: Any, name: str = "pipeline", path: str = "<spec>") -> PipelineSpec:
    """Check a spec already read into Python (a dict as the YAML gives it)."""
    shown = _display(Path(path)) if path != "<spec>" else path
    if not isinstance(data, dict):
        raise PipelineSpecError(f"{shown}: a pipeline spec must be a mapping with 'stages'", hint=README_HINT)
    _unknown_fields(shown, "the spec", data, TOP_FIELDS)
    capture = _capture(shown, data.get("capture"))
    stages_data = data.get("stages")
    if not isinstance(stages_data, dict) or not stages_data:
        problem = "is missing" if stages_data is None else f"must be a mapping of stage name: stage, got {stages_data!r}"
        raise PipelineSpecError(f"{shown}: field 'stages' {problem}",
                                hint="stages: a mapping of stage name: {task: TASK, input: capture}, one per model; "
                                     + README_HINT)
    stages = tuple(_stage(shown, stage_name, body) for stage_name, body in stages_data.items())
    spec = PipelineSpec(name, path, capture, stages)
    _check_inputs(shown, spec)
    return spec


def _read_yaml(path: Path, shown: str) -> Any:
    return read_strict_yaml(path, shown, PipelineSpecError, "pipeline spec", "'{field}' appears twice (line {line})",
                            "a stage name, and a field within its mapping, may be given once; keep one")


def _unknown_fields(shown: str, where: str, data: dict, allowed: tuple[str, ...]) -> None:
    for field in data:
        if field not in allowed:
            raise PipelineSpecError(f"{shown}: {where}: unknown field '{field}'",
                                    hint=f"{did_you_mean(field, allowed)}allowed fields: {', '.join(allowed)}")


def _field(shown: str, where: str, field: str, value: Any, check: Callable[[Any], Any]) -> Any:
    try:
        return check(value)
    except _Invalid as exc:
        raise PipelineSpecError(f"{shown}: {where}: field '{field}' {exc.expectation}, got {exc.value!r}",
                                hint=EXAMPLES.get(field, README_HINT)) from None


def _capture(shown: str, data: Any) -> CaptureSpec:
    if data is None:
        return CaptureSpec()
    if not isinstance(data, dict):
        raise PipelineSpecError(f"{shown}: field 'capture' must be a mapping, got {data!r}",
                                hint="capture:\n  array: respeaker-4mic")
    _unknown_fields(shown, "capture", data, CAPTURE_FIELDS)
    array = data.get("array")
    rate = data.get("sample_rate")
    return CaptureSpec(
        array=None if array is None else _field(shown, "capture", "array", array, _lowercase_name),
        sample_rate=None if rate is None else _field(shown, "capture", "sample_rate", rate, _positive_int),
    )


def _stage(shown: str, name: Any, body: Any) -> StageSpec:
    if not isinstance(name, str) or not re.match(r"^[a-z0-9][a-z0-9-]*$", name) or name == CAPTURE:
        raise PipelineSpecError(
            f"{shown}: stage name {name!r} must be lowercase letters, digits and '-', and not '{CAPTURE}'",
            hint="name each stage after what it does, e.g. doa or speech")
    where = f"stage '{name}'"
    if not isinstance(body, dict):
        raise PipelineSpecError(f"{shown}: {where} must be a mapping of field: value, got {body!r}",
                                hint=f"{name}: {{task: {name}}}")
    _unknown_fields(shown, where, body, STAGE_FIELDS)
    if "task" not in body:
        raise PipelineSpecError(f"{shown}: {where}: missing field 'task'", hint=EXAMPLES["task"])

    def get(field: str, check: Callable[[Any], Any]) -> Any:
        return None if body.get(field) is None else _field(shown, where, field, body[field], check)

    return StageSpec(
        name=name,
        task=get("task", _text),
        input=_field(shown, where, "input", body.get("input", CAPTURE), _input_ref),
        every=get("every", _duration),
        chunk=get("chunk", _duration),
        drop=get("drop", _policy),
        queue=get("queue", _duration) or DEFAULT_QUEUE_S,
        threads=get("threads", _positive_int),
        backend=get("backend", _text),
        precision=get("precision", _text),
        sinks=get("sinks", _sinks),
    )


# --- field checks: each returns the cleaned value or raises _Invalid -----------------------------


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _Invalid("must be a non-empty string", value)
    return value.strip()


def _duration(value: Any) -> float:
    """Seconds from ``5s``, ``500ms``, ``2.5 s`` or a plain number of seconds."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        match = _DURATION.match(value) if isinstance(value, str) else None
        if match is None:
            raise _Invalid("must be a duration such as 5s or 500ms", value)
        seconds = float(match.group(1)) / (1000 if match.group(2) == "ms" else 1)
    if seconds <= 0:
        raise _Invalid("must be a positive duration", value)
    return seconds


def _policy(value: Any) -> str:
    if value not in (NEVER, SKIP):
        raise _Invalid(f"must be {NEVER} or {SKIP}", value)
    return value


def _input_ref(value: Any) -> InputRef:
    expectation = "must be capture, capture[0], capture[0,2], beam(capture) or a stage's name"
    match = _INPUT.match(value) if isinstance(value, str) else None
    source = None
    if match is not None:
        source = _SOURCE.match(match.group("inner") if match.group("beam") else match.group("plain"))
    if source is None:
        raise _Invalid(expectation, value)
    channels = None
    if source.group("channels") is not None:
        parts = [part.strip() for part in source.group("channels").split(",")]
        if not all(part.isdigit() for part in parts):
            raise _Invalid("must list 0-based channel numbers in brackets, e.g. capture[0] or capture[0,2]", value)
        channels = tuple(int(part) for part in parts)
        if len(set(channels)) != len(channels):
            raise _Invalid("must list each channel once", value)
    return InputRef(source.group("source"), channels, bool(match.group("beam")), value.strip())


def _sinks(value: Any) -> tuple[SinkSpec, ...]:
    if not isinstance(value, list):
        raise _Invalid("must be a list of sinks", value)
    sinks = []
    for item in value:
        if item in ("json", "speaker"):
            sinks.append(SinkSpec(item, True if item == "speaker" else None))
            continue
        if not (isinstance(item, dict) and len(item) == 1 and isinstance(next(iter(item)), str)):
            raise _Invalid("must list json, speaker, or one-key mappings such as {wav: out.wav}", item)
        kind, target = next(iter(item.items()))
        if kind == "json":
            raise _Invalid("takes no value: write json for the pipeline's result stream, {jsonl: PATH} for a file", item)
        if kind == "speaker":
            if target is not True and (isinstance(target, bool) or not isinstance(target, (str, int))):
                raise _Invalid("must be speaker, or {speaker: DEVICE} with a PortAudio device name or number", item)
        elif not isinstance(target, str) or not target.strip():
            example = {"wav": "out.wav", "jsonl": "results.jsonl", "udp": "127.0.0.1:9000"}.get(kind, "PATH")
            raise _Invalid(f"must give {kind} a path or address, e.g. {{{kind}: {example}}}", item)
        elif kind == "wav" and not target.lower().endswith(".wav"):
            raise _Invalid("must name a .wav file", item)
        elif kind == "udp":
            from edgeaudio.live.sinks import parse_address

            try:
                parse_address(target)
            except UsageError:
                raise _Invalid("must be host:port, e.g. {udp: 127.0.0.1:9000}", item) from None
        sinks.append(SinkSpec(kind, target))
    return tuple(sinks)


def _check_inputs(shown: str, spec: PipelineSpec) -> None:
    """Every stage reads the capture or a stage that exists, and no stage reads itself in a cycle."""
    names = [stage.name for stage in spec.stages]
    for stage in spec.stages:
        source = stage.input.source
        if source != CAPTURE and source not in names:
            raise PipelineSpecError(
                f"{shown}: stage '{stage.name}': field 'input' reads '{source}', which is neither {CAPTURE} nor a stage",
                hint=f"{did_you_mean(source, names + [CAPTURE])}stages here: {', '.join(names)}")
    for stage in spec.stages:
        path = [stage.name]
        while (source := spec.stage(path[-1]).input.source) != CAPTURE:
            if source in path:
                loop = path[path.index(source):] + [source]
                raise PipelineSpecError(
                    f"{shown}: stage '{stage.name}': field 'input' makes a cycle: {' -> '.join(loop)} (each reads the next)",
                    hint=f"one stage of the cycle must read {CAPTURE} instead")
            path.append(source)


# --- checking the spec against the tasks it names ------------------------------------------------


def stage_task_ref(spec: PipelineSpec, stage: StageSpec, installed: Mapping[str, Any]) -> str:
    """The task name or bundle path a stage's ``task`` means: an installed task first, else a bundle
    folder or ``.eab`` relative to the spec file (or as given). Unknown: an error naming the stage."""
    if stage.task in installed:
        return stage.task
    written = Path(stage.task).expanduser()
    for candidate in (Path(spec.path).parent / written, written):
        if candidate.exists():
            return str(candidate)
    known = ", ".join(sorted(installed)) or "none"
    raise PipelineSpecError(
        f"{_shown(spec)}: stage '{stage.name}': field 'task': '{stage.task}' is neither an installed task ({known}) "
        "nor a bundle path",
        hint=f"{did_you_mean(stage.task, installed)}see `edgeaudio plugins`, or give a bundle folder relative to the spec")


def capture_rate(spec: PipelineSpec, tasks: Mapping[str, Task]) -> int:
    """The capture's rate: as the spec says, else that of the first stage reading the capture."""
    if spec.capture.sample_rate:
        return spec.capture.sample_rate
    readers = spec.readers(CAPTURE)
    return tasks[readers[0].name].sample_rate if readers else 16000


def check_tasks(spec: PipelineSpec, tasks: Mapping[str, Task], array: ArrayProfile, force: bool = False) -> None:
    """Check every stage against its task and its input: audio in, a source of waveforms, channels,
    rate, the array's geometry, windows for whole-clip tasks, and sinks that fit the results."""
    shown = _shown(spec)
    rate = capture_rate(spec, tasks)
    for stage in spec.stages:
        task, ref = tasks[stage.name], stage.input
        where = f"{shown}: stage '{stage.name}'"

        def fail(message: str, hint: str) -> None:
            raise PipelineSpecError(f"{where}: {message}", hint=hint)

        if task.input_kind is InputKind.TEXT:
            fail(f"task '{task.name}' generates audio from a text prompt and takes no audio",
                 "a pipeline stage needs a task that takes audio (edgeaudio run TASK \"PROMPT\" runs this one)")
        if ref.source == CAPTURE:
            available, source_rate, what = array.num_mics, rate, f"the capture ({array.name}, {array.num_mics} mics)"
        else:
            upstream = tasks[ref.source]
            if upstream.result_kind is not ResultKind.WAVEFORM:
                fail(f"field 'input' reads stage '{ref.source}', whose results are {upstream.result_kind.value}, not audio",
                     f"read {CAPTURE}, or a stage whose task returns a waveform")
            available, source_rate, what = upstream.channels, upstream.sample_rate, f"stage '{ref.source}'"
        wrong = [c for c in ref.channels or () if c >= available]
        if wrong:
            fail(f"field 'input' picks channel {wrong[0]} of {what}, which has channels 0-{available - 1}",
                 "channel numbers are 0-based")
        width = ref.width(available)
        if width != task.channels:
            hint = (f"give it one channel: input: {ref.source}[0], or a beam of all: input: beam({ref.source})"
                    if task.channels == 1 else f"give it {task.channels} channels of a source that has them")
            fail(f"task '{task.name}' takes {task.channels} channel(s) but field 'input' ({ref.text}) gives {width}", hint)
        if source_rate != task.sample_rate:
            hint = (f"set capture: sample_rate: {task.sample_rate} (every stage reading the capture must take it)"
                    if ref.source == CAPTURE else "read a source at the task's rate, or use a bundle made for this rate")
            fail(f"task '{task.name}' takes {task.sample_rate} Hz audio but its input '{ref.text}' is {source_rate} Hz", hint)
        if task.array and ref.source == CAPTURE:
            if ref.beam or ref.picks(available) != list(range(available)):
                fail(f"task '{task.name}' was trained for the geometry of array {task.array}; "
                     f"field 'input' ({ref.text}) changes its mics", f"give it input: {CAPTURE}")
            if task.array != array.name and not force:
                fail(f"task '{task.name}' was trained for array {task.array} but the capture is {array.name}; "
                     "its directions would be wrong",
                     f"capture with {task.array}, run a model for {array.name}, or pass --force")
        clip = task.input_kind is InputKind.CLIP
        if stage.every is not None and not clip:
            fail(f"field 'every' is for whole-clip tasks; task '{task.name}' streams",
                 "use chunk: for the audio per model call of a streaming task")
        if stage.chunk is not None and clip:
            fail(f"field 'chunk' is for streaming tasks; task '{task.name}' takes whole clips",
                 "use every: 5s for its window")
        readers = spec.readers(stage.name)
        if readers and stage.policy(task) == SKIP:
            fail(f"field 'drop' is skip, but stage '{readers[0].name}' reads this stage's audio, which must have no gaps",
                 "use drop: never here, and let the reading stage skip")
        _check_sinks(where, stage, task, readers)


def _check_sinks(where: str, stage: StageSpec, task: Task, readers: list[StageSpec]) -> None:
    from edgeaudio.live.sinks import plugin_sinks

    sinks = stage.default_sinks(task)
    waveform = task.result_kind is ResultKind.WAVEFORM
    if not sinks and not readers:
        raise PipelineSpecError(f"{where}: the audio of task '{task.name}' goes nowhere (no sinks, no stage reads it)",
                                hint="add sinks: [{wav: out.wav}] or [speaker]")
    formats, options = plugin_sinks(task)
    for sink in sinks:
        if sink.kind in ("wav", "speaker") and not waveform:
            raise PipelineSpecError(
                f"{where}: field 'sinks': task '{task.name}' returns {task.result_kind.value}, not audio, "
                f"so it cannot go to {sink.kind}",
                hint="send its results to json, {jsonl: PATH} or {udp: HOST:PORT}")
        if sink.kind not in BUILTIN_SINKS and sink.kind not in formats and sink.kind not in options:
            extra = sorted(set(formats) | set(options))
            known = ", ".join(list(BUILTIN_SINKS) + extra)
            raise PipelineSpecError(f"{where}: field 'sinks': unknown sink '{sink.kind}' for task '{task.name}'",
                                    hint=f"sinks for this task: {known}")


def _shown(spec: PipelineSpec) -> str:
    return _display(Path(spec.path)) if spec.path != "<spec>" else spec.path


# --- the capture's array and the stages' tasks, before any model is loaded -----------------------


def stage_bundles(spec: PipelineSpec, refs: Mapping[str, str]) -> dict[str, Bundle]:
    """The bundle of each stage that names one (not a task), opened and verified once per path:
    stages sharing a bundle share its unpacked files."""
    from edgeaudio.bundle import load_bundle
    from edgeaudio.tasks import task_classes

    installed, opened = task_classes(), {}
    for stage in spec.stages:
        ref = refs[stage.name]
        if ref in installed or ref in opened:
            continue
        try:
            opened[ref] = load_bundle(ref)
        except EdgeAudioError as exc:  # the same error, saying which stage names the bundle
            exc.args = (f"{_shown(spec)}: stage '{stage.name}': {exc}",)
            raise
    return {stage.name: opened[refs[stage.name]] for stage in spec.stages if refs[stage.name] in opened}


def stage_tasks(spec: PipelineSpec, refs: Mapping[str, str], bundles: Mapping[str, Bundle],
                array: str | None) -> dict[str, Task]:
    """Each stage's task, configured as its model will be: a task trained per array that reads
    the capture gets ``array``'s model; a bundle's task (``bundles``, by stage) is the one its
    manifest names."""
    from edgeaudio.runtime import task_for_bundle
    from edgeaudio.tasks import get_task, task_classes

    installed = task_classes()
    tasks = {}
    for stage in spec.stages:
        if stage.name in bundles:
            tasks[stage.name] = task_for_bundle(bundles[stage.name])
            continue
        ref = refs[stage.name]
        per_array = installed[ref].per_array and array is not None and stage.input.source == CAPTURE
        tasks[stage.name] = get_task(ref, {"array": array} if per_array else None)
    return tasks


def capture_array(spec: PipelineSpec, refs: Mapping[str, str], bundles: Mapping[str, Bundle], named: str | None,
                  log: Callable[[str], None] = lambda message: None) -> ArrayProfile:
    """The capture's microphone array: ``named`` (``--device``, or the array an input file
    declares), else the spec's ``capture.array``, else the array the first stage reading the
    capture was trained for, else ``mono`` when every such stage takes one channel."""
    from edgeaudio.profiles import get_array

    name = named or spec.capture.array
    if name is None:
        defaults = stage_tasks(spec, refs, bundles, None)
        readers = [defaults[stage.name] for stage in spec.readers(CAPTURE)]
        name = next((task.array for task in readers if task.array), None)
        if name is None and readers and all(task.channels == 1 for task in readers):
            name = "mono"
        if name is None:
            raise PipelineSpecError(f"{_shown(spec)}: field 'capture': no array is named and no stage's task names one",
                                    hint=EXAMPLES["array"] + "; or pass --device")
    profile, reason = get_array(name)
    log(f"array: {reason}")
    return profile


def task_refs(spec: PipelineSpec) -> dict[str, str]:
    """Each stage's task name or bundle path (``stage_task_ref``), by stage name."""
    from edgeaudio.tasks import task_classes

    installed = task_classes()
    return {stage.name: stage_task_ref(spec, stage, installed) for stage in spec.stages}
