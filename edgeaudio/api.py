"""The Python API the CLI calls and users script: export, load, open_session, pipeline, bench, evaluate.

A task name means its shipped model (``default_bundle``: the fp32 ONNX Runtime bundle the package
ships beside the weights, or else the weights exported for this host into the cache once, reused
while their hash is the same); a path means a bundle.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from edgeaudio.bundle import MANIFEST, sha256_file
from edgeaudio.cache import cache_dir, cache_root, lock
from edgeaudio.errors import BundleError, UsageError
from edgeaudio.fingerprint import content_hash
from edgeaudio.runtime import Session, load, made_for
from edgeaudio.task import Task
from edgeaudio.tasks import get_task, task_classes

if TYPE_CHECKING:
    from edgeaudio.live.pipeline import Pipeline
    from edgeaudio.live.pipeline_spec import PipelineSpec

__all__ = ["export", "load", "open_session", "default_bundle", "pipeline", "bench", "evaluate", "evaluation", "Session"]

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
    sign: str | Path | None = None,
    calibration: str | Path | None = None,
    validation: str | Path | None = None,
):
    """Export a task to a checked bundle for a target profile (family names allowed); ``sign``:
    a private key file (``edgeaudio keygen``) that signs the bundle's manifest. ``calibration``
    and ``validation``: folders of the user's own data in the task's format (``Task.read_dataset``)
    that INT8 is calibrated on and judged on, instead of the task's own set.

    ``checkpoint``: a training run's folder (its ``weights.safetensors``), a weights file, or a
    trainer checkpoint inside a run's ``checkpoints/`` (see ``edgeaudio.weights.trained_weights``).
    The sidecar brings the config the model was trained with (classes, array, sizes), under any
    ``config`` given here. ``array`` picks the model for that microphone array, for tasks trained
    per array."""
    from edgeaudio.exporters.pipeline import export_task, plan_export

    plan, reason = plan_export(target, precisions, backends)
    log(f"target: {reason}")
    cls = task_classes().get(task, Task)
    if array is not None:
        config = {**(config or {}), "array": _array_for(cls, task, array)}
    trained: dict[str, Any] = {}
    if checkpoint is not None:
        from edgeaudio.weights import trained_weights

        weights = trained_weights(checkpoint)
        checkpoint = str(weights.path)
        log(weights.note)
        if weights.sidecar is not None:
            made_for = weights.sidecar.get("task")
            if made_for and made_for != task:
                raise UsageError(f"{weights.path} holds a '{made_for}' model, not '{task}'",
                                 hint=f"edgeaudio export {made_for} --checkpoint {checkpoint}")
            trained = cls.trained_config(weights.sidecar)
            if array is not None and trained.get("array") not in (None, config["array"]):
                raise UsageError(f"{weights.path} was trained for the {trained['array']} array, not {config['array']}",
                                 hint="leave --device out: a checkpoint's model is for the array it was trained for")
            config = {**trained, **(config or {})}
    task_obj = get_task(task, config)
    if checkpoint is not None:
        _check_fits(task_obj, checkpoint, trained)
    datasets = {role: _user_dataset(task_obj, role, folder, log) for role, folder in
                (("calibration", calibration), ("validation", validation)) if folder is not None}  # fmt: skip
    output = Path(output) if output else Path("bundles") / f"{task}-{plan.profile}"
    return export_task(task_obj, plan, output, checkpoint=checkpoint, archive=archive, log=log, sign=sign, **datasets)


def _user_dataset(task: Task, role: str, folder: str | Path, log: Log):
    """A folder of the user's data read by the task (before any export work, so a folder in the
    wrong format fails at once), named after the folder in the reports."""
    from edgeaudio.task import EvalSet

    path = Path(folder)
    if not path.exists():
        raise UsageError(f"--{role} {path}: no such file or folder")
    items = task.read_dataset(path)
    log(f"{role}: {len(items)} item(s) from {path}")
    return EvalSet(items, f"{path} (--{role})")


def _check_fits(task: Task, checkpoint: str, trained: dict[str, Any]) -> None:
    """Load the weights into the model before exporting; when they do not fit, say what differs
    between the config they were trained with and the one asked for here."""
    from edgeaudio.errors import EdgeAudioError

    try:
        task.load_model(checkpoint)
    except NotImplementedError:
        return  # a task that brings its graphs as ONNX has no torch model to load into
    except EdgeAudioError as exc:
        differs = [f"{key} (trained: {trained[key]!r}, here: {task.config.get(key)!r})"
                   for key in trained if task.config.get(key) != trained[key]]
        if differs:
            exc.args = (f"{exc}; the config asked for differs from the one it was trained with: {'; '.join(differs)}",)
            exc.hint = "export with the config it was trained with (leave out the options that change it)"
        elif not trained:
            exc.hint = f"{checkpoint} has no sidecar saying how it was trained: export its training run folder instead"
        raise


def _array_for(cls: type[Task], task: str, array: str) -> str:
    """The array profile name ``array`` (a name or family) means, for a task trained per array."""
    from edgeaudio.profiles import get_array

    if not cls.per_array:
        raise UsageError(f"task '{task}' is not trained per microphone array; --device does not apply", hint="leave it out")
    return get_array(array, live_devices=[])[0].name


def default_bundle(task: str | Task, log: Log = print, array: str | None = None) -> tuple[Path, Task]:
    """The task's shipped model as an fp32 bundle, and the task it was made for; ``array`` picks
    the weights trained for that microphone array (one set per array).

    The bundle the package ships beside the weights (``<weights>.eab``: ONNX Runtime graphs, no
    torch needed) while it was made from these very weights for this config; otherwise the
    weights exported for this host into the cache on first use (that needs ``[export]``)."""
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
    digest = sha256_file(checkpoint)
    shipped = shipped_bundle(task_obj, checkpoint, digest)
    if shipped is not None:
        return shipped, task_obj
    profile, _ = this_host()
    key = f"{name}-{task_obj.version}-{profile.name}-fp32-{digest[:12]}"
    target = cache_root() / "default-bundles" / key
    if (target / MANIFEST).is_file():
        return target, task_obj
    from edgeaudio.exporters.pipeline import export_task, plan_export

    cache_dir("default-bundles")
    with lock(f"default-bundle:{key}"):  # a second first run waits for the first, then reuses its bundle
        if (target / MANIFEST).is_file():
            return target, task_obj
        log(f"exporting the shipped '{name}' model for {profile.name} at fp32 (first run only) -> {target}")
        plan, _ = plan_export(profile.name, precisions=["fp32"])
        export_task(task_obj, plan, target, checkpoint=checkpoint, log=log)
    return target, task_obj


def shipped_bundle(task: Task, checkpoint: str | Path, digest: str | None = None) -> Path | None:
    """The bundle archive shipped beside ``checkpoint`` (same name, ``.eab``) when its manifest
    says it was exported from exactly these weights (sha256, ``digest`` when the caller has it),
    by this task version, with this config; None otherwise (a retrained checkpoint, a changed
    config), and then the weights are exported instead. Its files' hashes are checked when it is
    loaded."""
    import json
    import tarfile

    archive = Path(checkpoint).with_suffix(".eab")
    if not archive.is_file():
        return None
    with tarfile.open(archive) as tar:
        # pack_archive writes the manifest first: reading it decompresses nothing else
        first = tar.next()
        member = tar.extractfile(first if first is not None and first.name == MANIFEST else MANIFEST)
        manifest = json.loads(member.read()) if member is not None else {}
    if not made_for(manifest, task):
        return None
    recorded = manifest.get("provenance", {}).get("checkpoint_sha256")
    return archive if recorded == (digest or sha256_file(checkpoint)) else None


def open_session(
    task_or_bundle: str,
    backend: str = "auto",
    precision: str = "auto",
    array: str | None = None,
    recorded_array: str | None = None,
    force: bool = False,
    log: Log = print,
    threads: int | None = None,
    trust: Sequence[str | Path] | None = None,
) -> Session:
    """Load what ``task_or_bundle`` names: a task name (checked first) means its default bundle,
    anything else a bundle path. For a task trained per array, ``array`` (``--device``) or else
    ``recorded_array`` (the array an input file declares) picks the weights; with ``force`` a task
    without weights for that array runs its default model. ``threads``: the model's threads
    (None: the backend's choice). ``trust``: public key files a bundle must be signed by, besides
    the environment's trust setting (``edgeaudio.signing``)."""
    classes = task_classes()
    if task_or_bundle not in classes:
        if not Path(task_or_bundle).exists():
            known = ", ".join(sorted(classes)) or "none"
            raise UsageError(f"'{task_or_bundle}' is neither an installed task ({known}) nor a bundle path",
                             hint="see `edgeaudio plugins`, or give the bundle's folder or .eab file")
        return load(task_or_bundle, backend=backend, precision=precision, threads=threads, trust=trust)
    if Path(task_or_bundle).exists():
        log(f"note: '{task_or_bundle}' is the task; for the bundle of that name, write ./{task_or_bundle}")
    from edgeaudio.signing import trust_setting

    if trust_setting(trust).active:  # before any export: the default bundle would be refused anyway
        raise BundleError(f"task '{task_or_bundle}' runs its default bundle, which is unsigned, and a trust setting "
                          "requires a signature",
                          hint=f"export it signed and run that bundle: edgeaudio export {task_or_bundle} --sign KEY -o DIR")
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
    return load(bundle, backend=backend, precision=precision, threads=threads, task=task, trust=trust)


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
    from edgeaudio.errors import EdgeAudioError
    from edgeaudio.live.pipeline import Pipeline
    from edgeaudio.live.pipeline_spec import (CAPTURE, PipelineSpec, capture_array, check_tasks, load_spec,
                                              stage_bundles, stage_tasks, task_refs)

    spec = spec if isinstance(spec, PipelineSpec) else load_spec(spec)
    refs = task_refs(spec)
    bundles = stage_bundles(spec, refs)
    profile = capture_array(spec, refs, bundles, array or recorded_array, log)
    tasks = stage_tasks(spec, refs, bundles, profile.name)
    check_tasks(spec, tasks, profile, force)
    sessions = {}
    for stage in spec.stages:
        on_array = tasks[stage.name].per_array and stage.input.source == CAPTURE and refs[stage.name] == stage.task
        chosen = {"backend": stage.backend or backend, "precision": stage.precision or precision, "threads": stage.threads}
        try:
            if stage.name in bundles:
                sessions[stage.name] = load(bundles[stage.name], task=tasks[stage.name], **chosen)
            else:
                sessions[stage.name] = open_session(refs[stage.name], array=profile.name if on_array else None,
                                                    force=force, log=log, **chosen)
        except EdgeAudioError as exc:  # the same error, saying which stage it stopped
            exc.args = (f"stage '{stage.name}': {exc}",)
            raise
    return Pipeline(spec, sessions, profile, force)


def bench(bundle: str | Path, validate: bool = False, trust: Sequence[str | Path] | None = None, **options):
    """Benchmark every backend x precision of a bundle side by side; see ``edgeaudio.bench``.
    ``validate`` also scores each on the task's validation set (its content hash in the report's
    ``validation_sha256``). ``trust``: as for ``open_session``."""
    from edgeaudio.bench import run_bench
    from edgeaudio.bundle import load_bundle
    from edgeaudio.runtime import task_for_bundle
    from edgeaudio.signing import trust_setting

    loaded = load_bundle(bundle, trust=trust_setting(trust) if trust else None)
    if validate:
        options["validation"] = task_for_bundle(loaded).validation_set()
    report = run_bench(loaded, **options)
    if validate:
        report["validation_sha256"] = content_hash(options["validation"])
    return report


def evaluate(
    bundle: str | Path | Session, backend: str = "auto", precision: str = "auto", dataset: Any = None,
    trust: Sequence[str | Path] | None = None,
) -> dict[str, float]:
    """The task's metrics for a bundle (or a loaded session) on one backend, on ``dataset`` or
    else the task's validation set (``evaluation`` also says which data)."""
    return evaluation(bundle, backend, precision, dataset, trust)["metrics"]


def evaluation(
    bundle: str | Path | Session, backend: str = "auto", precision: str = "auto", dataset: Any = None,
    trust: Sequence[str | Path] | None = None,
) -> dict[str, Any]:
    """``evaluate`` with what it measured: ``metrics``, ``dataset_items`` and ``dataset_sha256``
    (``edgeaudio.fingerprint.content_hash`` of the set), so a change of data shows in the report
    instead of as a silent change of the figures."""
    session = bundle if isinstance(bundle, Session) else load(bundle, backend=backend, precision=precision, trust=trust)
    data = dataset if dataset is not None else session.task.validation_set()
    if data is None:
        raise UsageError(f"task '{session.task.name}' has no validation set to evaluate on",
                         hint="pass a dataset (edgeaudio.evaluate(bundle, dataset=...))")
    return {"metrics": session.task.evaluate(session.runner, data), "dataset_items": len(data),
            "dataset_sha256": content_hash(data)}
