"""Event libraries, DCASE metadata and spatial scene synthesis, on procedural clips made here."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from edgeaudio.errors import UsageError
from edgeaudio.events import EventLibrary
from edgeaudio.plugins.seld.scenes import EventRow, SceneConfig, read_csv, render_scene, synthesize_dataset, write_csv
from edgeaudio.plugins.seld.scenes.synth import SPEED_OF_SOUND, diffuse_noise

RATE = 24000
RADIUS = 0.04
MIC4 = np.array([[-RADIUS, 0, 0], [0, RADIUS, 0], [RADIUS, 0, 0], [0, -RADIUS, 0]])


def _write(path: Path, audio: np.ndarray, rate: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), audio, rate)


@pytest.fixture(scope="module")
def library_dir(tmp_path_factory) -> Path:
    """Three classes at mixed rates and formats; 'sweep' clips come in groups cut from one recording."""
    root = tmp_path_factory.mktemp("library")
    rng = np.random.default_rng(0)
    for i, rate in enumerate([48000, 44100, 16000, 22050]):
        n = int(1.6 * rate)
        burst = rng.standard_normal(n) * np.hanning(n) ** 0.1 * 0.3
        _write(root / "noise" / f"burst{i}.flac", np.stack([burst, burst], axis=1), rate)
        t = np.arange(int(0.5 * rate)) / rate
        tone = 0.4 * np.sin(2 * np.pi * 300 * (i + 1) * t)
        _write(root / "tone" / f"tone{i}.ogg", np.stack([tone, np.zeros_like(tone)], axis=1), rate)
    for rec in range(5):
        for part in range(2):
            t = np.arange(int(0.4 * 16000)) / 16000
            _write(root / "sweep" / f"rec{rec}__{part}.wav", 0.3 * np.sin(2 * np.pi * (200 + 3000 * t) * t), 16000)
    return root


@pytest.fixture(scope="module")
def library(library_dir) -> EventLibrary:
    return EventLibrary.from_folder(library_dir, sample_rate=RATE)


@pytest.fixture(scope="module")
def noise_library(library_dir) -> EventLibrary:
    """Only broadband bursts: their inter-mic delay can be read off a cross-correlation."""
    lib = EventLibrary.from_folder(library_dir, sample_rate=RATE)
    bursts = lib.clips("noise")
    return EventLibrary(lib.root, RATE, ["noise"], bursts)


def small_config(**overrides) -> SceneConfig:
    """Small rooms and short scenes keep each render well under a second."""
    settings = dict(
        duration=3.0,
        room_size_min=(4.0, 4.0, 2.5),
        room_size_max=(6.0, 5.0, 3.0),
        rt60_range=(0.2, 0.4),
        distance_range=(1.0, 1.5),
    )
    settings.update(overrides)
    return SceneConfig(**settings)


# --- event library -------------------------------------------------------------------------------


def test_library_lists_sorted_classes_and_resamples_to_mono(library_dir, library):
    assert library.classes == ["noise", "sweep", "tone"]
    assert len(library.clips("noise")) == 4 and len(library.clips("sweep")) == 10 and len(library) == 18
    burst = library.load(library.clips("noise")[0])  # 48 kHz stereo FLAC
    assert burst.dtype == np.float32 and burst.ndim == 1
    assert abs(len(burst) - int(1.6 * RATE)) <= 1
    tone = library.load(library.clips("tone")[2])  # 16 kHz stereo OGG, tone on the left only
    assert abs(len(tone) - RATE // 2) <= 1
    assert abs(np.abs(tone).max() - 0.2) < 0.02


def test_split_is_deterministic_by_recording(library):
    train, test = library.split(test_fraction=0.4, seed=3)
    again_train, again_test = library.split(test_fraction=0.4, seed=3)
    assert [c.path for c in test.clips("sweep")] == [c.path for c in again_test.clips("sweep")]
    assert [c.path for c in train.clips("noise")] == [c.path for c in again_train.clips("noise")]
    assert train.classes == test.classes == library.classes
    for label in library.classes:
        train_recordings = {c.recording for c in train.clips(label)}
        test_recordings = {c.recording for c in test.clips(label)}
        assert test_recordings and not train_recordings & test_recordings
        assert len(train.clips(label)) + len(test.clips(label)) == len(library.clips(label))
    assert len(test.clips("sweep")) == 4  # two of five recordings, both clips of each
    splits = {tuple(sorted(c.recording for c in library.split(0.4, seed=s)[1].clips("sweep"))) for s in range(8)}
    assert len(splits) > 1


def test_library_errors_name_the_problem(tmp_path):
    with pytest.raises(UsageError, match="not a folder"):
        EventLibrary.from_folder(tmp_path / "missing")
    with pytest.raises(UsageError, match="no class folders"):
        EventLibrary.from_folder(tmp_path)
    _write(tmp_path / "dog" / "bark.wav", np.zeros(1000), 16000)
    (tmp_path / "glass").mkdir()
    (tmp_path / "glass" / "broken.wav").write_bytes(b"RIFF not really audio")
    (tmp_path / "glass" / "notes.txt").write_text("not audio")
    with pytest.raises(UsageError, match="class 'glass'.*no readable audio clip"):
        EventLibrary.from_folder(tmp_path)


# --- metadata ------------------------------------------------------------------------------------


def test_metadata_csv_round_trip(tmp_path):
    rows = [EventRow(3, 1, 0, -90, 10, 250), EventRow(0, 4, 2, 179, -35, 99), EventRow(3, 0, 1, 0, 0, 100)]
    path = write_csv(tmp_path / "scene.csv", rows)
    assert path.read_text().splitlines()[0] == "0,4,2,179,-35,99"
    assert read_csv(path) == sorted(rows)
    legacy = tmp_path / "starss.csv"
    legacy.write_text("frame,class,source,azimuth,elevation\n5,2,0,-45,20\n")
    assert read_csv(legacy) == [EventRow(5, 2, 0, -45, 20, None)]
    write_csv(tmp_path / "five.csv", read_csv(legacy))
    assert (tmp_path / "five.csv").read_text().strip() == "5,2,0,-45,20"
    (tmp_path / "bad.csv").write_text("1,2,3\n")
    with pytest.raises(UsageError, match="line 1: expected 5 or 6 columns"):
        read_csv(tmp_path / "bad.csv")


# --- scenes --------------------------------------------------------------------------------------


def _gcc_phat_lag(a: np.ndarray, b: np.ndarray, upsample: int = 16) -> float:
    """Lag in samples by which ``a`` trails ``b``, to 1/upsample of a sample."""
    n = len(a) + len(b)
    cross = np.fft.rfft(a, n) * np.conj(np.fft.rfft(b, n))
    corr = np.fft.irfft(cross / (np.abs(cross) + 1e-12), n * upsample)
    max_lag = 16 * upsample
    window = np.concatenate([corr[-max_lag:], corr[: max_lag + 1]])
    return (np.argmax(window) - max_lag) / upsample


def one_static_source(azimuth: float, elevation: float):
    """One static source 1.5 m away in a large, dead room without noise, so the direct sound
    dominates the cross-correlation as in free field."""
    return small_config(
        room_size_min=(8.0, 8.0, 3.5),
        room_size_max=(10.0, 10.0, 4.0),
        azimuth_range=(azimuth, azimuth),
        elevation_range=(elevation, elevation),
        distance_range=(1.5, 1.5),
        rt60_range=(0.2, 0.2),
        max_polyphony=1,
        gap_range=(0.0, 0.5),
        moving_probability=0.0,
        snr_range=None,
    )


def test_static_source_direction_in_metadata_and_audio(noise_library):
    """A large, dead room, so the direct sound dominates the cross-correlation as in free field."""
    config = one_static_source(azimuth=30.0, elevation=0.0)
    audio, rows = render_scene(config, noise_library, MIC4, seed=11)
    assert audio.shape == (4, 3 * RATE) and audio.dtype == np.float32
    assert rows and {(r.azimuth, r.elevation, r.distance) for r in rows} == {(30, 0, 150)}

    source = 1.5 * np.array([math.cos(math.radians(30)), math.sin(math.radians(30)), 0.0])
    arrival = np.linalg.norm(source - MIC4, axis=1) / SPEED_OF_SOUND * RATE
    for trailing, leading in [(0, 2), (3, 1)]:
        expected = arrival[trailing] - arrival[leading]
        assert expected > 2  # the far mic really hears it later
        assert abs(_gcc_phat_lag(audio[trailing], audio[leading]) - expected) < 0.5


def test_same_seed_same_scene_for_any_worker_count(library, tmp_path):
    config = small_config(duration=2.0)
    first, rows = render_scene(config, library, MIC4, seed=5)
    second, rows_again = render_scene(config, library, MIC4, seed=5)
    assert np.array_equal(first, second) and rows == rows_again
    assert not np.array_equal(first, render_scene(config, library, MIC4, seed=6)[0])

    serial = synthesize_dataset(tmp_path / "w1", config, library, MIC4, n_scenes=3, workers=1, seed=7, progress=False)
    parallel = synthesize_dataset(tmp_path / "w2", config, library, MIC4, n_scenes=3, workers=2, seed=7, progress=False)
    names = sorted(p.name for p in (serial / "mic").iterdir())
    assert names == ["scene_00000.wav", "scene_00001.wav", "scene_00002.wav"]
    for name in names:
        assert (serial / "mic" / name).read_bytes() == (parallel / "mic" / name).read_bytes()
        csv = Path(name).with_suffix(".csv").name
        assert (serial / "metadata" / csv).read_text() == (parallel / "metadata" / csv).read_text()
    data, rate = sf.read(str(serial / "mic" / names[0]))
    assert rate == RATE and data.shape == (2 * RATE, 4)
    assert (serial / "classes.json").read_text() == (parallel / "classes.json").read_text()
    with pytest.raises(UsageError, match="another library, array or configuration"):
        synthesize_dataset(serial, small_config(duration=1.0), library, MIC4, n_scenes=1, workers=1, progress=False)


def test_moving_source_sweeps_azimuth_in_metadata_and_audio(noise_library):
    config = small_config(
        room_size_min=(8.0, 8.0, 3.5),
        room_size_max=(10.0, 10.0, 4.0),
        rt60_range=(0.2, 0.2),
        elevation_range=(0.0, 0.0),
        max_polyphony=1,
        gap_range=(0.0, 0.3),
        moving_probability=1.0,
        angular_speed_range=(40.0, 40.0),
        snr_range=None,
    )
    audio, rows = render_scene(config, noise_library, MIC4, seed=2)
    by_source: dict[int, list[EventRow]] = {}
    for row in rows:
        by_source.setdefault(row.source_index, []).append(row)
    long_events = [r for r in by_source.values() if len(r) >= 10]
    assert long_events
    hop = config.hop_samples
    for event_rows in long_events:
        event_rows.sort()
        swept = (event_rows[-1].azimuth - event_rows[0].azimuth + 180) % 360 - 180
        elapsed = (event_rows[-1].frame - event_rows[0].frame) * config.frame_hop
        assert abs(abs(swept) - 40.0 * elapsed) <= 2
        assert len({r.azimuth for r in event_rows}) > 5
        for row in event_rows[1:-1:3]:  # the x-axis pair's delay follows the labelled azimuth
            window = audio[:, (row.frame - 1) * hop : (row.frame + 2) * hop]
            expected = 2 * RADIUS * math.cos(math.radians(row.azimuth)) / SPEED_OF_SOUND * RATE
            assert abs(_gcc_phat_lag(window[0], window[2]) - expected) < 1.0


def test_polyphony_never_exceeds_the_maximum(library):
    config = small_config(duration=4.0, max_polyphony=2, gap_range=(0.0, 0.3))
    for seed in range(3):
        _, rows = render_scene(config, library, MIC4, seed=seed)
        per_frame = np.bincount([r.frame for r in rows], minlength=config.n_frames)
        assert per_frame.max() == 2 and len(per_frame) == config.n_frames
        assert len({(r.frame, r.source_index) for r in rows}) == len(rows)


def test_ambient_noise_follows_the_snr(library):
    common = dict(peak_dbfs_range=(-6.0, -6.0), max_polyphony=1, gap_range=(0.5, 1.0))
    quiet = small_config(snr_range=None, **common)
    noisy = small_config(snr_range=(10.0, 10.0), **common)
    events, rows = render_scene(quiet, library, MIC4, seed=4)
    mixture, rows_noisy = render_scene(noisy, library, MIC4, seed=4)
    assert rows == rows_noisy
    scale = np.sum(mixture * events) / np.sum(events * events)  # peak normalisation differs
    noise = mixture - scale * events
    hop = quiet.hop_samples
    active = np.concatenate([scale * events[:, r.frame * hop : (r.frame + 1) * hop] for r in rows], axis=1)
    snr = 10 * np.log10(np.mean(active**2) / np.mean(noise**2))
    assert abs(snr - 10.0) < 1.0


def test_diffuse_noise_has_diffuse_coherence():
    noise = diffuse_noise(MIC4, 200 * 512, RATE, np.random.default_rng(0))
    spectra = np.fft.rfft(noise.reshape(4, -1, 512), axis=-1)
    freqs = np.fft.rfftfreq(512, 1 / RATE)
    cross = np.mean(spectra[0] * np.conj(spectra[2]), axis=0)
    coherence = np.real(cross) / np.sqrt(np.mean(abs(spectra[0]) ** 2, axis=0) * np.mean(abs(spectra[2]) ** 2, axis=0))
    expected = np.sinc(2 * freqs * 2 * RADIUS / SPEED_OF_SOUND)
    for f in (250, 1000, 2500):
        k = np.argmin(abs(freqs - f))
        assert abs(coherence[k] - expected[k]) < 0.15


def test_bad_inputs_raise_usage_errors(library):
    with pytest.raises(UsageError, match=r"\(N, 3\)"):
        render_scene(small_config(), library, MIC4[:, :2])
    with pytest.raises(UsageError, match="16000 Hz"):
        render_scene(small_config(sample_rate=16000), library, MIC4)
    with pytest.raises(UsageError, match="rt60_range"):
        SceneConfig(rt60_range=(1.0, 0.2))


# --- building the Debian-sourced library (its pure parts; the build itself needs the packages) ------


def test_cut_events_splits_at_silence_and_chunks_long_sounds():
    from edgeaudio.events.build_library import cut_events, normalise

    rng = np.random.default_rng(0)
    silence = np.zeros(RATE)
    click = rng.standard_normal(int(0.05 * RATE))
    long_hum = np.sin(2 * np.pi * 220 * np.arange(9 * RATE) / RATE)
    audio = np.concatenate([silence, click, silence, long_hum, silence]).astype(np.float32)
    cuts = cut_events(audio, RATE)
    lengths = [(stop - start) / RATE for start, stop in cuts]
    assert len(cuts) == 4 and all(0.3 <= n <= 4.0 for n in lengths)
    assert abs(cuts[0][0] / RATE - 0.99) < 0.02  # the click, padded to the shortest clip
    assert lengths[1:3] == [4.0, 4.0]
    clip = normalise(audio[cuts[1][0] : cuts[1][1]])
    assert abs(20 * np.log10(np.sqrt(np.mean(clip[RATE:-RATE] ** 2))) + 20) < 0.5
    assert np.max(np.abs(clip)) < 10 ** (-1 / 20)


def test_machine_readable_copyright_gives_the_licence_of_the_last_matching_stanza(tmp_path):
    from edgeaudio.events.build_library import _dep5_stanzas, _licence_from_text

    copyright_file = tmp_path / "copyright"
    copyright_file.write_text(
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\n"
        "Files: *\nCopyright: someone\nLicense: GPL-2+\n\n"
        "Files: stereo/bell.oga\n stereo/complete.oga\nLicense: CC-BY-3.0\n text of the licence\n\n"
        "License: GPL-2+\n full text\n"
    )
    stanzas = _dep5_stanzas(copyright_file)
    assert stanzas == [(["*"], "GPL-2+"), (["stereo/bell.oga", "stereo/complete.oga"], "CC-BY-3.0")]
    (tmp_path / "plain").write_text("This package is free software under the GPL.\n")
    assert _dep5_stanzas(tmp_path / "plain") is None
    assert _licence_from_text('"Cow". By X. License: Creative Commons Zero 1.0 Universal.') == "CC0-1.0"
    assert _licence_from_text('"Bell". License: Creative Commons Attribution-ShareAlike 3.0.') == "CC-BY-SA-3.0"


def test_elevated_source_delays_match_the_labelled_direction_on_every_pair(noise_library):
    """Each mic hears a far source earlier by its offset projected on the labelled direction
    (azimuth counter-clockwise from +x, elevation up): all three pairs against mic 0, so a swapped
    axis, a flipped sign or a lost cos(elevation) in labels or rendering shows up."""
    config = one_static_source(azimuth=-120.0, elevation=35.0)
    audio, rows = render_scene(config, noise_library, MIC4, seed=11)
    assert {(r.azimuth, r.elevation) for r in rows} == {(-120, 35)}
    az, el = math.radians(-120), math.radians(35)
    direction = np.array([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)])
    for mic in (1, 2, 3):
        expected = (MIC4[0] - MIC4[mic]) @ direction / SPEED_OF_SOUND * RATE  # lag of mic behind mic 0
        assert abs(_gcc_phat_lag(audio[mic], audio[0]) - expected) < 0.5
