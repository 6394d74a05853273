"""DeepFilterNet3's signal processing around its networks, written as ONNX (opset 12) nodes.

The published method (DeepFilterNet, libDF/src/lib.rs and tract.rs at the wheel's commit), as we
build it, per 480-sample hop at 48 kHz:

- analysis: the last 960 samples times a Vorbis window, a real DFT, scaled by 1/960 (the DFT in
  two stages, 960 = 32 x 30, each a MatMul with a small matrix, the window and scale folded in:
  a dense 960 x 962 matrix would be 3.7 MB to read every hop);
- ERB features: mean power in 32 ERB bands (band widths from libDF's ERB filter bank, at least 2
  bins each), 10*log10(power + 1e-10), minus a running mean (alpha 0.99, starting at -60 dB for the
  lowest band down to -90 dB for the highest), divided by 40;
- complex features: the lowest 96 bins divided by the square root of a running mean of their
  magnitude (alpha 0.99, starting at 1e-3 down to 1e-4);
- after the networks, on the spectrum two hops back (the networks' look-ahead): the 32 ERB gains
  spread over their bins; below bin 96, deep filtering instead: the sum over the five noisy
  spectra from four hops back to now, each times its complex coefficient;
- per-hop gating on the networks' local SNR estimate, as the C API sets it: below -15 dB a zero
  mask and no deep filtering, above 35 dB the spectrum passes untouched;
- synthesis: inverse real DFT (unnormalised, in two stages too), the same window, overlap-add of
  the two halves.

The running means are recurrences over hops, so one call may hold any number of hops in O(hops):
each is an ONNX ``RNN`` with ReLU and diagonal weights (alpha on the state, 1 - alpha on the
input), which is exact while the state stays positive; the mean of the dB features carries a
+150 dB offset so it always does. Streaming state starts at zeros; a ``started`` flag (0 at the
start, 1 after the first call) adds the non-zero initial means inside the graph, so carrying the
state between calls is exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 12
INT_MAX = 2**62
DB_OFFSET = 150.0  # keeps the dB running mean (>= -100 dB) positive inside the ReLU RNN
MEAN_NORM_INIT = (-60.0, -90.0)
UNIT_NORM_INIT = (1e-3, 1e-4)
UNIT_FLOOR = 1e-30  # a running magnitude mean that decayed to nothing divides zeros, not by zero


@dataclass(frozen=True)
class Dfn3Config:
    """The [df] / [deepfilternet] settings the graph needs, and the C API's gating thresholds."""

    sr: int = 48000
    fft_size: int = 960
    hop_size: int = 480
    nb_erb: int = 32
    nb_df: int = 96
    min_nb_erb_freqs: int = 2
    norm_tau: float = 1.0
    df_order: int = 5
    df_lookahead: int = 2
    conv_lookahead: int = 2
    min_db_thresh: float = -15.0  # libDF capi.rs DFState::new
    max_db_erb_thresh: float = 35.0
    max_db_df_thresh: float = 35.0

    @classmethod
    def from_model(cls, model) -> Dfn3Config:
        df = model.config["df"]
        net = model.config["deepfilternet"]
        return cls(sr=int(df["sr"]), fft_size=int(df["fft_size"]), hop_size=int(df["hop_size"]),
                   nb_erb=int(df["nb_erb"]), nb_df=int(df["nb_df"]), min_nb_erb_freqs=int(df["min_nb_erb_freqs"]),
                   norm_tau=float(df["norm_tau"]), df_order=int(df.get("df_order", net.get("df_order"))),
                   df_lookahead=int(df.get("df_lookahead", net.get("df_lookahead"))),
                   conv_lookahead=int(net["conv_lookahead"]))

    @property
    def n_freqs(self) -> int:
        return self.fft_size // 2 + 1

    @property
    def lookahead(self) -> int:
        return max(self.conv_lookahead, self.df_lookahead)

    @property
    def history(self) -> int:
        """Past noisy spectra kept between calls: deep filtering reaches df_order - 1 hops back,
        the gains conv_lookahead hops back."""
        return max(self.df_order - 1, self.conv_lookahead)

    @property
    def latency(self) -> int:
        """Output lags input by the analysis overlap plus the look-ahead hops."""
        return self.fft_size - self.hop_size + self.lookahead * self.hop_size


# --- the published method's constants ------------------------------------------------------------


def norm_alpha(sr: int, hop: int, tau: float) -> float:
    """exp(-hop/sr/tau), rounded to the fewest decimals (at least 3) that keep it below 1, as libDF does."""
    alpha = math.exp(-hop / sr / tau)
    digits = 3
    while True:
        rounded = round(alpha * 10**digits) / 10**digits
        if rounded < 1.0:
            return rounded
        digits += 1


def _freq2erb(f):
    return np.float32(9.265) * np.log1p(f / (np.float32(24.7) * np.float32(9.265)))


def _erb2freq(e):
    return np.float32(24.7) * np.float32(9.265) * (np.exp(e / np.float32(9.265)) - np.float32(1.0))


def erb_widths(sr: int, fft_size: int, nb_bands: int, min_nb_freqs: int) -> list[int]:
    """Bins per ERB band: equal steps on the ERB scale up to Nyquist, each band at least
    ``min_nb_freqs`` wide (borrowing from the next), summing to fft_size // 2 + 1. In float32,
    as libDF computes the band edges, so that rounding lands on the same bins."""
    f32 = np.float32
    freq_width = f32(sr) / f32(fft_size)
    low = _freq2erb(f32(0.0))
    step = (_freq2erb(f32(sr // 2)) - low) / f32(nb_bands)
    widths, prev, borrowed = [], 0, 0
    for i in range(1, nb_bands + 1):
        edge = int(np.floor(_erb2freq(low + f32(i) * step) / freq_width + f32(0.5)))
        width = edge - prev - borrowed
        borrowed = max(min_nb_freqs - width, 0)
        widths.append(max(width, min_nb_freqs))
        prev = edge
    widths[-1] += 1
    widths[-1] -= sum(widths) - (fft_size // 2 + 1)
    return widths


def vorbis_window(size: int) -> np.ndarray:
    half = size // 2
    n = np.arange(size, dtype=np.float64)
    return np.sin(0.5 * np.pi * np.sin(0.5 * np.pi * (n + 0.5) / half) ** 2)


def fft_factors(cfg: Dfn3Config) -> tuple[int, int, int]:
    """(n1, n2, k2): the frame length as n1 * n2 with n2 the largest divisor up to its square
    root, and the bins in n1-wide rows (k2 of them), for a two-stage DFT (Cooley-Tukey)."""
    size = cfg.fft_size
    n2 = max(d for d in range(1, math.isqrt(size) + 1) if size % d == 0)
    n1 = size // n2
    return n1, n2, -(-cfg.n_freqs // n1)


def analysis_matrices(cfg: Dfn3Config) -> tuple[np.ndarray, np.ndarray]:
    """The windowed real DFT (scaled by 2 hop / fft_size**2 = 1/960, as libDF) in two stages.

    Sample n = n2_count * a + b, bin k = c + n1 * d. Stage 1, for each b, sums over a with the
    twiddle folded in: [b, a, (re | im) of c] = w[n] scale exp(-2 pi i c n / N). Stage 2, shared
    by every c, sums over b: [(re | im) of b, (re | im) of d] = exp(-2 pi i b d / n2)."""
    n1, n2, k2 = fft_factors(cfg)
    a = np.arange(n1)[None, :, None]
    b = np.arange(n2)[:, None, None]
    c = np.arange(n1)[None, None, :]
    n = n2 * a + b
    w = vorbis_window(cfg.fft_size)[n] * (2 * cfg.hop_size / cfg.fft_size**2)
    theta = 2 * np.pi * c * n / cfg.fft_size
    first = np.concatenate([w * np.cos(theta), -w * np.sin(theta)], axis=2)  # [n2, n1, 2 n1]
    phi = 2 * np.pi * np.arange(n2)[:, None] * np.arange(k2)[None, :] / n2
    second = np.block([[np.cos(phi), -np.sin(phi)], [np.sin(phi), np.cos(phi)]])  # [2 n2, 2 k2]
    return first.astype(np.float32), second.astype(np.float32)


def synthesis_matrices(cfg: Dfn3Config) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The unnormalised inverse real DFT times the window, in two stages, and the bin weights
    before it (1 for DC and Nyquist, 2 between; their imaginary parts 0: a real inverse FFT ignores them).

    Bin k = c + n1 * d, sample n = b + n2 * a. Stage 1, shared by every c, sums over d:
    [(re | im) of d, (re | im) of b] = exp(2 pi i d b / n2). Stage 2, for each b, sums over c and
    keeps the real part, the window folded in: [b, (re | im) of c, a] = w[n] (cos | -sin)(2 pi c n / N)."""
    n1, n2, k2 = fft_factors(cfg)
    psi = 2 * np.pi * np.arange(k2)[:, None] * np.arange(n2)[None, :] / n2
    first = np.block([[np.cos(psi), np.sin(psi)], [-np.sin(psi), np.cos(psi)]])  # [2 k2, 2 n2]
    b = np.arange(n2)[:, None, None]
    c = np.arange(n1)[None, :, None]
    a = np.arange(n1)[None, None, :]
    n = b + n2 * a
    w = vorbis_window(cfg.fft_size)[n]
    theta = 2 * np.pi * c * n / cfg.fft_size
    second = np.concatenate([w * np.cos(theta), -w * np.sin(theta)], axis=1)  # [n2, 2 n1, n1]
    weights = np.full((2, cfg.n_freqs), 2.0)
    weights[:, 0] = weights[:, -1] = 1.0
    weights[1, 0] = weights[1, -1] = 0.0
    return first.astype(np.float32), second.astype(np.float32), weights.reshape(-1).astype(np.float32)


def dft(b: Builder, cfg: Dfn3Config, frames: str) -> str:
    """frames [B, T, fft_size] -> windowed spectra [B, T, 2 * n_freqs] (real parts, then imaginary)."""
    n1, n2, k2 = fft_factors(cfg)
    first, second = analysis_matrices(cfg)
    x = b.op("Transpose", [b.op("Reshape", [frames, b.ints(0, 0, n1, n2)])], perm=[0, 1, 3, 2])  # [B, T, n2, n1]
    y = b.op("MatMul", [b.op("Unsqueeze", [x], axes=[3]), b.const(first, "dft1")])  # [B, T, n2, 1, 2 n1]
    y = b.op("Transpose", [b.op("Reshape", [y, b.ints(0, 0, n2, 2, n1)])], perm=[0, 1, 4, 3, 2])  # [B, T, n1, 2, n2]
    z = b.op("MatMul", [b.op("Reshape", [y, b.ints(0, 0, n1, 2 * n2)]), b.const(second, "dft2")])  # [B, T, n1, 2 k2]
    z = b.op("Transpose", [b.op("Reshape", [z, b.ints(0, 0, n1, 2, k2)])], perm=[0, 1, 3, 4, 2])  # [B, T, 2, k2, n1]
    bins = b.slice(b.op("Reshape", [z, b.ints(0, 0, 2, k2 * n1)]), 0, cfg.n_freqs, 3)
    return b.op("Reshape", [bins, b.ints(0, 0, 2 * cfg.n_freqs)])


def idft(b: Builder, cfg: Dfn3Config, spec: str) -> str:
    """spectra [B, T, 2 * n_freqs] -> windowed frames [B, T, fft_size] (unnormalised inverse real DFT)."""
    n1, n2, k2 = fft_factors(cfg)
    first, second, weights = synthesis_matrices(cfg)
    x = b.op("Reshape", [b.op("Mul", [spec, b.const(weights, "bin_weights")]), b.ints(0, 0, 2, cfg.n_freqs)])
    x = b.op("Pad", [x, b.ints(0, 0, 0, 0, 0, 0, 0, k2 * n1 - cfg.n_freqs)], mode="constant")  # [B, T, 2, k2 n1]
    x = b.op("Transpose", [b.op("Reshape", [x, b.ints(0, 0, 2, k2, n1)])], perm=[0, 1, 4, 2, 3])  # [B, T, n1, 2, k2]
    y = b.op("MatMul", [b.op("Reshape", [x, b.ints(0, 0, n1, 2 * k2)]), b.const(first, "idft1")])  # [B, T, n1, 2 n2]
    y = b.op("Transpose", [b.op("Reshape", [y, b.ints(0, 0, n1, 2, n2)])], perm=[0, 1, 4, 3, 2])  # [B, T, n2, 2, n1]
    z = b.op("MatMul", [b.op("Reshape", [y, b.ints(0, 0, n2, 1, 2 * n1)]), b.const(second, "idft2")])  # [B, T, n2, 1, n1]
    z = b.op("Transpose", [b.op("Reshape", [z, b.ints(0, 0, n2, n1)])], perm=[0, 1, 3, 2])  # [B, T, n1, n2]
    return b.op("Reshape", [z, b.ints(0, 0, cfg.fft_size)])


def band_matrices(cfg: Dfn3Config) -> tuple[np.ndarray, np.ndarray]:
    """([n_freqs, nb_erb] band means, [nb_erb, 2 * n_freqs] gains spread over real and imaginary parts)."""
    widths = erb_widths(cfg.sr, cfg.fft_size, cfg.nb_erb, cfg.min_nb_erb_freqs)
    mean = np.zeros((cfg.n_freqs, cfg.nb_erb), np.float32)
    spread = np.zeros((cfg.nb_erb, cfg.n_freqs), np.float32)
    start = 0
    for band, width in enumerate(widths):
        mean[start:start + width, band] = np.float32(1.0) / np.float32(width)
        spread[band, start:start + width] = 1.0
        start += width
    return mean, np.concatenate([spread, spread], axis=1)


# --- building nodes -------------------------------------------------------------------------------


@dataclass
class Builder:
    """Nodes and constants of one graph under construction, with unique names under ``prefix``."""

    prefix: str
    nodes: list = field(default_factory=list)
    initializers: list = field(default_factory=list)
    _count: int = 0

    def name(self, hint: str) -> str:
        self._count += 1
        return f"{self.prefix}{hint}_{self._count}"

    def const(self, value, hint: str = "c", dtype=np.float32) -> str:
        name = self.name(hint)
        self.initializers.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def ints(self, *values: int) -> str:
        return self.const(list(values), "i", np.int64)

    def op(self, op_type: str, inputs: list[str], outputs: int | list[str] = 1, **attrs):
        names = [self.name(op_type.lower()) for _ in range(outputs)] if isinstance(outputs, int) else list(outputs)
        self.nodes.append(helper.make_node(op_type, inputs, names, name=self.name(op_type), **attrs))
        return names[0] if len(names) == 1 else names

    def slice(self, x: str, start: int, end: int, axis: int, out: str | None = None) -> str:
        return self.op("Slice", [x, self.ints(start), self.ints(end), self.ints(axis)], [out] if out else 1)


def running_mean(b: Builder, x_tbf: str, start: str, alpha: float, init: np.ndarray, offset: float,
                 state: str, state_out: str) -> str:
    """s_t = alpha * s_(t-1) + (1 - alpha) * (x_t + offset), from ``init + offset`` at a stream's
    start (``start``: [B, 1], 1 once the stream has begun) and from ``state`` after; ``x_tbf`` is
    [T, B, F]; returns s [T, B, F] (offset included) and writes the last s to ``state_out``."""
    size = init.shape[0]
    eye = np.eye(size, dtype=np.float32)
    w = b.const((1.0 - alpha) * eye[None], "w")
    r = b.const(np.float32(alpha) * eye[None], "r")
    bias = b.const(np.concatenate([np.full(size, (1.0 - alpha) * offset), np.zeros(size)])[None], "bias")
    fresh = b.op("Sub", [b.const(1.0), start])
    h0 = b.op("Add", [state, b.op("Mul", [fresh, b.const(init + offset)])])
    y, y_h = b.op("RNN", [x_tbf, w, r, bias, "", b.op("Unsqueeze", [h0], axes=[0])], 2,
                  hidden_size=size, activations=["Relu"])
    b.op("Squeeze", [y_h], [state_out], axes=[0])
    return b.op("Squeeze", [y], axes=[1])


def front_end(b: Builder, cfg: Dfn3Config, audio: str, states: dict[str, str]) -> dict[str, str]:
    """audio [B, 1, hops*hop] -> noisy spectra [B, T, 2*F], feat_erb [B, 1, T, E], feat_spec [B, 2, T, D].

    ``states`` maps each state input name (ana, erb_norm, spec_norm, started) to its output name.
    """
    hop, nf, nd = cfg.hop_size, cfg.n_freqs, cfg.nb_df
    alpha = norm_alpha(cfg.sr, cfg.hop_size, cfg.norm_tau)
    x = b.op("Reshape", [audio, b.ints(0, -1)])  # [B, N]
    joined = b.op("Concat", ["ana", x], axis=1)  # [B, N + (fft - hop)]
    b.slice(x, -(cfg.fft_size - hop), INT_MAX, 1, out=states["ana"])
    older = b.op("Reshape", [b.slice(joined, 0, -(cfg.fft_size - hop), 1), b.ints(0, -1, hop)])
    newer = b.op("Reshape", [x, b.ints(0, -1, hop)])
    spec = dft(b, cfg, b.op("Concat", [older, newer], axis=2))  # [B, T, 2F]

    band_mean, _ = band_matrices(cfg)
    power = b.op("Mul", [spec, spec])
    power = b.op("Add", [b.slice(power, 0, nf, 2), b.slice(power, nf, 2 * nf, 2)])
    energy = b.op("MatMul", [power, b.const(band_mean, "erb_mean")])
    db = b.op("Mul", [b.op("Log", [b.op("Add", [energy, b.const(1e-10)])]), b.const(10.0 / math.log(10.0))])
    started = "started"
    b.op("Max", [started, b.const(np.ones((1, 1), np.float32))], [states["started"]])
    mean_init = np.linspace(*MEAN_NORM_INIT, cfg.nb_erb).astype(np.float32)
    mean = running_mean(b, b.op("Transpose", [db], perm=[1, 0, 2]), started, alpha, mean_init, DB_OFFSET,
                        "erb_norm", states["erb_norm"])
    centred = b.op("Sub", [b.op("Add", [db, b.const(DB_OFFSET)]), b.op("Transpose", [mean], perm=[1, 0, 2])])
    feat_erb = b.op("Unsqueeze", [b.op("Mul", [centred, b.const(1.0 / 40.0)])], axes=[1])

    re = b.slice(spec, 0, nd, 2)
    im = b.slice(spec, nf, nf + nd, 2)
    mag = b.op("Sqrt", [b.op("Add", [b.op("Mul", [re, re]), b.op("Mul", [im, im])])])
    unit_init = np.linspace(*UNIT_NORM_INIT, nd).astype(np.float32)
    unit = running_mean(b, b.op("Transpose", [mag], perm=[1, 0, 2]), started, alpha, unit_init, 0.0,
                        "spec_norm", states["spec_norm"])
    scale = b.op("Reciprocal", [b.op("Sqrt", [b.op("Max", [unit, b.const(UNIT_FLOOR)])])])
    scale = b.op("Transpose", [scale], perm=[1, 0, 2])
    feat_spec = b.op("Concat", [b.op("Unsqueeze", [b.op("Mul", [re, scale])], axes=[1]),
                                b.op("Unsqueeze", [b.op("Mul", [im, scale])], axes=[1])], axis=1)
    return {"spec": spec, "feat_erb": feat_erb, "feat_spec": feat_spec}


def back_end(b: Builder, cfg: Dfn3Config, spec: str, mask: str, coefs: str, lsnr: str,
             states: dict[str, str], enhanced: str) -> None:
    """Gains and deep filtering on the spectrum ``lookahead`` hops back, then overlap-add.

    ``spec`` [B, T, 2F] this call's noisy spectra; ``mask`` [B, 1, T, E] ERB gains; ``coefs``
    [B, T, D, 2*order] deep-filter coefficients (tap-major, then real/imaginary); ``lsnr`` [B, T, 1].
    ``states`` maps spec_hist and ola to their outputs; writes ``enhanced`` [B, 1, T*hop].
    """
    nf, nd, order, hop, hist = cfg.n_freqs, cfg.nb_df, cfg.df_order, cfg.hop_size, cfg.history
    full = b.op("Concat", ["spec_hist", spec], axis=1)  # [B, hist + T, 2F]: hops t - hist .. t
    b.slice(full, -hist, INT_MAX, 1, out=states["spec_hist"])

    def hops_back(spectra: str, back: int) -> str:  # for each hop t of this call, hop t - back of ``spectra``
        return b.slice(spectra, hist - back, -back if back else INT_MAX, 1)

    target = hops_back(full, cfg.conv_lookahead)
    zero = b.op("Less", [lsnr, b.const(cfg.min_db_thresh)])
    untouched = b.op("Greater", [lsnr, b.const(cfg.max_db_erb_thresh)])
    gains_only = b.op("Greater", [lsnr, b.const(cfg.max_db_df_thresh)])
    gains = b.op("Squeeze", [mask], axes=[1])  # [B, T, E]
    gains = b.op("Where", [zero, b.const(0.0), b.op("Where", [untouched, b.const(1.0), gains])])
    _, spread = band_matrices(cfg)
    masked = b.op("Mul", [target, b.op("MatMul", [gains, b.const(spread, "erb_spread")])])

    # deep filtering of the lowest D bins: out = sum_i X[t - (order - 1) + i] * c_i, complex
    low = b.op("Gather", [full, b.const(np.r_[np.arange(nd), nf + np.arange(nd)], "low_bins", np.int64)], axis=2)
    taps = b.op("Concat", [hops_back(low, back) for back in range(order - 1, -1, -1)], axis=2)
    x = b.op("Reshape", [taps, b.ints(0, 0, order, 2, nd)])  # [B, T, order, (re, im), D]
    c = b.op("Transpose", [b.op("Reshape", [coefs, b.ints(0, 0, nd, order, 2)])], perm=[0, 1, 3, 4, 2])
    # re = xr cr - xi ci: x times c with its imaginary part negated; im = xr ci + xi cr: x times c swapped
    df_re = b.op("ReduceSum", [b.op("Mul", [x, b.op("Mul", [c, b.const(np.array([1.0, -1.0])[:, None], "conj")])])],
                 axes=[2, 3], keepdims=1)
    df_im = b.op("ReduceSum", [b.op("Mul", [x, b.op("Gather", [c, b.ints(1, 0)], axis=3)])], axes=[2, 3], keepdims=1)
    df = b.op("Reshape", [b.op("Concat", [df_re, df_im], axis=3), b.ints(0, 0, 2, nd)])
    df = b.op("Reshape", [b.op("Pad", [df, b.ints(0, 0, 0, 0, 0, 0, 0, nf - nd)], mode="constant"), b.ints(0, 0, 2 * nf)])
    use_df = b.op("Not", [b.op("Or", [b.op("Or", [zero, untouched]), gains_only])])
    in_low = np.zeros(2 * nf, bool)
    in_low[:nd] = in_low[nf:nf + nd] = True
    out_spec = b.op("Where", [b.op("And", [use_df, b.const(in_low, "in_low", bool)]), df, masked])

    frames = idft(b, cfg, out_spec)  # [B, T, fft]
    first = b.slice(frames, 0, hop, 2)
    second = b.slice(frames, hop, 2 * hop, 2)
    carried = b.op("Concat", [b.op("Unsqueeze", ["ola"], axes=[1]), second], axis=1)  # [B, T + 1, hop]
    b.op("Squeeze", [b.slice(carried, -1, INT_MAX, 1)], [states["ola"]], axes=[1])
    summed = b.op("Add", [first, b.slice(carried, 0, -1, 1)])
    b.op("Reshape", [summed, b.ints(0, 1, -1)], [enhanced])


def value_info(name: str, shape: tuple) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape))
