"""Compact text-to-audio: a few seconds of sound effects from a sentence, generated on the device.

Loaded through the ``edgeaudio`` entry point ``tta``; importing it stays cheap (no torch), since
the registry imports every plugin to list them.
"""

from edgeaudio.hookspecs import hookimpl


@hookimpl
def register_tasks(register):
    from edgeaudio.plugins.tta.task import TtaTask

    register(TtaTask)
