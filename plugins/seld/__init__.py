"""Sound event localization and detection (SELD) for microphone arrays: a first-party task plugin.

Loaded through the ``edgeaudio`` entry point ``seld``; importing it stays cheap (no torch), since
the registry imports every plugin to list them.
"""

from edgeaudio.hookspecs import hookimpl


@hookimpl
def register_tasks(register):
    from edgeaudio.plugins.seld.task import SeldTask

    register(SeldTask)


@hookimpl
def register_sinks(register):
    from edgeaudio.plugins.seld.sinks import AZIMUTH_PLOT, DCASE_FORMAT

    register(DCASE_FORMAT)
    register(AZIMUTH_PLOT)


@hookimpl
def register_sources(register):
    from edgeaudio.plugins.seld.simulated import SIMULATED

    register(SIMULATED)
