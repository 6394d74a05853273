"""The plugin system: entry points, the allowlist, failing plugins, documented hooks."""

from __future__ import annotations

import inspect
import sys
import textwrap
from pathlib import Path

import pytest

from edgeaudio import hookspecs, registry

BUILTINS = {
    "backend.onnxruntime", "backend.openvino", "backend.tensorrt", "backend.torch",
    "target.onnxruntime", "target.openvino", "target.tensorrt", "profiles",
}


@pytest.fixture
def fresh_registry(monkeypatch):
    """Reload entry points for this test and restore a clean registry afterwards."""
    registry.reset()
    yield
    monkeypatch.undo()
    registry.reset()


@pytest.fixture
def third_party(tmp_path, monkeypatch):
    """Install two real third-party entry points on sys.path: one good plugin, one broken."""
    site = tmp_path / "site"
    (site / "goodplug").mkdir(parents=True)
    (site / "goodplug" / "__init__.py").write_text(textwrap.dedent("""
        from edgeaudio.hookspecs import hookimpl
        from edgeaudio.task import Task

        class EchoTask(Task):
            name = "echo"

        @hookimpl
        def register_tasks(register):
            register(EchoTask)
    """))
    (site / "badplug.py").write_text("import does_not_exist_anywhere\n")
    dist = site / "thirdparty_demo-0.3.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: thirdparty-demo\nVersion: 0.3\n")
    (dist / "entry_points.txt").write_text("[edgeaudio]\ngood = goodplug\nbad = badplug\n")
    monkeypatch.syspath_prepend(str(site))
    yield
    for name in ("goodplug", "badplug"):
        sys.modules.pop(name, None)


def test_builtins_load_through_entry_points(fresh_registry):
    loaded = {p["name"] for p in registry.plugin_info()}
    assert BUILTINS <= loaded
    assert registry.failures() == []


def test_check_pending_finds_no_misspelled_hooks(fresh_registry):
    registry.get_plugin_manager().check_pending()


def test_broken_plugin_is_reported_and_others_still_load(fresh_registry, third_party):
    from edgeaudio.tasks import task_classes

    failures = {f.name: f.error for f in registry.failures()}
    assert "ModuleNotFoundError" in failures["bad"] and "does_not_exist_anywhere" in failures["bad"]
    assert "echo" in task_classes()
    info = {p["name"]: p for p in registry.plugin_info()}
    assert info["good"]["distribution"] == "thirdparty-demo" and info["good"]["version"] == "0.3"
    assert info["good"]["hooks"] == ["register_tasks"]


def test_allowlist_limits_loading(fresh_registry, third_party, monkeypatch):
    monkeypatch.setenv("EDGEAUDIO_LOAD_PLUGINS", "good, backend.onnxruntime")
    registry.reset()
    assert {p["name"] for p in registry.plugin_info()} == {"good", "backend.onnxruntime"}
    assert registry.failures() == []  # the broken plugin was never imported


def test_empty_allowlist_loads_nothing(fresh_registry, monkeypatch):
    monkeypatch.setenv("EDGEAUDIO_LOAD_PLUGINS", "")
    registry.reset()
    assert registry.plugin_info() == []
    from edgeaudio.backends.base import backends

    assert backends() == {}


def test_hook_that_raises_is_isolated(fresh_registry, register_plugin):
    class Broken:
        @hookspecs.hookimpl
        def register_backends(self, register):
            raise RuntimeError("boom")

    register_plugin(Broken(), "broken")
    from edgeaudio.backends.base import backends

    assert "onnxruntime" in backends()
    assert any(f.name == "broken" and "boom" in f.error for f in registry.failures())


def _hook_names() -> list[str]:
    return [name for name, obj in inspect.getmembers(hookspecs, inspect.isfunction) if hasattr(obj, "edgeaudio_spec")]


def test_every_hook_is_documented_in_code_and_readme():
    names = _hook_names()
    assert {"register_tasks", "register_export_targets", "register_backends", "register_profiles", "register_commands"} <= set(names)
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    for name in names:
        doc = inspect.getdoc(getattr(hookspecs, name)) or ""
        for section in ("Called:", "Args:", "Returns:"):
            assert section in doc, f"hook {name} docstring lacks '{section}'"
        assert f"`{name}(" in readme, f"hook {name} is missing from the README's hooks reference"


def test_plugin_adds_a_cli_command(fresh_registry, register_plugin):
    import click
    from click.testing import CliRunner

    from edgeaudio import cli as cli_module

    class AddsCommand:
        @hookspecs.hookimpl
        def register_commands(self, cli):
            @cli.command("hello-plugin")
            def hello():
                click.echo("hello from a plugin")

    class BrokenCommand:
        @hookspecs.hookimpl
        def register_commands(self, cli):
            raise RuntimeError("cannot add")

    register_plugin(AddsCommand(), "adds")
    register_plugin(BrokenCommand(), "broken-cli")
    try:
        cli_module._attach_plugin_commands()
        result = CliRunner().invoke(cli_module.cli, ["hello-plugin"])
        assert result.output == "hello from a plugin\n"
        assert any(f.name == "broken-cli" and "cannot add" in f.error for f in registry.failures())
    finally:
        cli_module.cli.commands.pop("hello-plugin", None)
