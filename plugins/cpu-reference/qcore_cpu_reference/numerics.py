"""The numerics contract (docs/numerics.md) on NumPy arrays: reduction sets, qparams, codes, dequantize.

Written independently of `qcore.qparams` (the torch backends' shared code) so
that it can serve as their oracle: every rule is spelled out in float64 where
the contract says so, the scale rounded once to float32.
"""

from __future__ import annotations

import math

import numpy as np

from qcore.errors import NonFiniteError, ShapeError
from qcore.spec import QuantSpec
from qcore_cpu_reference.floats import round_to_format

EPS32 = np.float32(np.finfo(np.float32).eps)


def check_finite(x: np.ndarray) -> None:
    """Raise NonFiniteError saying how many values are NaN/Inf and where the first one is."""
    bad = ~np.isfinite(x)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise NonFiniteError(
            f"{int(bad.sum())} non-finite value(s) in a tensor of shape {x.shape}; first at index {first}: {x[first]}"
        )


def channel_axis(spec: QuantSpec, ndim: int) -> int:
    """The spec's channel axis as a non-negative index into an `ndim`-d tensor."""
    axis = spec.axis + ndim if spec.axis < 0 else spec.axis
    if not 0 <= axis < ndim:
        raise ShapeError(f"channel axis {spec.axis} is out of range for a {ndim}-d tensor")
    return axis


def qparam_shape(spec: QuantSpec, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The canonical shape of the scale and zero-point of a tensor of `shape` (and the shape checks)."""
    if not spec.info.scaled or spec.granularity == "tensor":
        return ()
    if not shape:
        raise ShapeError(f"{spec.granularity} granularity needs a tensor with at least one dimension, got a scalar")
    if spec.granularity == "token":
        return shape[:-1]
    if spec.granularity == "channel":
        return (shape[channel_axis(spec, len(shape))],)
    g = spec.group_size
    assert g is not None
    if shape[-1] % g:
        raise ShapeError(f"group_size {g} does not divide the last dimension {shape[-1]} of shape {shape}")
    return (*shape[:-1], shape[-1] // g)


def reduction_rows(x: np.ndarray, spec: QuantSpec) -> np.ndarray:
    """`x` rearranged as (number of reduction sets, set size), rows in canonical qparam order."""
    qshape = qparam_shape(spec, x.shape)
    if spec.granularity == "channel":
        x = np.moveaxis(x, channel_axis(spec, x.ndim), 0)
    sets = math.prod(qshape)
    return x.reshape(sets, x.size // sets if sets else 0)


def expand(param: np.ndarray, spec: QuantSpec, shape: tuple[int, ...]) -> np.ndarray:
    """A canonical-shape qparam repeated to one value per element of a tensor of `shape`."""
    if not spec.info.scaled or spec.granularity == "tensor":
        return np.broadcast_to(param, shape)
    if spec.granularity == "token":
        return np.broadcast_to(param[..., None], shape)
    if spec.granularity == "channel":
        view = [1] * len(shape)
        view[channel_axis(spec, len(shape))] = -1
        return np.broadcast_to(param.reshape(view), shape)
    assert spec.group_size is not None
    return np.repeat(param, spec.group_size, axis=-1)


def _finish_scale(scale64: np.ndarray, degenerate: np.ndarray) -> np.ndarray:
    """Round once to float32, floor at eps; a zero range gives 1.0."""
    scale = np.maximum(scale64.astype(np.float32), EPS32)
    return np.where(degenerate, np.float32(1.0), scale).astype(np.float32)


def compute_qparams(x: np.ndarray, spec: QuantSpec) -> tuple[np.ndarray, np.ndarray]:
    """(scale float32, zero_point int32) in the canonical shape, from min-max over each reduction set."""
    qshape = qparam_shape(spec, x.shape)
    zero = np.zeros(qshape, dtype=np.int32)
    if not spec.info.scaled:
        return np.ones(qshape, dtype=np.float32), zero
    rows = reduction_rows(x, spec)
    if spec.dtype == "binary":
        mean = np.abs(rows.astype(np.float64)).sum(axis=1) / max(rows.shape[1], 1)
        return _finish_scale(mean, mean == 0).reshape(qshape), zero
    qmin, qmax = spec.qrange
    if spec.symmetric:
        amax = np.max(np.abs(rows), axis=1, initial=0.0).astype(np.float64)
        top = spec.info.fmax if spec.info.is_float else qmax
        return _finish_scale(amax / top, amax == 0).reshape(qshape), zero
    lo = np.min(rows, axis=1, initial=0.0).astype(np.float64)
    hi = np.max(rows, axis=1, initial=0.0).astype(np.float64)
    degenerate = hi == lo
    scale = _finish_scale((hi - lo) / (qmax - qmin), degenerate)
    zp = np.clip(qmin - np.rint(lo / scale.astype(np.float64)), qmin, qmax)
    zp = np.where(degenerate, 0, zp).astype(np.int32)
    return scale.reshape(qshape), zp.reshape(qshape)


def _canonical(param: np.ndarray, qshape: tuple[int, ...], dtype: type, what: str) -> np.ndarray:
    """A given qparam as a fresh array of the canonical shape (a scalar or broadcastable shape is accepted)."""
    try:
        return np.array(np.broadcast_to(np.asarray(param, dtype=dtype), qshape))
    except ValueError:
        raise ShapeError(f"{what} of shape {np.shape(param)} does not broadcast to the qparam shape {qshape}") from None


def quantize(
    x: np.ndarray, spec: QuantSpec, scale: np.ndarray | None = None, zero_point: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(codes, scale, zero_point) for float32 `x`; qparams from `x` unless `scale` is given.

    fp16/bf16 are plain casts and ignore given qparams (their scale is 1.0).

    Integer codes come back as int64, float-format codes as float32 arrays
    holding exactly representable values of the format.
    """
    check_finite(x)
    qshape = qparam_shape(spec, x.shape)
    if scale is None or not spec.info.scaled:
        scale, zero_point = compute_qparams(x, spec)
    else:
        scale = _canonical(scale, qshape, np.float32, "scale")
        if not np.all(np.isfinite(scale) & (scale > 0)):
            raise ValueError(f"a given scale must be finite and positive; got {scale.min()} .. {scale.max()}")
        zero_point = _canonical(0 if zero_point is None else zero_point, qshape, np.int32, "zero_point")
    if spec.dtype == "binary":
        return np.where(x >= 0, 1, -1), scale, zero_point
    ratio = x.astype(np.float64) / expand(scale, spec, x.shape).astype(np.float64)
    if spec.info.is_float:
        fmax = spec.info.fmax
        return round_to_format(np.clip(ratio, -fmax, fmax).astype(np.float32), spec.dtype), scale, zero_point
    qmin, qmax = spec.qrange
    codes = np.clip(np.rint(ratio) + expand(zero_point, spec, x.shape), qmin, qmax)
    return codes.astype(np.int64), scale, zero_point


def dequantize(codes: np.ndarray, scale: np.ndarray, zero_point: np.ndarray, spec: QuantSpec) -> np.ndarray:
    """float32((q - zero_point) * scale), computed exactly in float64 and rounded once."""
    shape = codes.shape
    qparam_shape(spec, shape)  # the shape errors of quantize (a group size that does not divide, say)
    centred = codes.astype(np.float64) - expand(np.asarray(zero_point), spec, shape)
    return (centred * expand(np.asarray(scale, dtype=np.float32), spec, shape).astype(np.float64)).astype(np.float32)


def fake_quantize(
    x: np.ndarray, spec: QuantSpec, scale: np.ndarray | None = None, zero_point: np.ndarray | None = None
) -> np.ndarray:
    """dequantize(quantize(x)): what a quantized activation means, as float32."""
    return dequantize(*quantize(x, spec, scale, zero_point), spec)
