"""Hook implementations of cpu-native: one linear kernel per (family, ISA), so the matcher measures them.

The int8 GEMMs (w8a8 dynamic and static) exist for AVX2, AVX-VNNI and AVX512-VNNI; the weight-only
kernels (w8a16, w4a16, w4a16-asym) for AVX2 and AVX-512. A kernel whose ISA this CPU lacks declines with
that reason; priorities (used only when nothing is measured) put wider and fused instructions first.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator

from qcore.descriptors import BackendInfo
from qcore.hookspecs import hookimpl
from qcore.kernels import KernelImpl
from qcore_cpu_native import isa, linear_int8, linear_weight_only, prepared
from qcore_cpu_native.library import Unavailable, library

BACKEND = "cpu-native"

INT8_TEXT = {
    "avx2": "vpmaddubsw on |a| and sign(a)·b (exact: pair sums ≤ 32512), vpmaddwd to int32",
    "avx-vnni": "vpdpbusd on ymm, activations shifted to u8 and corrected by 128 · column sums",
    "avx512-vnni": "vpdpbusd on zmm (two 16-channel panels × 8 rows per micro-kernel)",
}
FLOAT_TEXT = {"avx2": "ymm", "avx512": "zmm; int4 fields become floats through vpermps"}


@hookimpl
def qcore_kernels() -> Iterator[KernelImpl]:
    for rank, path in enumerate(isa.INT8):
        yield KernelImpl(
            BACKEND, f"int8-{path.name}", "linear", fn=prepared.run,
            prepare=functools.partial(linear_int8.prepare, path),
            supports=functools.partial(linear_int8.supports, path), priority=50 + rank, accumulation="int32",
            description=f"w8a8 per-token/static int8 GEMM, int32 sums: {INT8_TEXT[path.name]}",
        )
    for rank, path in enumerate(isa.FLOAT):
        yield KernelImpl(
            BACKEND, f"weight-only-{path.name}", "linear", fn=prepared.run,
            prepare=functools.partial(linear_weight_only.prepare, path),
            supports=functools.partial(linear_weight_only.supports, path), priority=45 + rank,
            description=f"int8/int4 weights dequantized in registers, float32 FMAs on {FLOAT_TEXT[path.name]}",
        )


@hookimpl
def qcore_hardware() -> Iterator[BackendInfo]:
    lib = library()
    if isinstance(lib, Unavailable):
        yield BackendInfo(BACKEND, False, lib.reason)
    elif not lib.features & isa.AVX2:
        yield BackendInfo(BACKEND, False, "this CPU or OS lacks avx2+fma, which every kernel needs")
    else:
        caps = tuple(f"isa:{name}" for name in isa.features_text(lib.features))
        yield BackendInfo(BACKEND, True, devices=("cpu",), capabilities=caps)
