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
    """clamp(rne(float64(x) / float64(scale)) + zero_point, qmin, qmax) as int64 (the contract, restated)."""
    shape = tuple(x.shape)
    qmin, qmax = spec.qrange
    v = torch.round(x.double() / per_element(scale.double(), spec, shape))
    return torch.clamp(v + per_element(zero_point.double(), spec, shape), qmin, qmax).to(torch.int64)


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
