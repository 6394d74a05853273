"""A compact streaming bandwidth-extension network: narrowband speech at 16 kHz in, wideband out.

Like AP-BWE it predicts amplitude and phase in parallel from an all-convolutional backbone over
STFT frames, but small (about 0.6 M parameters) and causal with a fixed look-ahead so that it
streams: every convolution carries its own cache of past frames as explicit state, and the
STFT/iSTFT are convolutions with a fixed DFT kernel inside the graph (the audio tail and the
overlap-add tail are state too). One call on a whole clip and many calls on its pieces therefore
compute exactly the same numbers.

What the network adds is a complex spectrum ``G`` on top of the input's own spectrum: the band the
input already has passes through untouched unless the network has reason to add to it, so the
original band is preserved by construction and the model only has to learn what is missing.

Timing: the network is causal, and its output at frame ``t`` is the spectrum of frame
``t - lookahead``, so it has seen ``lookahead`` frames of the future. With the window of two hops
and overlap-add the output lags the input by ``(lookahead + 1) * hop`` samples (30 ms by default).
"""

from __future__ import annotations

import math

import torch
from torch import nn


def dft_kernels(n_fft: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Analysis and synthesis kernels [2 * bins, 1, n_fft] for a sqrt-Hann STFT with hop n_fft / 2.

    Rows are the real parts of every bin, then the imaginary parts. sqrt-Hann on both sides sums to
    one at half overlap, so analysis followed by synthesis reconstructs the input exactly.
    """
    bins = n_fft // 2 + 1
    n = torch.arange(n_fft, dtype=torch.float64)
    k = torch.arange(bins, dtype=torch.float64)[:, None]
    window = torch.sqrt(0.5 - 0.5 * torch.cos(2 * math.pi * n / n_fft))
    angle = 2 * math.pi * k * n / n_fft
    analysis = torch.cat([torch.cos(angle), -torch.sin(angle)]) * window
    scale = torch.full((bins, 1), 2.0 / n_fft, dtype=torch.float64)
    scale[0] = scale[-1] = 1.0 / n_fft  # DC and Nyquist appear once in a real spectrum
    synthesis = torch.cat([scale * torch.cos(angle), -scale * torch.sin(angle)]) * window
    return analysis[:, None, :].float(), synthesis[:, None, :].float()


class Stft(nn.Module):
    """Audio [B, 1, N] (N a multiple of hop) plus the previous hop of audio -> T = N / hop frames.

    Frames are cut by reshaping into hops and pairing neighbours, then one MatMul with the DFT
    kernel: in ONNX Runtime and OpenVINO that is faster than a strided Conv with a 320-tap kernel.
    """

    def __init__(self, n_fft: int):
        super().__init__()
        self.hop = n_fft // 2
        self.register_buffer("kernel", dft_kernels(n_fft)[0][:, 0].T.contiguous(), persistent=False)

    def forward(self, audio, tail):
        buffer = torch.cat([tail, audio], dim=2)
        hops = buffer.reshape(buffer.shape[0], -1, self.hop)
        frames = torch.cat([hops[:, :-1], hops[:, 1:]], dim=2)
        return torch.matmul(frames, self.kernel).transpose(1, 2), buffer[:, :, -self.hop :]


class Istft(nn.Module):
    """Frames [B, 2 * bins, T] -> T * hop finished samples, carrying the overlap-add tail.

    With a hop of half the window each output hop is the first half of its frame's segment plus
    the second half of the previous one (the tail, for the first), so overlap-add is one add.
    """

    def __init__(self, n_fft: int):
        super().__init__()
        self.hop = n_fft // 2
        self.register_buffer("kernel", dft_kernels(n_fft)[1][:, 0].contiguous(), persistent=False)

    def forward(self, spec, tail):
        segments = torch.matmul(spec.transpose(1, 2), self.kernel)
        first, second = segments[:, :, : self.hop], segments[:, :, self.hop :]
        previous = torch.cat([tail, second[:, :-1]], dim=1)
        audio = (first + previous).reshape(spec.shape[0], 1, -1)
        return audio, second[:, -1:]


class Features(nn.Module):
    """Log amplitude relative to the frame's speech-band level, and the unit phase vector.

    Subtracting the level (and adding it back to the predicted amplitude) makes the network
    level-equivariant: a louder call gets a proportionally louder extension.
    """

    def __init__(self, bins: int, sample_rate: int):
        super().__init__()
        self.bins = bins
        nyquist = sample_rate / 2
        self.low = round(300 / nyquist * (bins - 1))
        self.high = round(3400 / nyquist * (bins - 1))

    def level(self, spec):
        """Per frame: log of the RMS amplitude over 300-3400 Hz, the band every input has."""
        re, im = spec[:, self.low : self.high], spec[:, self.bins + self.low : self.bins + self.high]
        return 0.5 * torch.log(torch.mean(re * re + im * im, dim=1, keepdim=True) + 1e-8)

    def forward(self, spec):
        re, im = spec[:, : self.bins], spec[:, self.bins :]
        power = re * re + im * im
        log_amp = 0.5 * torch.log(power + 1e-10) - self.level(spec)
        norm = torch.rsqrt(power + 1e-10)
        return torch.cat([log_amp / 4.0, re * norm, im * norm], dim=1)


class CausalConv(nn.Module):
    """A convolution over time that sees only the past: its input is prefixed by a cache."""

    def __init__(self, channels_in: int, channels_out: int, kernel: int, groups: int = 1):
        super().__init__()
        self.context = kernel - 1
        self.conv = nn.Conv1d(channels_in, channels_out, kernel, groups=groups)

    def forward(self, x, cache):
        x = torch.cat([cache, x], dim=2)
        return self.conv(x), x[:, :, x.shape[2] - self.context :]


class Block(nn.Module):
    """ConvNeXt-style: causal depthwise conv, per-frame LayerNorm, pointwise MLP, scaled residual."""

    def __init__(self, channels: int, kernel: int, expand: int = 2):
        super().__init__()
        self.dw = CausalConv(channels, channels, kernel, groups=channels)
        self.norm = nn.LayerNorm(channels)
        self.pw1 = nn.Conv1d(channels, expand * channels, 1)
        self.act = nn.GELU()
        self.pw2 = nn.Conv1d(expand * channels, channels, 1)
        self.gamma = nn.Parameter(torch.full((channels, 1), 0.1))

    def forward(self, x, cache):
        y, cache = self.dw(x, cache)
        y = self.norm(y.transpose(1, 2)).transpose(1, 2)
        return x + self.gamma * self.pw2(self.act(self.pw1(y))), cache


class Combine(nn.Module):
    """Predicted log amplitude and phase vector -> complex spectrum, added to the delayed input.

    ``gain_db`` scales what is added: the regression gets the invented band's level right on
    average (what LSD measures), but its fine structure is only plausible, and listeners (and
    PESQ) prefer such a band somewhat below the true level. Trained at 0 dB; set after training.
    """

    def __init__(self, gain_db: float = 0.0):
        super().__init__()
        self.log_gain = gain_db / 20 * math.log(10)

    def forward(self, log_amp, phase, level, delayed):
        bins = log_amp.shape[1]
        amp = torch.exp(torch.clamp(log_amp, -20.0, 6.0) + level + self.log_gain)
        re, im = phase[:, :bins], phase[:, bins:]
        scale = amp * torch.rsqrt(re * re + im * im + 1e-8)
        return delayed + torch.cat([re * scale, im * scale], dim=1)


class BweNet(nn.Module):
    """forward(audio, stft_tail, spec_cache, block caches..., ola_tail)
    -> (wideband audio delayed by ``latency`` samples, the next states in the same order)."""

    def __init__(self, sample_rate: int = 16000, n_fft: int = 320, channels: int = 160,
                 blocks: int = 4, kernel: int = 7, lookahead: int = 2, extension_gain_db: float = 0.0):
        super().__init__()
        self.n_fft, self.hop, self.bins = n_fft, n_fft // 2, n_fft // 2 + 1
        self.lookahead = lookahead
        self.latency = (lookahead + 1) * self.hop
        self.stft = Stft(n_fft)
        self.features = Features(self.bins, sample_rate)
        self.stem = nn.Conv1d(3 * self.bins, channels, 1)
        self.blocks = nn.ModuleList(Block(channels, kernel) for _ in range(blocks))
        self.amp_head = nn.Conv1d(channels, self.bins, 1)
        self.phase_head = nn.Conv1d(channels, 2 * self.bins, 1)
        self.combine = Combine(extension_gain_db)
        self.istft = Istft(n_fft)
        nn.init.zeros_(self.amp_head.weight)
        nn.init.constant_(self.amp_head.bias, -6.0)  # starts as (almost) plain pass-through

    def state_shapes(self) -> list[tuple[str, tuple[int, int]]]:
        """(name, (channels, length)) of every state input, in forward's order (batch first)."""
        shapes = [("stft_tail", (1, self.hop)), ("spec_cache", (2 * self.bins, self.lookahead))]
        shapes += [(f"block{i}_cache", (b.dw.conv.in_channels, b.dw.context)) for i, b in enumerate(self.blocks)]
        return shapes + [("ola_tail", (1, self.hop))]

    def initial_state(self, batch: int = 1) -> list[torch.Tensor]:
        return [torch.zeros(batch, *shape) for _, shape in self.state_shapes()]

    def forward(self, audio, *state):
        out, _, next_state = self.run(audio, list(state))
        return (out, *next_state)

    def run(self, audio, state):
        """Audio -> (audio out, the output spectrum frames, next state); frames are for training."""
        stft_tail, spec_cache, *caches, ola_tail = state
        spec, stft_tail = self.stft(audio, stft_tail)
        x = self.stem(self.features(spec))
        next_caches = []
        for block, cache in zip(self.blocks, caches):
            x, cache = block(x, cache)
            next_caches.append(cache)
        history = torch.cat([spec_cache, spec], dim=2)
        frames = spec.shape[2]
        delayed = history[:, :, :frames]
        level = self.features.level(delayed)
        out_spec = self.combine(self.amp_head(x), self.phase_head(x), level, delayed)
        audio_out, ola_tail = self.istft(out_spec, ola_tail)
        next_state = [stft_tail, history[:, :, frames:], *next_caches, ola_tail]
        return audio_out, out_spec, next_state

    def offline(self, audio):
        """Whole clips [B, 1, N] from zero state: (audio out, output frames). Used in training."""
        state = [s.to(audio) for s in self.initial_state(audio.shape[0])]
        out, frames, _ = self.run(audio, state)
        return out, frames
