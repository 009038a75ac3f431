"""Triton GEMV for weight-only linear at decoding sizes (a few rows of activations).

At M ≤ `GEMV_MAX_M` a GEMM tile wastes most of a tensor-core instruction and
the layer is bound by reading the weight, so this kernel skips tl.dot: each
program reads a BLOCK_N × BLOCK_K tile of codes once, turns them into floats
with the exponent trick (``bits(2**23 + c) - 2**23`` is c exactly, cheaper
than an int → float conversion), multiplies by x and applies the scales.

The K range is split across `SPLIT_K` programs so that a 4096 × 4096 layer
fills the GPU. Each writes its partial sums to a workspace and counts itself
in on a per-tile counter; the last one to arrive adds the partials in split
order, adds the bias, writes the output and resets the counter. The result
does not depend on which program finished last, so two runs with the same
config (the autotuner keeps its choice for the process) are bit-identical
(no float atomics), and the layer needs one launch.
"""

from __future__ import annotations

from typing import Any

import triton
import triton.language as tl

from qcore_triton_gpu.quant_kernels import total
from qcore_triton_gpu.tuning import pruner

GEMV_MAX_M = 4
"""Up to this many rows the GEMV reads the weight once per row (from L2 after the first)."""
MAGIC = tl.constexpr(8388608.0)
"""2**23: float32 bits 0x4B000000 | c (c < 2**23) are the float 2**23 + c."""


def _configs() -> list[triton.Config]:
    """(BLOCK_N, BLOCK_K, SPLIT_K, warps): 256 to 2048 programs at 4096 × 4096, tiles of 2 to 8 KiB of int4.

    BLOCK_K 128 keeps a tile inside one group of 128 (G = 1), the larger ones span groups; BLOCK_K 32
    fits every layer the support checks accept (groups are multiples of 32), short K and groups that are
    not powers of two included. The interpreter uses the first config that fits. Few configs, since
    each is a compilation on first use.
    """
    shapes = [(8, 64, 2, 1), (8, 512, 4, 2), (16, 256, 4, 4), (16, 512, 2, 4), (32, 256, 8, 4), (32, 512, 4, 8),
              (32, 128, 8, 4), (64, 128, 4, 4), (32, 32, 4, 2)]
    return [triton.Config({"BLOCK_N": bn, "BLOCK_K": bk, "SPLIT_K": sk}, num_warps=w, num_stages=2)
            for bn, bk, sk, w in shapes]


def _fits(config: triton.Config, args: dict[str, Any]) -> bool:
    """A tile holds whole scale groups or lies inside one (splits left without a tile just write zeros)."""
    bk, group = config.kwargs["BLOCK_K"], args["GROUP"]
    return args["n_groups"] == 1 or bk % group == 0 or group % bk == 0


def _group_split(args: dict[str, Any]) -> int:
    """GS, the values of one scale group within a tile: the whole tile when it lies inside one group."""
    whole = args["n_groups"] == 1 or args["GROUP"] >= args["BLOCK_K"]
    return args["BLOCK_K"] if whole else args["GROUP"]


CONFIGS = _configs()
MIN_BLOCK_N = min(c.kwargs["BLOCK_N"] for c in CONFIGS)
"""Sizes the per-layer counter buffer (one counter per row and N tile)."""
MAX_SPLIT_K = max(c.kwargs["SPLIT_K"] for c in CONFIGS)
"""Sizes the partial-sum workspace."""


def _accumulator_width(args: dict[str, Any]) -> int:
    """Columns of the accumulator: one per group in a tile, or every code column when the tile is one group."""
    groups = args["BLOCK_K"] // _group_split(args)
    return groups if groups > 1 else args["BLOCK_K"] * args["BITS"] // 8


@triton.autotune(configs=CONFIGS, key=["N", "K", "M", "BITS", "GROUP", "ASYM"],
                 prune_configs_by=pruner("x_ptr", _fits))
@triton.heuristics({"GS": _group_split, "G": lambda args: args["BLOCK_K"] // _group_split(args),
                    "ACC_W": _accumulator_width})
@triton.jit
def gemv_kernel(x_ptr, w_ptr, scale_ptr, zp_ptr, bias_ptr, ws_ptr, lock_ptr, out_ptr,
                M, N, K, n_groups, stride_xm, stride_wn,
                BITS: tl.constexpr, SIGN_BIAS: tl.constexpr, ASYM: tl.constexpr, HAS_BIAS: tl.constexpr,
                GROUP: tl.constexpr, SPLIT_K: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                GS: tl.constexpr, G: tl.constexpr, ACC_W: tl.constexpr):
    """out[m, n] = Σ_k x[m, k] · (code[n, k] - zp[n, g]) · scale[n, g] + bias[n], g = k // GROUP.

    A tile covers G groups of GS values. Inside one group (G = 1) products
    are scaled and accumulated column by column and reduced once at the end;
    across groups each group is reduced per tile and the zero-point applied
    as zp · Σ x over the group. The autotuner measures which is faster. Signed codes are
    read as unsigned fields offset by SIGN_BIAS (2**(BITS-1)), unsigned ones
    with SIGN_BIAS 0. 4-bit codes come two a byte (k = 2j low nibble, 2j + 1
    high nibble).
    """
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    m = tl.program_id(2)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_ok = offs_n < N
    tiles_k = (K + BLOCK_K - 1) // BLOCK_K
    span = (tiles_k + SPLIT_K - 1) // SPLIT_K * BLOCK_K
    k_begin = pid_k * span
    k_end = tl.minimum(k_begin + span, K)
    x_row = x_ptr + m.to(tl.int64) * stride_xm
    w_rows = w_ptr + offs_n.to(tl.int64)[:, None] * stride_wn
    acc = tl.full((BLOCK_N, ACC_W), 0.0, dtype=tl.float32)
    for k0 in range(k_begin, k_end, BLOCK_K):
        if BITS == 4:
            j = tl.arange(0, BLOCK_K // 2)
            k_even = k0 + 2 * j
            byte = tl.load(w_rows + (k_even // 2)[None, :], mask=n_ok[:, None] & (k_even < K)[None, :], other=0)
            byte = byte.to(tl.int32)
            lo = ((byte & 0xF) ^ SIGN_BIAS) | 0x4B000000
            hi = ((byte >> 4) ^ SIGN_BIAS) | 0x4B000000
            x_even = tl.load(x_row + k_even, mask=k_even < K, other=0.0).to(tl.float32)
            x_odd = tl.load(x_row + k_even + 1, mask=k_even + 1 < K, other=0.0).to(tl.float32)
            prod = (lo.to(tl.float32, bitcast=True) - (MAGIC + SIGN_BIAS)) * x_even[None, :] \
                + (hi.to(tl.float32, bitcast=True) - (MAGIC + SIGN_BIAS)) * x_odd[None, :]
            x_cols = x_even + x_odd
        else:
            kk = k0 + tl.arange(0, BLOCK_K)
            byte = tl.load(w_rows + kk[None, :], mask=n_ok[:, None] & (kk < K)[None, :], other=0)
            code = ((byte.to(tl.int32) & 0xFF) ^ SIGN_BIAS) | 0x4B000000
            x_cols = tl.load(x_row + kk, mask=kk < K, other=0.0).to(tl.float32)
            prod = (code.to(tl.float32, bitcast=True) - (MAGIC + SIGN_BIAS)) * x_cols[None, :]
        if G == 1:
            q_at = offs_n * n_groups + k0 // GROUP
            scale = tl.load(scale_ptr + q_at, mask=n_ok, other=0.0)
            if ASYM:
                prod -= tl.load(zp_ptr + q_at, mask=n_ok, other=0).to(tl.float32)[:, None] * x_cols[None, :]
            acc += prod * scale[:, None]
        else:
            part = total(tl.reshape(prod, (BLOCK_N, G, GS * BITS // 8)), 2)
            x_sum = total(tl.reshape(x_cols, (G, GS * BITS // 8)), 1)
            g = (k0 + tl.arange(0, G) * GS) // GROUP
            q_ok = n_ok[:, None] & (g < n_groups)[None, :]
            q_at = offs_n[:, None] * n_groups + g[None, :]
            scale = tl.load(scale_ptr + q_at, mask=q_ok, other=0.0)
            if ASYM:
                part -= tl.load(zp_ptr + q_at, mask=q_ok, other=0).to(tl.float32) * x_sum[None, :]
            acc += part * scale
    partial = total(acc, 1)
    out_at = m * N + offs_n
    if SPLIT_K == 1:
        if HAS_BIAS:
            partial += tl.load(bias_ptr + offs_n, mask=n_ok, other=0.0)
        tl.store(out_ptr + out_at, partial, mask=n_ok)
    else:
        tl.store(ws_ptr + pid_k * M * N + out_at, partial, mask=n_ok, cache_modifier=".wt")
        tl.debug_barrier()
        lock = lock_ptr + m * tl.num_programs(0) + pid_n
        if tl.atomic_add(lock, 1, sem="acq_rel") == SPLIT_K - 1:
            summed = tl.load(ws_ptr + out_at, mask=n_ok, other=0.0, cache_modifier=".cg")
            for s in range(1, SPLIT_K):
                summed += tl.load(ws_ptr + s * M * N + out_at, mask=n_ok, other=0.0, cache_modifier=".cg")
            if HAS_BIAS:
                summed += tl.load(bias_ptr + offs_n, mask=n_ok, other=0.0)
            tl.store(out_ptr + out_at, summed, mask=n_ok)
            tl.atomic_xchg(lock, 0)
