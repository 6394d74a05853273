"""Checks every task gets: metadata, graphs, export parity, the bundle round trip."""

from __future__ import annotations

import numpy as np

from edgeaudio.task import InputKind, MetricGate, ResultKind, Task
from edgeaudio.testing.common import (
    TASK_NAME,
    _check_graph,
    _graphs_of,
    _positive_int,
    _require,
    _require_tamper_refused,
)


class EveryTaskChecks:
    """Mixed into ``Conformance``: the checks that fit every capability."""

    # -- every task -----------------------------------------------------------------------------
    def _check_metadata(self, task: Task) -> str:
        where = f"{type(task).__module__}.{type(task).__name__}"
        _require(isinstance(task.name, str) and TASK_NAME.match(task.name),
                 f"{where}.name {task.name!r} must be lowercase letters, digits, '-' or '_' (it is a CLI argument)")
        _require(isinstance(task.version, str) and task.version.strip(),
                 f"{where}.version must be a non-empty string (bundles record it; bump it when graphs change meaning)")
        _require(isinstance(task.description, str) and task.description.strip(),
                 f"{where}.description must say in one line what the task does (`edgeaudio doctor` lists it)")
        _require(_positive_int(task.sample_rate), f"{where}.sample_rate must be a positive int, got {task.sample_rate!r}")
        _require(_positive_int(task.channels), f"{where}.channels must be a positive int, got {task.channels!r}")
        _require(task.gate is None or isinstance(task.gate, MetricGate),
                 f"{where}.gate must be an edgeaudio.task.MetricGate or None, got {task.gate!r}")
        _require(isinstance(task.input_kind, InputKind),
                 f"{where}.input_kind must be an edgeaudio.task.InputKind (STREAM, CLIP or TEXT), got {task.input_kind!r}")
        _require(isinstance(task.result_kind, ResultKind),
                 f"{where}.result_kind must be an edgeaudio.task.ResultKind (WAVEFORM, EVENTS, TEXT or RECORDS), "
                 f"got {task.result_kind!r}")
        _require(task.input_kind is not InputKind.TEXT or type(task).generate is not Task.generate,
                 f"{where}.input_kind is TEXT but the task does not override generate()")
        _require(task.result_kind is not ResultKind.WAVEFORM or type(task).results_to_audio is not Task.results_to_audio,
                 f"{where}.result_kind is WAVEFORM but the task does not override results_to_audio() "
                 "(WAV files and the speaker take the audio from it)")
        if task.result_kind is ResultKind.EVENTS:
            classes = task.classes
            _require(isinstance(classes, (list, tuple)) and classes and all(isinstance(c, str) and c for c in classes),
                     f"{where}.result_kind is EVENTS but classes {classes!r} is not a non-empty list of class names")
            _require(len(set(classes)) == len(classes), f"{where}.classes has duplicates: {list(classes)}")
        if task.array:
            from edgeaudio.profiles import get_array

            mics = get_array(task.array, live_devices=[])[0].num_mics
            _require(mics == task.channels, f"{where}.array '{task.array}' has {mics} mics but channels is {task.channels}")
        return (f"{task.name} v{task.version}, {task.sample_rate} Hz, {task.channels} channel(s), "
                f"{task.input_kind.value} in, {task.result_kind.value} out")  # fmt: skip

    def _check_graphs(self, task: Task) -> str:
        graphs = _graphs_of(task)
        _require(graphs, f"task '{task.name}' graphs() returned no graphs")
        names = [g.name for g in graphs]
        _require(len(set(names)) == len(names), f"task '{task.name}' has duplicate graph names: {names}")
        for graph in graphs:
            _check_graph(task, graph)
        streaming = [g.name for g in graphs if g.streaming]
        if task.input_kind is InputKind.STREAM:
            _require(len(streaming) == 1, f"task '{task.name}' has input_kind STREAM but {len(streaming)} streaming "
                                          f"graph(s) {streaming}; it needs exactly one (a Graph with streaming set)")
        else:
            _require(not streaming, f"task '{task.name}' has input_kind {task.input_kind.name} but graph(s) {streaming} "
                                    "declare streaming; the runtime would stream them instead of running "
                                    f"{'whole clips' if task.input_kind is InputKind.CLIP else 'generate()'}")
        return f"{len(graphs)} graph(s) {names}; streaming: {streaming or 'none'}"

    def _check_export_parity(self, task: Task) -> str:
        bundle = self._bundle(task)
        parity = bundle.manifest["reports"]["parity"]
        lines = []
        for graph in bundle.manifest["graphs"]:
            report = parity.get(graph["name"], {})
            for backend in self.backends:
                key = f"{backend}/fp32"
                _require(key in report, f"graph '{graph['name']}': no parity report for {key} (reports: {sorted(report)})")
                bad = {out: r["max_abs"] for out, r in report[key].items() if not r["ok"]}
                _require(not bad, f"graph '{graph['name']}': {key} differs from the reference beyond tolerance: {bad}")
                worst = max((r["max_abs"] for r in report[key].values()), default=0.0)
                lines.append(f"{graph['name']} {key} max|err| {worst:.1e}")
        return "; ".join(lines)

    def _check_bundle_round_trip(self, task: Task) -> str:
        from edgeaudio.bundle import MANIFEST, load_bundle, sha256_file
        from edgeaudio.runtime import load

        bundle = self._bundle(task)
        on_disk = {p.relative_to(bundle.root).as_posix() for p in bundle.root.rglob("*") if p.is_file()} - {MANIFEST}
        listed = set(bundle.manifest["files"])
        _require(on_disk == listed, f"bundle files and manifest disagree: unlisted {sorted(on_disk - listed)}, "
                                    f"missing {sorted(listed - on_disk)}")
        for relative, digest in bundle.manifest["files"].items():
            _require(sha256_file(bundle.root / relative) == digest, f"bundle file {relative} does not match its sha256")
        archive = bundle.root.with_suffix(".eab")
        _require(archive.is_file(), f"the export wrote no archive at {archive}")
        unpacked = load_bundle(archive, extract_to=self.work / "unpacked")
        _require(unpacked.manifest == bundle.manifest, "the archive's manifest differs from the directory's")
        backend, precision = self.backends[0], "fp32"
        direct = self._example_raw(load(bundle, backend=backend, precision=precision))
        packed = self._example_raw(load(unpacked, backend=backend, precision=precision))
        _require(direct and direct.keys() == packed.keys(),
                 f"raw outputs differ between the directory ({sorted(direct)}) and the .eab archive ({sorted(packed)})")
        for name, value in direct.items():
            _require(np.array_equal(value, packed[name]), f"output '{name}' differs between the directory and the .eab archive")
        _require_tamper_refused(bundle, self.work / "tampered")
        return f"{len(listed)} files hashed; .eab ({archive.stat().st_size} bytes) loads identically; tampering refused"
