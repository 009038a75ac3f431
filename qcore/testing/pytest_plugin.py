"""The pytest side of the kit: ``pytest -p qcore.testing --qcore-backend NAME [--qcore-device cpu|cuda]``.

Each (kernel, case, device) becomes one test item; a case the kernel
declines is skipped with the kernel's reason; a broken rule fails with the
rule, the first mismatching index, expected and got values, and the seed.

Plugin authors also get the `qcore_manager` fixture: a fresh
`PluginManager` holding only the plugins a test gives it, set as the
process-wide manager for that test and restored after.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from qcore.plugins import PluginManager, set_manager
from qcore.testing.runner import Conformance, Job


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("qcore", "qcore conformance kit")
    group.addoption("--qcore-backend", metavar="NAME", help="run the conformance suite against this backend")
    group.addoption("--qcore-device", choices=("cpu", "cuda"), action="append",
                    help="only this device (repeatable); default: every device the backend claims that exists")


class ConformanceItem(pytest.Item):
    """One conformance job; runs through the same `Conformance.run` as ``qcore conformance``."""

    def __init__(self, *, suite: Conformance, job: Job, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.suite, self.job = suite, job

    def runtest(self) -> None:
        result = self.suite.run(self.job)
        if result.status == "unsupported":
            pytest.skip(f"unsupported: {result.message}")
        if result.status == "fail":
            raise ConformanceFailure(result.message)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        if isinstance(excinfo.value, ConformanceFailure):
            return str(excinfo.value)
        return str(super().repr_failure(excinfo, style))

    def reportinfo(self) -> tuple[str, int | None, str]:
        return "qcore-conformance", None, self.job.id


class ConformanceFailure(AssertionError):
    """A broken rule; its message is the whole report for that item."""


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    backend = config.getoption("--qcore-backend")
    if not backend:
        return
    suite = Conformance(backend, devices=config.getoption("--qcore-device"))
    items.extend(ConformanceItem.from_parent(session, name=job.id, suite=suite, job=job) for job in suite.jobs())


@pytest.fixture
def qcore_manager() -> Iterator[Callable[..., PluginManager]]:
    """Factory: ``qcore_manager(my_plugin, other=obj)`` → a fresh manager with only those plugins.

    Positional plugins are registered under their ``__name__``; keywords give
    the name. No entry point is scanned. The manager becomes the process-wide
    one (what `qcore.get_manager()` returns) until the test ends.
    """
    previous = set_manager(None)
    try:
        def make(*plugins: object, **named: object) -> PluginManager:
            table = {getattr(p, "__name__", type(p).__name__): p for p in plugins} | named
            manager = PluginManager(table, entry_points=False)
            set_manager(manager)
            return manager

        yield make
    finally:
        set_manager(previous)
