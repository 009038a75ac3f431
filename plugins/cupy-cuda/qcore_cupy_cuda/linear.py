"""Linear kernels: w8a8 through a __dp4a int8 GEMM, w4a16 through a fused-dequant GEMV.

`prepare` runs once per layer: it moves the quantized weight to the GPU in the
layout its kernel reads (int8 codes as they are; int4 codes packed two a byte,
low nibble first) and keeps CuPy views of it, so a call only wraps `x` and the
output. Per call the input is checked for NaN/Inf (a host synchronisation,
skipped while a CUDA graph is being captured), then the kernels run on torch's
current stream.
"""

from __future__ import annotations

from typing import Any

import attrs
import torch

from qcore.kernels import LinearWeights, linear_rows
from qcore.spec import QuantSpec
from qcore_cupy_cuda import runtime as rt
from qcore_cupy_cuda.quant import quantize

GEMM_TILE = 128
GEMM_THREADS = 256
ROW_THREADS = 256
GEMV_WARPS = 8
GEMV_ROWS = 8  # rows of x per GEMV block (MT in gemv_w4a16.cu)


def _device(t: torch.Tensor) -> torch.device:
    return t.device if t.is_cuda else torch.device("cuda", torch.cuda.current_device())


def _activations(x: torch.Tensor, k: int) -> torch.Tensor:
    """x as a contiguous (M, K) float16/float32 CUDA matrix, rows 16-byte aligned."""
    rt.require_cuda(x, "the input")
    x2 = linear_rows(x.detach(), k, keep=(torch.float16, torch.float32))
    return x2.clone() if x2.data_ptr() % 16 else x2


def _template(x: torch.Tensor) -> str:
    return "f16" if x.dtype == torch.float16 else "float"


@attrs.frozen(eq=False)
class Int8Weights:
    """A w8a8 layer on the GPU: int8 codes (N, K), per-channel scales (N,), optional bias and static act scale."""

    codes: torch.Tensor
    scale: torch.Tensor
    bias: torch.Tensor | None
    act_scale: torch.Tensor | None
    act_spec: QuantSpec | None
    views: tuple[Any, ...]  # CuPy views of codes, scale, bias (or scale again when there is no bias)

    @property
    def n(self) -> int:
        return self.codes.shape[0]

    @property
    def k(self) -> int:
        return self.codes.shape[1]


def prepare_w8a8(w: LinearWeights) -> Int8Weights:
    assert w.weight is not None
    dev = _device(w.weight.codes)
    codes = w.weight.codes.to(dev).contiguous()
    scale = w.weight.scale.to(dev, torch.float32).expand(codes.shape[0]).contiguous()
    bias = None if w.bias is None else w.bias.to(dev, torch.float32).contiguous()
    act = w.scheme.input_activations
    static = act is not None and not act.dynamic
    act_scale = w.act_scale.to(dev, torch.float32).reshape(1).contiguous() if static else None
    with rt.torch_stream(dev):
        views = (rt.as_cupy(codes), rt.as_cupy(scale), rt.as_cupy(bias if bias is not None else scale))
    return Int8Weights(codes, scale, bias, act_scale, act if static else None, views)


def quantize_rows(x2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token symmetric int8 codes (M, K) and scales (M,) of a prepared (M, K) input."""
    m, k = x2.shape
    codes = torch.empty((m, k), dtype=torch.int8, device=x2.device)
    scale = torch.empty((m,), dtype=torch.float32, device=x2.device)
    if m:
        with rt.torch_stream(x2.device):
            rt.kernel("gemm_dp4a.cu", f"quantize_rows_int8<{_template(x2)}>")(
                (m, 1, 1), (ROW_THREADS,), (rt.as_cupy(x2), rt.as_cupy(codes), rt.as_cupy(scale), rt.i32(k))
            )
    return codes, scale


def _gemm(a: torch.Tensor, w_views: tuple[Any, ...], n: int, a_scale: torch.Tensor, a_stride: int,
          has_bias: bool, raw: bool) -> torch.Tensor:
    m, k = a.shape
    out = torch.empty((m, n), dtype=torch.int32 if raw else torch.float32, device=a.device)
    if m and n:
        grid = (-(-n // GEMM_TILE), -(-m // GEMM_TILE), 1)
        codes, scale, bias = w_views
        with rt.torch_stream(a.device):
            rt.kernel("gemm_dp4a.cu", f"gemm_dp4a<{'true' if raw else 'false'}>")(
                grid, (GEMM_THREADS,),
                (rt.as_cupy(a), codes, rt.as_cupy(a_scale), rt.i32(a_stride), scale, bias, rt.i32(int(has_bias)),
                 rt.as_cupy(out), rt.i32(m), rt.i32(n), rt.i32(k)),
            )
    return out


def gemm_int8(a: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Exact int32 A (M, K) . W (N, K)^T of int8 CUDA matrices (K % 4 == 0): the dp4a GEMM's accumulators."""
    rt.require_cuda(a, "A")
    a, w = a.contiguous(), w.contiguous()
    ones = torch.ones((w.shape[0],), dtype=torch.float32, device=a.device)
    with rt.torch_stream(a.device):
        views = (rt.as_cupy(w), rt.as_cupy(ones), rt.as_cupy(ones))
    return _gemm(a, views, w.shape[0], ones, 0, False, raw=True)


def linear_w8a8(p: Int8Weights, x: torch.Tensor) -> torch.Tensor:
    """int8 activations (per token, or static per tensor) x int8 weights, dp4a, rescaled to float32."""
    x2 = _activations(x, p.k)
    if p.act_scale is None:
        codes, a_scale = quantize_rows(x2)
        stride = 1
    else:
        codes = quantize(x2, p.act_spec, p.act_scale.reshape(())).codes
        a_scale, stride = p.act_scale, 0
    out = _gemm(codes, p.views, p.n, a_scale, stride, p.bias is not None, raw=False)
    return out.reshape(*x.shape[:-1], p.n)


@attrs.frozen(eq=False)
class Int4Weights:
    """A w4a16 layer on the GPU: packed codes (N, K/2), group scales and zero-points (N, K/g), bias."""

    packed: torch.Tensor
    scale: torch.Tensor
    zero_point: torch.Tensor
    bias: torch.Tensor | None
    signed: bool
    asymmetric: bool
    group_size: int
    views: tuple[Any, ...]  # CuPy views of packed, scale, zero_point, bias (or scale when there is no bias)

    @property
    def n(self) -> int:
        return self.packed.shape[0]

    @property
    def k(self) -> int:
        return self.packed.shape[1] * 2


def pack_int4(codes: torch.Tensor) -> torch.Tensor:
    """(N, K) int4/uint4 codes -> (N, K/2) bytes, low nibble first (the canonical packing; K even)."""
    nibbles = (codes.to(torch.int16) & 0xF).to(torch.uint8)
    return (nibbles[:, 0::2] | (nibbles[:, 1::2] << 4)).contiguous()


def prepare_w4a16(w: LinearWeights) -> Int4Weights:
    assert w.weight is not None and w.weight.spec.group_size is not None
    dev = _device(w.weight.codes)
    packed = pack_int4(w.weight.codes.to(dev))
    scale = w.weight.scale.to(dev, torch.float32).contiguous()
    zp = w.weight.zero_point.to(dev, torch.int32).expand(scale.shape).contiguous()
    bias = None if w.bias is None else w.bias.to(dev, torch.float32).contiguous()
    with rt.torch_stream(dev):
        views = tuple(rt.as_cupy(t) for t in (packed, scale, zp, bias if bias is not None else scale))
    spec = w.weight.spec
    return Int4Weights(packed, scale, zp, bias, spec.info.signed, not spec.symmetric, spec.group_size, views)


def linear_w4a16(p: Int4Weights, x: torch.Tensor) -> torch.Tensor:
    """float activations x int4 group weights dequantized on the fly; float32 accumulation."""
    x2 = _activations(x, p.k)
    m = x2.shape[0]
    out = torch.empty((m, p.n), dtype=torch.float32, device=x2.device)
    if m and p.n:
        packed, scale, zp, bias = p.views
        grid = (-(-p.n // GEMV_WARPS), -(-m // GEMV_ROWS), 1)
        with rt.torch_stream(x2.device):
            rt.kernel("gemv_w4a16.cu", f"gemv_w4a16<{_template(x2)}>")(
                grid, (GEMV_WARPS * 32,),
                (rt.as_cupy(x2), packed, scale, zp, rt.i32(int(p.asymmetric)), rt.i32(int(p.signed)), bias,
                 rt.i32(int(p.bias is not None)), rt.as_cupy(out), rt.i32(m), rt.i32(p.n), rt.i32(p.k),
                 rt.i32(p.group_size)),
            )
    return out.reshape(*x.shape[:-1], p.n)
