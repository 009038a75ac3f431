"""Triton kernels for the tensor ops: quantize, dequantize, pack/unpack 4-bit codes.

Like every kernel module here, only triton builtins are called, no
`triton.language.standard` helpers (tl.sum, tl.max, tl.zeros, tl.cdiv): those
are @jit functions decorated when triton itself is imported, so a process
that imported triton before setting TRITON_INTERPRET could not interpret them.
Reductions pass standard's combine functions to the builtin `tl.reduce`
(`total`, `largest`): the interpreter recognises them and never calls them,
where any other combine function is called once per element from Python.

Every granularity is one flat elementwise kernel: for a contiguous tensor the
qparam of flat element f is ``(f // inner) % nq`` (tensor: inner = numel, nq = 1;
channel: inner = prod(S[axis+1:]), nq = S[axis]; token: inner = S[-1];
group: inner = group_size), in the canonical qparam order of `qcore.kernels`.
"""

from __future__ import annotations

import triton
import triton.language as tl

from qcore_triton_gpu.tuning import pruner

MODE_INT = tl.constexpr(0)
MODE_BINARY = tl.constexpr(1)
MODE_FLOAT = tl.constexpr(2)

ROUND_LIMIT = tl.constexpr(1048576.0)
"""|quotients| are clamped here before rounding: exact for `rne`, and far outside every code range."""

_ELEMENTWISE = [triton.Config({"BLOCK": 1024}, num_warps=4), triton.Config({"BLOCK": 4096}, num_warps=8)]


@triton.jit
def rne(v):
    """Round half to even (torch.round), without libdevice so the interpreter runs it too.

    Exact for |v| < 2**22 in float32 and 2**51 in float64: ``v + 0.5`` is then exact.
    """
    r = tl.floor(v + 0.5)
    tie = (r - v) == 0.5
    odd = tl.floor(r * 0.5) * 2.0 != r
    return tl.where(tie & odd, r - 1.0, r)


@triton.jit
def total(v, axis: tl.constexpr):
    """tl.sum: the same reduction, with the combine function the interpreter runs as one NumPy sum."""
    return tl.reduce(v, axis, tl.standard._sum_combine)


@triton.jit
def largest(v, axis: tl.constexpr):
    """tl.max of non-NaN values, the same way."""
    return tl.reduce(v, axis, tl.standard._elementwise_max)


@triton.jit
def clip(v, lo, hi):
    """min(max(v, lo), hi): `tl.clamp` lowers to an NVVM intrinsic that has no float64 form on some Triton versions."""
    return tl.minimum(tl.maximum(v, lo), hi)


@triton.jit
def encode_float(v, MANT_BITS: tl.constexpr, MIN_EXP: tl.constexpr):
    """The bits of float32 `v` (already clamped to ±fmax) rounded half-to-even onto a float format (fp8).

    The grid spacing around `v` is 2**s, s = max(e, MIN_EXP) - MANT_BITS with
    e the exponent of `v` (subnormals share the smallest normal spacing), and
    scaling by 2**-s is exact, so `rne` sees the exact quotient n. Then
    n * 2**s is encoded as ((s + MANT_BITS - MIN_EXP) << MANT_BITS) + n: for a
    normal n carries the implicit leading bit into the exponent field (also
    when rounding reached the next binade), for a subnormal the field is 0.
    Writing the bits with integer ops, not a float → fp8 conversion, keeps the
    result independent of the conversion instruction and of the interpreter.
    """
    bits = v.to(tl.int32, bitcast=True)
    log_step = tl.maximum(((bits >> 23) & 0xFF) - 127, MIN_EXP) - MANT_BITS
    inverse = ((127 - log_step) << 23).to(tl.float32, bitcast=True)  # multiply: fp32 `/` may be approximate
    n = rne(tl.abs(v) * inverse).to(tl.int32)
    code = ((log_step + MANT_BITS - MIN_EXP) << MANT_BITS) + n
    return tl.where(bits < 0, code | 0x80, code)  # the sign survives rounding to zero, as in a hardware conversion


@triton.autotune(configs=_ELEMENTWISE, key=["size_bucket"], prune_configs_by=pruner("x_ptr"))
@triton.jit
def quantize_kernel(x_ptr, scale_ptr, zp_ptr, out_ptr, numel, inner, nq, size_bucket,
                    QMIN: tl.constexpr, QMAX: tl.constexpr, MODE: tl.constexpr,
                    FMAX: tl.constexpr, MANT_BITS: tl.constexpr, MIN_EXP: tl.constexpr, BLOCK: tl.constexpr):
    """Codes per docs/numerics.md: the quotient in float64, rounded half-to-even, zero-point added, clamped.

    For float formats `out_ptr` is the codes viewed as uint8 and receives the bit patterns.
    """
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < numel
    x = tl.load(x_ptr + offs, mask=mask, other=0.0)
    qi = (offs // inner) % nq
    if MODE == MODE_BINARY:
        q = tl.where(x >= 0, 1, -1)
    else:
        s = tl.load(scale_ptr + qi, mask=mask, other=1.0)
        v = x.to(tl.float64) / s.to(tl.float64)
        if MODE == MODE_FLOAT:
            q = encode_float(clip(v.to(tl.float32), -FMAX, FMAX), MANT_BITS, MIN_EXP)
        else:
            zp = tl.load(zp_ptr + qi, mask=mask, other=0)
            r = rne(clip(v, -ROUND_LIMIT, ROUND_LIMIT)) + zp.to(tl.float64)
            q = clip(r, QMIN, QMAX)
    tl.store(out_ptr + offs, q.to(out_ptr.dtype.element_ty), mask=mask)


@triton.autotune(configs=_ELEMENTWISE, key=["size_bucket"], prune_configs_by=pruner("q_ptr"))
@triton.jit
def dequantize_kernel(q_ptr, scale_ptr, zp_ptr, out_ptr, numel, inner, nq, size_bucket, BLOCK: tl.constexpr):
    """float32((q - zero_point) * scale): the difference is exact in float32, so one rounding, as the contract says."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < numel
    qi = (offs // inner) % nq
    q = tl.load(q_ptr + offs, mask=mask).to(tl.float32)
    s = tl.load(scale_ptr + qi, mask=mask, other=1.0)
    zp = tl.load(zp_ptr + qi, mask=mask, other=0).to(tl.float32)
    tl.store(out_ptr + offs, (q - zp) * s, mask=mask)


@triton.autotune(configs=_ELEMENTWISE, key=["size_bucket"], prune_configs_by=pruner("codes_ptr"))
@triton.jit
def pack4_kernel(codes_ptr, out_ptr, n_bytes, row_len, row_bytes, size_bucket, BLOCK: tl.constexpr):
    """Two 4-bit codes a byte along the last axis, low nibble first; an odd last axis is padded with 0."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n_bytes
    k = (offs % row_bytes) * 2
    src = (offs // row_bytes) * row_len + k
    lo = tl.load(codes_ptr + src, mask=mask, other=0).to(tl.int32)
    hi = tl.load(codes_ptr + src + 1, mask=mask & (k + 1 < row_len), other=0).to(tl.int32)
    tl.store(out_ptr + offs, ((lo & 0xF) | ((hi & 0xF) << 4)).to(tl.uint8), mask=mask)


@triton.autotune(configs=_ELEMENTWISE, key=["size_bucket"], prune_configs_by=pruner("packed_ptr"))
@triton.jit
def unpack4_kernel(packed_ptr, out_ptr, numel, row_len, row_bytes, size_bucket,
                   SIGNED: tl.constexpr, BLOCK: tl.constexpr):
    """Inverse of `pack4_kernel`; signed nibbles are sign-extended from two's complement."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < numel
    k = offs % row_len
    byte = tl.load(packed_ptr + (offs // row_len) * row_bytes + k // 2, mask=mask, other=0).to(tl.int32)
    code = (byte >> ((k % 2) * 4).to(tl.int32)) & 0xF
    if SIGNED:
        code = (code ^ 8) - 8
    tl.store(out_ptr + offs, code.to(out_ptr.dtype.element_ty), mask=mask)


EPS32 = tl.constexpr(1.1920928955078125e-07)
"""float32 machine epsilon: the smallest scale the contract allows."""


@triton.jit
def quantize_rows_kernel(x_ptr, scale_ptr, codes_ptr, K, stride_xm,
                         QMAX: tl.constexpr, DYNAMIC: tl.constexpr, BLOCK: tl.constexpr):
    """Symmetric int codes of one activation row per program, in the input's own float dtype.

    With DYNAMIC the row's scale comes first, exactly as the contract says
    (amax in float32, float64(amax) / QMAX rounded once, 1.0 for an all-zero
    row, at least eps) and is stored to scale_ptr[row]; otherwise scale_ptr
    holds the one per-tensor scale. Codes: the float64 quotient rounded half
    to even and clamped to ±QMAX, as `quantize_kernel` computes them.
    """
    row = tl.program_id(0)
    x_row = x_ptr + row.to(tl.int64) * stride_xm
    out_row = codes_ptr + row.to(tl.int64) * K
    offs = tl.arange(0, BLOCK)
    if DYNAMIC:
        amax = tl.full((BLOCK,), 0.0, dtype=tl.float32)
        for k0 in range(0, K, BLOCK):
            x = tl.load(x_row + k0 + offs, mask=k0 + offs < K, other=0.0)
            amax = tl.maximum(amax, tl.abs(x.to(tl.float32)))
        top = largest(amax, 0)
        scale = tl.maximum((top.to(tl.float64) / QMAX).to(tl.float32), EPS32)
        scale = tl.where(top == 0.0, 1.0, scale)
        tl.store(scale_ptr + row, scale)
    else:
        scale = tl.load(scale_ptr)
    for k0 in range(0, K, BLOCK):
        x = tl.load(x_row + k0 + offs, mask=k0 + offs < K, other=0.0)
        v = clip(x.to(tl.float64) / scale.to(tl.float64), -ROUND_LIMIT, ROUND_LIMIT)
        q = clip(rne(v), -QMAX * 1.0, QMAX * 1.0)
        tl.store(out_row + k0 + offs, q.to(tl.int8), mask=k0 + offs < K)
