"""The compiled library, loaded on first use through ctypes, and the C structures it reads.

`library()` never raises: a library that is missing or cannot load is an `Unavailable` with the reason,
which `qcore backends` shows. The C side checks the ISA itself before running a kernel, so a kernel
called on a CPU without its instructions returns an error instead of crashing.
"""

from __future__ import annotations

import ctypes
import functools
import importlib.util
import platform

import attrs
import torch

from qcore.errors import NonFiniteError
from qcore.qparams import check_finite

MODULE = "qcore_cpu_native._kernels"

OK, NONFINITE, NO_ISA, BAD_ARGS = 0, 1, -1, -2


class Int8Layer(ctypes.Structure):
    """QnInt8Layer of csrc/qnative.h."""

    _fields_ = [("isa", ctypes.c_int32), ("act_mode", ctypes.c_int32), ("n", ctypes.c_int64),
                ("k", ctypes.c_int64), ("bp", ctypes.c_void_p), ("colsum", ctypes.c_void_p),
                ("wscale", ctypes.c_void_p), ("bias", ctypes.c_void_p), ("act_scale", ctypes.c_float),
                ("act_zero_point", ctypes.c_int32), ("qmin", ctypes.c_int32), ("qmax", ctypes.c_int32)]


class WeightOnlyLayer(ctypes.Structure):
    """QnWeightOnlyLayer of csrc/qnative.h."""

    _fields_ = [("isa", ctypes.c_int32), ("bits", ctypes.c_int32), ("signed_codes", ctypes.c_int32),
                ("reserved", ctypes.c_int32), ("n", ctypes.c_int64), ("k", ctypes.c_int64),
                ("group", ctypes.c_int64), ("bp", ctypes.c_void_p), ("scales", ctypes.c_void_p),
                ("zeros", ctypes.c_void_p), ("bias", ctypes.c_void_p)]


@attrs.frozen
class Unavailable:
    reason: str


@attrs.frozen(eq=False)
class Library:
    """The loaded library's entry points and the ISA features the CPU and OS offer (a QnFeature bit set)."""

    linear_int8: ctypes._CFuncPtr
    linear_weight_only: ctypes._CFuncPtr
    quantize_rows: ctypes._CFuncPtr
    features: int
    path: str


def _bind(lib: ctypes.CDLL) -> tuple[ctypes._CFuncPtr, ...]:
    ptr, i64, i32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int32
    lib.qn_cpu_features.restype = ctypes.c_uint32
    lib.qn_cpu_features.argtypes = []
    for name in ("qn_linear_int8", "qn_linear_weight_only"):
        getattr(lib, name).restype = i32
        getattr(lib, name).argtypes = [ptr, ptr, i64, ptr, i32]
    lib.qn_quantize_rows.restype = i32
    lib.qn_quantize_rows.argtypes = [ptr, ptr, i64, ptr, ptr, ptr]
    return lib.qn_linear_int8, lib.qn_linear_weight_only, lib.qn_quantize_rows


@functools.cache
def library() -> Library | Unavailable:
    """Load the library once per process; why not, when it cannot be."""
    if platform.machine() not in ("x86_64", "AMD64"):
        return Unavailable(f"x86-64 kernels only; this machine is {platform.machine()}")
    spec = importlib.util.find_spec(MODULE)
    if spec is None or not spec.origin:
        return Unavailable(f"the compiled library {MODULE} is not built: reinstall the plugin with a C++ "
                           "compiler present (pip install -e plugins/cpu-native)")
    # torch is imported above: its libgomp is loaded before this library, which then shares its threads
    try:
        lib = ctypes.CDLL(spec.origin)
        functions = _bind(lib)
    except (OSError, AttributeError) as exc:
        return Unavailable(f"the compiled library {spec.origin} cannot be loaded: {exc}")
    return Library(*functions, features=int(lib.qn_cpu_features()), path=spec.origin)


def check(status: int, what: str, rows: torch.Tensor) -> None:
    """Turn a C status into the error it stands for; on NaN/Inf in `rows`, the contract's (`check_finite`)."""
    if status == OK:
        return
    if status == NONFINITE:
        check_finite(rows, f"{what} input")
        raise NonFiniteError(f"{what}: non-finite input")
    if status == NO_ISA:
        raise RuntimeError(f"{what}: this CPU lacks the instructions of the kernel (see `qcore backends`)")
    raise RuntimeError(f"{what}: the library rejected its arguments (status {status})")
