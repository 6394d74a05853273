"""The wheel's own DeepFilterNet3 runtime (libDF's C API through ctypes): the reference output.

``df_create(model, atten_lim_db, log_level)`` builds libDF's streaming runtime (tract, one
channel, the thresholds of libDF/src/capi.rs: zero mask below -15 dB local SNR, no processing
above 35 dB); ``df_process_frame`` takes one 480-sample hop at 48 kHz and writes 480 enhanced
samples, lagging the input by 1440 samples, and returns the frame's local SNR in dB. We create it
with an attenuation limit of 100 dB, which libDF reads as no limit, and the post-filter off (its
default), the setting our graph reproduces.
"""

from __future__ import annotations

import ctypes
import time
from pathlib import Path

import numpy as np

from edgeaudio.plugins.enhance.dfn3_wheel import load_model, wheel_assets

NO_LIMIT_DB = 100.0
_FLOATS = ctypes.POINTER(ctypes.c_float)


def _load(path: Path) -> ctypes.CDLL:
    lib = ctypes.CDLL(str(path))
    lib.df_create.restype = ctypes.c_void_p
    lib.df_create.argtypes = [ctypes.c_char_p, ctypes.c_float, ctypes.c_char_p]
    lib.df_get_frame_length.restype = ctypes.c_size_t
    lib.df_get_frame_length.argtypes = [ctypes.c_void_p]
    lib.df_process_frame.restype = ctypes.c_float
    lib.df_process_frame.argtypes = [ctypes.c_void_p, _FLOATS, _FLOATS]
    lib.df_free.restype = None
    lib.df_free.argtypes = [ctypes.c_void_p]
    return lib


class DfnRuntime:
    """One libDF state: create, feed hops, free (also as a context manager)."""

    def __init__(self, atten_lim_db: float = NO_LIMIT_DB):
        self._state = None
        assets = wheel_assets()
        load_model(assets.model_path)  # libDF aborts the process on a model it cannot read: check it first
        self._lib = _load(assets.library_path)
        self._state = self._lib.df_create(str(assets.model_path).encode(), ctypes.c_float(atten_lim_db), None)
        if not self._state:
            raise RuntimeError(f"df_create returned NULL for {assets.model_path}")
        self.hop = int(self._lib.df_get_frame_length(self._state))
        self.compute_seconds = 0.0

    def process(self, audio: np.ndarray, hop_seconds: list[float] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Enhance mono 48 kHz ``audio`` [samples] hop by hop, continuing the stream; returns the
        enhanced samples (zero-padded to whole hops, lagging by 1440) and each hop's local SNR.
        ``hop_seconds``: a list that gets each hop's call time appended (wall seconds)."""
        if self._state is None:
            raise RuntimeError("this DeepFilterNet runtime was freed")
        audio = np.asarray(audio, np.float32)
        frames = -(-len(audio) // self.hop)
        padded = np.zeros(frames * self.hop, np.float32)
        padded[: len(audio)] = audio
        out = np.zeros_like(padded)
        lsnr = np.zeros(frames, np.float32)
        src, dst = padded.ctypes.data, out.ctypes.data  # addresses; both arrays outlive the loop
        step = padded.itemsize * self.hop
        start = time.perf_counter()
        for i in range(frames):
            began = time.perf_counter() if hop_seconds is not None else 0.0
            lsnr[i] = self._lib.df_process_frame(self._state, ctypes.cast(src + i * step, _FLOATS),
                                                 ctypes.cast(dst + i * step, _FLOATS))
            if hop_seconds is not None:
                hop_seconds.append(time.perf_counter() - began)
        self.compute_seconds += time.perf_counter() - start
        return out, lsnr

    def close(self) -> None:
        if self._state is not None:
            self._lib.df_free(self._state)
            self._state = None

    def __enter__(self) -> "DfnRuntime":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        self.close()


def enhance_with_c(audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A whole clip through a fresh libDF state: (enhanced [hops*480], lsnr [hops])."""
    with DfnRuntime() as runtime:
        return runtime.process(audio)
