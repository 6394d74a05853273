"""``edgeaudio train seld``: synthesize scenes for an array, train with the shared loop, ship weights.

The recipe: split the event library by recording (held-out recordings never reach training),
render ``hours`` of 10 s scenes for the array's geometry from the training half and a test set
from the held-out half (or read STARSS22/23 recordings or an earlier run's scenes with
``--data-dir``), train the CRNN with ADPIT on random 5 s crops under
:func:`edgeaudio.training.fit` (seeded, checkpointed, resumable, data parallel under torchrun),
and write the run folder (:class:`edgeaudio.training.TrainingRun`): ``weights.safetensors`` with a
sidecar that records the array, classes, command, data and the held-out metrics. Running the same
command again resumes both the synthesis and the training.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgeaudio.errors import UsageError
from edgeaudio.events import EventLibrary
from edgeaudio.plugins.seld.scenes import SceneConfig, synthesize_dataset
from edgeaudio.plugins.seld.task import SeldTask, SeldTrainOptions

SCENE_SECONDS = 10.0
DEFAULT_ARRAY = "respeaker-4mic"  # what scenes are synthesized for when --array is not given
TEST_FRACTION = 0.15
MIN_TEST_SCENES = 8


def scene_config(seed: int) -> SceneConfig:
    """The scene recipe for 16 kHz array models.

    Elevations from -10 to 40 degrees: a flat array (all the ReSpeakers) hears a source above its
    plane exactly as its mirror image below, so the model can only learn elevation from a prior.
    Arrays lie on tables or hang on walls with most sources at or above them; mostly-positive
    elevations make that prior explicit instead of leaving the model to average up and down to 0.
    """
    return SceneConfig(duration=SCENE_SECONDS, sample_rate=16000, elevation_range=(-10.0, 40.0), seed=seed)


def builtin_library_path(edition: int | None = None) -> Path:
    """An edition of the built-in event library (Debian-packaged recordings; default: the latest),
    built into the cache on first use."""
    from edgeaudio.events.build_library import LATEST_EDITION, ensure_builtin

    return ensure_builtin(edition=edition or LATEST_EDITION)


def builtin_classes() -> list[str]:
    from edgeaudio.events.build_library import RECIPE

    return sorted(RECIPE)


def open_library(
    path: str | Path | None, classes: list[str], sample_rate: int = 16000, edition: int | None = None
) -> EventLibrary:
    """The library at ``path`` (default: the built-in one in ``edition``) restricted to ``classes``,
    in that order, so that class indices in the synthesized metadata are the model's output indices."""
    library = EventLibrary.from_folder(path or builtin_library_path(edition), sample_rate=sample_rate)
    missing = [c for c in classes if c not in library.classes]
    if missing:
        raise UsageError(
            f"event library {library.root} has no class {', '.join(missing)}",
            hint=f"its classes: {', '.join(library.classes)}; pass --classes with a subset of them",
        )
    return EventLibrary(library.root, sample_rate, classes, [clip for c in classes for clip in library.clips(c)])


def split_library(library: EventLibrary, seed: int = 0) -> tuple[EventLibrary, EventLibrary]:
    train, test = library.split(0.2, seed)
    return (
        EventLibrary(library.root, library.sample_rate, library.classes, [c for x in library.classes for c in train.clips(x)]),
        EventLibrary(library.root, library.sample_rate, library.classes, [c for x in library.classes for c in test.clips(x)]),
    )


def heldout_library(classes: list[str], edition: int | None = None) -> EventLibrary:
    """The built-in library's held-out recordings (seed 0 split): what validation scenes draw from."""
    return split_library(open_library(None, classes, edition=edition))[1]


def synthesize(folder: Path, config: SceneConfig, library: EventLibrary, positions, n_scenes: int, workers: int = 2, progress: bool = True) -> Path:
    return synthesize_dataset(folder, config, library, np.asarray(positions), n_scenes, workers=workers, progress=progress)


def train_seld(
    task, out_dir: str | Path, options: SeldTrainOptions, log: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Train SELD with ``options`` (those of ``edgeaudio train seld``) into the run folder
    ``out_dir`` (see :class:`edgeaudio.training.TrainingRun`); returns the run's result with the
    held-out metrics.

    ``array``: the array to synthesize for (default respeaker-4mic); with ``data_dir``, the data's
    own array (a STARSS root: its tetrahedral MIC array; a synthesized folder: the array it was
    rendered for), and a different ``array`` is an error. ``classes``: a subset of the library's
    classes; default the library's. ``init``: weights to fine-tune from (``"default"`` = the
    shipped ones for the array); tensors that fit are loaded, the rest (the head, when the classes
    differ) start fresh. ``data_dir``: train on an existing synthesized folder (or the folder an
    earlier ``train`` wrote) or a STARSS root instead of synthesizing; every file is checked
    (channels, rate, metadata rows) before training. ``test_scenes``: held-out scenes to synthesize
    (default 15 % of the training scenes, at least 8). ``val_every``: score the held-out scenes
    every this many epochs (and after the last one); scoring 54 scenes costs about a fifth of an
    epoch. ``threads``: torch threads for training. On a machine busy with other jobs, 1 thread ran
    a training step 7x faster than 2 here: idle threads spin at every parallel region's barrier.
    Under torchrun every process runs this: rank 0 synthesizes while the others wait, every rank
    trains its shard, and rank 0 alone logs, scores and writes the weights.
    """
    from edgeaudio.training import TrainingRun, main_process_first

    o = options
    with TrainingRun(task, out_dir, o) as run:
        say = (log or run.say) if run.main else (lambda line: None)
        source = _existing_source(o.data_dir, o.array) if o.data_dir else None
        array = source.array if source else (o.array or DEFAULT_ARRAY)
        from edgeaudio.profiles import get_array

        get_array(array, live_devices=[])  # an unknown array fails here, before any scene is made
        with main_process_first():
            if source:
                train_set, test_set, found, data_info = _existing_data(source, o.classes, task.sample_rate, say)
            else:
                train_set, test_set, found, data_info = _synthesized_data(
                    run.data_dir, array, o.classes, o.library, o.hours, o.test_scenes, o.seed, o.workers, run.progress, say
                )
        if o.threads:
            import torch

            torch.set_num_threads(int(o.threads))
        seld = SeldTask({**task.config, "array": array, "classes": found,
                         "library_edition": data_info.get("library_edition")})
        model = seld.build_model()
        init = _load_matching(model, seld, o.init, say) if o.init else None
        say(f"training {sum(p.numel() for p in model.parameters()):,} parameters for {array} on {len(train_set)} "
            f"recordings, testing on {len(test_set)} held-out ones")
        result, metrics = _fit(run, model, seld, train_set, test_set, o)
        sidecar = {**run.sidecar(seld.config, result, data=data_info, metrics=metrics, init=init,
                                 details={"crop_seconds": 5.0}),
                   "array": seld.array, "classes": seld.classes}  # what benchmarks/seld_eval.py reads
        if run.main:
            say("held-out: " + "  ".join(f"{k} {metrics[k]:.3f}" for k in ("ER20", "F20", "LE", "LR", "SELD")))
        return run.finish(model, sidecar if run.main else None)


def _synthesized_data(folder: Path, array, classes, library_path, hours, test_scenes, seed, workers, progress, log):
    """Scenes for ``array`` from the library's training and held-out recordings, synthesized into
    ``folder``/train and /test (kept: a rerun resumes), read back checked."""
    from edgeaudio.events.build_library import training_edition
    from edgeaudio.plugins.seld.data import read_folder
    from edgeaudio.profiles import get_array

    positions = get_array(array, live_devices=[])[0].positions
    edition = training_edition(library_path)
    library = open_library(library_path, classes or _library_classes(library_path), edition=edition)
    train_lib, test_lib = split_library(library, seed)
    n_train = max(1, math.ceil(hours * 3600 / SCENE_SECONDS))
    n_test = test_scenes or max(MIN_TEST_SCENES, round(TEST_FRACTION * n_train))
    log(f"synthesizing {n_train} training + {n_test} test scenes of {SCENE_SECONDS:.0f} s for {array} into {folder}")
    config = scene_config(seed)
    synthesize(folder / "train", config, train_lib, positions, n_train, workers, progress)
    synthesize(folder / "test", scene_config(seed + 1), test_lib, positions, n_test, workers, progress)
    train_set, _ = read_folder(folder / "train", 16000)
    test_set, _ = read_folder(folder / "test", 16000)
    info = {
        "source": "synthesized",
        "library": str(library.root) if library_path else "built-in (python -m edgeaudio.events.build_library)",
        "library_edition": edition,
        "library_clips": {"train": len(train_lib), "test": len(test_lib)},
        "hours": hours,
        "train_scenes": n_train,
        "test_scenes": n_test,
        "scene_config": asdict(config),
        "test_scene_seed": seed + 1,
        **_library_provenance(library.root),
    }
    return train_set, test_set, library.classes, info


def _library_provenance(root: Path) -> dict[str, Any]:
    """Packages and licences of the clips, from the SOURCES.json the library builder writes."""
    sources = root / "SOURCES.json"
    if not sources.is_file():
        return {}
    manifest = json.loads(sources.read_text())
    return {
        "library_packages": {name: info["version"] for name, info in manifest["packages"].items()},
        "library_licences": sorted({clip["licence"] for clip in manifest["clips"]}),
    }


def _library_classes(path) -> list[str]:
    return EventLibrary.from_folder(path).classes if path else builtin_classes()


@dataclass
class _Source:
    """What ``--data-dir`` holds: STARSS (dev-train / dev-test splits of one root) or synthesized
    scenes (a training folder and maybe a test folder), and the array the audio came from."""

    kind: str
    train: Path
    test: Path | None
    array: str


def _existing_source(data_dir: str, array: str | None) -> _Source:
    """Recognise the folder, without reading its audio yet: a STARSS root, a synthesized folder,
    or the run folder (or its ``data/``) an earlier ``edgeaudio train seld`` wrote."""
    from edgeaudio.plugins.seld.starss import STARSS_ARRAY

    root = Path(data_dir)
    if not root.is_dir():
        raise UsageError(f"--data-dir {root} is not a folder")
    for folder in (root / "data", root):
        if (folder / "train" / "classes.json").is_file():
            test = folder / "test" if (folder / "test" / "classes.json").is_file() else None
            source = _Source("synthesized", folder / "train", test, _array_of(folder / "train"))
            break
    else:
        if (root / "classes.json").is_file():
            source = _Source("synthesized", root, None, _array_of(root))
        else:
            source = _Source("starss", root, None, STARSS_ARRAY)
    if array and array != source.array:
        raise UsageError(f"{root} holds audio from the {source.array} array; --array {array} cannot change that",
                         hint="leave --array out (the data's own array is used)")
    return source


def _array_of(folder: Path) -> str:
    """The array profile whose mic positions a synthesized folder was rendered for."""
    from edgeaudio.profiles import ArrayProfile, load_profiles

    positions = np.asarray(json.loads((folder / "classes.json").read_text())["mic_positions"], dtype=np.float64)
    for profile in load_profiles().values():
        if isinstance(profile, ArrayProfile) and np.shape(profile.positions) == positions.shape \
                and np.allclose(profile.positions, positions, atol=1e-9):
            return profile.name
    raise UsageError(f"{folder} was synthesized for mic positions that match no array profile",
                     hint="add a profile with those positions (devices/*.yaml or a plugin's register_profiles)")


def _existing_data(source: _Source, classes, sample_rate, log):
    """Training and test recordings: STARSS dev-train/dev-test, a synthesized training folder and
    its test folder, or a single synthesized folder's last TEST_FRACTION of scenes held out. Every
    file of both splits is checked before any audio is read."""
    from edgeaudio.plugins.seld.data import check_pairs, list_pairs, read_folder

    if source.kind == "starss":
        splits = {"train": list_pairs(source.train, "dev-train"), "test": list_pairs(source.train, "dev-test")}
    else:
        splits = {"train": list_pairs(source.train), **({"test": list_pairs(source.test)} if source.test else {})}
    for pairs in splits.values():
        check_pairs(pairs, sample_rate)
    found = splits["train"].classes
    if "test" in splits and splits["test"].classes != found:
        raise UsageError(f"{source.test} is labelled with classes {splits['test'].classes}, its training folder with {found}")
    if source.kind == "starss":
        train_set = read_folder(source.train, sample_rate, "dev-train")[0]
        test_set = read_folder(source.train, sample_rate, "dev-test")[0]
    elif source.test:
        train_set, test_set = read_folder(source.train, sample_rate)[0], read_folder(source.test, sample_rate)[0]
    else:
        recordings = read_folder(source.train, sample_rate)[0]
        if len(recordings) < 2:
            raise UsageError(f"{source.train} holds {len(recordings)} scene(s); training needs at least 2 (one is held out)")
        n_test = max(1, round(TEST_FRACTION * len(recordings)))
        train_set, test_set = recordings[:-n_test], recordings[-n_test:]
    if classes and classes != found:
        raise UsageError(f"{source.train} is labelled with classes {found}; --classes cannot relabel it",
                         hint="leave --classes out")
    log(f"training on {len(train_set)} recordings from {source.train} ({source.array}), testing on {len(test_set)}")
    info = {"source": str(source.train), "kind": source.kind, "array": source.array,
            "train_recordings": len(train_set), "test_recordings": len(test_set), "library_edition": None}
    return train_set, test_set, found, info


def _load_matching(model, task, init: str, log) -> dict[str, str]:
    """Copy every tensor of ``init`` whose name and shape fit; report what starts fresh. Returns
    the file's path and sha256, for the sidecar."""
    from safetensors.torch import load_file

    from edgeaudio.bundle import sha256_file
    from edgeaudio.plugins.seld.task import WEIGHTS_DIR

    path = Path(init) if init != "default" else WEIGHTS_DIR / f"seld-{task.array}.safetensors"
    if not path.is_file():
        raise UsageError(f"no weights to start from at {path}", hint="pass a .safetensors file, or 'default'")
    loaded = load_file(str(path))
    own = model.state_dict()
    fitting = {k: v for k, v in loaded.items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(fitting, strict=False)
    fresh = sorted(k for k in own if k not in fitting)
    log(f"initialised from {path}: {len(fitting)} tensors loaded" + (f", fresh: {', '.join(fresh)}" if fresh else ""))
    return {"path": str(path), "sha256": sha256_file(path)}


def _fit(run, model, task, train_set, test_set, o: SeldTrainOptions):
    """Train with the shared loop (cosine learning-rate decay); the held-out scores of the last
    epoch's weights (the loop scores them after the last epoch) on the main process, else {}."""
    import torch

    from edgeaudio.plugins.seld.data import SeldCrops, adpit_loss
    from edgeaudio.plugins.seld.task import seld_scores
    from edgeaudio.training import cosine_adamw, fit

    dataset = SeldCrops(train_set, len(task.classes), task.array_profile().positions)
    make_optimizer, cosine_decay = cosine_adamw(o.lr, o.epochs, floor=0.02)

    def loss_fn(net, batch):
        audio, target = batch
        return adpit_loss(net(audio, *net.initial_state(audio.shape[0]))[0], target)

    def heldout(net) -> dict[str, float]:
        items = [(net.offline(torch.from_numpy(r.audio[None]))[0].numpy(), r.label_set()) for r in test_set]
        return seld_scores(items, len(task.classes))

    config = run.config(epochs=o.epochs, batch_size=o.batch_size, lr=o.lr, seed=o.seed, grad_clip=5.0,
                        val_every=max(1, int(o.val_every)))
    result = fit(model, dataset, loss_fn, config, val_fn=heldout, optimizer_factory=make_optimizer, on_epoch_end=cosine_decay)
    model.eval()
    metrics = {name[4:]: value for name, value in result.history[-1].items() if name.startswith("val_")}
    return result, metrics if run.main else {}
