"""The contract's layout rules in one place: qparam shapes, packed shapes, group divisibility.

Every backend, the checkpoint readers and writers and the conformance kit
use these functions; only the cpu-reference oracle restates the rules, on
purpose, so that it stays an independent check of them (see
docs/numerics.md).

Canonical qparam shapes for a tensor of shape S: tensor ``()``; channel
``(S[axis],)``; token ``S[:-1]``; group ``(*S[:-1], S[-1] // group_size)``;
formats without a scale (fp16, bf16) ``()``. Canonical packing stores codes
narrower than a byte ``8 // bits`` to a byte along the last axis.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from qcore.errors import ShapeError
from qcore.spec import QuantSpec


def canonical_axis(spec: QuantSpec, ndim: int) -> int:
    """`spec.axis` as a non-negative index into a tensor of `ndim` dimensions; ShapeError when out of range."""
    axis = spec.axis + ndim if spec.axis < 0 else spec.axis
    if not 0 <= axis < max(ndim, 1):
        raise ShapeError(f"channel axis {spec.axis} is out of range for a {ndim}-d tensor")
    return axis


def check_groups(spec: QuantSpec, shape: Sequence[int]) -> None:
    """ShapeError unless `spec`'s group size divides the last axis of `shape` (no-op for other granularities)."""
    if spec.granularity != "group":
        return
    g = spec.group_size
    assert g is not None
    if not shape or shape[-1] % g:
        last = shape[-1] if shape else 1
        raise ShapeError(f"group_size {g} does not divide the last dimension {last} (shape {tuple(shape)})")


def grouped(x: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    """View `x` as (..., K // g, g) for group granularity; ShapeError if g does not divide K."""
    check_groups(spec, tuple(x.shape))
    g = spec.group_size
    assert g is not None
    return x.reshape(*x.shape[:-1], x.shape[-1] // g, g)


def per_set(x: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    """`x` viewed so that canonical qparams broadcast against it (grouped for group granularity)."""
    return grouped(x, spec) if spec.granularity == "group" and spec.info.scaled else x


def qparam_shape(spec: QuantSpec, shape: Sequence[int]) -> tuple[int, ...]:
    """The canonical qparam shape of `spec` for a tensor of `shape` (ShapeError when it has none)."""
    shape = tuple(shape)
    if not spec.info.scaled or spec.granularity == "tensor":
        return ()
    if spec.granularity == "channel":
        return (shape[canonical_axis(spec, len(shape))],)
    if spec.granularity == "token":
        if not shape:
            raise ShapeError("per-token quantization needs at least one dimension")
        return shape[:-1]
    check_groups(spec, shape)
    assert spec.group_size is not None
    return (*shape[:-1], shape[-1] // spec.group_size)


def packed_shape(spec: QuantSpec, shape: Sequence[int]) -> tuple[int, ...]:
    """Storage shape of canonically packed codes of a tensor of `shape`."""
    shape = tuple(shape)
    if not spec.info.sub_byte:
        return shape
    per_byte = 8 // spec.bits
    return (*shape[:-1], -(-shape[-1] // per_byte))


def flat_qparam_index(spec: QuantSpec, shape: Sequence[int]) -> tuple[int, int]:
    """(div, mod): element i of a contiguous tensor of `shape` uses flat qparam ``(i // div) % mod``.

    What kernels that walk a flat buffer need instead of the canonical shape.
    """
    shape = tuple(shape)
    qparam_shape(spec, shape)  # the same errors as the canonical shape
    numel = max(1, math.prod(shape))
    if not spec.info.scaled or spec.granularity == "tensor":
        return 1, 1
    if spec.granularity == "channel":
        axis = canonical_axis(spec, len(shape))
        return max(1, math.prod(shape[axis + 1:])), max(1, shape[axis])
    if spec.granularity == "token":
        return max(1, shape[-1]), max(1, numel // max(1, shape[-1]))
    assert spec.group_size is not None
    return spec.group_size, max(1, numel // spec.group_size)


def given_qparams(spec: QuantSpec, shape: Sequence[int], scale: torch.Tensor, zero_point: torch.Tensor | None,
                  device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
    """Caller-given qparams for a tensor of `shape`, checked and made canonical.

    `scale` must have exactly the canonical qparam shape (float32 after
    conversion); `zero_point` the same shape, or None for zeros. Returns
    contiguous (float32 scale, int32 zero-point) on `device`; ShapeError names
    the expected shape otherwise.
    """
    want = qparam_shape(spec, shape)
    scale = torch.as_tensor(scale, device=device).to(torch.float32)
    zp = torch.zeros(want, dtype=torch.int32, device=device) if zero_point is None else \
        torch.as_tensor(zero_point, device=device).to(torch.int32)
    for name, t in (("scale", scale), ("zero_point", zp)):
        if tuple(t.shape) != want:
            raise ShapeError(f"{name} has shape {tuple(t.shape)}; {spec.describe()} of a tensor of shape "
                             f"{tuple(shape)} needs {want}")
    return scale.contiguous(), zp.contiguous()
