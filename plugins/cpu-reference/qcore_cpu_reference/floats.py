"""Round-half-to-even of float32 values to fp8 e4m3fn / e5m2, fp16 and bf16, in NumPy.

Written out by hand (no ml_dtypes, no torch casts) so that the oracle is an
independent check of every backend's float conversions.
"""

from __future__ import annotations

import attrs
import numpy as np


@attrs.frozen
class FloatFormat:
    """The grid of a binary float format: `mantissa_bits` stored fraction bits, `min_exponent` of its normals."""

    mantissa_bits: int
    min_exponent: int


FORMATS: dict[str, FloatFormat] = {
    "fp8_e4m3": FloatFormat(3, -6),
    "fp8_e5m2": FloatFormat(2, -14),
    "fp16": FloatFormat(10, -14),
    "bf16": FloatFormat(7, -126),
}


def round_to_format(v: np.ndarray, dtype: str) -> np.ndarray:
    """Round float32 `v` (already clamped to the format's ±fmax) half-to-even onto `dtype`'s grid.

    The spacing of the grid around `v` is 2**(e - mantissa_bits), with e the
    exponent of `v` floored at the smallest normal exponent (below it the
    subnormals share that spacing). Dividing by a power of two is exact in
    float64, so `np.rint` sees the exact quotient and rounds ties to even.
    The result holds values exactly representable in float32.
    """
    fmt = FORMATS[dtype]
    v64 = np.asarray(v, dtype=np.float32).astype(np.float64)
    _, e = np.frexp(v64)  # v = m * 2**e with 0.5 <= |m| < 1, so floor(log2 |v|) = e - 1
    quantum = np.ldexp(1.0, np.maximum(e - 1, fmt.min_exponent) - fmt.mantissa_bits)
    return (np.rint(v64 / quantum) * quantum).astype(np.float32)
