"""Tensor helpers shared by the case modules: shapes, seeded data, layouts, the contract's rounding."""

from __future__ import annotations

import math

import torch

from qcore.layout import canonical_axis
from qcore.spec import QuantSpec


def per_element(q: torch.Tensor, spec: QuantSpec, shape: tuple[int, ...]) -> torch.Tensor:
    """A canonical-shape qparam tensor broadcast to one value per element of a tensor of `shape`."""
    if spec.granularity == "tensor":
        return q.expand(shape)
    if spec.granularity == "channel":
        view = [1] * len(shape)
        view[canonical_axis(spec, len(shape))] = -1
        return q.reshape(view).expand(shape)
    if spec.granularity == "token":
        return q.unsqueeze(-1).expand(shape)
    assert spec.group_size is not None
    return q.unsqueeze(-1).expand(*q.shape, spec.group_size).reshape(shape)


def spread(gen: torch.Generator, shape: tuple[int, ...]) -> torch.Tensor:
    """N(0,1) values times a factor 2**-2..2**2 along every axis, so every channel, group and token
    gets a distinct scale (a kernel that mixes up axes cannot pass by luck)."""
    x = torch.randn(shape, generator=gen)
    for axis, n in enumerate(shape):
        if n > 1:
            view = [1] * len(shape)
            view[axis] = n
            x = x * torch.exp2(torch.linspace(-2.0, 2.0, n)).reshape(view)
    return x


def exact_ties(x: torch.Tensor, spec: QuantSpec, scale: torch.Tensor) -> torch.Tensor:
    """Where float64(x) / float64(scale) is exactly k + 0.5: the only places a code may be one off."""
    v = x.double() / per_element(scale.double(), spec, tuple(x.shape))
    return (v - torch.floor(v)) == 0.5


def contract_codes(x: torch.Tensor, spec: QuantSpec, scale: torch.Tensor, zero_point: torch.Tensor) -> torch.Tensor:
    """The contract's codes of float32 `x` for given qparams, restated (docs/numerics.md "Codes"), in the
    QTensor code dtype: integer clamp(rne(float64(x) / float64(scale)) + zero_point, qmin, qmax); binary the
    sign (+1 at 0); fp8 float32(x / scale) clamped to ±fmax, rounded to the format half to even; fp16/bf16
    x clamped to ±fmax, rounded to the format."""
    shape, info = tuple(x.shape), spec.info
    dtype = getattr(torch, info.torch_dtype)
    if spec.dtype == "binary":
        return torch.where(x >= 0, 1, -1).to(dtype)
    if not info.scaled:
        return x.clamp(-info.fmax, info.fmax).to(dtype)
    v = x.double() / per_element(scale.double(), spec, shape)
    if info.is_float:
        return v.float().clamp(-info.fmax, info.fmax).to(dtype)
    qmin, qmax = spec.qrange
    return torch.clamp(torch.round(v) + per_element(zero_point.double(), spec, shape), qmin, qmax).to(dtype)


def format_midpoints(spec: QuantSpec) -> torch.Tensor:
    """Values halfway between neighbouring finite values of a float format, both signs (float64, exact):
    where rounding to the format is a tie. At most 4096 of them, evenly spread over the range."""
    dtype = getattr(torch, spec.info.torch_dtype)
    patterns = torch.arange(256, dtype=torch.uint8) if dtype.itemsize == 1 else \
        torch.arange(-(2**15), 2**15, dtype=torch.int16)
    grid = patterns.view(dtype).double()
    grid = grid[torch.isfinite(grid) & (grid >= 0)].unique()
    mid = (grid[:-1] + grid[1:]) / 2
    mid = mid[:: max(1, len(mid) // 2048)]
    return torch.cat([mid, -mid])


def layouts(t: torch.Tensor) -> dict[str, torch.Tensor]:
    """Non-contiguous views holding the same values as `t`: transposed storage, and a stride-2 slice."""
    rev = list(reversed(range(t.ndim)))
    return {
        "transposed storage": t.permute(rev).contiguous().permute(rev),
        "stride-2 slice": torch.stack([t, torch.zeros_like(t)], dim=-1)[..., 0],
    }


def cycled(values: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """`values` repeated to fill `shape` (float64)."""
    n = math.prod(shape)
    return values.double().repeat(-(-n // values.numel()))[:n].reshape(shape)
