"""Checks for tasks that generate from a text prompt."""

from __future__ import annotations

from typing import Mapping

import numpy as np

from edgeaudio.task import Task
from edgeaudio.testing.common import (
    EXAMPLE_PROMPT,
    GENERATE_SECONDS,
    GENERATE_SEED,
    OTHER_PROMPT,
    _describe,
    _json_checked,
    _merge,
    _require,
    _schema,
    _waveform,
)


class TextChecks:
    """Mixed into ``Conformance``: the checks for TEXT tasks."""

    # -- TEXT -----------------------------------------------------------------------------------
    def _check_generate_deterministic(self, task: Task) -> str:
        from edgeaudio.runtime import load

        bundle = self._bundle(task)
        checked = []
        for backend, precision in self._artifacts(bundle):
            what = f"{backend}/{precision}"
            session = load(bundle, backend=backend, precision=precision)
            first = self._generate_raw(session)
            _require(isinstance(first, Mapping) and first, f"{what}: generate() returned no outputs ({first!r})")
            for label, again in (("again", self._generate_raw(session)),
                                 ("from a freshly loaded bundle", self._generate_raw(load(bundle, backend=backend, precision=precision)))):  # fmt: skip
                _require(again.keys() == first.keys(), f"{what}: outputs {sorted(again)} {label}, first {sorted(first)}")
                for name, value in first.items():
                    _require(np.array_equal(np.asarray(value), np.asarray(again[name])),
                             f"{what}: output '{name}' for prompt {EXAMPLE_PROMPT!r} and seed {GENERATE_SEED} differs "
                             f"{label}; generate() must depend on its seed alone")
            checked.append(what)
        return f"{', '.join(checked)}: identical outputs for seed {GENERATE_SEED}, twice and after reloading"

    def _check_generate_length(self, task: Task) -> str:
        from edgeaudio.runtime import load

        session = load(self._bundle(task), backend=self.backends[0], precision="fp32")
        results, lengths = [], []
        for seconds in GENERATE_SECONDS:
            result = session.generate(EXAMPLE_PROMPT, seconds=seconds, seed=GENERATE_SEED)
            audio = _waveform(task, result, f"the result for seconds={seconds:g}")
            expected = int(round(seconds * task.sample_rate))
            _require(audio.shape[-1] == expected,
                     f"generate(seconds={seconds:g}) gave {audio.shape[-1]} samples; {expected} requested at {task.sample_rate} Hz")
            results.append(result)
            lengths.append(audio.shape)
        both = _waveform(task, results, "a list of two results")
        _require(both.shape[:-1] == lengths[0][:-1] and both.shape[-1] == sum(shape[-1] for shape in lengths),
                 f"results_to_audio of a list of results is shaped {both.shape}; each alone {lengths}")
        return f"seconds {' and '.join(f'{s:g}' for s in GENERATE_SECONDS)} give audio shaped {' and '.join(map(str, lengths))}"

    def _check_generation_schema(self, task: Task) -> str:
        from edgeaudio.runtime import load

        session = load(self._bundle(task), backend=self.backends[0], precision="fp32")
        schema = None
        for prompt in (EXAMPLE_PROMPT, OTHER_PROMPT):
            for seconds in GENERATE_SECONDS:
                what = f"Session.generate({prompt!r}, seconds={seconds:g})"
                found = _schema(_json_checked(session.generate(prompt, seconds=seconds, seed=GENERATE_SEED), what))
                schema = _merge(schema, found, f"{what} vs earlier results")
        return f"2 prompts x {len(GENERATE_SECONDS)} lengths share schema {_describe(schema)}"
