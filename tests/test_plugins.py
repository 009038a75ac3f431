"""Reliability of the plugin layer: conflicts, misspelled hooks, broken plugins, the environment switches.

Entry points are real: each fake plugin is a module plus a ``*.dist-info``
(METADATA, entry_points.txt) in a temporary directory, and the manager reads
the ``qcore`` group from that directory only.
"""

from __future__ import annotations

import importlib.metadata as importlib_metadata
import inspect
import sys
import textwrap
from pathlib import Path

import pytest

from qcore import hookspecs
from qcore.errors import PluginConflictError
from qcore.plugins import ENTRY_POINT_GROUP, PluginManager

KERNEL = '''
import qcore
from qcore.kernels import YES, KernelImpl

@qcore.hookimpl
def qcore_kernels():
    yield KernelImpl("{backend}", "quantize", "quantize", fn=lambda x, spec, s=None, z=None: None,
                     supports=lambda request, hardware: YES)
'''


class Site:
    """A temporary site directory of fake distributions, each registering one ``qcore`` entry point."""

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.root = root
        monkeypatch.syspath_prepend(str(root))
        monkeypatch.setattr("qcore.plugins.importlib_metadata.entry_points", self.entry_points)

    def entry_points(self, *, group: str) -> list[importlib_metadata.EntryPoint]:
        return [ep for dist in importlib_metadata.distributions(path=[str(self.root)])
                for ep in dist.entry_points if ep.group == group]

    def add(self, dist: str, version: str, name: str, source: str) -> None:
        module = f"fake_{dist.replace('-', '_')}"
        (self.root / f"{module}.py").write_text(textwrap.dedent(source))
        info = self.root / f"{dist.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
        (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n{name} = {module}\n")

    def manager(self) -> PluginManager:
        return PluginManager()


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Site:
    for mod in [m for m in sys.modules if m.startswith("fake_")]:
        monkeypatch.delitem(sys.modules, mod)
    return Site(tmp_path, monkeypatch)


def test_same_kernel_id_from_two_plugins_is_a_conflict_naming_both(site: Site) -> None:
    site.add("vendor-one", "1.2.0", "one", KERNEL.format(backend="shared"))
    site.add("vendor-two", "3.4.5", "two", KERNEL.format(backend="shared"))
    with pytest.raises(PluginConflictError) as err:
        site.manager().kernels()
    message = str(err.value)
    assert "shared/quantize" in message
    assert "vendor-one 1.2.0" in message and "vendor-two 3.4.5" in message
    assert "QCORE_DISABLE_PLUGINS" in message


def test_misspelled_hook_is_a_problem_at_load_and_the_rest_loads(site: Site) -> None:
    site.add("typo", "0.1", "typo", """
        import qcore

        @qcore.hookimpl
        def qcore_kernel():
            return []
    """)
    site.add("fine", "1.0", "fine", KERNEL.format(backend="fine"))
    manager = site.manager()
    assert {k.backend for k in manager.kernels().values()} == {"fine"}
    (problem,) = manager.problems
    assert problem.plugin == "typo" and problem.hook is None and "qcore_kernel" in problem.error
    assert "typo 0.1" in problem.describe()
    assert "typo" not in manager.plugins


def test_plugins_raising_at_import_or_in_a_hook_are_isolated(site: Site) -> None:
    site.add("bad-import", "0.1", "bad-import", "raise ImportError('needs libfoo.so')\n")
    site.add("bad-hook", "0.2", "bad-hook", """
        import qcore

        @qcore.hookimpl
        def qcore_kernels():
            raise RuntimeError("probe exploded")
    """)
    site.add("fine", "1.0", "fine", KERNEL.format(backend="fine"))
    manager = site.manager()
    assert {k.backend for k in manager.kernels().values()} == {"fine"}
    problems = {p.plugin: p for p in manager.problems}
    assert set(problems) == {"bad-import", "bad-hook"}
    assert problems["bad-import"].hook is None and "ImportError: needs libfoo.so" in problems["bad-import"].error
    assert problems["bad-hook"].hook == "qcore_kernels" and "RuntimeError: probe exploded" in problems["bad-hook"].error
    assert "bad-hook (bad-hook 0.2) failed in hook qcore_kernels" in problems["bad-hook"].describe()
    assert "Traceback" in problems["bad-import"].detail


def test_disable_plugins_skips_the_named_entry_points(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    site.add("one", "1.0", "one", KERNEL.format(backend="one"))
    site.add("two", "1.0", "two", KERNEL.format(backend="two"))
    site.add("three", "1.0", "three", "raise ImportError('never imported')\n")
    monkeypatch.setenv("QCORE_DISABLE_PLUGINS", "two, three")
    manager = site.manager()
    assert {k.backend for k in manager.kernels().values()} == {"one"}
    assert sorted(manager.disabled) == ["three", "two"] and manager.problems == []


def test_trace_plugins_prints_hook_calls_to_stderr(site: Site, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    site.add("one", "1.0", "one", KERNEL.format(backend="traced"))
    site.manager().kernels()
    assert "qcore_kernels" not in capsys.readouterr().err
    monkeypatch.setenv("QCORE_TRACE_PLUGINS", "1")
    site.manager().kernels()
    err = capsys.readouterr().err
    assert "qcore_kernels" in err and "traced/quantize" in err and "one 1.0" in err


def test_every_hookspec_is_documented_with_an_example() -> None:
    hooks = [(n, f) for n, f in inspect.getmembers(hookspecs.QcoreSpecs, inspect.isfunction) if n.startswith("qcore_")]
    assert {n for n, _ in hooks} >= {"qcore_schemes", "qcore_observers", "qcore_kernels", "qcore_hardware"}
    for name, fn in hooks:
        doc = inspect.getdoc(fn) or ""
        assert len(doc.splitlines()) >= 3, f"{name} has no real docstring"
        assert "Example::" in doc and "@qcore.hookimpl" in doc, f"{name}'s docstring has no copyable example"


def test_entry_point_naming_a_module_without_hooks_is_a_problem(site: Site) -> None:
    """The entry point names the package, not the module with the hooks: reported, not silently empty."""
    site.add("wrong-module", "0.3", "wrong-module", "HELLO = 1\n")
    manager = site.manager()
    (problem,) = manager.problems
    assert problem.plugin == "wrong-module" and problem.hook is None
    assert "implements none of qcore's hooks" in problem.error and "qcore_kernels" in problem.error
    assert "wrong-module" not in manager.plugins


def test_qcore_backends_shows_a_plugin_that_failed_to_load_as_a_row(site: Site) -> None:
    from rich.console import Console

    from qcore.commands.backends import print_backends

    site.add("unimportable", "0.1", "unimportable", "import module_that_is_not_installed\n")
    site.add("fine", "1.0", "fine", KERNEL.format(backend="fine"))
    console = Console(record=True, width=400)
    print_backends(console, site.manager())
    rows = [line for line in console.export_text().splitlines() if "unimportable" in line]
    assert len(rows) == 1, rows
    assert "unimportable (unimportable 0.1)" in rows[0] and "failed to load" in rows[0]
    assert "ModuleNotFoundError: No module named 'module_that_is_not_installed'" in rows[0]
