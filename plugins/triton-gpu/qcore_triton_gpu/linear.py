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
from qcore.kernels import LinearWeights, linear_rows
from qcore.qparams import minmax_qparams
from qcore.spec import QuantSpec
from qcore_triton_gpu import gemv_kernels as GK
from qcore_triton_gpu import linear_kernels as LK
from qcore_triton_gpu import quant_kernels as QK
from qcore_triton_gpu.quantize import pack4
from qcore_triton_gpu.support import w8a8_problem, weight_only_problem
from qcore_triton_gpu.tuning import bucket

MIN_SPLIT_SPAN = 128
"""Split-K never gives a program fewer K values than this (one int4 group)."""
SMALL_M = 64
"""Up to this many rows, a weight-only GEMM has too few tiles to fill the GPU without split-K."""
ROW_BLOCK = 4096
"""Most activation values a program of the row quantizer holds at once."""


def _float_rows(x: torch.Tensor, k: int) -> torch.Tensor:
    """`x` (..., K) as a finite, contiguous (M, K) float matrix; half and bfloat16 stay so (kernels widen exactly)."""
    return linear_rows(x.detach(), k, keep=(torch.float16, torch.bfloat16, torch.float32))


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
        act_scale=None if act.dynamic else w.act_scale.to(torch.float32).reshape(1),
    )


def quantize_rows(p: W8A8, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(int8 codes (M, K), scales) of the activations: one scale a row (per token) or one for all (per tensor)."""
    m, k = rows.shape
    codes = torch.empty((m, k), dtype=torch.int8, device=rows.device)
    per_token = p.act.granularity == "token"
    if p.act_scale is not None:
        scale = p.act_scale.to(rows.device)
    elif per_token:
        scale = torch.empty(m, dtype=torch.float32, device=rows.device)
    else:
        scale = minmax_qparams(rows.to(torch.float32), p.act)[0].reshape(1)
    if m and k:
        QK.quantize_rows_kernel[(m,)](rows, scale, codes, k, rows.stride(0), QMAX=p.act.qrange[1],
                                      DYNAMIC=per_token, BLOCK=bucket(k, ROW_BLOCK), num_warps=4)
    elif per_token:
        scale.fill_(1.0)
    return codes, scale


def w8a8_linear(p: W8A8, x: torch.Tensor) -> torch.Tensor:
    """float32 (..., N) = rescaled int32 GEMM of the int8-quantized `x` and the int8 weight, plus bias."""
    n, k = p.codes.shape
    rows = _float_rows(x, k)
    dev = rows.device
    codes, w_scale, bias = p.codes.to(dev), p.w_scale.to(dev), _optional_to(p.bias, dev)
    a_codes, a_scale = quantize_rows(p, rows)
    m = rows.shape[0]
    out = torch.empty((m, n), dtype=torch.float32, device=dev)
    if m and n:
        grid = lambda meta: (triton.cdiv(m, meta["BLOCK_M"]) * triton.cdiv(n, meta["BLOCK_N"]),)  # noqa: E731
        LK.int8_gemm_kernel[grid](a_codes, a_scale, int(a_scale.numel() > 1), codes, w_scale,
                                  bias if bias is not None else w_scale, out, m, n, k,
                                  a_codes.stride(0), codes.stride(0), out.stride(0), bucket(m),
                                  HAS_BIAS=bias is not None)
    return out.reshape(*x.shape[:-1], n)


@attrs.frozen(eq=False)
class WeightOnly:
    """Weight codes in kernel layout (4-bit: packed (N, K/2) uint8) with (N, groups) scales and zero-points.

    `locks` are the GEMV's split-K arrival counters (zero between calls: the
    last program of a tile resets its own); one set per layer, so one layer
    must not run on two streams at once.
    """

    codes: torch.Tensor
    scale: torch.Tensor
    zero_point: torch.Tensor | None
    bias: torch.Tensor | None
    spec: QuantSpec
    in_features: int
    group: int
    locks: torch.Tensor

    @property
    def n_groups(self) -> int:
        return self.scale.shape[1]

    @property
    def out_features(self) -> int:
        return self.codes.shape[0]


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
        locks=torch.zeros(GK.GEMV_MAX_M * triton.cdiv(n, GK.MIN_BLOCK_N), dtype=torch.int32, device=codes.device),
    )


def split_k(m: int, n: int, k: int, device: torch.device) -> int:
    """K splits for a weight-only GEMM: enough programs for ~2 waves when M is small, a power of two."""
    if m > SMALL_M:
        return 1
    sms = torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 2
    want = max(1, 2 * sms // triton.cdiv(n, 64))
    most = max(1, min(want, k // MIN_SPLIT_SPAN, 16))
    return 1 << (most.bit_length() - 1)


def _on(p: WeightOnly, dev: torch.device
        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """(codes, scale, zero_point, bias) on `dev`."""
    return p.codes.to(dev), p.scale.to(dev), _optional_to(p.zero_point, dev), _optional_to(p.bias, dev)


def dot(p: WeightOnly, rows: torch.Tensor, splits: int | None = None) -> torch.Tensor:
    """float32 (M, N) = rows @ deq(W).T + bias by the tl.dot kernel (`splits` K splits, else the heuristic).

    `rows` is a contiguous (M, K) float matrix with M, N, K > 0, as `weight_only_linear` passes it.
    """
    codes, scale, zp, bias = _on(p, rows.device)
    k, n, m = p.in_features, p.out_features, rows.shape[0]
    splits = splits or split_k(m, n, k, rows.device)
    out = torch.empty((splits, m, n), dtype=torch.float32, device=rows.device)  # every program writes its tile
    grid = lambda meta: (triton.cdiv(m, meta["BLOCK_M"]) * triton.cdiv(n, meta["BLOCK_N"]), splits)  # noqa: E731
    LK.weight_only_kernel[grid](
        rows, codes, scale, zp if zp is not None else scale, bias if bias is not None else scale, out,
        m, n, k, p.group, p.n_groups, rows.stride(0), codes.stride(0), bucket(m),
        BITS=p.spec.bits, SIGNED=p.spec.info.signed, ASYM=zp is not None, HAS_BIAS=bias is not None,
        SPLIT_K=splits,
    )
    return out[0] if splits == 1 else out.sum(0)


def gemv(p: WeightOnly, rows: torch.Tensor, config: triton.Config | None = None) -> torch.Tensor:
    """float32 (M, N) = rows @ deq(W).T + bias by the GEMV kernel, M ≤ GEMV_MAX_M; `config` skips autotuning.

    `rows` as for `dot`.
    """
    codes, scale, zp, bias = _on(p, rows.device)
    k, n, m = p.in_features, p.out_features, rows.shape[0]
    if m > GK.GEMV_MAX_M:
        raise ShapeError(f"the GEMV takes at most {GK.GEMV_MAX_M} rows, got {m}")
    out = torch.empty((m, n), dtype=torch.float32, device=rows.device)
    workspace = torch.empty((GK.MAX_SPLIT_K, m, n), dtype=torch.float32, device=rows.device)
    launch = GK.gemv_kernel if config is None else GK.gemv_kernel.fn
    grid = lambda meta: (triton.cdiv(n, meta["BLOCK_N"]), meta["SPLIT_K"], m)  # noqa: E731
    launch[grid](
        rows, codes, scale, zp if zp is not None else scale, bias if bias is not None else scale, workspace,
        p.locks.to(rows.device), out, m, n, k, p.n_groups, rows.stride(0), codes.stride(0),
        BITS=p.spec.bits, SIGN_BIAS=1 << (p.spec.bits - 1) if p.spec.info.signed else 0, ASYM=zp is not None,
        HAS_BIAS=bias is not None, GROUP=p.group, **({} if config is None else config.all_kwargs()),
    )
    return out


def weight_only_linear(p: WeightOnly, x: torch.Tensor) -> torch.Tensor:
    """float32 (..., N) = x @ deq(W).T + bias with the dequantization fused: the GEMV up to 4 rows, else tl.dot."""
    n = p.out_features
    rows = _float_rows(x, p.in_features)
    m = rows.shape[0]
    if not (m and n and p.in_features):
        out = torch.zeros((m, n), dtype=torch.float32, device=rows.device)
        result = out if p.bias is None else out + p.bias.to(rows.device)
    else:
        result = gemv(p, rows) if m <= GK.GEMV_MAX_M else dot(p, rows)
    return result.reshape(*x.shape[:-1], n)
