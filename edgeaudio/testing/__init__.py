"""The conformance suite: what every task plugin must do so the core can export, run and ship it.

A plugin runs it from its own tests, all checks in one call::

    from edgeaudio.testing import check_task

    def test_conformance(tmp_path):
        check_task("mytask", tmp_dir=tmp_path)

or as one pytest test per check, so a failure names the check that broke::

    from edgeaudio.testing import conformance_tests

    test_conformance = conformance_tests("mytask")

The task may be given by name (an installed plugin) or as its class (registered for the duration
of each check, so a plugin can test itself before it is installed). Each check raises
``AssertionError`` saying what is wrong and where.

Which checks a task gets follows from its declared capabilities (``Task.input_kind`` and
``Task.result_kind``; ``checks_for`` lists them); a check that does not fit a capability is not
run for it (nor collected, with ``conformance_tests``), and asking for it is an error, never a
pass. The checks, by the capabilities they fit (``CHECKS`` is the order they run in):

Every task:

- ``metadata``: name, version, description, sample rate, channels (and array, when set) are
  usable; the capabilities are an ``InputKind`` and a ``ResultKind`` and the task implements what
  they promise (``generate`` for TEXT, ``results_to_audio`` for WAVEFORM, ``classes`` for EVENTS).
- ``graphs``: every graph is consistent: a torch module or an ONNX file, example inputs for
  every declared input with the declared rank and fixed sizes, state pairs and streaming
  declarations that name real inputs and outputs; one streaming graph for a STREAM task, none
  for CLIP and TEXT tasks (the runtime would stream them otherwise).
- ``export_parity``: the export pipeline builds every requested backend and precision, and each
  fp32 artifact matches the reference (torch, or ONNX Runtime on the task's own ONNX file).
- ``bundle_round_trip``: every file is hashed in the manifest, the ``.eab`` archive loads and gives
  identical outputs, and a modified file is refused.

STREAM tasks (audio in chunks through a streaming graph):

- ``stream_equals_session``: on every backend and precision, chunked streaming gives the same raw
  outputs as one whole-clip call, for chunk sizes that do and do not divide the block.

CLIP tasks (whole clips; live input runs them once per window):

- ``clip_lengths``: on every backend and precision, clips of two lengths give finite raw outputs
  and decoded results of one schema (no graph is fixed to the example's length).
- ``window_equals_clip``: live (windowed) results are the whole-clip results of the same windows,
  with their start and end times, whatever the chunking of the input.

STREAM and CLIP tasks (audio in):

- ``bad_input``: wrong sample rate, wrong channel count, empty audio and NaN raise
  ``AudioInputError`` from both ``Session.process`` and ``Stream.accept``.
- ``decode_schema``: decoded results are what the JSON-lines output writes (JSON types, numpy
  arrays and scalars, no NaN or infinity) and keep one schema across live results and the
  whole-clip result.
- ``waveform_results`` (WAVEFORM results): ``results_to_audio`` of the whole-clip result is
  finite audio as long as the input, and the live results give the same audio (equal within the
  graph's tolerance for a streaming graph).

TEXT tasks (a prompt in):

- ``generate_deterministic``: on every backend and precision, a prompt and seed give identical
  raw outputs twice, also from a freshly loaded bundle.
- ``generate_length`` (WAVEFORM results): the audio is as long as requested (``seconds``) for two
  lengths, finite, shaped [samples] or [channels, samples], and a list of results gives the
  audio of each in order.
- ``generation_schema``: ``Session.generate`` results are what the JSON-lines output writes and
  keep one schema across prompts and lengths.

The audio the checks feed is the streaming graph's example audio (the task chose it to be
representative); tasks without a streaming graph get seeded noise (``CLIP_SECONDS``). Text tasks
generate from ``EXAMPLE_PROMPT`` with the ``seconds`` and ``seed`` options the core passes.
"""

from edgeaudio.testing.common import EXAMPLE_PROMPT, GENERATE_SECONDS
from edgeaudio.testing.plugins import registered_plugin
from edgeaudio.testing.suite import (
    CHECKS,
    FITS,
    Conformance,
    ConformanceReport,
    check_task,
    checks_for,
    conformance_tests,
)

__all__ = [
    "CHECKS", "Conformance", "ConformanceReport", "EXAMPLE_PROMPT", "FITS", "GENERATE_SECONDS", "check_task", "checks_for",
    "conformance_tests", "registered_plugin",
]
