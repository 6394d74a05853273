"""Audio in and out: files (soundfile), resampling (soxr), channel checks."""

from edgeaudio.audio.files import read_audio, write_audio

__all__ = ["read_audio", "write_audio"]
