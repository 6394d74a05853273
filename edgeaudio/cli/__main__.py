"""``python -m edgeaudio.cli`` (and ``torchrun -m edgeaudio.cli train ...``)."""

from edgeaudio.cli import main

main()
