"""Canonical storage of sub-byte codes (qcore/kernels.py): `8 // bits` fields a byte along the last axis.

The first code sits in the lowest bits; signed codes are two's complement
fields, binary stores 1 for +1 and 0 for -1; a last axis that does not fill its
final byte is padded with zero fields.
"""

from __future__ import annotations

import math

import numpy as np

from qcore.errors import ShapeError
from qcore.spec import QuantSpec


def _layout(spec: QuantSpec) -> tuple[int, np.ndarray, int]:
    """(codes per byte, bit offset of each, field mask)."""
    bits = spec.bits
    per = 8 // bits
    return per, (np.arange(per) * bits).astype(np.uint8), (1 << bits) - 1


def to_fields(codes: np.ndarray, spec: QuantSpec) -> np.ndarray:
    """The unsigned bit field of each code."""
    if spec.dtype == "binary":
        return (codes > 0).astype(np.uint8)
    return (codes.astype(np.int16) & ((1 << spec.bits) - 1)).astype(np.uint8)


def from_fields(fields: np.ndarray, spec: QuantSpec) -> np.ndarray:
    """Codes (int64) from unsigned bit fields: the inverse of `to_fields`."""
    fields = fields.astype(np.int64)
    if spec.dtype == "binary":
        return np.where(fields == 1, 1, -1)
    if spec.info.signed:
        return np.where(fields >= 1 << (spec.bits - 1), fields - (1 << spec.bits), fields)
    return fields


def packed_shape(spec: QuantSpec, shape: tuple[int, ...]) -> tuple[int, ...]:
    """Shape of the packed bytes of codes of `shape` (a scalar is packed as a 1-element row)."""
    per, _, _ = _layout(spec)
    rows = shape[:-1] if shape else ()
    return (*rows, math.ceil((shape[-1] if shape else 1) / per))


def pack(codes: np.ndarray, spec: QuantSpec) -> np.ndarray:
    """uint8 bytes of sub-byte `codes`, packed along the last axis."""
    per, shifts, _ = _layout(spec)
    fields = np.atleast_1d(to_fields(codes, spec))
    pad = [(0, 0)] * (fields.ndim - 1) + [(0, -fields.shape[-1] % per)]
    padded = np.pad(fields, pad)
    grouped = padded.reshape(*fields.shape[:-1], padded.shape[-1] // per, per)
    return np.bitwise_or.reduce(grouped << shifts, axis=-1).astype(np.uint8)


def unpack(data: np.ndarray, shape: tuple[int, ...], spec: QuantSpec) -> np.ndarray:
    """Codes (int64) of `shape` from the bytes made by `pack`."""
    expected = packed_shape(spec, shape)
    if data.shape != expected:
        raise ShapeError(f"packed {spec.dtype} data of shape {data.shape} does not hold codes of shape {shape}; "
                         f"expected bytes of shape {expected}")
    per, shifts, mask = _layout(spec)
    fields = ((data[..., None] >> shifts) & mask).reshape(*data.shape[:-1], data.shape[-1] * per)
    return from_fields(fields[..., : shape[-1] if shape else 1].reshape(shape), spec)
