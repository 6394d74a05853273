"""A Stream's memory stays flat however long it runs: it keeps no outputs unless asked (tests do),
and what the interpreter holds does not grow with the chunks it has seen. Counts, not timings:
benchmarks/soak.py measures RSS over hours of audio."""

from __future__ import annotations

import gc
import sys

import numpy as np
import pytest

import edgeaudio
from edgeaudio.errors import UsageError


def _retained(stream, chunk: np.ndarray, count: int) -> tuple[int, int]:
    """Objects the garbage collector tracks, and memory blocks Python has handed out (numpy
    arrays included), after ``count`` more chunks."""
    for _ in range(count):
        stream.accept(chunk)
    gc.collect()
    return len(gc.get_objects()), sys.getallocatedblocks()


def test_a_stream_keeps_outputs_only_when_asked(tiny_bundle, tiny_plugin):
    session = edgeaudio.load(tiny_bundle, backend="onnxruntime", precision="fp32")
    audio = tiny_plugin._clip(5, blocks=12)
    plain = session.stream()
    plain.accept(audio)
    with pytest.raises(UsageError, match="keeps no raw outputs") as error:
        plain.outputs()
    assert "keep_outputs=True" in error.value.hint
    kept = session.stream(keep_outputs=True)
    kept.accept(audio)
    kept.flush()
    np.testing.assert_allclose(kept.outputs()["scores"], session.process_raw(audio, 8000)["scores"], atol=1e-6)


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_retained_objects_do_not_grow_with_the_chunks(tiny_bundle, tiny_plugin, backend):
    session = edgeaudio.load(tiny_bundle, backend=backend, precision="fp32")
    stream = session.stream()
    chunk = tiny_plugin._clip(6, blocks=4)[:, :37]  # not a whole block: the stream carries a remainder
    _retained(stream, chunk, 300)  # warm-up: first-call allocations, caches
    objects, blocks = _retained(stream, chunk, 100)
    # 2000 chunks (925 graph calls), twice. A few objects made once, late and lazily, may land in
    # the first (16 weakrefs with their callbacks and a set appeared between chunks 300 and 400
    # here, plain calls or bound; one object after 400 on CI's machine): that is not growth. A
    # leak of one object per call would be hundreds in each; the second must hold nothing more.
    once_objects, once_blocks = _retained(stream, chunk, 2000)
    more_objects, more_blocks = _retained(stream, chunk, 2000)
    assert once_objects - objects < 50, f"{once_objects - objects} more objects tracked after 2000 chunks"
    assert more_objects - once_objects <= 0, f"{more_objects - once_objects} more objects tracked after 2000 more chunks"
    assert more_blocks - blocks < 100, f"{more_blocks - blocks} more memory blocks after 4000 chunks"
