"""The core's shape, checked from its source: layers that point down only, no import cycles, no
task names in code, and a run path that imports no training or data-building code.

The import graph is read with ``ast`` (every import, also those inside functions, since a lazy
import is still a dependency; imports under ``if TYPE_CHECKING:`` are annotations only and are
skipped). ``exporters/`` installs as ``edgeaudio.exporters`` through pyproject's package mapping,
which the graph follows.
"""

from __future__ import annotations

import ast
import io
import os
import re
import subprocess
import sys
import tokenize
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"edgeaudio": ROOT / "edgeaudio", "edgeaudio.exporters": ROOT / "exporters"}

# Lower rank = lower layer; a module may import only modules of its own rank or lower (ARCHITECTURE.md).
LAYERS = [
    (0, ["edgeaudio", "edgeaudio.errors", "edgeaudio.hookspecs", "edgeaudio.graphspec", "edgeaudio.options",
         "edgeaudio.cache", "edgeaudio.staging", "edgeaudio.signing", "edgeaudio.fingerprint"]),
    (1, ["edgeaudio.registry"]),
    (2, ["edgeaudio.audio", "edgeaudio.profiles"]),
    (3, ["edgeaudio.bundle", "edgeaudio.events", "edgeaudio.weights"]),
    (4, ["edgeaudio.backends"]),
    (5, ["edgeaudio.task", "edgeaudio.tasks"]),
    (6, ["edgeaudio.runtime"]),
    (7, ["edgeaudio.live", "edgeaudio.bench", "edgeaudio.training", "edgeaudio.exporters"]),
    (8, ["edgeaudio.api", "edgeaudio.testing"]),
    (9, ["edgeaudio.cli", "edgeaudio.templates"]),
]
# Training data and the training loop are for trainers and benchmarks: no core module uses them.
TRAINING_ONLY = ("edgeaudio.events", "edgeaudio.training")
TASK_WORDS = re.compile(r"\b(seld|caption|tta|enhance|bwe|dcase|azimuth)\b", re.I)


def _rank(module: str) -> int:
    best = None
    for rank, prefixes in LAYERS:
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and (best is None or len(prefix) > len(best[1])):
                best = (rank, prefix)
    assert best is not None, f"{module} is in no layer: add it to LAYERS in {Path(__file__).name}"
    return best[0]


def _modules() -> dict[str, Path]:
    found = {}
    for package, folder in FOLDERS.items():
        for path in folder.rglob("*.py"):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([package, *parts])] = path
    return found


def _type_checking_lines(tree: ast.AST) -> set[int]:
    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules ``path`` imports (the longest known module name each import names)."""
    tree = ast.parse(path.read_text())
    skip = _type_checking_lines(tree)
    named = set()
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.Import):
            named.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            named.update(f"{node.module}.{alias.name}" for alias in node.names)
            named.add(node.module)
    found = set()
    for name in named:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        if name.startswith("edgeaudio"):
            found.add(name)
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(path, modules) - {name} for name, path in modules.items()}


def test_imports_point_down_only(graph):
    upward = [f"{m} (layer {_rank(m)}) imports {d} (layer {_rank(d)})"
              for m, deps in graph.items() for d in deps
              if d in graph and _rank(d) > _rank(m) and not m.startswith(d + ".")]
    assert not upward, "\n".join(sorted(upward))


def test_the_core_imports_no_plugin_and_no_training_code(graph):
    wrong = [f"{m} imports {d}" for m, deps in graph.items() for d in deps
             if d.startswith("edgeaudio.plugins")
             or (d.startswith(TRAINING_ONLY) and not m.startswith(TRAINING_ONLY))]
    assert not wrong, "\n".join(sorted(wrong))


def test_backends_know_no_task(graph):
    wrong = [f"{m} imports {d}" for m, deps in graph.items() if m.startswith("edgeaudio.backends")
             for d in deps if d in ("edgeaudio.task", "edgeaudio.tasks", "edgeaudio.runtime")]
    assert not wrong, "\n".join(wrong)


def test_no_import_cycles(graph):
    """No module reaches itself through imports (a package's ``__init__`` re-exporting its own
    submodules is not a cycle: the edge from a submodule up to its package is left out)."""
    edges = {m: {d for d in deps if d in graph and not (d != m and m.startswith(d + "."))} for m, deps in graph.items()}
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                cycles.append(path[path.index(nxt):] + [nxt] if nxt in path else [node, nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


def _code_lines_with_task_words(path: Path) -> list[str]:
    """Lines where a task's name appears outside docstrings and comments."""
    source = path.read_text()
    docstrings = set()
    for node in ast.walk(ast.parse(source)):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                and isinstance(body[0].value.value, str):
            docstrings.update(range(body[0].lineno, body[0].end_lineno + 1))
    hits = []
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type in (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE) or token.start[0] in docstrings:
            continue
        if TASK_WORDS.search(token.string):
            hits.append(f"{path.relative_to(ROOT)}:{token.start[0]}: {token.line.strip()}")
    return hits


def test_no_task_names_in_core_code():
    """The core dispatches on declared capabilities, never on a task's name (examples in
    docstrings are allowed)."""
    hits = [hit for path in sorted((ROOT / "edgeaudio").rglob("*.py")) for hit in _code_lines_with_task_words(path)]
    assert not hits, "\n".join(hits)


# Export targets register through the plugin hook, so their light modules load with every
# command; the export code itself (torch -> ONNX, the pipeline) must not. Edition facts
# (events.editions/recipe) are data a sidecar is read with; the library and its builder are not.
RUN_PATH_FORBIDDEN = re.compile(
    r"^(torch|edgeaudio\.training|edgeaudio\.events\.(library|build_library|cutting|debian|recordings)"
    r"|edgeaudio\.exporters\.(pipeline|onnx)"
    r"|edgeaudio\.plugins\.\w+\.(train|data|build_corpus|starss|scenes|simulated|mixtures|event_library))(\.|$)")


@pytest.mark.slow
@pytest.mark.parametrize("task, args", [
    ("seld", ["--input", "examples/scenes/respeaker-4mic-scene.wav"]),
    ("enhance", ["--input", "plugins/enhance/validation/noisy/0003.wav", "-o", "{tmp}/out.wav"]),
    ("bwe", ["--input", "plugins/enhance/validation/clean/0003.wav", "-o", "{tmp}/out.wav", "--offline"]),
    ("caption", ["--input", "plugins/enhance/validation/clean/0003.wav", "--offline"]),
    ("tta", ["a horn honks", "-o", "{tmp}/out.wav", "--seconds", "1", "--steps", "2", "--candidates", "1"]),
])
def test_run_path_imports_no_torch_training_or_data_code(task, args, tmp_path):
    """``edgeaudio run TASK`` the first time, with an empty cache: what a board runs. The task's
    default model comes from the bundle the package ships, so nothing is exported; the modules
    loaded are read from ``python -X importtime``, which lists every import as it happens."""
    args = [a.format(tmp=tmp_path) for a in args]
    env = {**os.environ, "PYTHONPATH": "", "EDGEAUDIO_CACHE": str(tmp_path / "empty-cache")}
    run = subprocess.run([sys.executable, "-X", "importtime", "-m", "edgeaudio.cli", "run", task, *args], cwd=ROOT, env=env,
                         capture_output=True, text=True)  # fmt: skip
    assert run.returncode == 0, run.stderr
    imported = [line.split("|")[-1].strip() for line in run.stderr.splitlines() if line.startswith("import time:")]
    assert "edgeaudio.runtime" in imported and "onnxruntime" in imported, "no import list in the output"
    loaded = [name for name in imported if RUN_PATH_FORBIDDEN.match(name)]
    assert not loaded, f"run {task} imported {loaded}"
    assert "exporting" not in run.stderr, f"run {task} exported instead of using the shipped bundle:\n{run.stderr}"
