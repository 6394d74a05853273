"""The Python API the CLI calls and users script: export, load, open_session, pipeline, bench, evaluate.

A task name means its shipped weights exported for this host (``default_bundle``: built once
into the cache, fp32 only, reused while the weights' hash is the same); a path means a bundle.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from edgeaudio.bundle import MANIFEST, sha256_file
from edgeaudio.cache import cache_root
from edgeaudio.errors import UsageError
from edgeaudio.runtime import Session, load
from edgeaudio.task import Task
from edgeaudio.tasks import get_task, task_classes

if TYPE_CHECKING:
    from edgeaudio.live.pipeline import Pipeline
    from edgeaudio.live.pipeline_spec import PipelineSpec

__all__ = ["export", "load", "open_session", "default_bundle", "pipeline", "bench", "evaluate", "Session"]

Log = Callable[[str], None]


def export(
    task: str,
    target: str = "x86-cpu",
    precisions: Sequence[str] | None = None,
    backends: Sequence[str] | None = None,
    checkpoint: str | None = None,
    output: str | Path | None = None,
    archive: bool = False,
    config: dict[str, Any] | None = None,
    array: str | None = None,
    log: Log = print,
):
    """Export a task to a checked bundle for a target profile (family names allowed).

    A ``checkpoint`` with a JSON sidecar (as every trainer writes) brings the config it was
    trained with (classes, array, sizes), under any ``config`` given here. ``array`` picks the
    model for that microphone array, for tasks trained per array."""
    from edgeaudio.exporters.pipeline import export_task, plan_export

    plan, reason = plan_export(target, precisions, backends)
    log(f"target: {reason}")
    cls = task_classes().get(task, Task)
    if array is not None:
        config = {**(config or {}), "array": _array_for(cls, task, array)}
    sidecar = Path(checkpoint).with_suffix(".json") if checkpoint else None
    if sidecar is not None and sidecar.is_file():
        trained = cls.trained_config(json.loads(sidecar.read_text()))
        if trained:
            log(f"config: as {checkpoint} was trained ({sidecar.name})")
            config = {**trained, **(config or {})}
    task_obj = get_task(task, config)
    output = Path(output) if output else Path("bundles") / f"{task}-{plan.profile}"
    return export_task(task_obj, plan, output, checkpoint=checkpoint, archive=archive, log=log)


def _array_for(cls: type[Task], task: str, array: str) -> str:
    """The array profile name ``array`` (a name or family) means, for a task trained per array."""
    from edgeaudio.profiles import get_array

    if not cls.per_array:
        raise UsageError(f"task '{task}' is not trained per microphone array; --device does not apply", hint="leave it out")
    return get_array(array, live_devices=[])[0].name


def default_bundle(task: str | Task, log: Log = print, array: str | None = None) -> tuple[Path, Task]:
    """The task's shipped model as an fp32 bundle for this host, and the task it was made for;
    ``array`` picks the weights trained for that microphone array (one set per array)."""
    from edgeaudio.profiles import this_host

    task_obj = task if isinstance(task, Task) else get_task(task, {"array": array} if array else None)
    name = task_obj.name
    checkpoint = task_obj.default_checkpoint()
    if checkpoint is None and array:
        raise UsageError(
            f"task '{name}' ships no weights for array {array}",
            hint=f"train them (edgeaudio train {name} --array {array}), or run the default model with --force",
        )
    if checkpoint is None:
        raise UsageError(f"task '{name}' ships no default weights", hint=f"train it first: edgeaudio train {name}")
    profile, _ = this_host()
    key = f"{name}-{task_obj.version}-{profile.name}-fp32-{sha256_file(checkpoint)[:12]}"
    target = cache_root() / "default-bundles" / key
    if (target / MANIFEST).is_file():
        return target, task_obj
    from edgeaudio.exporters.pipeline import export_task, plan_export

    log(f"exporting the shipped '{name}' model for {profile.name} at fp32 (first run only) -> {target}")
    plan, _ = plan_export(profile.name, precisions=["fp32"])
    export_task(task_obj, plan, target, checkpoint=checkpoint, log=log)
    return target, task_obj


def open_session(
    task_or_bundle: str,
    backend: str = "auto",
    precision: str = "auto",
    array: str | None = None,
    recorded_array: str | None = None,
    force: bool = False,
    log: Log = print,
    threads: int | None = None,
) -> Session:
    """Load what ``task_or_bundle`` names: a task name (checked first) means its default bundle,
    anything else a bundle path. For a task trained per array, ``array`` (``--device``) or else
    ``recorded_array`` (the array an input file declares) picks the weights; with ``force`` a task
    without weights for that array runs its default model. ``threads``: the model's threads
    (None: the backend's choice)."""
    classes = task_classes()
    if task_or_bundle not in classes:
        if not Path(task_or_bundle).exists():
            known = ", ".join(sorted(classes)) or "none"
            raise UsageError(f"'{task_or_bundle}' is neither an installed task ({known}) nor a bundle path",
                             hint="see `edgeaudio plugins`, or give the bundle's folder or .eab file")
        return load(task_or_bundle, backend=backend, precision=precision, threads=threads)
    if Path(task_or_bundle).exists():
        log(f"note: '{task_or_bundle}' is the task; for the bundle of that name, write ./{task_or_bundle}")
    cls = classes[task_or_bundle]
    wanted = None
    if cls.per_array:
        wanted = _array_for(cls, task_or_bundle, array) if array is not None else recorded_array
    try:
        bundle, task = default_bundle(task_or_bundle, log=log, array=wanted)
    except UsageError:
        if wanted is None or not force:
            raise
        log(f"no shipped '{task_or_bundle}' weights for {wanted}; running the default model anyway (--force)")
        bundle, task = default_bundle(task_or_bundle, log=log)
    return load(bundle, backend=backend, precision=precision, threads=threads, task=task)


def pipeline(
    spec: str | Path | PipelineSpec,
    array: str | None = None,
    recorded_array: str | None = None,
    backend: str = "auto",
    precision: str = "auto",
    force: bool = False,
    log: Log = print,
) -> Pipeline:
    """A pipeline spec (a YAML file, or a ``PipelineSpec``) checked against its tasks, then every
    stage's model opened as ``open_session`` opens it; ``.run(source)`` runs it.

    The capture's array is ``array`` (``--device``), else ``recorded_array`` (the array an input
    file declares), else the spec's, else the one the stages' models were trained for. A stage's
    ``backend``, ``precision`` and ``threads`` override the arguments here. Every error in the
    spec names its stage, and comes before any model is loaded."""
    from edgeaudio.errors import EdgeAudioError, MissingExtra
    from edgeaudio.live.pipeline import Pipeline
    from edgeaudio.live.pipeline_spec import CAPTURE, PipelineSpec, capture_array, check_tasks, load_spec, stage_tasks, task_refs

    spec = spec if isinstance(spec, PipelineSpec) else load_spec(spec)
    refs = task_refs(spec)
    profile = capture_array(spec, refs, array or recorded_array, log)
    tasks = stage_tasks(spec, refs, profile.name)
    check_tasks(spec, tasks, profile, force)
    sessions = {}
    for stage in spec.stages:
        on_array = tasks[stage.name].per_array and stage.input.source == CAPTURE and refs[stage.name] == stage.task
        try:
            sessions[stage.name] = open_session(
                refs[stage.name], backend=stage.backend or backend, precision=stage.precision or precision,
                array=profile.name if on_array else None, force=force, log=log, threads=stage.threads)
        except EdgeAudioError as exc:
            if isinstance(exc, MissingExtra):
                raise
            exc.args = (f"stage '{stage.name}': {exc}",)
            raise
    return Pipeline(spec, sessions, profile, force)


def bench(bundle: str | Path, validate: bool = False, **options):
    """Benchmark every backend x precision of a bundle side by side; see ``edgeaudio.bench``.
    ``validate`` also scores each on the task's validation set."""
    from edgeaudio.bench import run_bench
    from edgeaudio.bundle import load_bundle
    from edgeaudio.runtime import task_for_bundle

    if validate:
        options["validation"] = task_for_bundle(load_bundle(bundle)).validation_set()
    return run_bench(bundle, **options)


def evaluate(
    bundle: str | Path | Session, backend: str = "auto", precision: str = "auto", dataset: Any = None
) -> dict[str, float]:
    """The task's metrics for a bundle (or a loaded session) on one backend, on ``dataset`` or
    else the task's validation set."""
    session = bundle if isinstance(bundle, Session) else load(bundle, backend=backend, precision=precision)
    data = dataset if dataset is not None else session.task.validation_set()
    if data is None:
        raise UsageError(f"task '{session.task.name}' has no validation set to evaluate on",
                         hint="pass a dataset (edgeaudio.evaluate(bundle, dataset=...))")
    return session.task.evaluate(session.runner, data)
