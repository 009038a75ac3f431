"""Registration of the triton-gpu backend: descriptors only, nothing imported or probed until needed.

Every kernel declares ``devices=("cuda",)``, so the matcher never offers it
for CPU tensors; `qcore_hardware` says why the backend is unavailable (no
CUDA device, or triton missing) instead of failing.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from typing import Any

from qcore.descriptors import BackendInfo
from qcore.hookspecs import hookimpl
from qcore.kernels import KernelImpl
from qcore_triton_gpu import support
from qcore_triton_gpu.support import BACKEND

PRIORITY = 50
"""Above the portable backends: these are the fused GPU paths."""


def _lazy(module: str, name: str) -> Callable[..., Any]:
    """A callable that imports `qcore_triton_gpu.<module>` (and so triton) on first use and calls `<name>`."""

    def call(*args: Any, **kwargs: Any) -> Any:
        return getattr(importlib.import_module(f"qcore_triton_gpu.{module}"), name)(*args, **kwargs)

    call.__name__ = call.__qualname__ = name
    return call


@hookimpl
def qcore_kernels() -> Iterator[KernelImpl]:
    def kernel(name: str, op: str, fn: Callable[..., Any], supports: Callable[..., Any], description: str,
               prepare: Callable[..., Any] | None = None, accumulation: str = "float32") -> KernelImpl:
        return KernelImpl(BACKEND, name, op, fn=fn, supports=supports, devices=("cuda",), priority=PRIORITY,
                          prepare=prepare, description=description, accumulation=accumulation)

    yield kernel("quantize", "quantize", _lazy("quantize", "quantize"), support.supports_quantize,
                 "elementwise codes for every granularity; float64 quotient, half-to-even; qparams via qcore.qparams")
    yield kernel("dequantize", "dequantize", _lazy("quantize", "dequantize"), support.supports_quantize,
                 "float32((q - zero_point) * scale), elementwise")
    yield kernel("pack-int4", "pack_weight", _lazy("quantize", "pack_weight"), support.supports_pack,
                 "two 4-bit codes a byte, low nibble first")
    yield kernel("unpack-int4", "unpack_weight", _lazy("quantize", "unpack_weight"), support.supports_pack,
                 "4-bit codes from bytes, sign-extended for int4")
    yield kernel("linear-w8a8", "linear", _lazy("linear", "w8a8_linear"), support.supports_w8a8,
                 "int8 activation rows quantized in one kernel (contract-exact), then a grouped int8 tensor-core "
                 "GEMM (int32 accumulation) with per-token x per-channel rescale and bias in the epilogue",
                 prepare=_lazy("linear", "prepare_w8a8"), accumulation="int32")
    yield kernel("linear-weight-only", "linear", _lazy("linear", "weight_only_linear"), support.supports_weight_only,
                 "int8/int4 weights (4-bit packed) dequantized per group/channel inside the GEMM: a split-K GEMV "
                 "up to 4 rows (decoding), a tf32 tl.dot GEMM above", prepare=_lazy("linear", "prepare_weight_only"),
                 accumulation="tfloat32")


@hookimpl
def qcore_hardware() -> Iterator[BackendInfo]:
    try:
        import triton
    except Exception as exc:  # a broken triton install must not break qcore
        yield BackendInfo(BACKEND, False, f"triton cannot be imported: {type(exc).__name__}: {exc}")
        return
    import torch

    if not torch.cuda.is_available():
        yield BackendInfo(BACKEND, False, "no CUDA device (torch.cuda.is_available() is False)")
        return
    from qcore.hardware import detect

    sm = support.min_sm(detect())
    caps = [f"sm_{d.sm}" for d in detect().cuda] + [f"triton {triton.__version__}"]
    if sm is not None and sm >= support.INT8_DOT_SM:
        caps.append("int8-dot")
    if sm is not None and sm >= support.FP8_SM:
        caps.append("fp8")
    yield BackendInfo(BACKEND, True, devices=("cuda",), capabilities=tuple(dict.fromkeys(caps)))
