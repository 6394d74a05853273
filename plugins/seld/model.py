"""The streaming SELD network: in-graph features for any mic geometry, a causal CRNN, multi-ACCDOA.

Every call takes audio in whole 100 ms blocks plus the state the previous call returned, and
returns one multi-ACCDOA frame per block plus the next state. Nothing looks ahead and every
padding the offline model would do is a zero state, so one call on a whole clip equals many calls
on its blocks: that is what lets the generic runtime stream it.

- ``frontend``: causal STFT as a conv1d with fixed DFT kernels (the last ``n_fft - hop`` samples
  are the audio-tail state), log-mel power of every mic, and SALSA-lite normalised inter-mic phase
  differences against mic 0. It holds no learned weight and must stay float under INT8.
- ``blocks``: 3x3 convolutions, causal in time through a cache of each block's last two input
  frames, pooled in frequency only.
- time pooling to one vector per 100 ms block, a GRU whose hidden state is carried, and a tanh head
  with tracks x (x, y, z) x classes outputs: index ``track*3*C + axis*C + class``.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

SPEED_OF_SOUND = 343.0
TRACKS = 3
CACHE_FRAMES = 2  # a 3-tap causal conv needs the two previous frames


def dft_kernels(n_fft: int) -> np.ndarray:
    """Periodic-Hann windowed DFT as conv1d weights [2 * bins, 1, n_fft]: real parts, then imaginary."""
    n = np.arange(n_fft)
    k = np.arange(n_fft // 2 + 1)[:, None]
    window = 0.5 - 0.5 * np.cos(2 * np.pi * n / n_fft)
    angle = 2 * np.pi * k * n / n_fft
    kernels = np.concatenate([window * np.cos(angle), -window * np.sin(angle)])
    return kernels[:, None, :].astype(np.float32)


def mel_filters(sample_rate: int, n_fft: int, n_mels: int, fmin: float = 50.0) -> np.ndarray:
    """HTK-mel triangles [bins, n_mels], each normalised to sum 1.

    A low band narrower than the bin spacing would catch no bin and stay silent; such a band takes
    its nearest bin instead, so every band carries signal.
    """
    def mel(f):
        return 2595.0 * np.log10(1.0 + np.asarray(f) / 700.0)

    def hz(m):
        return 700.0 * (10.0 ** (np.asarray(m) / 2595.0) - 1.0)

    freqs = np.arange(n_fft // 2 + 1) * sample_rate / n_fft
    edges = hz(np.linspace(mel(fmin), mel(sample_rate / 2), n_mels + 2))
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    weights = np.maximum(0.0, np.minimum((freqs - lower) / (centre - lower), (upper - freqs) / (upper - centre)))
    for band in np.flatnonzero(weights.sum(axis=1) == 0):
        weights[band, np.argmin(np.abs(freqs - centre[band, 0]))] = 1.0
    return (weights / weights.sum(axis=1, keepdims=True)).T.astype(np.float32)


class Frontend(nn.Module):
    """Audio [batch, mics, samples] -> features [batch, 2 * mics - 1, frames, n_mels].

    Channels: log-mel power of each mic, then for each mic m > 0 the phase difference to mic 0 in
    ``phase_band`` scaled by c / (2 pi f) and divided by the largest distance to mic 0. Below
    spatial aliasing that is the projection of the mic offset on the source direction, in
    [-1, 1] for any geometry; it is pooled onto the mel bands it falls in (zero above the band).
    """

    def __init__(
        self,
        positions: Sequence[Sequence[float]],
        sample_rate: int,
        n_fft: int,
        hop: int,
        n_mels: int,
        phase_band: tuple[float, float] = (50.0, 2000.0),
    ):
        super().__init__()
        self.mics = len(positions)
        self.n_fft, self.hop = n_fft, hop
        self.bins = n_fft // 2 + 1
        self.tail = n_fft - hop
        mel = mel_filters(sample_rate, n_fft, n_mels)
        freqs = np.arange(self.bins) * sample_rate / n_fft
        lo, hi = np.searchsorted(freqs, phase_band[0]), np.searchsorted(freqs, phase_band[1], side="right")
        offsets = np.asarray(positions, dtype=np.float64) - np.asarray(positions[0], dtype=np.float64)
        reach = max(float(np.linalg.norm(offsets, axis=1).max()), 1e-3)
        phase_pool = mel[lo:hi] / np.maximum(mel[lo:hi].sum(axis=0, keepdims=True), 1e-12)
        phase_pool *= SPEED_OF_SOUND / (2 * np.pi * freqs[lo:hi, None] * reach)
        self.phase_bins = (int(lo), int(hi))
        self.register_buffer("dft", torch.from_numpy(dft_kernels(n_fft)), persistent=False)
        self.register_buffer("mel", torch.from_numpy(mel), persistent=False)
        self.register_buffer("phase_pool", torch.from_numpy(phase_pool.astype(np.float32)), persistent=False)

    def _spectrum(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Real and imaginary STFT parts [batch, mics, frames, bins] of ``x`` [batch, mics, samples].

        The graph (eval mode, what every backend runs) uses the conv-DFT, which exports; training
        uses torch.stft with the same window, hop and framing (no centring): the same numbers to
        ~1e-6 relative, at a quarter of the cost, so a training step spends its time on the network.
        """
        flat = x.reshape(-1, x.shape[2])
        if self.training:
            window = torch.hann_window(self.n_fft, periodic=True, dtype=x.dtype, device=x.device)
            spec = torch.stft(flat, self.n_fft, self.hop, window=window, center=False, return_complex=True)
            spec = spec.reshape(x.shape[0], self.mics, self.bins, spec.shape[-1]).transpose(2, 3)
            return spec.real, spec.imag
        spec = F.conv1d(flat[:, None], self.dft, stride=self.hop)
        spec = spec.reshape(x.shape[0], self.mics, 2 * self.bins, spec.shape[2]).transpose(2, 3)
        return spec[..., : self.bins], spec[..., self.bins :]

    def forward(self, audio: torch.Tensor, tail: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat([tail, audio], dim=2)
        re, im = self._spectrum(x)
        logmel = torch.log(torch.matmul(re * re + im * im, self.mel) + 1e-8)
        lo, hi = self.phase_bins
        re, im = re[..., lo:hi], im[..., lo:hi]
        cross_re = re[:, 1:] * re[:, :1] + im[:, 1:] * im[:, :1]
        cross_im = im[:, 1:] * re[:, :1] - re[:, 1:] * im[:, :1]
        # the tiny offset keeps atan2(0, 0) at 0 in exporters that build atan2 from y / x
        phase = torch.atan2(cross_im, cross_re + 1e-20)
        nipd = torch.matmul(phase, self.phase_pool)
        return torch.cat([logmel, nipd], dim=1), x[:, :, x.shape[2] - self.tail :]


class CausalConvBlock(nn.Module):
    """3x3 conv (causal in time through a cache of the previous two input frames), BN, ReLU,
    max-pool in frequency only, so time stays aligned with the 100 ms blocks."""

    def __init__(self, cin: int, cout: int, pool: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size=3, padding=(0, 1), bias=False)
        self.norm = nn.BatchNorm2d(cout)
        self.pool = pool

    def forward(self, x: torch.Tensor, cache: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat([cache, x], dim=2)
        y = F.relu(self.norm(self.conv(x)))
        return F.max_pool2d(y, (1, self.pool)), x[:, :, x.shape[2] - CACHE_FRAMES :]


class SeldNet(nn.Module):
    """Streaming CRNN with multi-ACCDOA output; see the module docstring for the state it carries.

    ``forward(audio, tail, hidden, *caches) -> (accdoa, tail, hidden, *caches)`` with audio
    [batch, mics, samples] in whole blocks and accdoa [batch, blocks, TRACKS * 3 * classes].
    """

    def __init__(
        self,
        positions: Sequence[Sequence[float]],
        num_classes: int,
        sample_rate: int = 16000,
        block: int = 1600,
        n_fft: int = 512,
        hop: int = 320,
        n_mels: int = 64,
        conv_channels: Sequence[int] = (64, 64, 64),
        freq_pools: Sequence[int] = (4, 4, 2),
        gru_hidden: int = 128,
        gru_layers: int = 2,
    ):
        super().__init__()
        if block % hop:
            raise ValueError(f"block {block} must be a multiple of hop {hop}")
        if n_mels % math.prod(freq_pools):
            raise ValueError(f"n_mels {n_mels} must divide by the product of freq_pools {list(freq_pools)}")
        self.num_classes = num_classes
        self.frames_per_block = block // hop
        self.frontend = Frontend(positions, sample_rate, n_fft, hop, n_mels)
        inputs = 2 * len(positions) - 1
        self.input_norm = nn.BatchNorm2d(inputs)
        widths = [inputs, *conv_channels]
        self.blocks = nn.ModuleList(CausalConvBlock(a, b, p) for a, b, p in zip(widths, widths[1:], freq_pools))
        self.cache_shapes = []
        bands = n_mels
        for width, pool in zip(widths, freq_pools):
            self.cache_shapes.append((width, CACHE_FRAMES, bands))
            bands //= pool
        self.gru = nn.GRU(conv_channels[-1] * bands, gru_hidden, num_layers=gru_layers, batch_first=True)
        self.hidden_shape = (gru_layers, gru_hidden)
        self.head = nn.Sequential(nn.Linear(gru_hidden, gru_hidden), nn.ReLU(), nn.Linear(gru_hidden, TRACKS * 3 * num_classes))

    def initial_state(self, batch: int = 1) -> list[torch.Tensor]:
        """Zero ``tail, hidden, *caches`` for ``batch`` clips: the state before the first block."""
        device = self.head[0].weight.device
        tail = torch.zeros(batch, self.frontend.mics, self.frontend.tail, device=device)
        hidden = torch.zeros(self.hidden_shape[0], batch, self.hidden_shape[1], device=device)
        return [tail, hidden, *(torch.zeros(batch, *shape, device=device) for shape in self.cache_shapes)]

    def forward(self, audio: torch.Tensor, tail: torch.Tensor, hidden: torch.Tensor, *caches: torch.Tensor):
        x, tail_out = self.frontend(audio, tail)
        x = self.input_norm(x)
        caches_out = []
        for block, cache in zip(self.blocks, caches):
            x, cache = block(x, cache)
            caches_out.append(cache)
        x = x.transpose(1, 2).flatten(2)  # [batch, frames, channels * bands]
        x = F.avg_pool1d(x.transpose(1, 2), self.frames_per_block).transpose(1, 2)
        x, hidden_out = self.gru(x, hidden)
        return (torch.tanh(self.head(x)), tail_out, hidden_out, *caches_out)

    def offline(self, audio: torch.Tensor) -> torch.Tensor:
        """Multi-ACCDOA for whole clips from zero state (training and reference)."""
        return self(audio, *self.initial_state(audio.shape[0]))[0]
