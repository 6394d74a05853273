"""Spatial scene synthesis for any microphone array: the SELD training data recipe.

A scene is a random shoebox room (pyroomacoustics) with the array at its centre, up to
``max_polyphony`` overlapping events drawn from an EventLibrary, static or moving along an arc, plus
diffuse ambient noise at a chosen SNR. Labels follow DCASE: per 100 ms frame, class, source index,
azimuth/elevation seen from the array centre and distance in centimetres.

Room impulse responses are image sources up to ``ism_max_order`` followed by a synthetic diffuse
tail that decays at the room's RT60. Full-order image sources match RT60 too, but their cost grows
with the cube of the order (an RT60 of 1 s takes seconds per source position), and moving sources
need dozens of positions per event. The tail keeps the statistics that matter here: its energy
follows the image-source density of the room (4 pi c / V per second with pyroomacoustics' 1/r
amplitudes, so it joins the image sources without a step), it decays by 60 dB per RT60 (measured
T30 equals the target, where full-order image sources with Sabine absorption ring longer), and its
inter-mic coherence is that of a diffuse field for the given geometry.
"""

from __future__ import annotations

import json
import math
import multiprocessing
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from edgeaudio.errors import UsageError, require
from edgeaudio.events.library import EventLibrary
from edgeaudio.plugins.seld.scenes.metadata import EventRow, write_csv
from edgeaudio.staging import write_atomically

SPEED_OF_SOUND = 343.0
COHERENCE_BLOCK = 8192
TAIL_CROSSFADE = 0.005

Range = tuple[float, float]


@dataclass
class SceneConfig:
    """Everything random about a scene is drawn uniformly from these ranges.

    Angles in degrees (azimuth counter-clockwise from the array's +x axis, 90 on the left), lengths
    in metres, times in seconds. ``snr_range=None`` renders no ambient noise; ``ism_max_order=None``
    renders full-order image sources (slow for long RT60); ``ray_tracing=True`` uses
    pyroomacoustics' hybrid simulator (image sources of order 3 + ray tracing) instead of the tail.
    """

    duration: float = 10.0
    sample_rate: int = 24000
    frame_hop: float = 0.1
    room_size_min: tuple[float, float, float] = (4.0, 4.0, 2.5)
    room_size_max: tuple[float, float, float] = (12.0, 10.0, 4.0)
    rt60_range: Range = (0.2, 1.0)
    distance_range: Range = (0.5, 3.0)
    azimuth_range: Range = (-180.0, 180.0)
    elevation_range: Range = (-40.0, 40.0)
    wall_margin: float = 0.3
    max_polyphony: int = 3
    gap_range: Range = (0.5, 4.0)
    moving_probability: float = 0.3
    angular_speed_range: Range = (10.0, 60.0)
    moving_segment: float = 0.1
    event_gain_db_range: Range = (-6.0, 0.0)
    snr_range: Range | None = (5.0, 30.0)
    noise_slope_range: Range = (0.0, 2.0)
    peak_dbfs_range: Range = (-12.0, -3.0)
    ism_max_order: int | None = 10
    ray_tracing: bool = False
    seed: int = 0

    def __post_init__(self):
        ranges = {k: v for k, v in asdict(self).items() if k.endswith("_range") and v is not None}
        for name, (low, high) in ranges.items():
            if low > high:
                raise UsageError(f"SceneConfig.{name} goes from {low} down to {high}", hint="give (low, high)")
        if self.duration <= 0 or self.frame_hop <= 0 or self.moving_segment <= 0:
            raise UsageError("SceneConfig duration, frame_hop and moving_segment must be positive")
        if self.max_polyphony < 1:
            raise UsageError(f"SceneConfig.max_polyphony must be at least 1, got {self.max_polyphony}")
        if self.ism_max_order is not None and self.ism_max_order < 2:
            raise UsageError(f"SceneConfig.ism_max_order must be at least 2 (or None), got {self.ism_max_order}")
        if any(a > b for a, b in zip(self.room_size_min, self.room_size_max)):
            raise UsageError("SceneConfig.room_size_min must not exceed room_size_max in any dimension")

    @property
    def hop_samples(self) -> int:
        return round(self.frame_hop * self.sample_rate)

    @property
    def n_frames(self) -> int:
        return round(self.duration / self.frame_hop)


@dataclass(frozen=True)
class Room:
    """A drawn shoebox room; ``centre`` is where the array's centre sits."""

    size: np.ndarray
    rt60: float
    absorption: float
    max_order: int

    @property
    def centre(self) -> np.ndarray:
        return self.size / 2.0


@dataclass
class _Event:
    """One scheduled event: its samples and its path around the array."""

    signal: np.ndarray
    class_index: int
    onset_frame: int
    n_frames: int
    azimuth: float
    elevation: float
    distance: float
    angular_speed: float = 0.0
    source_index: int = -1
    positions: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))

    def azimuth_at(self, t: float) -> float:
        return self.azimuth + self.angular_speed * t


def render_scene(
    config: SceneConfig, library: EventLibrary, mic_positions: np.ndarray, seed: int | None = None
) -> tuple[np.ndarray, list[EventRow]]:
    """Render one scene: float32 audio [channels, samples] and its DCASE rows.

    The same (config, library, array, seed) gives the same audio bit for bit. Room, events and
    noise draw from separate generators, so switching the noise off leaves the events unchanged.
    """
    mics = _check_mics(mic_positions, config)
    if library.sample_rate != config.sample_rate:
        raise UsageError(
            f"event library is at {library.sample_rate} Hz but scenes are at {config.sample_rate} Hz",
            hint="open the library with EventLibrary.from_folder(path, sample_rate=config.sample_rate)",
        )
    room_rng, event_rng, noise_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(config.seed if seed is None else seed).spawn(3)
    )
    room = draw_room(config, room_rng)
    events = _schedule_events(config, library, room, event_rng)
    mic_offsets = mics - mics.mean(axis=0)
    scene = _render_events(config, room, mic_offsets, events, event_rng)
    rows = _event_rows(config, events)
    if config.snr_range is not None:
        scene += _ambient_noise(config, mic_offsets, scene, rows, noise_rng)
    peak = np.max(np.abs(scene))
    if peak > 0:
        scene *= 10 ** (noise_rng.uniform(*config.peak_dbfs_range) / 20) / peak
    return scene.astype(np.float32), rows


def synthesize_dataset(
    out_dir: str | Path,
    config: SceneConfig,
    library: EventLibrary,
    mic_positions: np.ndarray,
    n_scenes: int,
    workers: int = 2,
    seed: int | None = None,
    progress: bool = True,
) -> Path:
    """Render ``n_scenes`` into a DCASE-style folder: mic/<scene>.wav, metadata/<scene>.csv, classes.json.

    Scene i is rendered with a seed derived from (seed, i), so the data set does not depend on the
    number of workers. Scenes already on disk are kept, which makes an interrupted run resumable;
    a folder made with another configuration is refused rather than mixed.
    """
    out = Path(out_dir)
    seed = config.seed if seed is None else seed
    mics = _check_mics(mic_positions, config)
    _write_description(out, config, library, mics, seed)
    todo = [i for i in range(n_scenes) if not _scene_done(out, i)]
    jobs = [(config, library, mics, _scene_seed(seed, i), out, scene_name(i)) for i in todo]
    bar = tqdm(total=n_scenes, initial=n_scenes - len(todo), desc="scenes", unit="scene", disable=None if progress else True)
    if workers <= 1:
        for job in jobs:
            _render_to_files(*job)
            bar.update()
    else:
        with ProcessPoolExecutor(max_workers=workers, mp_context=_process_context()) as pool:
            for future in as_completed([pool.submit(_render_to_files, *job) for job in jobs]):
                future.result()
                bar.update()
    bar.close()
    return out


def _process_context():
    """Fork where the OS has it: spawned workers re-import the caller's main module, which breaks
    notebooks, stdin scripts and scripts without a ``__main__`` guard. Workers run only numpy,
    scipy and pyroomacoustics, which are safe after fork."""
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else methods[0])


def scene_name(index: int) -> str:
    return f"scene_{index:05d}"


def draw_room(config: SceneConfig, rng: np.random.Generator) -> Room:
    """A random shoebox; RT60s too short for its size (absorption above 1) are raised to the minimum."""
    pra = require("pyroomacoustics")
    size = rng.uniform(config.room_size_min, config.room_size_max)
    volume, surface = float(np.prod(size)), 2.0 * float(size[0] * size[1] + size[1] * size[2] + size[0] * size[2])
    shortest = 24 * math.log(10) * volume / (SPEED_OF_SOUND * surface)
    rt60 = max(float(rng.uniform(*config.rt60_range)), 1.01 * shortest)
    absorption, max_order = pra.inverse_sabine(rt60, size, c=SPEED_OF_SOUND)
    return Room(size=size, rt60=rt60, absorption=float(absorption), max_order=int(max_order))


def _check_mics(mic_positions: np.ndarray, config: SceneConfig) -> np.ndarray:
    mics = np.asarray(mic_positions, dtype=np.float64)
    if mics.ndim != 2 or mics.shape[1] != 3 or len(mics) == 0:
        raise UsageError(f"mic_positions must be an (N, 3) array in metres, got shape {mics.shape}")
    extent = np.ptp(mics, axis=0).max()
    if extent + 2 * config.wall_margin >= min(config.room_size_min):
        raise UsageError(f"a {extent:.2f} m array does not fit the smallest room {config.room_size_min}")
    return mics


def _scene_seed(seed: int, index: int) -> int:
    return int(np.random.SeedSequence([seed, index]).generate_state(1, np.uint64)[0])


def _direction(azimuth_deg: float, elevation_deg: float) -> np.ndarray:
    az, el = math.radians(azimuth_deg), math.radians(elevation_deg)
    return np.array([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)])


def _max_distance(room: Room, direction: np.ndarray, margin: float) -> float:
    """How far from the room centre one can go along ``direction`` and stay ``margin`` off the walls."""
    half = room.size / 2.0 - margin
    with np.errstate(divide="ignore"):
        limits = np.where(np.abs(direction) > 1e-9, half / np.abs(direction), np.inf)
    return float(limits.min())


def _schedule_events(config: SceneConfig, library: EventLibrary, room: Room, rng: np.random.Generator) -> list[_Event]:
    """Fill ``max_polyphony`` tracks with non-overlapping events, so no frame holds more than that."""
    labels = [c for c in library.classes if library.clips(c)]
    if not labels:
        raise UsageError(f"event library {library.root} has no clips to draw from")
    events = []
    for _ in range(config.max_polyphony):
        frame = round(rng.uniform(0.0, config.gap_range[1]) / config.frame_hop)
        while frame < config.n_frames:
            event = _draw_event(config, library, labels, room, frame, rng)
            events.append(event)
            frame += event.n_frames + round(rng.uniform(*config.gap_range) / config.frame_hop)
    events.sort(key=lambda e: (e.onset_frame, e.class_index))
    for index, event in enumerate(events):
        event.source_index = index
    return events


def _draw_event(
    config: SceneConfig, library: EventLibrary, labels: list[str], room: Room, frame: int, rng: np.random.Generator
) -> _Event:
    """A random clip at unit RMS times a random gain, from a random direction; cut at the scene's end."""
    label = labels[rng.integers(len(labels))]
    clips = library.clips(label)
    clip = library.load(clips[rng.integers(len(clips))])
    samples_left = (config.n_frames - frame) * config.hop_samples
    signal = np.asarray(clip[:samples_left], dtype=np.float64)
    rms = math.sqrt(float(np.mean(signal**2))) or 1.0
    signal = signal / rms * 10 ** (rng.uniform(*config.event_gain_db_range) / 20)
    event = _Event(
        signal=signal,
        class_index=library.classes.index(label),
        onset_frame=frame,
        n_frames=max(1, math.ceil(len(signal) / config.hop_samples)),
        azimuth=rng.uniform(*config.azimuth_range),
        elevation=rng.uniform(*config.elevation_range),
        distance=rng.uniform(*config.distance_range),
    )
    if rng.random() < config.moving_probability:
        event.angular_speed = rng.uniform(*config.angular_speed_range) * rng.choice([-1.0, 1.0])
    _place_on_arc(event, room, config)
    return event


def _place_on_arc(event: _Event, room: Room, config: SceneConfig) -> None:
    """Source positions at every segment boundary, pulled in where the arc would leave the room."""
    segment = config.moving_segment * config.sample_rate
    n_positions = 1 if event.angular_speed == 0 else math.ceil(max(len(event.signal) - 1, 1) / segment) + 1
    times = np.arange(n_positions) * config.moving_segment
    directions = np.array([_direction(event.azimuth_at(t), event.elevation) for t in times])
    event.distance = min([event.distance] + [_max_distance(room, d, config.wall_margin) for d in directions])
    event.positions = room.centre + event.distance * directions


def _render_events(
    config: SceneConfig, room: Room, mic_offsets: np.ndarray, events: list[_Event], rng: np.random.Generator
) -> np.ndarray:
    """Convolve every event with its room responses and add it to the scene at its onset."""
    scipy_signal = require("scipy.signal")
    scene = np.zeros((len(mic_offsets), config.n_frames * config.hop_samples))
    if not events:
        return scene
    sources = np.concatenate([e.positions for e in events])
    rirs = iter(_early_rirs(config, room, room.centre + mic_offsets, sources, rng))
    segment = round(config.moving_segment * config.sample_rate)
    for event in events:
        onset = event.onset_frame * config.hop_samples
        early = [next(rirs) for _ in event.positions]
        _add_at(scene, _convolve_along_path(event.signal, early, segment, scipy_signal), onset)
        if _needs_tail(config, room):
            tail = _diffuse_tail(config, room, mic_offsets, rng)
            _add_at(scene, scipy_signal.fftconvolve(event.signal[None, :], tail, axes=1), onset)
    return scene


def _needs_tail(config: SceneConfig, room: Room) -> bool:
    return not config.ray_tracing and config.ism_max_order is not None and config.ism_max_order < room.max_order


def _ism_order(config: SceneConfig, room: Room) -> int:
    if config.ray_tracing:
        return 3
    return room.max_order if not _needs_tail(config, room) else config.ism_max_order


def _exact_until(config: SceneConfig, room: Room) -> float:
    """Time up to which a capped image-source model holds every image (one order kept as margin)."""
    return (_ism_order(config, room) - 1) / math.sqrt(float(np.sum(1.0 / room.size**2))) / SPEED_OF_SOUND


def _early_rirs(
    config: SceneConfig, room: Room, mic_world: np.ndarray, sources: np.ndarray, rng: np.random.Generator
) -> list[np.ndarray]:
    """Image-source (or hybrid) responses [mics, taps] for every source position, in one room solve.

    The fractional-delay filter's lead-in is cut so that sample 0 is the moment of emission; with a
    tail, the image sources fade out where the tail takes over. Ray tracing draws from
    pyroomacoustics' global generators, which are seeded from ``rng`` to stay reproducible.
    """
    pra = require("pyroomacoustics")
    if config.ray_tracing:
        pra.random.seed(int(rng.integers(2**31)))
    sim = pra.ShoeBox(
        room.size,
        fs=config.sample_rate,
        materials=pra.Material(room.absorption),
        max_order=_ism_order(config, room),
        ray_tracing=config.ray_tracing,
    )
    if config.ray_tracing:
        sim.set_ray_tracing()
    sim.add_microphone(mic_world.T)
    for position in sources:
        sim.add_source(position)
    sim.compute_rir()
    lead = pra.constants.get("frac_delay_length") // 2
    rirs = []
    for s in range(len(sources)):
        taps = max(len(sim.rir[m][s]) for m in range(len(mic_world)))
        rir = np.zeros((len(mic_world), taps - lead))
        for m in range(len(mic_world)):
            rir[m, : len(sim.rir[m][s]) - lead] = sim.rir[m][s][lead:]
        if _needs_tail(config, room):
            rir *= 1.0 - _tail_fade(config, room, rir.shape[1])
        rirs.append(rir)
    return rirs


def _tail_fade(config: SceneConfig, room: Room, n_samples: int) -> np.ndarray:
    """0 before the tail starts, rising linearly to 1 over TAIL_CROSSFADE seconds."""
    t = np.arange(n_samples) / config.sample_rate
    start = _exact_until(config, room)
    return np.clip((t - start + TAIL_CROSSFADE) / TAIL_CROSSFADE, 0.0, 1.0)


def _diffuse_tail(config: SceneConfig, room: Room, mic_offsets: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Late reverberation [mics, taps]: diffuse noise with the room's image-source energy decay.

    Mean squared tap value 4 pi c / (V fs) exp(-13.8 t / RT60): the density of images per sample
    times pyroomacoustics' 1/r amplitude squared, decaying 60 dB per RT60.
    """
    fs = config.sample_rate
    n_taps = math.ceil((_exact_until(config, room) + room.rt60) * fs)
    t = np.arange(n_taps) / fs
    level = math.sqrt(4 * math.pi * SPEED_OF_SOUND / (float(np.prod(room.size)) * fs))
    envelope = level * np.exp(-3 * math.log(10) * t / room.rt60) * _tail_fade(config, room, n_taps)
    return diffuse_noise(mic_offsets, n_taps, fs, rng) * envelope


def diffuse_noise(
    mic_offsets: np.ndarray, n_samples: int, sample_rate: int, rng: np.random.Generator, slope: float = 0.0
) -> np.ndarray:
    """Noise [mics, samples] of unit mean power as the array hears a spherically diffuse field.

    Independent noise per channel would be wrong for small arrays: in a diffuse field two mics a
    distance d apart are coherent by sinc(2 pi f d / c), strongly so below a few kHz at 4 cm. Each
    frequency bin mixes independent noises through the Cholesky factor of that coherence matrix.
    ``slope`` shapes the power spectrum as 1/f^slope (0 white, 1 pink, 2 brown).
    """
    fft = require("scipy.fft")
    n_fft = fft.next_fast_len(n_samples, real=True)
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    distances = np.linalg.norm(mic_offsets[:, None, :] - mic_offsets[None, :, :], axis=-1)
    n_mics = len(mic_offsets)
    spectra = np.empty((n_mics, len(freqs)), dtype=np.complex128)
    for lo in range(0, len(freqs), COHERENCE_BLOCK):
        f = freqs[lo : lo + COHERENCE_BLOCK]
        coherence = np.sinc(2.0 * f[:, None, None] * distances[None] / SPEED_OF_SOUND)
        mixing = np.linalg.cholesky(coherence + 1e-6 * np.eye(n_mics))
        white = rng.standard_normal((len(f), n_mics)) + 1j * rng.standard_normal((len(f), n_mics))
        spectra[:, lo : lo + COHERENCE_BLOCK] = np.einsum("fij,fj->if", mixing, white)
    spectra *= np.maximum(freqs, freqs[1]) ** (-slope / 2.0)
    out = fft.irfft(spectra, n_fft, axis=1)[:, :n_samples]
    return out / math.sqrt(float(np.mean(out**2)))


def _convolve_along_path(x: np.ndarray, rirs: list[np.ndarray], segment: int, scipy_signal) -> np.ndarray:
    """Convolve x with one response per position, crossfading with triangular windows.

    Windows centred on each position's time sum to one, so a static source (one position) is a
    plain convolution and a moving one glides between positions without clicks.
    """
    if len(rirs) == 1:
        return scipy_signal.fftconvolve(x[None, :], rirs[0], axes=1)
    out = np.zeros((rirs[0].shape[0], len(x) + max(r.shape[1] for r in rirs)))
    n = np.arange(len(x))
    for k, rir in enumerate(rirs):
        lo, hi = max(0, (k - 1) * segment), min(len(x), (k + 1) * segment)
        if lo >= hi:
            continue
        window = 1.0 - np.abs(n[lo:hi] - k * segment) / segment
        _add_at(out, scipy_signal.fftconvolve((x[lo:hi] * window)[None, :], rir, axes=1), lo)
    return out


def _add_at(target: np.ndarray, part: np.ndarray, offset: int) -> None:
    """Add ``part`` into ``target`` from sample ``offset``; what overhangs the end is cut."""
    n = max(0, min(part.shape[1], target.shape[1] - offset))
    target[:, offset : offset + n] += part[:, :n]


def _event_rows(config: SceneConfig, events: list[_Event]) -> list[EventRow]:
    """DCASE rows: direction at each frame's centre, seen from the array centre."""
    rows = []
    for event in events:
        for k in range(event.n_frames):
            frame = event.onset_frame + k
            if frame >= config.n_frames:
                break
            t = min((k + 0.5) * config.frame_hop, len(event.signal) / config.sample_rate)
            azimuth = (round(event.azimuth_at(t)) + 180) % 360 - 180
            rows.append(
                EventRow(
                    frame,
                    event.class_index,
                    event.source_index,
                    azimuth,
                    round(event.elevation),
                    round(event.distance * 100),
                )
            )
    return sorted(rows)


def _ambient_noise(
    config: SceneConfig, mic_offsets: np.ndarray, scene: np.ndarray, rows: list[EventRow], rng: np.random.Generator
) -> np.ndarray:
    """Diffuse noise scaled so that event power over active frames / noise power = drawn SNR."""
    noise = diffuse_noise(mic_offsets, scene.shape[1], config.sample_rate, rng, rng.uniform(*config.noise_slope_range))
    snr_db = rng.uniform(*config.snr_range)
    active = sorted({r.frame for r in rows})
    if not active:
        return noise
    hop = config.hop_samples
    samples = np.concatenate([scene[:, f * hop : (f + 1) * hop] for f in active], axis=1)
    return noise * math.sqrt(float(np.mean(samples**2)) / 10 ** (snr_db / 10))


def _scene_done(out: Path, index: int) -> bool:
    name = scene_name(index)
    return (out / "mic" / f"{name}.wav").is_file() and (out / "metadata" / f"{name}.csv").is_file()


def _render_to_files(config, library, mics, seed, out: Path, name: str) -> str:
    """Worker body: render one scene and write it; the CSV lands last, marking the scene done."""
    sf = require("soundfile")
    audio, rows = render_scene(config, library, mics, seed)
    write_atomically(out / "mic" / f"{name}.wav",
                     lambda partial: sf.write(str(partial), audio.T, config.sample_rate, subtype="PCM_16", format="WAV"))
    write_csv(out / "metadata" / f"{name}.csv", rows)
    return name


def _write_description(out: Path, config: SceneConfig, library: EventLibrary, mics: np.ndarray, seed: int) -> None:
    """classes.json: class order, geometry and config; refuses a folder made with different ones."""
    description = {
        "classes": library.classes,
        "format": "frame,class,source_index,azimuth_deg,elevation_deg,distance_cm",
        "sample_rate": config.sample_rate,
        "frame_hop": config.frame_hop,
        "mic_positions": mics.tolist(),
        "seed": seed,
        "config": asdict(config),
    }
    description = json.loads(json.dumps(description))
    path = out / "classes.json"
    (out / "mic").mkdir(parents=True, exist_ok=True)
    (out / "metadata").mkdir(parents=True, exist_ok=True)
    if not path.is_file():
        path.write_text(json.dumps(description, indent=2) + "\n")
    elif json.loads(path.read_text()) != description:  # an existing one is never rewritten: other ranks may read it
        raise UsageError(
            f"{out} holds scenes made with another library, array or configuration",
            hint="synthesize into an empty folder, or delete this one",
        )
