"""Sound event localization and detection (SELD) for microphone arrays: a first-party task plugin.

Loaded through the ``edgeaudio`` entry point ``seld``; importing it stays cheap (no torch), since
the registry imports every plugin to list them.
"""

from edgeaudio.hookspecs import hookimpl


@hookimpl
def register_tasks(register):
    from edgeaudio.plugins.seld.task import SeldTask

    register(SeldTask)
