"""Reasons a linear kernel cannot implement a scheme exactly; each returns None when it can.

Kept in one place so that every kernel words the same limitation the same way
in `qcore backends --explain`.
"""

from __future__ import annotations

from typing import Any

from qcore.kernels import KernelRequest
from qcore.spec import QuantSpec


def first(*reasons: str | None) -> str | None:
    return next((r for r in reasons if r), None)


def per_row_int_weights(w: QuantSpec | None, op: str) -> str | None:
    """Weights that `op` can take as int8 codes with one scale per output channel."""
    if w is None:
        return f"float weights: {op} multiplies quantized weight codes"
    if w.info.kind != "int":
        return f"{w.dtype} weights are not integer codes ({op} takes int8)"
    if not w.symmetric:
        return f"asymmetric {w.dtype} weights carry a zero-point that {op} cannot subtract"
    if w.granularity == "group":
        return f"group{w.group_size} weight scales vary along K; {op} applies one scale per output channel"
    if w.granularity == "channel" and w.axis not in (0, -2):
        return f"weight scales along axis {w.axis} vary along K; {op} applies one scale per output channel"
    return None


def per_row_activations(a: QuantSpec | None, op: str, *, kinds: tuple[str, ...]) -> str | None:
    """Activation specs whose scale is constant along K (per tensor or per token) and of an accepted kind."""
    if a is None:
        return f"weight-only scheme: activations stay float, {op} multiplies quantized activation codes"
    kind = "int" if a.info.kind == "int" else a.dtype
    if kind not in kinds:
        return f"{a.dtype} activations: {op} takes {' or '.join(kinds)} activation codes"
    if a.granularity == "group":
        return f"group{a.group_size} activation scales vary along K; {op} needs one scale per row"
    return None


def static_per_tensor(a: QuantSpec | None) -> str | None:
    """Calibrated activation qparams only make sense for every input shape when there is one of them."""
    if a is not None and a.info.scaled and not a.dynamic and a.granularity != "tensor":
        return f"static {a.granularity} activation qparams depend on the calibration shape; use per tensor"
    return None


def mkn(request: KernelRequest) -> tuple[int, int, int] | None:
    shape = request.shape
    return (shape[0], shape[1], shape[2]) if shape is not None and len(shape) == 3 else None


def divisible(request: KernelRequest, op: str, *, k: int = 1, n: int = 1) -> str | None:
    """K and N multiples of what `op` requires (unknown shapes are checked again in prepare)."""
    dims = mkn(request)
    if dims is None:
        return None
    _, kk, nn = dims
    if kk % k or nn % n:
        return f"{op} needs K % {k} == 0 and N % {n} == 0, got K={kk}, N={nn}"
    return None


def min_capability(hardware: Any, need: tuple[int, int], what: str) -> str | None:
    """Every CUDA device of `hardware` has compute capability >= `need`."""
    devices = getattr(hardware, "cuda", ())
    if not devices:
        return "no CUDA device"
    low = min(d.capability for d in devices)
    if low < need:
        return f"{what} needs compute capability >= {need[0]}.{need[1]}, this GPU has {low[0]}.{low[1]}"
    return None
