"""edgeaudio plugin: task ``vad``, silero's voice activity detector as a streaming edgeaudio task.

Registered through the ``edgeaudio`` entry point in this package's pyproject.toml. The task
module (and onnx) is imported only when edgeaudio looks tasks up, so ``edgeaudio plugins`` and
commands that need no task stay fast.
"""

from edgeaudio.hookspecs import hookimpl

__version__ = "0.1.0"


@hookimpl
def register_tasks(register):
    from edgeaudio_vad.task import VadTask

    register(VadTask)
