"""Audio captioning: one sentence describing what is heard, computed on the device.

Loaded through the ``edgeaudio`` entry point ``caption``; importing it stays cheap (no torch),
since the registry imports every plugin to list them.
"""

from edgeaudio.hookspecs import hookimpl


@hookimpl
def register_tasks(register):
    from edgeaudio.plugins.caption.task import CaptionTask

    register(CaptionTask)
