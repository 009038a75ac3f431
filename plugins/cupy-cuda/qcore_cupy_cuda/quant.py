"""quantize / dequantize of int8, uint8, int4 and uint4 through ``kernels/quant.cu``.

Qparams come from `qcore.qparams` (the contract's arithmetic, in torch, on the
GPU); only the element-wise code computation runs in CUDA C, so the codes are
the reference's by construction of the same formula (double quotient, rint).
"""

from __future__ import annotations

import torch

from qcore.kernels import QTensor
from qcore.layout import flat_qparam_index, given_qparams
from qcore.qparams import check_finite, minmax_qparams
from qcore.spec import QuantSpec
from qcore_cupy_cuda import runtime as rt

INT_DTYPES: tuple[str, ...] = ("int8", "uint8", "int4", "uint4")
THREADS = 256
MAX_BLOCKS = 65536  # grid-stride loops cover the rest


def _grid(n: int) -> tuple[int, int, int]:
    return (min(-(-n // THREADS), MAX_BLOCKS), 1, 1)


def quantize(x: torch.Tensor, spec: QuantSpec, scale: torch.Tensor | None = None,
             zero_point: torch.Tensor | None = None) -> QTensor:
    """Codes of `x` (CUDA) for an integer `spec`; qparams from min-max unless given."""
    rt.require_cuda(x, "the input")
    x = x.detach().to(torch.float32).contiguous()
    check_finite(x, "input")
    shape = tuple(x.shape)
    div, mod = flat_qparam_index(spec, shape)
    if scale is None:
        scale, zp = minmax_qparams(x, spec)
        scale, zp = scale.contiguous(), zp.contiguous()
    else:
        scale, zp = given_qparams(spec, shape, scale, zero_point, x.device)
    codes = torch.empty(shape, dtype=getattr(torch, spec.info.torch_dtype), device=x.device)
    if x.numel():
        qmin, qmax = spec.qrange
        with rt.torch_stream(x.device):
            rt.kernel("quant.cu", "quantize_affine")(
                _grid(x.numel()), (THREADS,),
                (rt.as_cupy(x), rt.as_cupy(scale), rt.as_cupy(zp), rt.as_cupy(codes),
                 rt.i64(x.numel()), rt.i64(div), rt.i64(mod), rt.i32(qmin), rt.i32(qmax)),
            )
    return QTensor(codes, scale, zp, spec)


def dequantize(q: QTensor) -> torch.Tensor:
    """float32 ``(code - zero_point) * scale`` of a QTensor on CUDA."""
    rt.require_cuda(q.codes, "the codes")
    codes = q.codes.contiguous()
    div, mod = flat_qparam_index(q.spec, codes.shape)
    scale, zp = given_qparams(q.spec, codes.shape, q.scale, q.zero_point, codes.device)
    out = torch.empty(codes.shape, dtype=torch.float32, device=codes.device)
    if codes.numel():
        with rt.torch_stream(codes.device):
            rt.kernel("quant.cu", "dequantize_affine")(
                _grid(codes.numel()), (THREADS,),
                (rt.as_cupy(codes), rt.as_cupy(scale), rt.as_cupy(zp), rt.as_cupy(out),
                 rt.i64(codes.numel()), rt.i64(div), rt.i64(mod), rt.i32(int(q.spec.info.signed))),
            )
    return out
