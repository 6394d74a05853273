"""The captioning network: log-mel front end, convolutional + Transformer audio encoder, and a
small Transformer decoder that runs one token at a time with its self-attention cache as tensors.

Everything that happens at run time is inside the two exported graphs, so every backend runs the
same maths:

- ``encoder``: audio [batch, 1, samples] -> cross-attention keys and values of every decoder
  layer [layers, batch, frames, d_model]. Projecting the memory once here, instead of in each
  decoder step, saves ``2 * layers * frames * d_model^2`` multiply-adds per generated word.
  A model with a tagging head also outputs ``tag_probs`` [batch, classes]: the probability that
  each event class is in the clip, which guides the search (see task.py) and is reported.
- ``decoder_step``: one token and its position, the memory keys/values, and the self-attention
  cache [layers, batch, max_tokens, d_model] -> next-token log-probabilities and the updated
  cache. The cache has a fixed length (``max_tokens``) so its shape is static except for batch
  (the runtime's rule for state); the step writes its slot with a one-hot blend instead of a
  scatter, which exports to every backend.

Training runs the same layers over whole token sequences with a causal mask; the tests check that
stepping token by token gives the same log-probabilities.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgeaudio.plugins.shared.mel import mel_matrix

N_FFT, HOP = 400, 160  # 25 ms windows every 10 ms at 16 kHz
MASKED = -1e9  # additive attention bias for excluded positions; finite so no backend makes NaN


class LogMel(nn.Module):
    """STFT as a strided conv1d with fixed DFT kernels (exports everywhere, unlike complex STFT),
    power spectrum, mel filters, log. No trainable parameters."""

    def __init__(self, sample_rate: int, n_fft: int, hop: int, n_mels: int):
        super().__init__()
        self.n_fft, self.hop, self.bins = n_fft, hop, n_fft // 2 + 1
        n = np.arange(n_fft)
        k = np.arange(self.bins)[:, None]
        window = 0.5 - 0.5 * np.cos(2 * np.pi * n / n_fft)
        kernel = np.concatenate([np.cos(2 * np.pi * k * n / n_fft), -np.sin(2 * np.pi * k * n / n_fft)]) * window
        self.register_buffer("kernel", torch.from_numpy(kernel[:, None, :].astype(np.float32)), persistent=False)
        self.register_buffer("mel", torch.from_numpy(mel_matrix(sample_rate, n_fft, n_mels)), persistent=False)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        """[batch, 1, samples] -> [batch, n_mels, samples // hop + 1]."""
        padded = F.pad(audio, (self.n_fft // 2, self.n_fft // 2))
        spec = F.conv1d(padded, self.kernel, stride=self.hop)
        real, imag = spec[:, : self.bins], spec[:, self.bins :]
        return torch.log(torch.matmul(self.mel, real * real + imag * imag) + 1e-6)


class Attention(nn.Module):
    """Multi-head attention written out in matmuls: one code path for training and export."""

    def __init__(self, d_model: int, heads: int, project_kv: bool = True):
        super().__init__()
        self.heads, self.head_dim = heads, d_model // heads
        self.query = nn.Linear(d_model, d_model)
        self.out = nn.Linear(d_model, d_model)
        if project_kv:
            self.key = nn.Linear(d_model, d_model)
            self.value = nn.Linear(d_model, d_model)

    def split(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        return x.reshape(batch, length, self.heads, self.head_dim).transpose(1, 2)

    def attend(self, query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """``query`` [B, Lq, D] (unprojected), ``keys``/``values`` [B, Lk, D] (projected)."""
        q, k, v = self.split(self.query(query)), self.split(keys), self.split(values)
        scores = torch.matmul(q, k.transpose(2, 3)) / math.sqrt(self.head_dim)
        if bias is not None:
            scores = scores + bias
        mixed = torch.matmul(torch.softmax(scores, dim=-1), v).transpose(1, 2)
        return self.out(mixed.reshape(query.shape[0], query.shape[1], -1))


class FeedForward(nn.Sequential):
    def __init__(self, d_model: int, hidden: int, dropout: float):
        super().__init__(nn.Linear(d_model, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, d_model))


def sinusoids(frames: torch.Tensor, d_model: int) -> torch.Tensor:
    """Sinusoidal positions for a [B, T, D] tensor. Positions come from a cumulative sum over
    the time axis rather than ``arange(T)``, so the traced graph keeps T dynamic."""
    position = torch.cumsum(torch.ones_like(frames[0, :, :1]), dim=0) - 1.0  # [T, 1]
    rates = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model))
    angles = position * rates.to(frames.device)[None, :]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


class EncoderLayer(nn.Module):
    def __init__(self, d_model: int, heads: int, hidden: int, dropout: float):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.attention = Attention(d_model, heads)
        self.feed_forward = FeedForward(d_model, hidden, dropout)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.dropout(self.attention.attend(h, self.attention.key(h), self.attention.value(h), None))
        return x + self.dropout(self.feed_forward(self.norm2(x)))


STEM_WIDTHS = (16, 32, 64)


class SpectroTemporalStem(nn.Module):
    """Log-mel [B, n_mels, frames] -> [B, frames / 8, d_model] through three 3x3 conv blocks
    (BatchNorm, GELU), each halving time and frequency, then each frame's remaining bands
    flattened and projected. The same kernel at every band makes a pattern recognisable wherever
    it sits in frequency, which a 1-D stem over bands as channels must learn band by band."""

    def __init__(self, n_mels: int, d_model: int):
        super().__init__()
        layers, channels = [], 1
        for width in STEM_WIDTHS:
            layers += [nn.Conv2d(channels, width, 3, stride=2, padding=1), nn.BatchNorm2d(width), nn.GELU()]
            channels = width
        self.convs = nn.Sequential(*layers)
        bands = n_mels
        for _ in STEM_WIDTHS:
            bands = (bands + 1) // 2
        self.project = nn.Linear(channels * bands, d_model)

    def forward(self, logmel: torch.Tensor) -> torch.Tensor:
        x = self.convs(logmel[:, None])  # [B, C, bands', frames']
        return self.project(x.flatten(1, 2).transpose(1, 2))


class AudioEncoder(nn.Module):
    """Log-mel [B, n_mels, frames] -> memory [B, frames / 8, d_model]: a stem that strides time
    by 8 (80 ms per memory frame) then Transformer layers with sinusoidal positions, so the decoder
    can tell what came first ("then") from what overlapped ("while").

    ``stem``: ``"conv2d"`` (:class:`SpectroTemporalStem`) or ``"conv1d"``, three stride-2 1-D
    convolutions over the mel bands as channels (the first shipped model's)."""

    def __init__(self, n_mels: int, d_model: int, layers: int, heads: int, hidden: int, dropout: float, stem: str = "conv1d"):
        super().__init__()
        self.input_norm = nn.BatchNorm1d(n_mels)
        if stem == "conv2d":
            self.convs = SpectroTemporalStem(n_mels, d_model)
        elif stem == "conv1d":
            convs = []
            for i in range(3):
                convs += [nn.Conv1d(n_mels if i == 0 else d_model, d_model, 5, stride=2, padding=2), nn.GELU()]
            self.convs = nn.Sequential(*convs)
        else:
            raise ValueError(f"unknown encoder stem '{stem}' (conv1d or conv2d)")
        self.stem = stem
        self.layers = nn.ModuleList(EncoderLayer(d_model, heads, hidden, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(d_model)
        self.d_model = d_model

    def forward(self, logmel: torch.Tensor) -> torch.Tensor:
        x = self.convs(self.input_norm(logmel))
        if self.stem == "conv1d":
            x = x.transpose(1, 2)
        x = x + sinusoids(x, self.d_model)[None]
        for layer in self.layers:
            x = layer(x)
        return self.norm(x)


class DecoderLayer(nn.Module):
    def __init__(self, d_model: int, heads: int, hidden: int, dropout: float):
        super().__init__()
        self.norm1, self.norm2, self.norm3 = (nn.LayerNorm(d_model) for _ in range(3))
        self.self_attention = Attention(d_model, heads)
        self.cross_attention = Attention(d_model, heads)
        self.feed_forward = FeedForward(d_model, hidden, dropout)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x, keys, values, memory_keys, memory_values, bias):
        """``keys``/``values``: the self-attention keys/values to attend to (the whole sequence in
        training, the updated cache when stepping)."""
        x = x + self.dropout(self.self_attention.attend(self.norm1(x), keys, values, bias))
        x = x + self.dropout(self.cross_attention.attend(self.norm2(x), memory_keys, memory_values, None))
        return x + self.dropout(self.feed_forward(self.norm3(x)))


class TextDecoder(nn.Module):
    def __init__(self, vocab_size: int, d_model: int, layers: int, heads: int, hidden: int, max_tokens: int, dropout: float):
        super().__init__()
        self.max_tokens = max_tokens
        self.tokens = nn.Embedding(vocab_size, d_model)
        self.positions = nn.Embedding(max_tokens, d_model)
        self.layers = nn.ModuleList(DecoderLayer(d_model, heads, hidden, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab_size)
        self.register_buffer("slots", torch.arange(max_tokens), persistent=False)

    def memory_kv(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-attention keys and values of every layer, [layers, B, frames, d_model] each."""
        keys = torch.stack([layer.cross_attention.key(memory) for layer in self.layers])
        values = torch.stack([layer.cross_attention.value(memory) for layer in self.layers])
        return keys, values

    def forward(self, tokens: torch.Tensor, memory_keys: torch.Tensor, memory_values: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits [B, L, vocab] for input tokens [B, L] (training)."""
        length = tokens.shape[1]
        x = self.tokens(tokens) + self.positions(self.slots[:length])[None]
        causal = torch.triu(torch.full((length, length), MASKED, device=tokens.device), diagonal=1)
        for i, layer in enumerate(self.layers):
            h = layer.norm1(x)
            keys, values = layer.self_attention.key(h), layer.self_attention.value(h)
            x = layer(x, keys, values, memory_keys[i], memory_values[i], causal)
        return self.head(self.norm(x))

    def step(self, token, position, memory_keys, memory_values, cache_keys, cache_values):
        """One token [B, 1] at ``position`` [B, 1] -> log-probs [B, vocab] and the new caches."""
        x = self.tokens(token) + self.positions(position)
        slot = (self.slots[None, :] == position).to(x.dtype)  # [B, max_tokens]
        visible = (self.slots[None, :] <= position).to(x.dtype)
        bias = ((1.0 - visible) * MASKED)[:, None, None, :]
        new_keys, new_values = [], []
        for i, layer in enumerate(self.layers):
            h = layer.norm1(x)
            keys = cache_keys[i] * (1.0 - slot[:, :, None]) + layer.self_attention.key(h) * slot[:, :, None]
            values = cache_values[i] * (1.0 - slot[:, :, None]) + layer.self_attention.value(h) * slot[:, :, None]
            x = layer(x, keys, values, memory_keys[i], memory_values[i], bias)
            new_keys.append(keys)
            new_values.append(values)
        log_probs = torch.log_softmax(self.head(self.norm(x[:, 0])), dim=-1)
        return log_probs, torch.stack(new_keys), torch.stack(new_values)


class CaptionNet(nn.Module):
    def __init__(
        self, vocab_size: int, sample_rate: int = 16000, n_fft: int = N_FFT, hop: int = HOP, n_mels: int = 64,
        d_model: int = 128, heads: int = 4, hidden: int = 384, encoder_layers: int = 2, decoder_layers: int = 2,
        max_tokens: int = 32, dropout: float = 0.1, tags: int = 0, stem: str = "conv1d",
    ):  # fmt: skip
        super().__init__()
        self.frontend = LogMel(sample_rate, n_fft, hop, n_mels)
        self.encoder = AudioEncoder(n_mels, d_model, encoder_layers, heads, hidden, dropout, stem)
        self.decoder = TextDecoder(vocab_size, d_model, decoder_layers, heads, hidden, max_tokens, dropout)
        # tagging head: which event classes the clip holds (max over memory frames); it teaches the
        # encoder to tell classes apart directly, not only through the words, and guides the search
        self.tagger = nn.Linear(d_model, tags) if tags else None
        self.d_model, self.decoder_layers, self.max_tokens = d_model, decoder_layers, max_tokens

    def encode(self, audio: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Memory keys and values, then the tag probabilities when the model has a tagging head."""
        memory = self.encoder(self.frontend(audio))
        keys, values = self.decoder.memory_kv(memory)
        if self.tagger is None:
            return keys, values
        return keys, values, torch.sigmoid(self.tagger(memory).amax(dim=1))

    def forward(self, logmel: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Training: logits for teacher-forced ``tokens`` from precomputed log-mel features, and
        the tagging head's clip-level logits (None without a tagger)."""
        memory = self.encoder(logmel)
        tags = self.tagger(memory).amax(dim=1) if self.tagger is not None else None
        return self.decoder(tokens, *self.decoder.memory_kv(memory)), tags

    def empty_cache(self, batch: int) -> np.ndarray:
        return np.zeros((self.decoder_layers, batch, self.max_tokens, self.d_model), np.float32)


class EncoderGraph(nn.Module):
    """The ``encoder`` graph: audio -> (memory_keys, memory_values[, tag_probs])."""

    def __init__(self, net: CaptionNet):
        super().__init__()
        self.net = net

    def forward(self, audio):
        return self.net.encode(audio)


class DecoderStepGraph(nn.Module):
    """The ``decoder_step`` graph: see ``TextDecoder.step``."""

    def __init__(self, net: CaptionNet):
        super().__init__()
        self.net = net

    def forward(self, token, position, memory_keys, memory_values, cache_keys, cache_values):
        return self.net.decoder.step(token, position, memory_keys, memory_values, cache_keys, cache_values)
