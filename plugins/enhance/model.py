"""The streaming speech enhancement network: STFT in the graph, a causal GRU, a complex mask.

Every call takes 16 kHz audio in whole hops (256 samples, 16 ms) plus the state the previous call
returned, and returns the same number of enhanced samples plus the next state. Nothing looks ahead
and every padding the offline model would do is a zero state, so one call on a whole clip equals
many calls on its hops: that is what lets the generic runtime stream it with output identical to
offline processing.

- ``analysis``: a 512-point STFT (32 ms sqrt-Hann window, 16 ms hop) as a conv1d with fixed DFT
  kernels; the last 256 input samples are the ``tail`` state. It also computes the features, the
  log power of every bin. No learned weight; it must stay float under INT8.
- ``norm``, ``context``, ``conv``: per-bin feature normalisation, then a 3-frame causal
  convolution over time (its two previous input frames are the ``cache`` state).
- ``gru``: two GRU layers whose hidden state is carried (``hidden``).
- ``head``: a complex ratio mask per bin (real and imaginary part, each bounded by tanh, as GTCRN
  does), from the GRU output and the convolution output.
- ``synthesis``: mask times spectrum, inverse DFT, sqrt-Hann window and overlap-add; the second
  half of the last frame is the ``ola`` state.

Algorithmic latency is the window, 32 ms: a sample leaves the graph 256 samples (16 ms) after it
entered, and it waits for its hop to fill (up to 16 ms) before that. The output is the input
delayed by ``DELAY`` samples.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

N_FFT = 512
HOP = 256
BINS = N_FFT // 2 + 1
DELAY = N_FFT - HOP  # output sample n is the enhanced input sample n - DELAY
CACHE_FRAMES = 2  # a 3-tap causal conv needs the two previous frames


def sqrt_hann(n: int) -> np.ndarray:
    """Periodic sqrt-Hann: analysis and synthesis windows whose product sums to 1 at 50 % overlap."""
    return np.sqrt(0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n))


def analysis_kernels(n_fft: int = N_FFT) -> np.ndarray:
    """Windowed DFT as conv1d weights [2 * bins, 1, n_fft]: real parts, then imaginary parts."""
    n = np.arange(n_fft)
    k = np.arange(n_fft // 2 + 1)[:, None]
    angle = 2 * np.pi * k * n / n_fft
    window = sqrt_hann(n_fft)
    return np.concatenate([window * np.cos(angle), -window * np.sin(angle)])[:, None, :].astype(np.float32)


def synthesis_matrix(n_fft: int = N_FFT) -> np.ndarray:
    """Inverse real DFT times the synthesis window as one matrix [2 * bins, n_fft].

    A half spectrum counts its inner bins twice (they stand for their mirror images too).
    """
    n = np.arange(n_fft)
    k = np.arange(n_fft // 2 + 1)[:, None]
    angle = 2 * np.pi * k * n / n_fft
    weight = np.full((n_fft // 2 + 1, 1), 2.0)
    weight[0] = weight[-1] = 1.0
    window = sqrt_hann(n_fft)
    inverse = np.concatenate([weight * np.cos(angle), -weight * np.sin(angle)]) / n_fft
    return (inverse * window).astype(np.float32)


class Analysis(nn.Module):
    """Audio [batch, 1, samples] and tail [batch, 1, DELAY] -> real, imag [batch, frames, bins],
    log-power features [batch, frames, bins] and the next tail."""

    def __init__(self):
        super().__init__()
        self.register_buffer("dft", torch.from_numpy(analysis_kernels()), persistent=False)

    def forward(self, audio: torch.Tensor, tail: torch.Tensor):
        x = torch.cat([tail, audio], dim=2)
        spec = F.conv1d(x, self.dft, stride=HOP).transpose(1, 2)
        re, im = spec[..., :BINS], spec[..., BINS:]
        features = torch.log(re * re + im * im + 1e-9)
        return re, im, features, x[:, :, x.shape[2] - DELAY :]

    def spectrum(self, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Real and imaginary STFT of whole clips [batch, 1, samples] from zero state (for losses)."""
        tail = audio.new_zeros(audio.shape[0], 1, DELAY)
        re, im, _, _ = self(audio, tail)
        return re, im


class Synthesis(nn.Module):
    """Masked spectrum -> windowed frames -> overlap-add with the previous call's last half frame."""

    def __init__(self):
        super().__init__()
        self.register_buffer("inverse", torch.from_numpy(synthesis_matrix()), persistent=False)

    def forward(self, re, im, mask_re, mask_im, ola: torch.Tensor):
        out_re = re * mask_re - im * mask_im
        out_im = re * mask_im + im * mask_re
        frames = torch.matmul(torch.cat([out_re, out_im], dim=2), self.inverse)  # [batch, frames, n_fft]
        first, second = frames[..., :HOP], frames[..., HOP:]
        previous = torch.cat([ola, second[:, :-1]], dim=1)
        audio = (first + previous).reshape(frames.shape[0], 1, -1)
        return audio, second[:, -1:]


class CausalContext(nn.Module):
    """Frames [batch, bins, frames] behind the cached last frames of the previous call.

    A module of its own so INT8 can leave it in float: the cache crosses calls, and calibration
    from a stream's start sees it only as zeros, which would give it a useless quantization range.
    """

    def forward(self, cache: torch.Tensor, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat([cache, frames], dim=2)
        return x, x[:, :, x.shape[2] - CACHE_FRAMES :]


class EnhanceNet(nn.Module):
    """Streaming complex-mask enhancer; see the module docstring for the state it carries.

    ``forward(audio, tail, cache, hidden, ola) -> (enhanced, tail, cache, hidden, ola)`` with audio
    and enhanced [batch, 1, samples] in whole hops.
    """

    def __init__(self, conv_channels: int = 128, gru_hidden: int = 128, gru_layers: int = 2):
        super().__init__()
        self.analysis = Analysis()
        self.norm = nn.BatchNorm1d(BINS)
        self.context = CausalContext()
        self.conv = nn.Conv1d(BINS, conv_channels, kernel_size=CACHE_FRAMES + 1)
        self.gru = nn.GRU(conv_channels, gru_hidden, num_layers=gru_layers, batch_first=True)
        self.head = nn.Linear(gru_hidden + conv_channels, 2 * BINS)
        self.synthesis = Synthesis()
        self.hidden_shape = (gru_layers, gru_hidden)
        with torch.no_grad():  # start near the identity mask (tanh(1.5) = 0.9): training begins at
            self.head.bias[:BINS].fill_(1.5)  # the noisy input instead of at silence
            self.head.bias[BINS:].zero_()

    def initial_state(self, batch: int = 1) -> list[torch.Tensor]:
        """Zero ``tail, cache, hidden, ola`` for ``batch`` clips: the state before the first hop."""
        weight = self.head.weight
        return [
            weight.new_zeros(batch, 1, DELAY),
            weight.new_zeros(batch, BINS, CACHE_FRAMES),
            weight.new_zeros(self.hidden_shape[0], batch, self.hidden_shape[1]),
            weight.new_zeros(batch, 1, HOP),
        ]

    def forward(self, audio, tail, cache, hidden, ola):
        re, im, features, tail_out = self.analysis(audio, tail)
        x, cache_out = self.context(cache, self.norm(features.transpose(1, 2)))  # [batch, bins, 2 + frames]
        local = F.relu(self.conv(x)).transpose(1, 2)  # [batch, frames, channels]
        context, hidden_out = self.gru(local, hidden)
        mask = torch.tanh(self.head(torch.cat([context, local], dim=2)))
        enhanced, ola_out = self.synthesis(re, im, mask[..., :BINS], mask[..., BINS:], ola)
        return enhanced, tail_out, cache_out, hidden_out, ola_out

    def offline(self, audio: torch.Tensor) -> torch.Tensor:
        """Enhanced whole clips [batch, 1, samples] (whole hops) from zero state: training and reference."""
        return self(audio, *self.initial_state(audio.shape[0]))[0]


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
