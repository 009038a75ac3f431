"""Host side of the linear kernels: `prepare_*` once per layer, `*_linear(prepared, x)` per call.

Prepared weights stay on the device of the quantized weight; a call on
another device moves them (a no-op in the normal case), so the same code runs
compiled on CUDA and interpreted on CPU.
"""

from __future__ import annotations

import attrs
import torch
import triton

from qcore.errors import ShapeError, SpecError
from qcore.kernels import LinearWeights
from qcore.qparams import check_finite, expand, minmax_qparams
from qcore.spec import QuantSpec
from qcore_triton_gpu import linear_kernels as LK
from qcore_triton_gpu.quantize import pack4
from qcore_triton_gpu.support import w8a8_problem, weight_only_problem
from qcore_triton_gpu.tuning import bucket

MIN_SPLIT_SPAN = 128
"""Split-K never gives a program fewer K values than this (one int4 group)."""
SMALL_M = 64
"""Up to this many rows, a weight-only GEMM has too few tiles to fill the GPU without split-K."""


def _rows(x: torch.Tensor, k: int) -> torch.Tensor:
    if x.ndim == 0 or x.shape[-1] != k:
        raise ShapeError(f"linear expects input of shape (..., {k}), got {tuple(x.shape)}")
    return x.detach().reshape(-1, k).contiguous()


def _optional_to(t: torch.Tensor | None, device: torch.device) -> torch.Tensor | None:
    return None if t is None else t.to(device)


def _bias(w: LinearWeights) -> torch.Tensor | None:
    return None if w.bias is None else w.bias.detach().to(torch.float32).contiguous()


@attrs.frozen(eq=False)
class W8A8:
    """int8 (N, K) weight codes, their per-channel scales, and how activations are quantized."""

    codes: torch.Tensor
    w_scale: torch.Tensor
    bias: torch.Tensor | None
    act: QuantSpec
    act_scale: torch.Tensor | None


def prepare_w8a8(w: LinearWeights) -> W8A8:
    problem = w8a8_problem(w.scheme)
    if problem or w.weight is None:
        raise SpecError(f"triton-gpu w8a8 cannot run scheme {w.scheme.name!r}: {problem or 'no quantized weight'}")
    act = w.scheme.input_activations
    assert act is not None
    if not act.dynamic and w.act_scale is None:
        raise SpecError(f"scheme {w.scheme.name!r} has static activations but LinearWeights.act_scale is None; "
                        "calibrate first")
    return W8A8(
        codes=w.weight.codes.contiguous(),
        w_scale=w.weight.scale.to(torch.float32).contiguous(),
        bias=_bias(w),
        act=act,
        act_scale=None if act.dynamic else w.act_scale.to(torch.float32),
    )


def _act_scales(p: W8A8, rows: torch.Tensor) -> torch.Tensor:
    """One scale per row: per-token/per-tensor min-max per the contract (exact, in torch), or the static one."""
    if p.act_scale is not None:
        scale = p.act_scale.to(rows.device)
    else:
        check_finite(rows, "linear input")
        scale, _ = minmax_qparams(rows, p.act)
    return expand(scale, p.act, rows.shape).expand(rows.shape[0], 1).reshape(-1).contiguous()


def w8a8_linear(p: W8A8, x: torch.Tensor) -> torch.Tensor:
    """float32 (..., N) = rescaled int32 GEMM of the int8-quantized `x` and the int8 weight, plus bias."""
    n, k = p.codes.shape
    rows = _rows(x, k).to(torch.float32)
    dev = rows.device
    codes, w_scale, bias = p.codes.to(dev), p.w_scale.to(dev), _optional_to(p.bias, dev)
    a_scale = _act_scales(p, rows)
    m = rows.shape[0]
    out = torch.empty((m, n), dtype=torch.float32, device=dev)
    if m and n:
        qmax = p.act.qrange[1]
        grid = lambda meta: (triton.cdiv(m, meta["BLOCK_M"]), triton.cdiv(n, meta["BLOCK_N"]))  # noqa: E731
        LK.w8a8_kernel[grid](rows, a_scale, codes, w_scale, bias if bias is not None else w_scale, out, m, n, k,
                             rows.stride(0), codes.stride(0), out.stride(0), bucket(m),
                             QMAX=qmax, HAS_BIAS=bias is not None)
    return out.reshape(*x.shape[:-1], n)


@attrs.frozen(eq=False)
class WeightOnly:
    """Weight codes in kernel layout (4-bit: packed (N, K/2) uint8) with (N, groups) scales and zero-points."""

    codes: torch.Tensor
    scale: torch.Tensor
    zero_point: torch.Tensor | None
    bias: torch.Tensor | None
    spec: QuantSpec
    in_features: int
    group: int

    @property
    def n_groups(self) -> int:
        return self.scale.shape[1]


def prepare_weight_only(w: LinearWeights) -> WeightOnly:
    problem = weight_only_problem(w.scheme, (1, w.in_features, w.out_features))
    if problem or w.weight is None:
        raise SpecError(f"triton-gpu weight-only linear cannot run scheme {w.scheme.name!r}: "
                        f"{problem or 'no quantized weight'}")
    q = w.weight
    n, k = q.codes.shape
    group = q.spec.group_size if q.spec.granularity == "group" else k
    assert group is not None
    codes = pack4(q.codes) if q.spec.bits == 4 else q.codes.contiguous()
    return WeightOnly(
        codes=codes,
        scale=q.scale.to(torch.float32).reshape(n, -1).contiguous(),
        zero_point=None if q.spec.symmetric else q.zero_point.to(torch.int32).reshape(n, -1).contiguous(),
        bias=_bias(w),
        spec=q.spec,
        in_features=k,
        group=group,
    )


def split_k(m: int, n: int, k: int, device: torch.device) -> int:
    """K splits for a weight-only GEMM: enough programs for ~2 waves when M is small, a power of two."""
    if m > SMALL_M:
        return 1
    sms = torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 2
    want = max(1, 2 * sms // triton.cdiv(n, 64))
    most = max(1, min(want, k // MIN_SPLIT_SPAN, 16))
    return 1 << (most.bit_length() - 1)


def weight_only_linear(p: WeightOnly, x: torch.Tensor, splits: int | None = None) -> torch.Tensor:
    """float32 (..., N) = x @ deq(W).T + bias with the dequantization fused into the GEMM."""
    k = p.in_features
    n = p.codes.shape[0]
    rows = _rows(x, k)
    if not rows.is_floating_point():
        rows = rows.to(torch.float32)
    dev = rows.device
    codes, scale = p.codes.to(dev), p.scale.to(dev)
    zp, bias = _optional_to(p.zero_point, dev), _optional_to(p.bias, dev)
    m = rows.shape[0]
    splits = splits or split_k(m, n, k, dev)
    if not (m and n and k):
        out = torch.zeros((m, n), dtype=torch.float32, device=dev)
        return (out if bias is None else out + bias).reshape(*x.shape[:-1], n)
    out = torch.empty((splits, m, n), dtype=torch.float32, device=dev)  # every program writes its tile
    grid = lambda meta: (triton.cdiv(m, meta["BLOCK_M"]) * triton.cdiv(n, meta["BLOCK_N"]), splits)  # noqa: E731
    LK.weight_only_kernel[grid](
        rows, codes, scale, zp if zp is not None else scale, bias if bias is not None else scale, out,
        m, n, k, p.group, p.n_groups, rows.stride(0), codes.stride(0), bucket(m),
        BITS=p.spec.bits, SIGNED=p.spec.info.signed, ASYM=zp is not None, HAS_BIAS=bias is not None,
        SPLIT_K=splits,
    )
    result = out[0] if splits == 1 else out.sum(0)
    return result.reshape(*x.shape[:-1], n)
