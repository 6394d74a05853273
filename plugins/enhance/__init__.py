"""Speech enhancement: real-time denoising for one microphone, a first-party task plugin.

Loaded through the ``edgeaudio`` entry point ``enhance``; importing it stays cheap (no torch),
since the registry imports every plugin to list them.
"""

from edgeaudio.hookspecs import hookimpl


@hookimpl
def register_tasks(register):
    from edgeaudio.plugins.enhance.dfn3_task import Dfn3Task
    from edgeaudio.plugins.enhance.task import EnhanceTask

    register(EnhanceTask)
    register(Dfn3Task)
