"""Triton GEMM kernels for the quantized linear layers.

- `int8_gemm_kernel`: int8 activation codes (from `quant_kernels.quantize_rows_kernel`)
  × int8 weight codes → int32 tl.dot on tensor cores, rescaled per token (or
  per tensor) and per output channel in the epilogue, bias added.
- `weight_only_kernel`: int8/uint8/int4/uint4 weights (4-bit ones packed two a
  byte along K) dequantized per group or per channel inside the K loop and
  fed to a float tl.dot. For small M it splits K across programs (split-K)
  into a float32 workspace that the host sums in a fixed order, so two runs
  stay bit-identical (no atomics). Decoding sizes (M ≤ 4) use `gemv_kernels`.

Both are autotuned over a few tile shapes keyed on power-of-two buckets of M
and on N, K.

Only triton builtins are used (see `quant_kernels`).
"""

from __future__ import annotations

from typing import Any

import triton
import triton.language as tl

from qcore_triton_gpu.tuning import pruner


def _configs(shapes: list[tuple[int, int, int, int, int]]) -> list[triton.Config]:
    return [
        triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": 8}, num_warps=warps,
                      num_stages=stages)
        for bm, bn, bk, warps, stages in shapes
    ]


# (BLOCK_M, BLOCK_N, BLOCK_K, warps, stages); the first of each list is what the interpreter uses.
_INT8_CONFIGS = _configs([
    (16, 32, 64, 4, 3),
    (16, 64, 128, 4, 4),
    (32, 64, 128, 4, 4),
    (64, 128, 128, 4, 4),
    (128, 128, 64, 4, 4),
    (128, 128, 128, 8, 3),
    (128, 256, 128, 8, 3),
    (128, 256, 128, 8, 4),
    (256, 128, 128, 8, 3),
])
_WEIGHT_ONLY_CONFIGS = _configs([
    (16, 32, 32, 4, 3),
    (16, 64, 64, 4, 4),
    (16, 128, 128, 4, 4),
    (32, 64, 128, 4, 4),
    (64, 128, 64, 4, 3),
    (128, 128, 32, 8, 3),
])


def _tile_in_group(config: triton.Config, args: dict[str, Any]) -> bool:
    """A K tile must not straddle two scale groups (per-channel: a single group)."""
    return args["n_groups"] == 1 or args["group"] % config.kwargs["BLOCK_K"] == 0


def _m_tiles(config: triton.Config, args: dict[str, Any]) -> bool:
    """Small M: tiles no taller than M. Large M: only the tall tiles that keep tensor cores busy."""
    bm, m = config.kwargs["BLOCK_M"], args["m_bucket"]
    return bm <= max(16, m) and (m < 128 or bm >= 64) and (m < 1024 or bm >= 128)


@triton.autotune(configs=_INT8_CONFIGS, key=["m_bucket", "N", "K"], prune_configs_by=pruner("a_ptr", _m_tiles))
@triton.heuristics({"EVEN_K": lambda args: args["K"] % args["BLOCK_K"] == 0})
@triton.jit
def int8_gemm_kernel(a_ptr, a_scale_ptr, stride_as, w_ptr, w_scale_ptr, bias_ptr, out_ptr, M, N, K,
                     stride_am, stride_wn, stride_om, m_bucket, HAS_BIAS: tl.constexpr,
                     BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                     GROUP_M: tl.constexpr, EVEN_K: tl.constexpr):
    """out[m, n] = a_scale[m * stride_as] * w_scale[n] * Σ_k a[m, k] * w[n, k] + bias[n], the sum exact in int32.

    `a` holds int8 activation codes (M, K), `w` int8 weight codes (N, K): both
    K-major, as int8 tensor-core MMA wants them. Programs walk the output
    tiles in column groups of GROUP_M tile rows, so a group's weight tiles are
    reused from L2. Rows and columns past the edge are wrapped (read, never
    stored), so only K needs masks, and only when BLOCK_K does not divide it.
    """
    pid = tl.program_id(0)
    tiles_m = (M + BLOCK_M - 1) // BLOCK_M
    tiles_n = (N + BLOCK_N - 1) // BLOCK_N
    per_group = GROUP_M * tiles_n
    first_m = pid // per_group * GROUP_M
    group_m = tl.minimum(tiles_m - first_m, GROUP_M)
    pid_m = first_m + (pid % per_group) % group_m
    pid_n = (pid % per_group) // group_m
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    a_tile = a_ptr + (offs_m % M).to(tl.int64)[:, None] * stride_am + offs_k[None, :]
    w_tile = w_ptr + (offs_n % N).to(tl.int64)[None, :] * stride_wn + offs_k[:, None]
    acc = tl.full((BLOCK_M, BLOCK_N), 0, dtype=tl.int32)
    for k0 in range(0, K, BLOCK_K):
        if EVEN_K:
            a = tl.load(a_tile)
            w = tl.load(w_tile)
        else:
            a = tl.load(a_tile, mask=(k0 + offs_k)[None, :] < K, other=0)
            w = tl.load(w_tile, mask=(k0 + offs_k)[:, None] < K, other=0)
        acc = tl.dot(a, w, acc, out_dtype=tl.int32)
        a_tile += BLOCK_K
        w_tile += BLOCK_K
    m_ok = offs_m < M
    n_ok = offs_n < N
    a_scale = tl.load(a_scale_ptr + offs_m * stride_as, mask=m_ok, other=0.0)
    w_scale = tl.load(w_scale_ptr + offs_n, mask=n_ok, other=0.0)
    out = acc.to(tl.float32) * a_scale[:, None] * w_scale[None, :]
    if HAS_BIAS:
        out += tl.load(bias_ptr + offs_n, mask=n_ok, other=0.0)[None, :]
    tl.store(out_ptr + offs_m.to(tl.int64)[:, None] * stride_om + offs_n[None, :], out,
             mask=m_ok[:, None] & n_ok[None, :])


@triton.autotune(configs=_WEIGHT_ONLY_CONFIGS, key=["m_bucket", "N", "K", "SPLIT_K"],
                 prune_configs_by=pruner("x_ptr", lambda c, a: _tile_in_group(c, a) and _m_tiles(c, a)))
@triton.jit
def weight_only_kernel(x_ptr, w_ptr, scale_ptr, zp_ptr, bias_ptr, out_ptr, M, N, K, group, n_groups,
                       stride_xm, stride_wn, m_bucket,
                       BITS: tl.constexpr, SIGNED: tl.constexpr, ASYM: tl.constexpr, HAS_BIAS: tl.constexpr,
                       SPLIT_K: tl.constexpr,
                       BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """Partial sums of x @ deq(W).T over this program's K range into out[pid_k] (shape (SPLIT_K, M, N)).

    deq(W)[n, k] = (code[n, k] - zp[n, k // group]) * scale[n, k // group], in
    float32; the dot runs in tf32 on tensor cores. 4-bit codes are read from
    bytes holding k = 2j (low nibble) and 2j + 1 (high nibble). The bias is
    added by the first K split only.
    """
    pid = tl.program_id(0)
    pid_k = tl.program_id(1)
    tiles_n = (N + BLOCK_N - 1) // BLOCK_N
    pid_m = pid // tiles_n
    pid_n = pid % tiles_n
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    m_ok = offs_m < M
    n_ok = offs_n < N
    k_span = ((K + BLOCK_K - 1) // BLOCK_K + SPLIT_K - 1) // SPLIT_K * BLOCK_K
    k_begin = pid_k * k_span
    k_end = tl.minimum(k_begin + k_span, K)
    acc = tl.full((BLOCK_M, BLOCK_N), 0.0, dtype=tl.float32)
    for k0 in range(k_begin, k_end, BLOCK_K):
        kk = k0 + offs_k
        k_ok = kk < k_end
        x = tl.load(x_ptr + offs_m[:, None] * stride_xm + kk[None, :], mask=m_ok[:, None] & k_ok[None, :], other=0.0)
        w_mask = k_ok[:, None] & n_ok[None, :]
        if BITS == 4:
            byte = tl.load(w_ptr + offs_n[None, :] * stride_wn + (kk // 2)[:, None], mask=w_mask, other=0)
            code = (byte.to(tl.int32) >> ((kk % 2) * 4)[:, None]) & 0xF
            if SIGNED:
                code = (code ^ 8) - 8
        else:
            code = tl.load(w_ptr + offs_n[None, :] * stride_wn + kk[:, None], mask=w_mask, other=0).to(tl.int32)
        g = k0 // group
        if ASYM:
            code -= tl.load(zp_ptr + offs_n * n_groups + g, mask=n_ok, other=0)[None, :]
        scale = tl.load(scale_ptr + offs_n * n_groups + g, mask=n_ok, other=0.0)
        w = code.to(tl.float32) * scale[None, :]
        acc = tl.dot(x.to(tl.float32), w, acc)
    if HAS_BIAS:
        if pid_k == 0:
            acc += tl.load(bias_ptr + offs_n, mask=n_ok, other=0.0)[None, :]
    out = out_ptr + pid_k.to(tl.int64) * M * N + offs_m[:, None] * N + offs_n[None, :]
    tl.store(out, acc, mask=m_ok[:, None] & n_ok[None, :])
