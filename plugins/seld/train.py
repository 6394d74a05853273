"""``edgeaudio train seld``: synthesize scenes for an array, train with the shared loop, ship weights.

The recipe: split the event library by recording (held-out recordings never reach training),
render ``hours`` of 10 s scenes for the array's geometry from the training half and a test set
from the held-out half, train the CRNN with ADPIT on random 5 s crops under
:func:`edgeaudio.training.fit` (seeded, checkpointed, resumable), and write
``seld-<array>.safetensors`` with a JSON sidecar that records the command, seed, data and the
held-out metrics. Running the same command again resumes both the synthesis and the training.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgeaudio.errors import UsageError
from edgeaudio.events import EventLibrary
from edgeaudio.plugins.seld.scenes import SceneConfig, synthesize_dataset
from edgeaudio.plugins.seld.task import SeldTask, SeldTrainOptions

SCENE_SECONDS = 10.0
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
    task, out_dir: str | Path, options: SeldTrainOptions, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Train SELD with ``options`` (those of ``edgeaudio train seld``) for ``options.array``;
    returns where the weights and sidecar went and the held-out metrics.

    ``classes``: a subset of the library's classes; default the library's. ``init``: weights to
    fine-tune from (``"default"`` = the shipped ones for the array); tensors that fit are loaded,
    the rest (the head, when the classes differ) start fresh.
    ``data_dir``: train on an existing synthesized folder or STARSS root instead of synthesizing.
    ``test_scenes``: held-out scenes to synthesize (default 15 % of the training scenes, at least 8).
    ``val_every``: score the held-out scenes every this many epochs (and after the last one);
    scoring 54 scenes costs about a fifth of an epoch.
    ``threads``: torch threads for training. On a machine busy with other jobs, 1 thread ran a
    training step 7x faster than 2 here: idle threads spin at every parallel region's barrier.
    Under torchrun every process runs this: rank 0 synthesizes while the others wait, every
    rank trains its shard, and rank 0 alone logs, scores and writes the weights.
    """
    from edgeaudio.training import is_main_process, main_process_first, process_group, save_weights

    o = options
    with process_group():
        main = is_main_process()
        progress = o.progress
        if not main:
            log, progress = (lambda line: None), False
        out = Path(out_dir)
        command = _command(array=o.array, classes=o.classes, hours=o.hours, epochs=o.epochs, seed=o.seed, init=o.init,
                           library=o.library, data_dir=o.data_dir, test_scenes=o.test_scenes, batch_size=o.batch_size,
                           lr=o.lr, threads=o.threads, val_every=o.val_every if o.val_every != 5 else None, output=str(out))
        with main_process_first():
            if o.data_dir:
                train_set, test_set, found, data_info = _existing_data(o.data_dir, o.classes, task.sample_rate, log)
            else:
                train_set, test_set, found, data_info = _synthesized_data(
                    out / "data", o.array, o.classes, o.library, o.hours, o.test_scenes, o.seed, o.workers, progress, log
                )
        if o.threads:
            import torch

            torch.set_num_threads(int(o.threads))
        seld = SeldTask({**task.config, "array": o.array, "classes": found,
                         "library_edition": data_info.get("library_edition")})
        model = seld.build_model()
        if o.init:
            _load_matching(model, seld, o.init, log)
        log(f"training {sum(p.numel() for p in model.parameters()):,} parameters on {len(train_set)} recordings, "
            f"testing on {len(test_set)} held-out ones")
        history, metrics = _fit(model, seld, train_set, test_set, out / "checkpoints", o.epochs, o.batch_size, o.lr, o.seed,
                                progress, o.val_every)
        weights = out / f"seld-{seld.array}.safetensors"
        result = {"weights": str(weights), "sidecar": str(weights.with_suffix(".json")), "metrics": metrics}
        if not main:
            return result
        sidecar = {
            "task": seld.name,
            "version": seld.version,
            "array": seld.array,
            "classes": seld.classes,
            "config": seld.config,
            "command": command,
            "seed": o.seed,
            "init": o.init,
            "data": data_info,
            "training": {"epochs": o.epochs, "batch_size": o.batch_size, "lr": o.lr, "crop_seconds": 5.0,
                         "train_seconds": round(sum(r["seconds"] for r in history), 1), "history": history},
            "metrics": {"heldout": metrics},
        }
        save_weights(model, weights)
        weights.with_suffix(".json").write_text(json.dumps(sidecar, indent=1) + "\n")
        log("held-out: " + "  ".join(f"{k} {metrics[k]:.3f}" for k in ("ER20", "F20", "LE", "LR", "SELD")))
        log(f"weights: {weights}")
        return result


def _command(**options: Any) -> str:
    parts = ["edgeaudio", "train", "seld", "-o", options.pop("output")]
    for name, value in options.items():
        if value is None:
            continue
        if isinstance(value, (list, tuple)):
            value = ",".join(value)
        parts += [f"--{name.replace('_', '-')}", str(value)]
    return " ".join(parts)


def _synthesized_data(folder: Path, array, classes, library_path, hours, test_scenes, seed, workers, progress, log):
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


def _existing_data(data_dir, classes, sample_rate, log):
    """Training and test recordings of a folder: STARSS dev-train/dev-test, or a synthesized
    folder's last TEST_FRACTION of scenes held out."""
    from edgeaudio.plugins.seld.data import read_folder

    root = Path(data_dir)
    if (root / "classes.json").is_file():
        recordings, found = read_folder(root, sample_rate)
        n_test = max(1, round(TEST_FRACTION * len(recordings)))
        if len(recordings) < 2:
            raise UsageError(f"{root} holds {len(recordings)} scene(s); training needs at least 2 (one is held out)")
        train_set, test_set = recordings[:-n_test], recordings[-n_test:]
    else:
        train_set, found = read_folder(root, sample_rate, "dev-train")
        test_set, _ = read_folder(root, sample_rate, "dev-test")
    if classes and classes != found:
        raise UsageError(f"{root} is labelled with classes {found}; --classes cannot relabel it", hint="leave --classes out")
    log(f"training on {len(train_set)} recordings from {root}, testing on {len(test_set)}")
    return train_set, test_set, found, {"source": str(root), "train_recordings": len(train_set), "test_recordings": len(test_set)}


def _load_matching(model, task, init: str, log) -> None:
    """Copy every tensor of ``init`` whose name and shape fit; report what starts fresh."""
    from safetensors.torch import load_file

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


def _fit(model, task, train_set, test_set, checkpoints: Path, epochs, batch_size, lr, seed, progress, val_every=5):
    """Train with the shared loop (cosine learning-rate decay) and score the last epoch's weights."""
    import torch

    from edgeaudio.plugins.seld.data import SeldCrops, adpit_loss
    from edgeaudio.plugins.seld.task import seld_scores
    from edgeaudio.training import TrainConfig, cosine_adamw, fit, is_main_process

    dataset = SeldCrops(train_set, len(task.classes), task.array_profile().positions)
    make_optimizer, cosine_decay = cosine_adamw(lr, epochs, floor=0.02)

    def loss_fn(net, batch):
        audio, target = batch
        state = getattr(net, "module", net).initial_state(audio.shape[0])
        return adpit_loss(net(audio, *state)[0], target)

    def heldout(net) -> dict[str, float]:
        items = [(net.offline(torch.from_numpy(r.audio[None]))[0].numpy(), r.label_set()) for r in test_set]
        return seld_scores(items, len(task.classes))

    config = TrainConfig(checkpoints, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, grad_clip=5.0,
                         val_every=max(1, int(val_every)), progress=progress)
    result = fit(model, dataset, loss_fn, config, val_fn=heldout, optimizer_factory=make_optimizer, on_epoch_end=cosine_decay)
    model.eval()
    if not is_main_process():
        return result.history, {}
    with torch.no_grad():
        metrics = heldout(model)
    return result.history, metrics
