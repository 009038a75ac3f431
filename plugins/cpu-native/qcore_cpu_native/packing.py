"""Weight layouts the kernels stream (see csrc/qnative.h), built once per layer in `prepare` with torch.

Output channels are padded to whole panels of 16 with zero codes, zero scales and zero column sums, so
the kernels never test for a partial panel while summing; only the stores are masked.
"""

from __future__ import annotations

import torch

PANEL = 16


def panels(n: int) -> int:
    return -(-n // PANEL)


def _pad(t: torch.Tensor, rows: int, cols: int | None = None) -> torch.Tensor:
    """`t` zero-padded to `rows` rows (and `cols` columns for a matrix)."""
    pad = (0, 0 if cols is None else cols - t.shape[1], 0, rows - t.shape[0]) if t.ndim == 2 else (0, rows - t.shape[0])
    return torch.nn.functional.pad(t, pad)


def per_channel(values: torch.Tensor, n: int, dtype: torch.dtype) -> torch.Tensor:
    """A value per output channel (a scalar repeated), padded to whole panels."""
    v = values.to(dtype).reshape(-1).expand(n) if values.numel() == 1 else values.to(dtype).reshape(n)
    return _pad(v.contiguous(), panels(n) * PANEL).contiguous()


def int8_quads(codes: torch.Tensor) -> torch.Tensor:
    """int8 (N, K) → bp[panel][k / 4][channel % 16][k % 4] (k padded to quads): what vpmaddubsw/vpdpbusd read."""
    n, k = codes.shape
    kq = -(-k // 4)
    padded = _pad(codes.to(torch.int8), panels(n) * PANEL, kq * 4)
    return padded.reshape(panels(n), PANEL, kq, 4).permute(0, 2, 1, 3).contiguous()


def int8_columns(codes: torch.Tensor) -> torch.Tensor:
    """int8 (N, K) → bp[panel][k][channel % 16]: 16 channels of one k side by side, for float FMAs."""
    n, k = codes.shape
    padded = _pad(codes.to(torch.int8), panels(n) * PANEL, k)
    return padded.reshape(panels(n), PANEL, k).permute(0, 2, 1).contiguous()


def int4_words(codes: torch.Tensor, signed: bool) -> torch.Tensor:
    """4-bit codes (N, K) → bp[panel][k / 8][channel % 16] 32-bit words, field j (bits 4j..4j+3) holding k + j.

    Fields hold code + 8 for int4 (offset binary: 0..15 for -8..7) and the code for uint4, so every field is
    an unsigned index; k is padded to 8 with code 0.
    """
    n, k = codes.shape
    k8 = -(-k // 8)
    padded = _pad(codes.to(torch.int64), panels(n) * PANEL, k8 * 8) + (8 if signed else 0)
    fields = padded.reshape(panels(n), PANEL, k8, 8)
    words = (fields << (4 * torch.arange(8, dtype=torch.int64))).sum(-1)
    words = torch.where(words >= 2**31, words - 2**32, words).to(torch.int32)
    return words.permute(0, 2, 1).contiguous()


def per_group(values: torch.Tensor, n: int, groups: int) -> torch.Tensor:
    """float32 (N, groups) (or a scalar / (N,), one group) → [panel][group][channel % 16]."""
    v = values.to(torch.float32)
    v = v.reshape(1, 1).expand(n, groups) if v.numel() == 1 else v.reshape(n, groups)
    return _pad(v.contiguous(), panels(n) * PANEL).reshape(panels(n), PANEL, groups).permute(0, 2, 1).contiguous()
