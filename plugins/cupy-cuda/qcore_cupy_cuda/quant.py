"""quantize / dequantize of int8, uint8, int4 and uint4 through ``kernels/quant.cu``.

Qparams come from `qcore.qparams` (the contract's arithmetic, in torch, on the
GPU); only the element-wise code computation runs in CUDA C, so the codes are
the reference's by construction of the same formula (double quotient, rint).
"""

from __future__ import annotations

import math

import torch

from qcore.errors import ShapeError
from qcore.kernels import QTensor
from qcore.qparams import canonical_axis, check_finite, minmax_qparams
from qcore.spec import QuantSpec
from qcore_cupy_cuda import runtime as rt

INT_DTYPES: tuple[str, ...] = ("int8", "uint8", "int4", "uint4")
THREADS = 256
MAX_BLOCKS = 65536  # grid-stride loops cover the rest


def index_map(shape: tuple[int, ...], spec: QuantSpec) -> tuple[int, int, tuple[int, ...]]:
    """(div, mod, qparam shape): element i of a contiguous tensor uses qparam (i // div) % mod."""
    numel = math.prod(shape)
    if spec.granularity == "tensor":
        return 1, 1, ()
    if not shape:
        raise ShapeError(f"{spec.granularity} quantization needs at least one dimension")
    if spec.granularity == "token":
        return shape[-1], max(numel // max(shape[-1], 1), 1), shape[:-1]
    if spec.granularity == "channel":
        axis = canonical_axis(spec, len(shape))
        return max(math.prod(shape[axis + 1:]), 1), max(shape[axis], 1), (shape[axis],)
    g = spec.group_size
    assert g is not None
    if shape[-1] % g:
        raise ShapeError(f"group_size {g} does not divide the last dimension {shape[-1]} (shape {shape})")
    return g, max(numel // g, 1), (*shape[:-1], shape[-1] // g)


def _grid(n: int) -> tuple[int, int, int]:
    return (min(-(-n // THREADS), MAX_BLOCKS), 1, 1)


def _given_qparams(scale: torch.Tensor, zero_point: torch.Tensor | None, qshape: tuple[int, ...],
                   device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    if tuple(scale.shape) != qshape:
        raise ShapeError(f"scale has shape {tuple(scale.shape)}; this granularity needs {qshape}")
    scale = scale.to(device=device, dtype=torch.float32).contiguous()
    if zero_point is None:
        return scale, torch.zeros_like(scale, dtype=torch.int32)
    if tuple(zero_point.shape) != qshape:
        raise ShapeError(f"zero_point has shape {tuple(zero_point.shape)}; this granularity needs {qshape}")
    return scale, zero_point.to(device=device, dtype=torch.int32).contiguous()


def quantize(x: torch.Tensor, spec: QuantSpec, scale: torch.Tensor | None = None,
             zero_point: torch.Tensor | None = None) -> QTensor:
    """Codes of `x` (CUDA) for an integer `spec`; qparams from min-max unless given."""
    rt.require_cuda(x, "the input")
    x = x.detach().to(torch.float32).contiguous()
    check_finite(x, "input")
    shape = tuple(x.shape)
    div, mod, qshape = index_map(shape, spec)
    if scale is None:
        scale, zp = minmax_qparams(x, spec)
        scale, zp = scale.contiguous(), zp.contiguous()
    else:
        scale, zp = _given_qparams(scale, zero_point, qshape, x.device)
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
    div, mod, qshape = index_map(tuple(codes.shape), q.spec)
    scale, zp = _given_qparams(q.scale, q.zero_point, qshape, codes.device)
    out = torch.empty(codes.shape, dtype=torch.float32, device=codes.device)
    if codes.numel():
        with rt.torch_stream(codes.device):
            rt.kernel("quant.cu", "dequantize_affine")(
                _grid(codes.numel()), (THREADS,),
                (rt.as_cupy(codes), rt.as_cupy(scale), rt.as_cupy(zp), rt.as_cupy(out),
                 rt.i64(codes.numel()), rt.i64(div), rt.i64(mod), rt.i32(int(q.spec.info.signed))),
            )
    return out
