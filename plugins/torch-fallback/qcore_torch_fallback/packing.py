"""pack_weight / unpack_weight: the canonical storage layout of qcore.kernels, in torch.

Sub-byte codes go `8 // bits` to a byte along the last axis, first code in the
lowest bits, signed codes as two's complement fields (binary: bit 1 is +1),
the last byte padded with zero fields. Byte-wide formats are stored unchanged.
"""

from __future__ import annotations

import torch

from qcore.kernels import PackedTensor, QTensor
from qcore.spec import QuantSpec


def _fields_per_byte(spec: QuantSpec) -> tuple[int, int]:
    return spec.bits, 8 // spec.bits


def _shifts(bits: int, per: int, device: torch.device) -> torch.Tensor:
    return torch.arange(per, device=device, dtype=torch.int32) * bits


def pack_weight(q: QTensor) -> PackedTensor:
    """Canonical storage of `q`'s codes (a copy for byte-wide formats)."""
    spec = q.spec
    shape = tuple(q.codes.shape)
    if not spec.info.sub_byte:
        return PackedTensor(q.codes.clone(), shape, q.scale, q.zero_point, spec)
    bits, per = _fields_per_byte(spec)
    codes = q.codes.reshape(shape or (1,)).to(torch.int32)
    fields = (codes > 0).to(torch.int32) if spec.dtype == "binary" else codes & ((1 << bits) - 1)
    pad = -fields.shape[-1] % per
    fields = torch.nn.functional.pad(fields, (0, pad)).reshape(*fields.shape[:-1], -1, per)
    data = (fields << _shifts(bits, per, fields.device)).sum(-1).to(torch.uint8)
    return PackedTensor(data, shape, q.scale, q.zero_point, spec)


def unpack_weight(p: PackedTensor) -> QTensor:
    """The codes `pack_weight` stored, with their original shape and dtype."""
    spec = p.spec
    dtype = getattr(torch, spec.info.torch_dtype)
    if not spec.info.sub_byte:
        return QTensor(p.data.clone(), p.scale, p.zero_point, spec)
    bits, per = _fields_per_byte(spec)
    k = p.shape[-1] if p.shape else 1
    fields = (p.data.to(torch.int32).unsqueeze(-1) >> _shifts(bits, per, p.data.device)) & ((1 << bits) - 1)
    fields = fields.reshape(*fields.shape[:-2], -1)[..., :k]
    if spec.dtype == "binary":
        codes = torch.where(fields == 1, 1, -1)
    elif spec.info.signed:
        half = 1 << (bits - 1)
        codes = torch.where(fields >= half, fields - (1 << bits), fields)
    else:
        codes = fields
    return QTensor(codes.to(dtype).reshape(p.shape), p.scale, p.zero_point, spec)
