"""Bandwidth extension (BWE): telephone-band speech to wideband 16 kHz, in real time.

Loaded through the ``edgeaudio`` entry point ``bwe``; importing it stays cheap (no torch), since
the registry imports every plugin to list them.
"""

from edgeaudio.hookspecs import hookimpl


@hookimpl
def register_tasks(register):
    from edgeaudio.plugins.bwe.task import BweTask

    register(BweTask)
