"""The int32 packing of compressed-tensors' ``pack-quantized`` format (for bit widths that divide 32).

Each signed b-bit code is stored as the unsigned field code + 2^(b-1); 32 / b
fields fill one int32 word, the first in the lowest bits; a row that does not
fill its last word is padded with zero fields. Weights are packed along the
input dimension (``weight_packed`` [N, ceil(K·b / 32)]); asymmetric zero-points
along the output dimension ([ceil(N·b / 32), groups]). This is the format's
layout, not qcore's canonical one (qcore.layout), hence its own module.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from qcore.compressed_tensors.args import FormatError


def _per_word(bits: int) -> int:
    if bits not in (1, 2, 4, 8, 16):
        raise FormatError(f"{bits}-bit codes do not divide an int32 word; qcore packs 4- and 8-bit codes")
    return 32 // bits


def packed_words(count: int, bits: int) -> int:
    """Words holding `count` b-bit fields."""
    return -(-count // _per_word(bits))


def pack_int32(codes: torch.Tensor, bits: int, dim: int = 1) -> torch.Tensor:
    """Signed b-bit `codes` (a 2-d integer tensor) packed into int32 words along `dim` (0 or 1)."""
    if dim == 0:
        return pack_int32(codes.t(), bits).t().contiguous()
    per = _per_word(bits)
    rows, cols = codes.shape
    words = packed_words(cols, bits)
    fields = F.pad(codes.to(torch.int64) + (1 << (bits - 1)), (0, words * per - cols)).reshape(rows, words, per)
    shifts = torch.arange(per, dtype=torch.int64, device=codes.device) * bits
    value = (fields << shifts).sum(-1)
    return torch.where(value >= 1 << 31, value - (1 << 32), value).to(torch.int32).contiguous()


def unpack_int32(packed: torch.Tensor, bits: int, count: int, dim: int = 1) -> torch.Tensor:
    """The `count` signed b-bit codes per row (dim 1) or column (dim 0) of int32 words, as int8 (int16 for 16 bits)."""
    if dim == 0:
        return unpack_int32(packed.t(), bits, count).t().contiguous()
    per = _per_word(bits)
    if packed.dtype != torch.int32 or packed.ndim != 2 or packed.shape[1] != packed_words(count, bits):
        raise FormatError(f"packed tensor of {packed.dtype} {tuple(packed.shape)} cannot hold {count} {bits}-bit "
                          f"codes per row (expected int32 with {packed_words(count, bits)} words per row)")
    shifts = torch.arange(per, dtype=torch.int64, device=packed.device) * bits
    fields = ((packed.to(torch.int64) & 0xFFFFFFFF).unsqueeze(-1) >> shifts) & ((1 << bits) - 1)
    codes = fields.reshape(packed.shape[0], -1)[:, :count] - (1 << (bits - 1))
    return codes.to(torch.int8 if bits <= 8 else torch.int16)
