"""Hook implementations of the cupy-cuda backend.

Importing this module imports neither CuPy nor any kernel module: the hooks
return descriptors whose callables import them on first use, and
`qcore_hardware` probes CuPy only when qcore asks.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Iterator
from typing import Any

from qcore.descriptors import BackendInfo
from qcore.hookspecs import hookimpl
from qcore.kernels import KernelImpl

from qcore_cupy_cuda import support

BACKEND = "cupy-cuda"
CUDA = ("cuda",)


def _lazy(module: str, name: str) -> Callable[..., Any]:
    """A callable that imports ``qcore_cupy_cuda.<module>`` on its first call (and so CuPy only then)."""
    resolve = functools.cache(lambda: getattr(importlib.import_module(f"qcore_cupy_cuda.{module}"), name))

    def call(*args: Any, **kwargs: Any) -> Any:
        return resolve()(*args, **kwargs)

    call.__name__ = call.__qualname__ = name
    call.__doc__ = f"qcore_cupy_cuda.{module}.{name}, imported on first call."
    return call


@hookimpl
def qcore_hardware() -> Iterator[BackendInfo]:
    from qcore_cupy_cuda.runtime import probe

    yield probe()


@hookimpl
def qcore_kernels() -> Iterator[KernelImpl]:
    yield KernelImpl(
        BACKEND, "quantize", "quantize", fn=_lazy("quant", "quantize"), supports=support.tensor_op,
        devices=CUDA, priority=5,
        description="int8/int4 codes in CUDA C (double quotient, rint), qparams from qcore.qparams",
    )
    yield KernelImpl(
        BACKEND, "dequantize", "dequantize", fn=_lazy("quant", "dequantize"), supports=support.tensor_op,
        devices=CUDA, priority=5, description="(code - zero_point) * scale in CUDA C",
    )
    yield KernelImpl(
        BACKEND, "linear-w8a8-dp4a", "linear", fn=_lazy("linear", "linear_w8a8"),
        prepare=_lazy("linear", "prepare_w8a8"), supports=support.w8a8, devices=CUDA, priority=5, accumulation="int32",
        description="per-token int8 activations, __dp4a int8 GEMM with int32 accumulation, fused rescale + bias",
    )
    yield KernelImpl(
        BACKEND, "linear-w4a16-gemv", "linear", fn=_lazy("linear", "linear_w4a16"),
        prepare=_lazy("linear", "prepare_w4a16"), supports=support.w4a16, devices=CUDA, priority=20,
        description="decode GEMV: int4 group weights packed two a byte, dequantized in registers",
    )
