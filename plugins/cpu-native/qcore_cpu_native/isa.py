"""The instruction sets the kernels are compiled for, what each needs from the CPU, and the user's cap.

The library reports what the CPU and the OS offer (cpuid and xgetbv, `qn_cpu_features`); a kernel claims
a request only where its ISA is there. ``QCORE_CPU_NATIVE_ISA`` (comma-separated ISA names) limits the
kernels that may claim anything, e.g. ``avx2`` to measure the path a CPU without VNNI takes.
"""

from __future__ import annotations

import os

import attrs

from qcore_cpu_native.library import Unavailable, library

ENV = "QCORE_CPU_NATIVE_ISA"

AVX2, AVX_VNNI, AVX512, AVX512_VNNI, AMX_INT8 = 1, 2, 4, 8, 16
"""QnFeature bits of csrc/qnative.h."""

FEATURE_NAMES = {AVX2: "avx2+fma", AVX_VNNI: "avx-vnni", AVX512: "avx512f/bw/vl/dq", AVX512_VNNI: "avx512-vnni",
                 AMX_INT8: "amx-int8"}


@attrs.frozen
class Isa:
    """One compiled path: its name, the features it needs, and its enum value in the C interface."""

    name: str
    needs: int
    code: int

    def describe_needs(self) -> str:
        return " + ".join(FEATURE_NAMES[bit] for bit in FEATURE_NAMES if self.needs & bit)


INT8 = (Isa("avx2", AVX2, 0), Isa("avx-vnni", AVX2 | AVX_VNNI, 1), Isa("avx512-vnni", AVX2 | AVX512 | AVX512_VNNI, 2))
"""Integer GEMMs (QnInt8Isa): vpmaddubsw with the sign trick, vpdpbusd on ymm, vpdpbusd on zmm."""
FLOAT = (Isa("avx2", AVX2, 0), Isa("avx512", AVX2 | AVX512, 1))
"""Weight-only kernels (QnFloatIsa): float32 FMAs on ymm or zmm."""


def features_text(bits: int) -> list[str]:
    return [name for bit, name in FEATURE_NAMES.items() if bits & bit]


def unavailable(isa: Isa) -> str | None:
    """Why kernels of `isa` cannot run here (None when they can)."""
    lib = library()
    if isinstance(lib, Unavailable):
        return lib.reason
    missing = isa.needs & ~lib.features
    if missing:
        return f"this CPU or OS lacks {', '.join(features_text(missing))} (the {isa.name} kernels need them)"
    cap = os.environ.get(ENV)
    if cap is not None and isa.name not in {s.strip() for s in cap.split(",")}:
        return f"{ENV}={cap} leaves out {isa.name}"
    return None
