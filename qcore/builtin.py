"""qcore's own plugin: the preset schemes and the built-in observers, through the same hooks as everyone."""

from __future__ import annotations

from collections.abc import Iterator

from qcore.descriptors import ObserverImpl
from qcore.hookspecs import hookimpl
from qcore.spec import PRESETS, QuantScheme


@hookimpl
def qcore_schemes() -> Iterator[QuantScheme]:
    yield from PRESETS.values()


@hookimpl
def qcore_observers() -> Iterator[ObserverImpl]:
    from qcore.observers import builtin_observers

    yield from builtin_observers()
