"""The captioning plugin: metrics against aac-metrics and hand-computed values, captions written
from scene structure, Clotho/AudioCaps readers, the cached decoder step, the search, and the
encoder + decoder-step bundle giving the same caption on torch, ONNX Runtime and OpenVINO."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
sf = pytest.importorskip("soundfile")

from edgeaudio.plugins.caption import data, metrics  # noqa: E402
from edgeaudio.plugins.caption.search import beam_search, greedy  # noqa: E402
from edgeaudio.plugins.caption.tokenizer import Vocabulary, normalize  # noqa: E402

# a fixed-seed small model: fast to export, independent of the shipped weights
SMALL = {"n_mels": 32, "stem": "conv2d", "d_model": 32, "heads": 2, "hidden": 64, "encoder_layers": 1, "decoder_layers": 1,
         "max_tokens": 12, "seed": 3}  # fmt: skip

CANDIDATES = ["a dog barks twice", "a man speaks while a car passes by", "music plays",
              "rain falls on a roof and thunder rumbles"]  # fmt: skip
REFERENCES = [
    ["a dog is barking", "a dog barks two times", "the dog barks"],
    ["a man talks as a car drives past", "a person speaks while a vehicle passes", "someone speaks and a car passes by"],
    ["music is playing", "a melody plays", "soft music plays in the background"],
    ["rain is falling", "heavy rain falls on a roof", "thunder rumbles as rain pours"],
]


@pytest.fixture(scope="module")
def caption_plugin():
    """The plugin as the entry point loads it; registered here when this install predates it."""
    import edgeaudio.plugins.caption as plugin
    from edgeaudio.testing import registered_plugin

    with registered_plugin(plugin, "caption"):
        yield plugin


@pytest.fixture(scope="module")
def small_task(caption_plugin):
    from edgeaudio.tasks import get_task

    return get_task("caption", SMALL)


# -- metrics -------------------------------------------------------------------------------------


def test_metrics_match_aac_metrics():
    """Values from aac-metrics 0.5 (bleu, rouge_l, cider_d) on the same normalised sentences."""
    scores = metrics.caption_scores(CANDIDATES, REFERENCES)
    assert scores["bleu_1"] == pytest.approx(0.9090909090495868, abs=1e-8)
    assert scores["bleu_4"] == pytest.approx(0.5572375252382478, abs=1e-8)
    assert scores["rouge_l"] == pytest.approx(0.6412679342422813, abs=1e-12)
    assert scores["cider_d"] == pytest.approx(2.462706414926851, abs=1e-12)


def test_metrics_on_hand_checked_examples():
    # "a dog barks" vs "a dog is barking": unigram precision 2/3, brevity penalty exp(1 - 4/3)
    assert metrics.bleu(["a dog barks"], [["a dog is barking"]])[0] == pytest.approx(2 / 3 * np.exp(1 - 4 / 3))
    # LCS 2: precision 2/3, recall 1/2, F with beta 1.2
    p, r = 2 / 3, 1 / 2
    assert metrics.rouge_l(["a dog barks"], [["a dog is barking"]]) == pytest.approx(2.44 * p * r / (r + 1.44 * p))
    # identical sentences score 1 on BLEU and ROUGE-L; punctuation and case do not matter
    exact = ["A dog barks, then a car passes by."]
    assert metrics.bleu(exact, [["a dog barks then a car passes by"]])[3] == pytest.approx(1.0)
    assert metrics.rouge_l(exact, [["a dog barks then a car passes by"]]) == pytest.approx(1.0)
    # CIDEr-D of a set whose every reference n-gram is in every clip is 0 (idf = log(N/N))
    assert metrics.cider_d(["a dog barks", "a dog barks"], [["a dog barks"], ["a dog barks"]]) == 0.0


def _coco_bleu(candidates, references, n=4):
    """BLEU-1..n as the COCO caption scorer computes it (pycocoevalcap ``bleu/bleu_scorer.py``,
    ``BleuScorer.compute_score(option="closest")``), transcribed rule for rule so the numbers the
    tests pin come from the reference's own booking, not from ours: per sentence ``cook_refs`` /
    ``cook_test`` (n-gram counts of ``split()`` words, clipped by the maximum count over the
    references; guesses ``max(0, len - k + 1)``; "closest" reference length, ties to the shorter),
    corpus totals, then ``bleu *= (correct + tiny) / (guess + small)`` with tiny 1e-15 and small
    1e-9, ``bleu ** (1 / (k + 1))`` and the brevity factor ``exp(1 - 1 / ratio)`` where
    ``ratio = (testlen + tiny) / (reflen + small) < 1``. Words are ``normalize``d first, as our
    scorer does in place of the PTB tokenizer."""
    from collections import Counter

    tiny, small = 1e-15, 1e-9
    totals = {"testlen": 0, "reflen": 0, "guess": [0] * n, "correct": [0] * n}
    for cand, refs in zip(candidates, references):
        words = " ".join(normalize(cand)).split()
        maxcounts, reflens = Counter(), []
        for ref in refs:
            ref_words = " ".join(normalize(ref)).split()
            reflens.append(len(ref_words))
            counts = Counter(tuple(ref_words[i:i + k]) for k in range(1, n + 1) for i in range(len(ref_words) - k + 1))
            for gram, count in counts.items():
                maxcounts[gram] = max(maxcounts.get(gram, 0), count)
        testlen = len(words)
        totals["testlen"] += testlen
        totals["reflen"] += min((abs(length - testlen), length) for length in reflens)[1]
        counts = Counter(tuple(words[i:i + k]) for k in range(1, n + 1) for i in range(len(words) - k + 1))
        for k in range(n):
            totals["guess"][k] += max(0, testlen - k)
        for gram, count in counts.items():
            totals["correct"][len(gram) - 1] += min(maxcounts.get(gram, 0), count)
    bleus, bleu = [], 1.0
    for k in range(n):
        bleu *= float(totals["correct"][k] + tiny) / (totals["guess"][k] + small)
        bleus.append(bleu ** (1.0 / (k + 1)))
    ratio = (totals["testlen"] + tiny) / (totals["reflen"] + small)
    if ratio < 1:
        bleus = [b * math.exp(1 - 1 / ratio) for b in bleus]
    return bleus


def test_bleu_equals_the_coco_scorer_where_an_order_has_no_match():
    """BLEU-4 once smoothed with 1e-9 where the COCO scorer uses 1e-15 on the matches: equal
    whenever every order matches, far apart when one does not. "a dog barks loudly" against "a
    dog is barking loudly" matches 3/4 words, 1/3 bigrams and no 3- or 4-gram; by the scorer's
    rule BLEU-4 = exp(1 - 5/4) * (3/4 * 1/3 * 1e-15/2 * 1e-15/1) ** (1/4) = 1.46e-8 (the old
    smoothing gave 1.46e-5)."""
    cand, refs = ["a dog barks loudly"], [["a dog is barking loudly"]]
    expected = math.exp(1 - 5 / 4) * ((3 + 1e-15) / (4 + 1e-9) * (1 + 1e-15) / (3 + 1e-9) * 1e-15 / (2 + 1e-9) * 1e-15 / (1 + 1e-9)) ** 0.25
    assert metrics.bleu(cand, refs)[3] == pytest.approx(expected, rel=1e-9)
    assert expected == pytest.approx(1.464e-8, rel=1e-3)
    assert metrics.bleu(cand, refs) == pytest.approx(_coco_bleu(cand, refs), rel=1e-12)
    rng = np.random.default_rng(0)
    words = "a dog barks car horn honks music plays loudly while then twice rain falls".split()
    for _ in range(200):  # short random corpora: orders without a match come up often
        size = int(rng.integers(1, 4))
        candidates = [" ".join(rng.choice(words, int(rng.integers(1, 7)))) for _ in range(size)]
        references = [[" ".join(rng.choice(words, int(rng.integers(1, 8)))) for _ in range(int(rng.integers(1, 4)))]
                      for _ in range(size)]
        assert metrics.bleu(candidates, references) == pytest.approx(_coco_bleu(candidates, references), rel=1e-12, abs=1e-300)
    assert metrics.bleu(CANDIDATES, REFERENCES) == pytest.approx(_coco_bleu(CANDIDATES, REFERENCES), rel=1e-12)


def test_event_mentions_use_longest_synonym_first():
    keywords = data.EVENT_KEYWORDS
    assert metrics.mentioned_classes("A car horn blares while a car drives past.", keywords) == {"horn", "vehicle"}
    assert metrics.mentioned_classes("A snare drum is hit, then a bass drum booms", keywords) == {"snare_drum", "kick_drum"}
    assert metrics.mentioned_classes("Hi-hats click in the distance", keywords) == {"hihat"}
    scores = metrics.event_scores(["a horn honks", "music plays and a dog barks"], [["horn", "speech"], ["music"]], keywords)
    # mentioned {horn}, {music}; truth {horn, speech}, {music}: P 2/2, R 2/3
    assert scores["event_precision"] == 1.0
    assert scores["event_recall"] == pytest.approx(2 / 3)
    assert scores["event_f1"] == pytest.approx(0.8)


def test_no_keyword_belongs_to_two_classes():
    owners: dict[str, str] = {}
    for label, words in data.EVENT_KEYWORDS.items():
        for word in words:
            assert owners.setdefault(" ".join(normalize(word)), label) == label, word


# -- tokenizer and captions ------------------------------------------------------------------------


def test_vocabulary_round_trip(tmp_path):
    vocab = Vocabulary.build(["A dog barks.", "The dog barks twice!"])
    assert vocab.words[:6] == ["<pad>", "<bos>", "<eos>", "<unk>", "barks", "dog"]
    ids = vocab.encode("A dog barks loudly", max_tokens=8)
    assert ids[0] == vocab.bos and ids[-1] == vocab.eos and vocab.unk in ids
    assert vocab.decode(ids) == "a dog barks <unk>"
    assert vocab.decode(ids[:3] + [vocab.eos, 5, 5]) == "a dog"
    vocab.save(tmp_path / "vocab.json")
    assert Vocabulary.load(tmp_path / "vocab.json").words == vocab.words
    assert len(vocab.encode("a " * 50, max_tokens=8)) == 8


@pytest.fixture(scope="module")
def toy_library(toy_event_folder):
    from edgeaudio.events import EventLibrary

    return EventLibrary.from_folder(toy_event_folder, sample_rate=16000)


def test_training_clips_are_the_same_whatever_the_number_of_workers(toy_library, small_task, monkeypatch):
    from edgeaudio.plugins.caption import train

    monkeypatch.setattr(train, "SLICE", 2)  # three slices of 2, 2 and 1 clips
    frontend = train._frontend(small_task)
    alone, alone_captions = train._compose(toy_library, 5, 0, frontend, workers=1, progress=False)
    pooled, pooled_captions = train._compose(toy_library, 5, 0, frontend, workers=2, progress=False)
    assert alone.shape[0] == 5 and alone.dtype == torch.float16
    assert torch.equal(alone, pooled) and alone_captions == pooled_captions


def test_captions_follow_the_scene(toy_library):
    vocab = set(" ".join(data.caption_words()).split())
    clips = data.synthesize_set(toy_library, 30, seed=1)
    for clip in clips:
        assert clip.audio.shape == (160000,) and np.max(np.abs(clip.audio)) <= 1.0
        assert len(clip.captions) == 5
        for caption in clip.captions:
            assert set(normalize(caption)) <= vocab, caption
        # every reference names exactly the scene's classes
        scores = metrics.event_scores(clip.captions, [clip.labels] * 5, data.EVENT_KEYWORDS)
        assert scores["event_f1"] == 1.0, (clip.labels, clip.captions)
    again = data.synthesize_set(toy_library, 3, seed=1)
    assert [c.captions for c in again] == [c.captions for c in clips[:3]]
    assert np.array_equal(again[2].audio, clips[2].audio)


def test_counts_order_and_background_are_worded():
    scene = data.Scene("sequence", [data.Event("horn", [0.5, 1.5], [0.5, 0.5]), data.Event("music", [4.0], [2.0]),
                                     data.Event("speech", [1.0], [1.0], far=True)])  # fmt: skip
    captions = data.write_captions(scene, np.random.default_rng(0), count=5)
    for caption in captions:
        text = " ".join(normalize(caption))
        assert any(w in text for w in ("twice", "two times")), caption
        assert any(w in text for w in ("then", "followed by")), caption
        assert any(w in text for w in data.BACKGROUND), caption
        assert text.index("horn" if "horn" in text else "honk") < min(text.find(w) for w in ("music", "melody", "tune") if w in text)
    assert len(set(captions)) == 5


def test_clotho_and_audiocaps_readers(tmp_path):
    clotho = tmp_path / "clotho_captions_evaluation.csv"
    clotho.write_text(
        "file_name,caption_1,caption_2,caption_3,caption_4,caption_5\n"
        'Santa Motor.wav,A machine whines and squeals.,"A person is using electric clippers, trimming bushes.",'
        "Someone is trimming the bushes.,An electric saw is running.,A motor runs continuously.\n"
    )
    items = data.read_clotho(clotho, tmp_path / "audio")
    assert len(items) == 1 and items[0].path == tmp_path / "audio" / "Santa Motor.wav"
    assert items[0].captions[1] == "A person is using electric clippers, trimming bushes." and len(items[0].captions) == 5
    audiocaps = tmp_path / "val.csv"
    audiocaps.write_text(
        "audiocap_id,youtube_id,start_time,caption\n"
        "97151,vfY_TJq7n_U,130,Rustling occurs while ducks quack\n"
        "97152,vfY_TJq7n_U,130,Ducks quack while leaves rustle\n"
        "101181,-0xTZCu-VDc,30,A vehicle engine revs\n"
    )
    grouped = data.read_audiocaps(audiocaps, tmp_path)
    assert [(g.path.name, len(g.captions)) for g in grouped] == [("vfY_TJq7n_U_130.wav", 2), ("-0xTZCu-VDc_30.wav", 1)]
    sf.write(tmp_path / "vfY_TJq7n_U_130.wav", np.zeros(8000, np.float32), 8000)
    with pytest.raises(Exception, match="1 audio file"):
        data.load_captioned_files(grouped)
    loaded = data.load_captioned_files(grouped[:1], seconds=2.0)
    assert loaded[0].audio.shape == (32000,) and loaded[0].captions == grouped[0].captions
    bad = tmp_path / "bad.csv"
    bad.write_text("name,text\nx,y\n")
    with pytest.raises(Exception, match="lacks column"):
        data.read_clotho(bad, tmp_path)


# -- model and search ------------------------------------------------------------------------------


def test_default_model_is_under_ten_million_parameters(caption_plugin):
    from edgeaudio.plugins.caption.task import CaptionTask

    model = CaptionTask().build_model()
    assert sum(p.numel() for p in model.parameters()) <= 10_000_000


def test_a_sidecar_from_before_a_config_key_existed_gets_what_that_model_used(caption_plugin, tmp_path):
    """Old sidecars have neither ``stem`` nor ``library_edition``: they mean conv1d and edition 1,
    whatever today's defaults are, so ``export --checkpoint`` rebuilds the model they fit."""
    from edgeaudio.api import export
    from edgeaudio.plugins.caption.task import CaptionTask
    from edgeaudio.training import save_weights

    old = {"config": {k: v for k, v in SMALL.items() if k != "stem"}}
    assert CaptionTask.trained_config(old) == {**old["config"], "stem": "conv1d", "library_edition": 1}
    new = {"config": {**SMALL, "library_edition": 2}, "data": {"library_edition": 2}}
    assert CaptionTask.trained_config(new)["library_edition"] == 2
    legacy = CaptionTask({**SMALL, "stem": "conv1d", "vocab": Vocabulary.build(CANDIDATES).words})
    checkpoint = tmp_path / "caption.safetensors"
    save_weights(legacy.build_model(), checkpoint)
    old["config"]["vocab"] = legacy.config["vocab"]
    checkpoint.with_suffix(".json").write_text(json.dumps(old))
    manifest = export("caption", target="x86-cpu", precisions=["fp32"], backends=["onnxruntime"],
                      checkpoint=str(checkpoint), output=tmp_path / "bundle", log=lambda line: None)  # fmt: skip
    assert (tmp_path / "bundle").is_dir() and manifest


@pytest.mark.parametrize("stem", ["conv1d", "conv2d"])
def test_both_encoder_stems_give_80_ms_memory_frames(caption_plugin, stem):
    from edgeaudio.plugins.caption.task import CaptionTask

    model = CaptionTask({**SMALL, "stem": stem}).build_model().eval()
    with torch.inference_mode():
        memory = model.encoder(model.frontend(torch.zeros(2, 1, 16000)))
    assert memory.shape == (2, math.ceil(model.frontend(torch.zeros(1, 1, 16000)).shape[-1] / 8), SMALL["d_model"])


def test_cached_steps_equal_teacher_forcing(small_task):
    model = small_task.build_model().eval()
    audio = torch.from_numpy(np.random.default_rng(0).standard_normal((1, 1, 24000)).astype(np.float32) * 0.1)
    tokens = torch.tensor([[1, 7, 9, 12, 5, 30]])
    with torch.inference_mode():
        keys, values, _ = model.encode(audio)
        full = torch.log_softmax(model(model.frontend(audio), tokens)[0], dim=-1)[0]
        cache_k = cache_v = torch.from_numpy(model.empty_cache(1))
        for position in range(tokens.shape[1]):
            step, cache_k, cache_v = model.decoder.step(tokens[:, position : position + 1], torch.tensor([[position]]),
                                                        keys, values, cache_k, cache_v)  # fmt: skip
            assert torch.allclose(step[0], full[position], atol=1e-5)


def _toy_step(table):
    """A decoder whose next-token log-probs depend only on the previous token."""
    def step(tokens, position, cache):
        return np.log(table[tokens[:, 0]]), cache
    return step


def test_beam_search_finds_what_greedy_misses():
    # from <bos>=0: token 1 (0.6) leads to a flat tail; token 2 (0.4) leads to <eos>=3 surely
    table = np.full((4, 4), 1e-9)
    table[0] = [1e-9, 0.6, 0.4, 1e-9]
    table[1] = [1e-9, 0.5, 0.5 - 2e-9, 1e-9]
    table[2] = [1e-9, 1e-9, 1e-9, 1.0]
    step = _toy_step(table)
    assert greedy(step, {}, 1, bos=0, eos=3, max_tokens=5)[0] == [1, 1, 1, 1]
    assert beam_search(step, {"c": np.zeros((1, 2))}, 2, bos=0, eos=3, max_tokens=5) == [2]
    assert beam_search(step, {"c": np.zeros((1, 1))}, 1, bos=0, eos=3, max_tokens=5) == [1, 1, 1, 1]


def test_a_guide_keeps_a_caption_going_until_it_has_said_enough():
    # from <bos>=0: token 1, then <eos>=3 (0.7) or token 2 (0.3), then <eos> surely
    table = np.full((4, 4), 1e-9)
    table[0] = [1e-9, 1.0, 1e-9, 1e-9]
    table[1] = [1e-9, 1e-9, 0.3, 0.7]
    table[2] = [1e-9, 1e-9, 1e-9, 1.0]
    step = _toy_step(table)
    unsaid = lambda ids: np.array([0, 0, 0, -30.0 * (2 not in ids)])  # noqa: E731  # token 2 still to be said
    assert greedy(step, {}, 1, bos=0, eos=3, max_tokens=6)[0] == [1]
    assert greedy(step, {}, 1, bos=0, eos=3, max_tokens=6, guide=unsaid)[0] == [1, 2]
    assert beam_search(step, {"c": np.zeros((1, 2))}, 2, bos=0, eos=3, max_tokens=6) == [1]
    assert beam_search(step, {"c": np.zeros((1, 2))}, 2, bos=0, eos=3, max_tokens=6, guide=unsaid) == [1, 2]


def test_tag_guidance_lowers_eos_and_raises_the_words_of_each_likely_class_not_yet_named(caption_plugin):
    from edgeaudio.tasks import get_task

    small_task = get_task("caption", {**SMALL, "tag_word_bonus": 2.0})
    probs = np.zeros(len(small_task.config["tags"]), np.float32)
    probs[small_task.config["tags"].index("horn")] = 0.9
    probs[small_task.config["tags"].index("speech")] = 0.6
    probs[small_task.config["tags"].index("music")] = 0.2
    guide, vocab, c = small_task._guide(probs), small_task.vocabulary, small_task.config
    bias = guide(vocab.encode("a horn", 8))  # speech not named yet
    assert bias[vocab.eos] == pytest.approx(-c["tag_guidance"])
    assert bias[vocab.index["speaks"]] == bias[vocab.index["voice"]] == pytest.approx(c["tag_word_bonus"])
    assert bias[vocab.index["horn"]] == bias[vocab.index["music"]] == 0.0
    assert not guide(vocab.encode("a car horn honks while someone speaks", 12)).any()
    assert guide([])[vocab.eos] == pytest.approx(-2 * c["tag_guidance"])
    assert small_task._guide(np.zeros_like(probs)) is None  # nothing likely: plain search
    decoded = small_task.decode({"tokens": np.array([vocab.encode("a horn", 8)]), "tag_probs": probs[None]})
    assert decoded["events"] == [{"class": "horn", "probability": 0.9}, {"class": "speech", "probability": 0.6}]


# -- export, bundle, backends ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def conformance(small_task, tmp_path_factory):
    """The conformance suite's checks that apply to a whole-clip task, on one shared bundle."""
    from edgeaudio.testing import Conformance

    suite = Conformance("caption", SMALL, tmp_path_factory.mktemp("conformance"), ["onnxruntime", "openvino"], ["fp32"])
    for check in ("metadata", "graphs", "export_parity", "bundle_round_trip", "decode_schema"):
        suite.run(check)
    return suite


def test_conformance(conformance):
    assert set(conformance.report.passed) == {"metadata", "graphs", "export_parity", "bundle_round_trip", "decode_schema"}
    assert "encoder" in conformance.report.passed["export_parity"] and "decoder_step" in conformance.report.passed["export_parity"]


@pytest.mark.parametrize("beam,threshold", [(1, 0.5), (3, 0.5), (3, 0.0)])
def test_same_caption_on_every_backend(conformance, beam, threshold):
    """Greedy and beam search, with tag guidance as shipped and with every class taken as heard
    (threshold 0), so the guided search runs whatever the random model's tags say."""
    import edgeaudio
    from edgeaudio.plugins.caption.task import example_clip

    clip = np.concatenate([example_clip(), 0.5 * example_clip()[::-1]])
    bundle = conformance.report.bundle
    results = {}
    for backend in ("torch", "onnxruntime", "openvino"):
        session = edgeaudio.load(bundle, backend=backend, precision="fp32")
        session.task.config.update(beam=beam, tag_threshold=threshold)
        raw = session.process_raw(clip, 16000)
        result = session.process(clip, 16000)
        results[backend] = (raw["tokens"].tolist(), result["caption"], [e["class"] for e in result["events"]])
    assert results["torch"] == results["onnxruntime"] == results["openvino"], results
    assert results["torch"][1]  # a fixed-seed random model still says something
    if threshold == 0.0:
        assert len(results["torch"][2]) == len(session.task.config["tags"])


def test_bundle_carries_both_graphs_and_the_vocabulary(conformance, small_task):
    from edgeaudio.bundle import load_bundle

    manifest = load_bundle(conformance.report.bundle).manifest
    graphs = {g["name"]: g for g in manifest["graphs"]}
    assert set(graphs) == {"encoder", "decoder_step"}
    assert [o["name"] for o in graphs["encoder"]["outputs"]] == ["memory_keys", "memory_values", "tag_probs"]
    assert graphs["decoder_step"]["state"] == [{"input": "cache_keys", "output": "cache_keys_out"},
                                               {"input": "cache_values", "output": "cache_values_out"}]  # fmt: skip
    assert manifest["provenance"]["config"]["vocab"] == small_task.config["vocab"]


def test_cli_captions_a_long_file_every_window(tmp_path):
    """`edgeaudio run caption --every N`: one caption per window through the live loop."""
    import json

    import soundfile as sf
    from click.testing import CliRunner

    from edgeaudio.cli import cli

    rng = np.random.default_rng(0)
    sf.write(tmp_path / "long.wav", (0.05 * rng.standard_normal(16000 * 5)).astype(np.float32), 16000)
    result = CliRunner().invoke(cli, ["run", "caption", "--input", str(tmp_path / "long.wav"), "--every", "2"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(line["start_s"], line["end_s"]) for line in lines] == [(0.0, 2.0), (2.0, 4.0), (4.0, 5.0)]
    assert all(isinstance(line["caption"], str) and line["caption"] for line in lines)


def test_the_guide_reads_a_history_as_the_keyword_match_of_its_decoded_caption(caption_plugin):
    """The guide adds up a history's words token by token and matches a prepared keyword table;
    its bias must be the one ``mentioned_classes(vocab.decode(history))`` implies, with specials,
    ``<unk>`` and a mid-history ``<eos>`` (decode stops there) in the histories."""
    from edgeaudio.tasks import get_task

    task = get_task("caption", {"tag_word_bonus": 2.0})
    vocab, c = task.vocabulary, task.config
    guide = task._guide(np.full(len(c["tags"]), 0.9, np.float32))  # every class likely
    keyword_ids = [vocab.index[word] for word in metrics.keyword_table(data.EVENT_KEYWORDS).words if word in vocab.index]
    rng = np.random.default_rng(0)
    named = 0
    for _ in range(1500):
        history = rng.choice(np.r_[keyword_ids * 3, np.arange(len(vocab.words))], int(rng.integers(0, 14))).tolist()
        unnamed = set(c["tags"]) - metrics.mentioned_classes(vocab.decode(history), data.EVENT_KEYWORDS)
        expected = np.zeros(len(vocab.words))
        expected[vocab.eos] -= c["tag_guidance"] * len(unnamed)
        for tag in unnamed:
            expected[[vocab.index[k] for k in data.EVENT_KEYWORDS.get(tag, []) if k in vocab.index]] += c["tag_word_bonus"]
        assert np.array_equal(guide(history), expected)
        named += len(unnamed) < len(c["tags"])
    assert named > 500  # most histories name something
