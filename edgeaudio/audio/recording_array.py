"""Which microphone array a recording was made with, and whether a model may run on it.

An array model's phase features encode the geometry it was trained for, so a recording from
another array gives confident, wrong directions. Recordings written by edgeaudio name their
array in the WAV's comment (``edgeaudio array=<profile>``); ``--device`` names it for any other
file. A mismatch with the model's array is refused unless the user forces it.

A raw capture in the device's own layout (the ReSpeaker USB array's 6 channels: processed beam,
four mics, playback reference) is reduced to the mics through the profile's ``channel_map``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable, Protocol

from edgeaudio.errors import AudioInputError, UsageError, require

if TYPE_CHECKING:
    from edgeaudio.profiles import ArrayProfile


class ModelInput(Protocol):
    """What this module needs to know of a model (a task has these): its name for messages, the
    channels it takes, and the array it was trained for (None for a mono model)."""

    name: str
    channels: int
    array: str | None

TAG = "edgeaudio array="  # the WAV comment: "edgeaudio array=respeaker-usb"


def declared_array(path: str | Path) -> str | None:
    """The array profile named in the file's comment, or None (unreadable files say nothing here)."""
    sf = require("soundfile")
    try:
        with sf.SoundFile(str(path)) as handle:
            comment = handle.comment or ""
    except Exception:  # reading the audio reports a broken file with its own clear message
        return None
    words = comment[len(TAG):].split() if comment.startswith(TAG) else []
    return words[0] if words else None


def write_tagged(path: str | Path, audio, sample_rate: int, array: str, subtype: str = "PCM_16") -> Path:
    """Write [channels, samples] as a WAV whose comment names ``array``."""
    sf = require("soundfile")
    with sf.SoundFile(str(path), "w", sample_rate, audio.shape[0], subtype=subtype, format="WAV") as handle:
        handle.comment = f"{TAG}{array}"
        handle.write(audio.T)
    return Path(path)


def file_channel_map(
    path: Path,
    channels: int,
    device: "ArrayProfile | str | None",
    task: ModelInput,
    force: bool = False,
    log: Callable[[str], None] = lambda message: None,
    declared: str | None | bool = False,
) -> list[int] | None:
    """The channels of ``path`` to feed ``task`` (None: all, as they are), after the array checks.

    ``device`` is the array ``--device`` names, if any (a profile or a name; no device is probed
    for a file, so a family means its default). Raises AudioInputError when the recording's array
    (named, or declared in the file) is not the model's and ``force`` is off, and when the channel
    count fits neither the model nor the array's capture layout. ``declared``: the array the
    file's header names (None for none) when the caller has read it already.
    """
    from edgeaudio.profiles import get_array

    named = get_array(device, live_devices=[])[0] if isinstance(device, str) else device
    if declared is False:
        declared = declared_array(path)
    if named is not None and declared is not None and declared != named.name:
        raise UsageError(
            f"{path.name} says it was recorded with {declared}, but --device names {named.name}",
            hint="drop --device to use the file's array, or correct it",
        )
    recorded = named.name if named is not None else declared
    if task.array and recorded and recorded != task.array:
        if not force:
            raise AudioInputError(
                f"{path.name} was recorded with {recorded} but this model was trained for {task.array}; "
                "its directions would be wrong",
                hint=f"run the model for {recorded} (edgeaudio run {task.name} --device {recorded}), or pass --force",
            )
        log(f"note: {path.name} comes from {recorded}, the model from {task.array}; running anyway (--force)")
    if channels == task.channels:
        return None
    array = None
    if task.array:  # the layout to look for: the recording's array (forced), else the model's
        array = named or get_array(task.array if recorded is None else recorded, live_devices=[])[0]
    if array is not None and channels == array.capture_channels and len(array.channel_map) == task.channels:
        log(f"{path.name}: a {channels}-channel {array.name} capture; using channels "
            f"{', '.join(map(str, array.channel_map))} (its mics)")
        return list(array.channel_map)
    layout = ""
    if array is not None:
        layout = (f" ({array.name}: {array.num_mics} mics, or its {array.capture_channels}-channel capture "
                  f"with the mics in channels {', '.join(map(str, array.channel_map))})")
    raise AudioInputError(
        f"{path.name} has {channels} channel(s) but task '{task.name}' expects {task.channels}{layout}",
        hint="record with the array the model was trained for, or pick the matching bundle",
    )
