"""The contract's qparam arithmetic in torch (see docs/numerics.md), shared by torch backends and observers.

`reduce_minmax` gives the per-granularity range in canonical qparam shapes;
`qparams_from_range` turns a range into (scale, zero_point) exactly as the
contract says, computing in float64 and rounding the scale once to float32.
"""

from __future__ import annotations

import torch

from qcore.errors import NonFiniteError, ShapeError
from qcore.layout import canonical_axis, grouped, per_set
from qcore.spec import QuantSpec

EPS32 = float(torch.finfo(torch.float32).eps)


def check_finite(x: torch.Tensor, what: str = "tensor") -> None:
    """Raise NonFiniteError naming how many values are NaN/Inf and the first index.

    One fused min/max pass decides (NaN propagates through both, Inf shows in
    one); the full scan for the message runs only on error. While a CUDA graph
    is being captured the check cannot run (reading the answer needs the host)
    and is skipped: a replayed graph does not check its inputs.
    """
    if not x.is_floating_point() or not x.numel():
        return
    if x.is_cuda and torch.cuda.is_current_stream_capturing():
        return
    t = x.detach() if x.element_size() > 1 else x.detach().float()  # fp8 has no min/max kernels
    lo, hi = torch.aminmax(t)
    if bool(torch.isfinite(lo) & torch.isfinite(hi)):
        return
    bad = ~torch.isfinite(t)
    first = tuple(int(i) for i in torch.nonzero(bad)[0].tolist())
    value = t[first].item() if first else t.item()
    raise NonFiniteError(f"{what} has {int(bad.sum())} non-finite value(s); first at index {first}: {value}")


def reduce(x: torch.Tensor, spec: QuantSpec, fn: str) -> torch.Tensor:
    """Apply `amin`/`amax`/`mean` over each reduction set; result in the canonical qparam shape."""
    op = getattr(torch, fn)
    if spec.granularity == "tensor":
        return op(x.reshape(-1), dim=0) if x.numel() else torch.zeros((), dtype=x.dtype, device=x.device)
    if spec.granularity == "token":
        if x.ndim == 0:
            raise ShapeError("per-token quantization needs at least one dimension")
        return op(x, dim=-1)
    if spec.granularity == "channel":
        axis = canonical_axis(spec, x.ndim)
        moved = x.movedim(axis, 0).reshape(x.shape[axis], -1)
        return op(moved, dim=1)
    return op(grouped(x, spec), dim=-1)


def reduce_minmax(x: torch.Tensor, spec: QuantSpec) -> tuple[torch.Tensor, torch.Tensor]:
    return reduce(x, spec, "amin"), reduce(x, spec, "amax")


def qparams_from_range(lo: torch.Tensor, hi: torch.Tensor, spec: QuantSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale float32, zero_point int32) for the range [lo, hi], per the contract."""
    info = spec.info
    lo64, hi64 = lo.to(torch.float64), hi.to(torch.float64)
    zero = torch.zeros_like(lo64, dtype=torch.int32)
    if not info.scaled:
        return torch.ones_like(lo64, dtype=torch.float32), zero
    qmin, qmax = spec.qrange
    if spec.symmetric:
        amax = torch.maximum(lo64.abs(), hi64.abs())
        top = info.fmax if info.is_float else qmax
        scale = _finish(amax / top, amax == 0)
        return scale, zero
    lo64 = torch.clamp(lo64, max=0.0)
    hi64 = torch.clamp(hi64, min=0.0)
    scale = _finish((hi64 - lo64) / (qmax - qmin), hi64 == lo64)
    zp = qmin - torch.round(lo64 / scale.to(torch.float64))
    zp = torch.clamp(zp, qmin, qmax).to(torch.int32)
    return scale, torch.where(hi64 == lo64, zero, zp)


def _finish(scale64: torch.Tensor, degenerate: torch.Tensor) -> torch.Tensor:
    scale = torch.clamp(scale64.to(torch.float32), min=EPS32)
    return torch.where(degenerate, torch.ones_like(scale), scale)


def minmax_qparams(x: torch.Tensor, spec: QuantSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """The contract's dynamic qparams of a finite float32 `x`: min-max per set (mean |x| for binary)."""
    if spec.dtype == "binary":
        scale = binary_scale(x, spec)
        return scale, torch.zeros_like(scale, dtype=torch.int32)
    return qparams_from_range(*reduce_minmax(x, spec), spec)


def binary_scale(x: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    """Binary codes are ±1 with scale mean(|x|) (float64 mean, float32 result)."""
    mean = reduce(x.to(torch.float64).abs(), spec, "mean")
    return _finish(mean, mean == 0)


def expand(q: torch.Tensor, spec: QuantSpec, shape: torch.Size) -> torch.Tensor:
    """Broadcast a canonical-shape qparam tensor against a tensor of `shape` (grouped for group)."""
    if spec.granularity == "tensor":
        return q
    if spec.granularity == "token":
        return q.unsqueeze(-1)
    if spec.granularity == "channel":
        axis = canonical_axis(spec, len(shape))
        view = [1] * len(shape)
        view[axis] = shape[axis]
        return q.reshape(view)
    return q.unsqueeze(-1)


def dequantize_codes(codes: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor,
                     spec: QuantSpec) -> torch.Tensor:
    """The contract's dequantize: ``float32((code - zero_point) * scale)``, one rounding (the integer
    difference is exact in float32); float codes times their scale."""
    view = per_set(codes, spec)
    s = expand(scale, spec, view.shape)
    if spec.info.is_float:
        values = view.to(torch.float32) * s
    else:
        values = (view.to(torch.int32) - expand(zero_point, spec, view.shape)).to(torch.float32) * s
    return values.reshape(codes.shape)
