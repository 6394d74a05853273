"""pyproject's extras match roles, and every "missing package" hint names the extra that installs
the package: errors.EXTRAS and every ``require()`` call in the source, checked against
pyproject.toml."""

from __future__ import annotations

import ast
import re
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

from edgeaudio.errors import EXTRAS, MissingExtra, require

ROOT = Path(__file__).resolve().parents[1]
ROLES = {"export", "train", "openvino", "tensorrt", "mic", "plot", "dfn3", "dev"}

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    tomllib = pytest.importorskip("tomli")


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].lower().replace("_", "-") for r in requirements}


def _distribution(module: str) -> str:
    """The distribution that provides a top-level module (its own name when not installed here)."""
    found = packages_distributions().get(module, [module])
    return found[0].lower().replace("_", "-")


def _require_calls() -> list[tuple[str, str, str | None]]:
    """(where, module, extra or None) of every ``require(...)`` call under edgeaudio/, exporters/, plugins/."""
    calls = []
    for folder in ("edgeaudio", "exporters", "plugins"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "require" and node.args:
                    args = [a.value for a in node.args if isinstance(a, ast.Constant)]
                    calls.append((f"{path.relative_to(ROOT)}:{node.lineno}", args[0], args[1] if len(args) > 1 else None))
    return calls


def test_extras_are_the_roles_and_torch_stays_pinned():
    project = _project()
    extras = project["optional-dependencies"]
    assert set(extras) == ROLES
    assert "torch" not in _names(project["dependencies"]), "the base install runs bundles without torch"
    for name, requirements in extras.items():
        torch = [r for r in requirements if _names([r]) == {"torch"}]
        assert all(r == "torch==2.13.0" for r in torch), f"[{name}] must pin torch==2.13.0: {torch}"
    assert "torch==2.13.0" in extras["export"] and "torch==2.13.0" in extras["train"]


def test_every_listed_module_comes_from_its_extra():
    project = _project()
    extras = project["optional-dependencies"]
    base = _names(project["dependencies"])
    for module, extra in EXTRAS.items():
        provided = _names(extras[extra]) if extra else base
        assert _distribution(module) in provided, f"{module}: not installed by {f'[{extra}]' if extra else 'the base install'}"
        if extra not in (None, "tensorrt"):  # TensorRT comes from NVIDIA (JetPack), never with [dev]
            assert _distribution(module) in _names(extras["dev"]), f"{module} is missing from [dev]"


def test_every_require_call_names_an_extra_that_installs_the_module():
    extras = _project()["optional-dependencies"]
    calls = _require_calls()
    assert len(calls) > 20, "the scan found too few require() calls"
    for where, module, extra in calls:
        top = module.split(".")[0]
        assert extra is not None or top in EXTRAS, f"{where}: require('{module}') names no extra and EXTRAS lacks '{top}'"
        if extra is not None:
            assert extra in extras and _distribution(top) in _names(extras[extra]), f"{where}: [{extra}] does not install {top}"


def test_the_torch_hint_names_the_export_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # an install without torch: importing it fails
    with pytest.raises(MissingExtra) as caught:
        require("torch")
    assert caught.value.hint == 'pip install "edgeaudio[export]"'
    with pytest.raises(MissingExtra) as caught:
        require("torch", "train")
    assert caught.value.hint == 'pip install "edgeaudio[train]"'


def test_a_module_without_a_known_extra_is_a_programming_error():
    with pytest.raises(ValueError, match="no extra is known for 'json'"):
        require("json")
