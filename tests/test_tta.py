"""The text-to-audio plugin: judge-side metrics, the in-graph inverse STFT, prompt handling, the
four-graph bundle giving the same audio for a seed on torch, ONNX Runtime and OpenVINO, the ranking
of candidates, the CLI, and a tiny train -> export -> run."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

torch = pytest.importorskip("torch")
sf = pytest.importorskip("soundfile")

from edgeaudio.plugins.tta.metrics import frechet_distance, mean_pairwise_cosine_distance, principal_projection  # noqa: E402

# a fixed-seed small model: fast to export, independent of the shipped weights
SMALL = {"width": 32, "heads": 2, "text_layers": 1, "flow_layers": 1, "flow_detail": 256, "vocoder_width": 32,
         "vocoder_layers": 1, "steps": 3, "seed": 3}  # fmt: skip
CHECKS = ("metadata", "graphs", "export_parity", "bundle_round_trip")


@pytest.fixture(scope="module")
def tta_plugin():
    """The plugin as the entry point loads it; registered here when this install predates it."""
    import edgeaudio.plugins.tta as plugin
    from edgeaudio.testing import registered_plugin

    with registered_plugin(plugin, "tta"):
        yield plugin


@pytest.fixture(scope="module")
def small_task(tta_plugin):
    from edgeaudio.tasks import get_task

    return get_task("tta", SMALL)


@pytest.fixture(scope="module")
def small_model(small_task):
    """The small model with non-zero output layers (a fresh flow network outputs zeros)."""
    model = small_task.build_model()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for module in (model.flow.patch_out, model.flow.detail[2], model.flow.modulation_out,
                       *(b.modulation for b in model.flow.blocks)):  # fmt: skip
            module.weight.copy_(0.05 * torch.randn(module.weight.shape, generator=generator))
    return model.eval()


@pytest.fixture(scope="module")
def bundle(small_task, small_model, tmp_path_factory):
    from edgeaudio.exporters.pipeline import export_task, plan_export
    from edgeaudio.training import save_weights

    root = tmp_path_factory.mktemp("tta")
    save_weights(small_model, root / "small.safetensors")
    plan, _ = plan_export("x86-cpu", precisions=["fp32"])
    export_task(small_task, plan, root / "bundle", checkpoint=str(root / "small.safetensors"), log=lambda m: None)
    return root / "bundle"


# -- metrics ---------------------------------------------------------------------------------------


def test_frechet_distance_known_values():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((4000, 3))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    shifted = a + np.array([3.0, 0.0, 4.0])  # same covariance, mean moved by a length-5 vector
    assert frechet_distance(a, shifted) == pytest.approx(25.0, rel=1e-6)
    scaled = 2.0 * a  # covariance 4I vs I: trace(I + 4I - 2 * 2I) = 3
    assert frechet_distance(a, scaled) == pytest.approx(3.0, rel=0.05)


def test_principal_projection_keeps_the_directions_that_vary():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((500, 3)) * np.array([10.0, 1.0, 0.1])
    project = principal_projection(x, 1)
    assert project(x).shape == (500, 1)
    assert np.var(project(x)) == pytest.approx(np.var(x[:, 0]), rel=0.02)


def test_diversity_known_values():
    assert mean_pairwise_cosine_distance(np.ones((3, 4))) == pytest.approx(0.0, abs=1e-12)
    assert mean_pairwise_cosine_distance(np.eye(3)) == pytest.approx(1.0)
    assert mean_pairwise_cosine_distance(np.array([[1.0, 0.0], [-1.0, 0.0]])) == pytest.approx(2.0)
    with pytest.raises(ValueError):
        mean_pairwise_cosine_distance(np.ones((1, 4)))


# -- model -----------------------------------------------------------------------------------------


def test_inverse_stft_reconstructs_what_the_analysis_saw():
    from edgeaudio.plugins.tta.model import HOP, N_FFT, InverseStft, hann

    audio = torch.from_numpy(np.random.default_rng(1).standard_normal((2, 40 * HOP)).astype(np.float32))
    window = torch.from_numpy(hann(N_FFT).astype(np.float32))
    spec = torch.stft(audio, N_FFT, HOP, window=window, center=True, return_complex=True)[:, :, :40]
    out = InverseStft()(torch.cat([spec.real, spec.imag], dim=1))
    assert out.shape == (2, 1, 40 * HOP)
    inner = slice(0, 40 * HOP - N_FFT)  # the last frames' windows run past the 40 kept frames
    assert torch.max(torch.abs(out[:, 0, inner] - audio[:, inner])) < 1e-4


def test_default_model_is_under_twenty_million_parameters(tta_plugin):
    from edgeaudio.tasks import get_task

    model = get_task("tta").build_model()
    assert sum(p.numel() for p in model.parameters()) <= 20_000_000


def test_flow_velocity_has_the_mel_shape(small_task, small_model):
    tokens = torch.from_numpy(small_task.prompt_batch("a horn honks twice"))
    text = small_model.text(tokens)
    mel = torch.randn(2, small_task.config["n_mels"], 24)
    velocity = small_model.flow(mel, torch.tensor([0.1, 0.9]), text, (tokens != 0).float())
    assert velocity.shape == mel.shape and torch.all(torch.isfinite(velocity))


def test_detail_head_gives_the_velocity_full_rank_per_patch(small_task, small_model):
    """The hidden width (32) is below a patch's 4 x 64 values, so without the detail head the
    velocities of many noisy inputs span at most 33 directions per patch; with it, all of them."""
    from edgeaudio.plugins.tta.model import PATCH

    tokens = torch.from_numpy(small_task.prompt_batch("a horn honks"))[:1]
    mels = small_task.config["n_mels"]
    text, mask = small_model.text(tokens), (tokens != 0).float()
    x = torch.randn(400, mels, PATCH)
    with torch.no_grad():
        full = small_model.flow(x, torch.full((400,), 0.5), text.expand(400, -1, -1), mask.expand(400, -1))
        detail, small_model.flow.detail = small_model.flow.detail, None
        try:
            narrow = small_model.flow(x, torch.full((400,), 0.5), text.expand(400, -1, -1), mask.expand(400, -1))
        finally:
            small_model.flow.detail = detail
    rank = lambda v: int(torch.linalg.matrix_rank(v.reshape(400, -1).double(), rtol=1e-6))  # noqa: E731
    assert rank(narrow) <= 33 and rank(full) == mels * PATCH


def test_a_checkpoint_without_the_detail_head_fine_tunes_from_its_own_output(small_task, small_model, tmp_path):
    """Adding the zero-initialised detail head to a trained generator changes none of its velocities."""
    from edgeaudio.plugins.tta.train import _start_from
    from edgeaudio.tasks import get_task
    from edgeaudio.training import save_weights

    plain = get_task("tta", {**SMALL, "flow_detail": 0}).build_model()
    plain.load_state_dict({k: v for k, v in small_model.state_dict().items() if not k.startswith("flow.detail.")})
    save_weights(plain, tmp_path / "plain.safetensors")
    grown, said = small_task.build_model(), []
    _start_from(grown, str(tmp_path / "plain.safetensors"), None, "generator", said.append)
    tokens = torch.from_numpy(small_task.prompt_batch("a horn honks"))
    mel, t, mask = torch.randn(2, small_task.config["n_mels"], 16), torch.tensor([0.2, 0.7]), (tokens != 0).float()
    with torch.no_grad():
        assert torch.equal(grown.flow(mel, t, grown.text(tokens), mask), plain.flow(mel, t, plain.text(tokens), mask))
    assert any("no flow detail head" in line for line in said)


def test_padding_tokens_do_not_change_the_velocity(small_task, small_model):
    """The empty prompt padded to the prompt's length must mean the same as the empty prompt alone."""
    tokens = torch.from_numpy(small_task.prompt_batch("a horn honks twice"))
    short = tokens[1:, :2]
    mel, t = torch.randn(1, small_task.config["n_mels"], 16), torch.tensor([0.5])
    padded = small_model.flow(mel, t, small_model.text(tokens[1:]), (tokens[1:] != 0).float())
    alone = small_model.flow(mel, t, small_model.text(short), torch.ones(1, 2))
    assert torch.allclose(padded, alone, atol=1e-5)


# -- prompts ---------------------------------------------------------------------------------------


def test_flow_times_run_from_noise_to_data():
    from edgeaudio.plugins.tta.sampler import flow_times

    assert np.allclose(flow_times(4), [0, 0.25, 0.5, 0.75, 1])
    shifted = flow_times(4, shift=3.0)
    assert shifted[0] == 0 and shifted[-1] == 1 and np.all(np.diff(shifted) > 0) and shifted[2] == pytest.approx(0.25)


def test_prompt_warnings(small_task):
    assert small_task.prompt_warnings("A horn honks twice, then someone types.") == []
    unknown = small_task.prompt_warnings("a door knocks three times")
    assert any("door, knocks" in w for w in unknown) and any("names no sound" in w for w in unknown)


def test_prompt_batch_pairs_the_prompt_with_the_empty_prompt(small_task):
    vocab = small_task.vocabulary
    tokens = small_task.prompt_batch("music plays")
    assert tokens.shape == (2, 4)
    assert tokens[1].tolist() == [vocab.bos, vocab.eos, vocab.pad, vocab.pad]


# -- training data and fine-tuning ---------------------------------------------------------------------


def test_share_of_one_class_clips():
    from edgeaudio.errors import UsageError
    from edgeaudio.plugins.tta.data import CLASS_COUNTS, class_counts

    assert class_counts(0.5) == pytest.approx(CLASS_COUNTS)
    assert class_counts(0.7) == pytest.approx((0.7, 0.18, 0.09, 0.03))
    assert class_counts(1.0) == pytest.approx((1.0, 0.0, 0.0, 0.0))
    with pytest.raises(UsageError, match=r"must lie in \[0, 1\]"):
        class_counts(1.5)


def test_one_class_share_of_composed_clips(toy_event_folder):
    from edgeaudio.events import EventLibrary
    from edgeaudio.plugins.tta.data import compose_set

    library = EventLibrary.from_folder(toy_event_folder, sample_rate=16000)
    assert all(len(set(c.labels)) == 1 for c in compose_set(library, 6, seed=0, single=1.0))
    assert any(len(set(c.labels)) > 1 for c in compose_set(library, 6, seed=0, single=0.0))


def test_generator_fine_tunes_from_a_checkpoint_and_keeps_its_vocoder(small_task, small_model, toy_event_folder, tmp_path):
    from safetensors.torch import load_file

    from edgeaudio.bundle import sha256_file
    from edgeaudio.errors import UsageError
    from edgeaudio.plugins.tta.task import TtaTrainOptions
    from edgeaudio.plugins.tta.train import train_tta
    from edgeaudio.training import save_weights

    start = tmp_path / "start.safetensors"
    save_weights(small_model, start)
    options = TtaTrainOptions(part="generator", clips=4, epochs=1, batch_size=2, library=str(toy_event_folder), threads=1,
                              progress=False)  # fmt: skip
    done = train_tta(small_task, tmp_path / "run", replace(options, init=str(start), single=1.0, ema=0.5), log=lambda m: None)
    info = json.loads((tmp_path / "run" / "parts" / "generator.json").read_text())
    assert info["init"] == {"path": str(start), "sha256": sha256_file(start)} and info["data"]["single_class_share"] == 1.0
    details = info["details"]
    assert details["ema"] == 0.5 and set(details["held_out_raw_weights"]) == set(info["metrics"]) == {"flow_loss", "envelope_loss"}
    kept = load_file(tmp_path / "run" / "parts" / "generator.safetensors")
    averaged = load_file(tmp_path / "run" / "checkpoints" / "generator" / "ema.safetensors")
    assert all(torch.equal(t, averaged[k]) for k, t in kept.items())
    vocoder = load_file(tmp_path / "run" / "parts" / "vocoder.safetensors")
    assert all(torch.equal(t, small_model.vocoder.state_dict()[k]) for k, t in vocoder.items())
    assert done["weights"] == str(tmp_path / "run" / "weights.safetensors")
    assert set(done["metrics"]) == {"generator_flow_loss", "generator_envelope_loss"}  # the vocoder came from init
    with pytest.raises(UsageError, match="no weights to start from"):
        train_tta(small_task, tmp_path / "again", replace(options, init=str(tmp_path / "missing.safetensors")))


def test_vocoder_fine_tunes_from_a_checkpoint(small_task, small_model, toy_event_folder, tmp_path):
    from edgeaudio.plugins.tta.task import TtaTrainOptions
    from edgeaudio.plugins.tta.train import train_tta
    from edgeaudio.training import save_weights

    start = tmp_path / "start.safetensors"
    save_weights(small_model, start)
    options = TtaTrainOptions(part="vocoder", vocoder_epochs=1, vocoder_clips=3, vocoder_lr=1e-4, library=str(toy_event_folder),
                              init=str(start), threads=1, progress=False)  # fmt: skip
    done = train_tta(small_task, tmp_path / "run", options, log=lambda m: None)
    info = json.loads((tmp_path / "run" / "parts" / "vocoder.json").read_text())
    assert info["init"]["path"] == str(start) and (info["data"]["train_clips"], info["options"]["vocoder_lr"]) == (3, 1e-4)
    assert info["metrics"]["mel_l1"] > 0 and done["weights"] is None  # no generator in this run yet
    assert done["parts"] == {"vocoder": str(tmp_path / "run" / "parts" / "vocoder.safetensors")}


# -- bundle, backends, CLI ---------------------------------------------------------------------------


def test_conformance(small_task, tmp_path):
    from edgeaudio.testing import Conformance

    suite = Conformance("tta", SMALL, tmp_path, ["onnxruntime", "openvino"], ["fp32"])
    for check in CHECKS:
        suite.run(check)
    assert set(suite.report.passed) == set(CHECKS)


def test_same_audio_for_a_seed_on_every_backend(bundle):
    import edgeaudio

    audio = {}
    for backend in ("torch", "onnxruntime", "openvino"):
        session = edgeaudio.load(bundle, backend=backend, precision="fp32")
        result = session.generate("a horn honks twice", seconds=1.0, seed=7)
        assert result["audio"].shape == (1, 16000) and result["seed"] == 7 and result["warnings"] == []
        audio[backend] = result["audio"]
    assert np.max(np.abs(audio["onnxruntime"] - audio["torch"])) < 1e-3
    assert np.max(np.abs(audio["openvino"] - audio["torch"])) < 1e-3
    again = edgeaudio.load(bundle, backend="onnxruntime").generate("a horn honks twice", seconds=1.0, seed=7)["audio"]
    assert np.array_equal(again, audio["onnxruntime"])
    other = edgeaudio.load(bundle, backend="onnxruntime").generate("a horn honks twice", seconds=1.0, seed=8)["audio"]
    assert np.max(np.abs(other - audio["onnxruntime"])) > 1e-3


def test_one_candidate_is_the_plain_sampler_and_candidates_do_not_mix(bundle):
    """Candidate 0 starts from the seed's own noise, so it is what one candidate makes; sampled
    together in one batch, each candidate is what it would be alone."""
    import edgeaudio
    from edgeaudio.plugins.tta.sampler import generate_mel, initial_noise

    session = edgeaudio.load(bundle, backend="onnxruntime")
    task, runner = session.task, session.runner
    args = (runner, task.prompt_batch("a dog barks"), task.vocabulary.pad, 64, 20, 3, task.config["guidance"])
    together, scores = generate_mel(*args, 5, task.config["shift"], candidates=3)
    alone, none = generate_mel(*args, 5, task.config["shift"], candidates=1)
    assert together.shape == (3, 64, 20) and scores.shape == (3,) and np.array_equal(none, [0.0])
    assert np.max(np.abs(together[0] - alone[0])) < 1e-4
    assert np.max(np.abs(together[1] - together[0])) > 1e-2
    noise = initial_noise(5, 3, 64, 20)
    assert np.array_equal(noise[0], np.random.default_rng(5).standard_normal((64, 20)).astype(np.float32))
    assert np.array_equal(noise[2], np.random.default_rng([5, 2]).standard_normal((64, 20)).astype(np.float32))


def test_the_kept_candidate_is_the_best_ranked(bundle):
    """The runtime vocodes the candidate with the highest score; without guidance the score is the
    fit of its time-averaged mel to the prompt's envelope (the envelope graph) alone."""
    import edgeaudio
    from edgeaudio.plugins.tta.sampler import generate_mel

    session = edgeaudio.load(bundle, backend="onnxruntime")
    task, runner = session.task, session.runner
    tokens = task.prompt_batch("a dog barks")
    outputs = task.generate(runner, "a dog barks", seconds=0.5, steps=3, seed=2, guidance=1.0, candidates=4)
    mels, scores = generate_mel(runner, tokens, task.vocabulary.pad, 64, outputs["mel"].shape[2], 3, 1.0, 2,
                                task.config["shift"], candidates=4)  # fmt: skip
    text = runner.graph("text_encoder").run({"tokens": tokens})["text"][:1]
    envelope = runner.graph("envelope").run({"text": text, "mask": (tokens[:1] != task.vocabulary.pad).astype(np.float32)})
    fit = -np.mean((mels.mean(axis=2) - envelope["envelope"]) ** 2, axis=1)
    assert int(outputs["candidate"]) == int(np.argmax(fit)) == int(np.argmax(scores))
    assert np.allclose(scores, (fit - fit.mean()) / fit.std(), atol=1e-5)
    assert np.array_equal(outputs["mel"][0], mels[int(outputs["candidate"])])
    result = session.generate("a dog barks", seconds=0.5, steps=3, seed=2, guidance=1.0, candidates=4)
    assert result["candidates"] == 4 and result["kept_candidate"] == int(outputs["candidate"])


def test_generating_from_a_bundle_imports_neither_torch_nor_scipy(bundle):
    """Both take seconds to import; a one-shot `edgeaudio run tta` paid them on its first clip."""
    import subprocess
    import sys

    code = ("import sys, edgeaudio; s = edgeaudio.load(sys.argv[1], backend='onnxruntime'); "
            "s.generate('a dog barks', seconds=0.5, steps=2); print(sorted(m for m in ('torch', 'scipy') if m in sys.modules))")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code, str(bundle)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_standardised_scores():
    from edgeaudio.plugins.tta.sampler import standardised

    assert np.allclose(standardised(np.array([1.0, 2.0, 3.0])), [-1.224745, 0.0, 1.224745])
    assert np.array_equal(standardised(np.array([4.0, 4.0])), [0.0, 0.0])


def test_bundle_carries_four_graphs_and_the_vocabulary(bundle, small_task):
    from edgeaudio.bundle import load_bundle

    manifest = load_bundle(bundle).manifest
    assert [g["name"] for g in manifest["graphs"]] == ["text_encoder", "flow", "envelope", "vocoder"]
    assert manifest["provenance"]["config"]["vocab"] == small_task.config["vocab"]


def test_tensorrt_profiles_come_from_the_declared_axes(bundle):
    """Ahead-of-time engines need every dynamic axis bounded: up to 8 candidates x prompt pair x
    0.1-10 s of mel, tuned for the default 4 candidates."""
    from edgeaudio.backends.tensorrt import TensorRTBackend
    from edgeaudio.bundle import load_bundle

    graphs = {g["name"]: g for g in load_bundle(bundle).manifest["graphs"]}
    flow = TensorRTBackend().profile_shapes(graphs["flow"])
    assert flow["mel"] == ((1, 64, 8), (8, 64, 316), (16, 64, 628)) and flow["t"] == ((1,), (8,), (16,))
    assert TensorRTBackend().profile_shapes(graphs["envelope"])["text"] == ((1, 2, 32), (1, 16, 32), (2, 32, 32))
    assert TensorRTBackend().profile_shapes(graphs["vocoder"])["mel"][2] == (1, 64, 628)
    assert TensorRTBackend().profile_shapes(graphs["text_encoder"])["tokens"] == ((1, 2), (2, 16), (2, 32))


def test_bench_times_whole_generated_clips_on_every_backend(bundle):
    from edgeaudio.bench import run_bench

    report = run_bench(bundle, seconds=1.0, warmup=1)
    rows = {(r["backend"], r["precision"]): r for r in report["rows"]}
    assert set(rows) == {("torch", "fp32"), ("onnxruntime", "fp32"), ("openvino", "fp32")}
    for row in rows.values():
        assert row["error"] is None and row["chunk_ms"] == 1000.0
        assert row["rtf"] == pytest.approx(row["p50_ms"] / 1000 / 1.0)
    assert rows[("onnxruntime", "fp32")]["parity_max_abs"] < 1e-3  # same seed, same audio as torch


def test_generate_checks_its_options(bundle):
    import edgeaudio
    from edgeaudio.errors import UsageError

    session = edgeaudio.load(bundle, backend="onnxruntime")
    with pytest.raises(UsageError, match="--seconds"):
        session.generate("music plays", seconds=60)
    with pytest.raises(UsageError, match="--steps"):
        session.generate("music plays", steps=0)
    for wrong in (0, 9):
        with pytest.raises(UsageError, match="--candidates must be in 1..8"):
            session.generate("music plays", candidates=wrong)
    with pytest.raises(UsageError, match="text prompt, not audio"):
        session.process(np.zeros(16000, np.float32), 16000)


def test_cli_writes_a_wav_and_warns_about_an_unknown_sound(bundle, tmp_path):
    from click.testing import CliRunner

    from edgeaudio.cli import cli

    out = tmp_path / "knock.wav"
    result = CliRunner().invoke(cli, ["run", str(bundle), "a door knocks three times", "-o", str(out), "--seconds", "1.5",
                                      "--steps", "2", "--seed", "4", "--candidates", "2", "--backend", "onnxruntime"])  # fmt: skip
    assert result.exit_code == 0, result.output
    audio, rate = sf.read(out)
    assert rate == 16000 and len(audio) == 24000 and np.all(np.isfinite(audio))
    line = json.loads(result.stdout.strip().splitlines()[-1])
    assert line["prompt"] == "a door knocks three times" and line["seed"] == 4 and line["steps"] == 2
    assert line["candidates"] == 2 and line["kept_candidate"] in (0, 1)
    assert "names no sound" in result.stderr and "warning" in result.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "needs a text prompt"),
        (["music plays"], "--output out.wav"),
        (["music plays", "-o", "x.wav", "--input", "in.wav"], "takes no --input"),
    ],
)
def test_cli_refuses_what_it_cannot_do(bundle, tmp_path, args, message):
    from click.testing import CliRunner

    from edgeaudio.cli import cli

    args = [a.replace("x.wav", str(tmp_path / "x.wav")) for a in args]
    result = CliRunner().invoke(cli, ["run", str(bundle), *args])
    assert result.exit_code != 0 and message in result.output


def test_audio_tasks_refuse_a_prompt(tmp_path):
    from click.testing import CliRunner

    from edgeaudio.cli import cli

    result = CliRunner().invoke(cli, ["run", "caption", "a horn honks"])
    assert result.exit_code != 0 and "takes audio, not a prompt" in result.output
