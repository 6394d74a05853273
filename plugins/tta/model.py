"""The text-to-audio networks: a text encoder, a flow-matching mel generator and a mel vocoder.

Four graphs, each run through the uniform runtime; the sampling loop between them is numpy code
in the task (see sampler.py), so every backend runs the same loop on the same noise:

- ``text_encoder``: token ids [batch, tokens] -> token embeddings [batch, tokens, width].
- ``flow``: a noisy normalised log-mel [batch, mels, frames], the flow time t [batch], the text
  embeddings and their mask -> the velocity that moves the sample from noise towards a sound. A
  small Diffusion-Transformer-style network over patches of 4 frames (64 ms), with the flow time
  and the pooled prompt modulating every block (adaptive layer norm), cross-attention to the
  prompt's tokens for what happens when, and a detail head that gives every patch's velocity
  full rank.
- ``envelope``: the flow network's prompt head alone: text embeddings and mask -> the prompt's
  predicted time-averaged log-mel, by which the sampler ranks candidates.
- ``vocoder``: a normalised log-mel -> audio. ConvNeXt blocks predict the log-magnitude and phase
  of every STFT bin (as in Vocos), and an inverse STFT written as one MatMul plus four shifted adds
  turns them into samples, so it exports to every backend.

The generator is a rectified flow (straight paths from noise at t=0 to data at t=1): a few Euler
steps of the velocity, with classifier-free guidance, produce a mel.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgeaudio.plugins.shared.mel import mel_matrix
from edgeaudio.plugins.tta.geometry import HOP, N_FFT, PATCH

MASKED = -1e9  # additive attention bias for padding tokens; finite so no backend makes NaN


def hann(n_fft: int) -> np.ndarray:
    return 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)


class LogMel(nn.Module):
    """Audio [batch, samples] -> natural-log mel power [batch, mels, samples // hop + 1]
    (centred frames, as ``torch.stft(center=True)``). Used for training targets and by the judge,
    never exported: generation starts from noise, not audio."""

    def __init__(self, sample_rate: int, n_mels: int, floor: float = 1e-5):
        super().__init__()
        self.floor = floor
        self.register_buffer("window", torch.from_numpy(hann(N_FFT).astype(np.float32)), persistent=False)
        self.register_buffer("mel", torch.from_numpy(mel_matrix(sample_rate, N_FFT, n_mels)), persistent=False)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        spec = torch.stft(audio, N_FFT, HOP, window=self.window, center=True, return_complex=True)
        return torch.log(torch.matmul(self.mel, spec.abs() ** 2) + self.floor)


def sinusoids(positions: torch.Tensor, width: int) -> torch.Tensor:
    """[..., n] positions (any real values) -> [..., n, width] sine/cosine features."""
    half = width // 2
    scale = torch.exp(torch.arange(half, dtype=torch.float32, device=positions.device) * (-math.log(10000.0) / half))
    angle = positions.float()[..., None] * scale
    return torch.cat([torch.sin(angle), torch.cos(angle)], dim=-1)


class Attention(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.query = nn.Linear(width, width)
        self.key = nn.Linear(width, width)
        self.value = nn.Linear(width, width)
        self.out = nn.Linear(width, width)

    def split(self, x: torch.Tensor) -> torch.Tensor:
        b, n, w = x.shape
        return x.reshape(b, n, self.heads, w // self.heads).transpose(1, 2)

    def forward(self, x: torch.Tensor, context: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        q, k, v = self.split(self.query(x)), self.split(self.key(context)), self.split(self.value(context))
        scores = torch.matmul(q, k.transpose(2, 3)) / math.sqrt(q.shape[-1])
        if bias is not None:
            scores = scores + bias
        mixed = torch.matmul(torch.softmax(scores, dim=-1), v).transpose(1, 2)
        return self.out(mixed.reshape(x.shape))


def feed_forward(width: int, factor: int = 4) -> nn.Sequential:
    return nn.Sequential(nn.Linear(width, factor * width), nn.GELU(), nn.Linear(factor * width, width))


class TextEncoder(nn.Module):
    """Word embeddings + sinusoidal positions + Transformer encoder layers with a padding mask."""

    def __init__(self, vocab_size: int, width: int, heads: int, layers: int, pad: int = 0):
        super().__init__()
        self.pad = pad
        self.embed = nn.Embedding(vocab_size, width)
        self.layers = nn.ModuleList(_TextLayer(width, heads) for _ in range(layers))
        self.norm = nn.LayerNorm(width)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        bias = key_bias((tokens != self.pad).float())
        x = self.embed(tokens) + sinusoids(torch.arange(tokens.shape[1], device=tokens.device), self.embed.embedding_dim)
        for layer in self.layers:
            x = layer(x, bias)
        return self.norm(x)


class _TextLayer(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.attention = Attention(width, heads)
        self.ff = feed_forward(width)

    def forward(self, x, bias):
        h = self.norm1(x)
        x = x + self.attention(h, h, bias)
        return x + self.ff(self.norm2(x))


def key_bias(mask: torch.Tensor) -> torch.Tensor:
    """Token mask [batch, tokens] (1 = real) -> additive attention bias [batch, 1, 1, tokens]."""
    return ((1.0 - mask) * MASKED)[:, None, None, :]


class FlowBlock(nn.Module):
    """Self-attention over patches and a feed-forward, both under adaptive layer norm (shift, scale
    and a gate from the conditioning vector, initialised to zero so each block starts as identity),
    and cross-attention to the prompt's tokens between them."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(width, elementwise_affine=False)
        self.norm2 = nn.LayerNorm(width)
        self.norm3 = nn.LayerNorm(width, elementwise_affine=False)
        self.self_attention = Attention(width, heads)
        self.cross_attention = Attention(width, heads)
        self.ff = feed_forward(width)
        self.modulation = nn.Linear(width, 6 * width)
        nn.init.zeros_(self.modulation.weight)
        nn.init.zeros_(self.modulation.bias)

    def forward(self, x, condition, text, bias):
        shift1, scale1, gate1, shift2, scale2, gate2 = self.modulation(condition)[:, None].chunk(6, dim=2)
        h = self.norm1(x) * (1 + scale1) + shift1
        x = x + gate1 * self.self_attention(h, h)
        x = x + self.cross_attention(self.norm2(x), text, bias)
        h = self.norm3(x) * (1 + scale2) + shift2
        return x + gate2 * self.ff(h)


class FlowNet(nn.Module):
    """Velocity of the rectified flow: (x_t [B, mels, frames], t [B], text [B, L, W], mask [B, L])
    -> [B, mels, frames]. ``frames`` must be a multiple of ``PATCH``.

    Besides cross-attention and the adaptive norms, the prompt reaches the network as a spectral
    envelope: a head on the pooled prompt predicts the clip's time-averaged log-mel (trained to,
    see ``envelope``), which is fed beside the noisy mel as 64 more input channels. Text
    conditioning learned through attention alone emerges slowly (the unconditional average
    explains most of the loss early on); a direct, supervised spectral prior is used at once."""

    def __init__(self, n_mels: int, width: int, heads: int, layers: int, detail: int = 0):
        super().__init__()
        self.width = width
        self.envelope_head = nn.Sequential(nn.Linear(width, width), nn.GELU(), nn.Linear(width, n_mels))
        self.patch_in = nn.Conv1d(2 * n_mels, width, PATCH, stride=PATCH)
        self.time = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.pooled = nn.Linear(width, width)
        self.blocks = nn.ModuleList(FlowBlock(width, heads) for _ in range(layers))
        self.norm_out = nn.LayerNorm(width, elementwise_affine=False)
        self.modulation_out = nn.Linear(width, 2 * width)
        self.patch_out = nn.Linear(width, n_mels * PATCH)
        nn.init.zeros_(self.modulation_out.weight)
        nn.init.zeros_(self.modulation_out.bias)
        nn.init.zeros_(self.patch_out.weight)
        nn.init.zeros_(self.patch_out.bias)
        # ``patch_out`` alone has rank <= width: with a patch larger than the width, the velocity
        # misses whole directions of every patch, and their starting noise is never removed. The
        # detail head sees the noisy patch itself beside the final hidden state, so with ``detail``
        # >= mels x PATCH the output has full rank; zero-initialised, adding it to a trained
        # network leaves its output unchanged.
        self.detail = None
        if detail:
            self.detail = nn.Sequential(nn.Linear(n_mels * PATCH + width, detail), nn.GELU(), nn.Linear(detail, n_mels * PATCH))
            nn.init.zeros_(self.detail[2].weight)
            nn.init.zeros_(self.detail[2].bias)

    @staticmethod
    def pool(text, mask):
        return (text * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1.0)

    def envelope(self, text, mask):
        """The prompt's predicted time-averaged normalised log-mel [B, mels]."""
        return self.envelope_head(self.pool(text, mask))

    def forward(self, x, t, text, mask):
        batch, mels, frames = x.shape
        pooled = self.pool(text, mask)
        envelope = self.envelope_head(pooled)[:, :, None] * torch.ones_like(x[:1, :1])  # broadcast over frames
        h = self.patch_in(torch.cat([x, envelope], dim=1)).transpose(1, 2)
        h = h + sinusoids(torch.arange(h.shape[1], device=x.device), self.width)
        condition = F.silu(self.time(sinusoids(1000.0 * t, self.width)) + self.pooled(pooled))
        bias = key_bias(mask)
        for block in self.blocks:
            h = block(h, condition, text, bias)
        shift, scale = self.modulation_out(condition)[:, None].chunk(2, dim=2)
        h = self.norm_out(h) * (1 + scale) + shift
        out = self.patch_out(h)  # [B, patches, mels * PATCH]
        if self.detail is not None:
            patches = x.reshape(batch, mels, -1, PATCH).permute(0, 2, 1, 3).reshape(batch, -1, mels * PATCH)
            out = out + self.detail(torch.cat([patches, h], dim=2))
        return out.reshape(batch, -1, mels, PATCH).permute(0, 2, 1, 3).reshape(batch, mels, frames)


class PromptEnvelope(nn.Module):
    """The flow network's envelope head as a graph of its own: (text [B, L, W], mask [B, L]) ->
    the prompt's predicted time-averaged normalised log-mel [B, mels]; the sampler ranks its
    candidates by it. Shares the flow network's weights."""

    def __init__(self, flow: FlowNet):
        super().__init__()
        self.flow = flow

    def forward(self, text, mask):
        return self.flow.envelope(text, mask)


class ConvNeXtBlock(nn.Module):
    def __init__(self, width: int, kernel: int = 7):
        super().__init__()
        self.depthwise = nn.Conv1d(width, width, kernel, padding=kernel // 2, groups=width)
        self.norm = nn.LayerNorm(width)
        self.ff = feed_forward(width, 3)
        self.scale = nn.Parameter(torch.full((width,), 0.1))

    def forward(self, x):
        h = self.ff(self.norm(self.depthwise(x).transpose(1, 2)))
        return x + (self.scale * h).transpose(1, 2)


class InverseStft(nn.Module):
    """Real/imaginary spectra [B, 2 * bins, T] of centred Hann frames -> audio [B, 1, T * hop].

    Each frame's windowed segment comes from one MatMul; with a hop of a quarter window, output hop
    ``j`` is the sum of quarter ``q`` of frame ``j - q`` for q = 0..3 (four shifted adds), divided by
    the same sum of squared windows. Samples before the first frame's centre are dropped."""

    def __init__(self):
        super().__init__()
        bins = N_FFT // 2 + 1
        n, k = np.arange(N_FFT), np.arange(bins)[:, None]
        scale = np.full((bins, 1), 2.0 / N_FFT)
        scale[0] = scale[-1] = 1.0 / N_FFT
        angle = 2 * np.pi * k * n / N_FFT
        kernel = np.concatenate([scale * np.cos(angle), -scale * np.sin(angle)]) * hann(N_FFT)
        self.register_buffer("kernel", torch.from_numpy(kernel.astype(np.float32)), persistent=False)
        self.register_buffer("window_power", torch.from_numpy((hann(N_FFT) ** 2).astype(np.float32)), persistent=False)

    @staticmethod
    def overlap_add(quarters: torch.Tensor) -> torch.Tensor:
        """[B, T, 4, hop] -> [B, T + 3, hop]."""
        total = None
        for q in range(4):
            part = F.pad(quarters[:, :, q], (0, 0, q, 3 - q))
            total = part if total is None else total + part
        return total

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        batch, _, frames = spec.shape
        segments = torch.matmul(spec.transpose(1, 2), self.kernel).reshape(batch, frames, 4, HOP)
        audio = self.overlap_add(segments)
        ones = torch.ones_like(segments[:1, :, :1, :1]) * self.window_power.reshape(1, 1, 4, HOP)
        envelope = self.overlap_add(ones)
        audio = audio / torch.clamp(envelope, min=1e-3)
        return audio[:, 2 : 2 + frames].reshape(batch, 1, frames * HOP)


class Vocoder(nn.Module):
    """Normalised log-mel [B, mels, T] (what the generator produces) -> audio [B, 1, T * hop]."""

    def __init__(self, n_mels: int, width: int, layers: int):
        super().__init__()
        bins = N_FFT // 2 + 1
        self.bins = bins
        self.inp = nn.Conv1d(n_mels, width, 7, padding=3)
        self.blocks = nn.Sequential(*(ConvNeXtBlock(width) for _ in range(layers)))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, 3 * bins)
        self.istft = InverseStft()

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        h = self.blocks(self.inp(mel))
        out = self.head(self.norm(h.transpose(1, 2))).transpose(1, 2)
        log_magnitude, x, y = out[:, : self.bins], out[:, self.bins : 2 * self.bins], out[:, 2 * self.bins :]
        magnitude = torch.exp(torch.clamp(log_magnitude, max=6.0))
        norm = torch.rsqrt(x * x + y * y + 1e-8)  # the phase as a unit vector, no atan2 needed
        spec = torch.cat([magnitude * x * norm, magnitude * y * norm], dim=1)
        return self.istft(spec)


class TtaNet(nn.Module):
    """The three networks together; each is exported as its own graph (task.py), the flow network's
    envelope head as a fourth."""

    def __init__(self, vocab_size: int, n_mels: int, width: int, heads: int, text_layers: int, flow_layers: int,
                 vocoder_width: int, vocoder_layers: int, flow_detail: int = 0):  # fmt: skip
        super().__init__()
        self.text = TextEncoder(vocab_size, width, heads, text_layers)
        self.flow = FlowNet(n_mels, width, heads, flow_layers, flow_detail)
        self.vocoder = Vocoder(n_mels, vocoder_width, vocoder_layers)
