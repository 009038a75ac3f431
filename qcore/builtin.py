"""qcore's own plugin: the preset schemes, the built-in observers and algorithms, through the same hooks as everyone."""

from __future__ import annotations

from collections.abc import Iterator

from qcore.algorithm import AlgorithmImpl
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


@hookimpl
def qcore_algorithms() -> Iterator[AlgorithmImpl]:
    from qcore.algorithms import builtin_algorithms

    yield from builtin_algorithms()
