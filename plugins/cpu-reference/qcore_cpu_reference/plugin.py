"""Registration of the cpu-reference backend: one slow, exact kernel per op, on CPU.

The kernels are imported on first call (`_lazy`), so importing this module and
collecting its descriptors costs nothing; NumPy is only loaded when needed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from qcore.descriptors import BackendInfo
from qcore.hookspecs import hookimpl
from qcore.kernels import OPS, YES, KernelImpl, KernelRequest, Support, no

BACKEND = "cpu-reference"
PRIORITY = -100  # negative: a slow generic path, a fallback in the matcher's strict mode


def _lazy(name: str) -> Callable[..., Any]:
    """A callable that imports `qcore_cpu_reference.ops` on first use and calls `ops.<name>`."""

    def call(*args: Any, **kwargs: Any) -> Any:
        from qcore_cpu_reference import ops

        return getattr(ops, name)(*args, **kwargs)

    call.__name__ = call.__qualname__ = name
    return call


def supports(request: KernelRequest, hardware: Any) -> Support:
    """Every dtype, granularity and scheme of the contract, on CPU."""
    if request.device != "cpu":
        return no(f"the NumPy reference runs on cpu only, not {request.device}")
    return YES


@hookimpl
def qcore_kernels() -> Iterator[KernelImpl]:
    for op in OPS:
        yield KernelImpl(
            BACKEND,
            op,
            op,
            fn=_lazy(op),
            supports=supports,
            devices=("cpu",),
            priority=PRIORITY,
            prepare=_lazy("prepare_linear") if op == "linear" else None,
            description=f"NumPy oracle of {op}: exactly docs/numerics.md, float64, slow",
        )


@hookimpl
def qcore_hardware() -> Iterator[BackendInfo]:
    import numpy as np

    yield BackendInfo(BACKEND, True, devices=("cpu",), capabilities=(f"numpy {np.__version__}", "float64 oracle"))
