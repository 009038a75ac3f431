"""Host side of the tensor ops: validate, compute qparams with `qcore.qparams`, launch the Triton kernels.

These functions take tensors of any device, so the same code runs the
compiled kernels on CUDA and the Triton interpreter on CPU.
"""

from __future__ import annotations

import math

import torch
import triton

from qcore.errors import ShapeError, SpecError
from qcore.kernels import PackedTensor, QTensor
from qcore.layout import flat_qparam_index, given_qparams
from qcore.qparams import check_finite, minmax_qparams
from qcore.spec import QuantSpec
from qcore_triton_gpu import quant_kernels as K
from qcore_triton_gpu.support import PACK_DTYPES, spec_shape_problem
from qcore_triton_gpu.tuning import bucket


FLOAT_GRIDS: dict[str, tuple[int, int]] = {"fp8_e4m3": (3, -6), "fp8_e5m2": (2, -14)}
"""Stored mantissa bits and smallest normal exponent of each fp8 format."""


def codes_dtype(spec: QuantSpec) -> torch.dtype:
    return getattr(torch, spec.info.torch_dtype)


def _grid(n: int):  # type: ignore[no-untyped-def]
    return lambda meta: (triton.cdiv(n, meta["BLOCK"]),)


def quantize(x: torch.Tensor, spec: QuantSpec, scale: torch.Tensor | None = None,
             zero_point: torch.Tensor | None = None) -> QTensor:
    """The `quantize` op: NaN/Inf rejected before any launch, qparams min-max unless given, codes on the GPU."""
    x = x.detach().to(torch.float32).contiguous()
    problem = spec_shape_problem(spec, tuple(x.shape))
    if problem:
        raise ShapeError(problem + f" (shape {tuple(x.shape)})")
    check_finite(x)
    if scale is None:
        scale, zp = minmax_qparams(x, spec)
    else:
        scale, zp = given_qparams(spec, x.shape, scale, zero_point, x.device)
    scale, zp = scale.contiguous(), zp.contiguous()
    codes = torch.empty(x.shape, dtype=codes_dtype(spec), device=x.device)
    if x.numel():
        info = spec.info
        mode = K.MODE_BINARY if spec.dtype == "binary" else K.MODE_FLOAT if info.is_float else K.MODE_INT
        qmin, qmax = spec.qrange
        inner, nq = flat_qparam_index(spec, x.shape)
        mant_bits, min_exp = FLOAT_GRIDS.get(spec.dtype, (0, 0))
        K.quantize_kernel[_grid(x.numel())](
            x, scale, zp, codes.view(torch.uint8) if info.is_float else codes, x.numel(), inner, nq, bucket(x.numel(), 1 << 30),
            QMIN=qmin, QMAX=qmax, MODE=mode.value, FMAX=float(info.fmax), MANT_BITS=mant_bits, MIN_EXP=min_exp,
        )
    return QTensor(codes=codes, scale=scale, zero_point=zp, spec=spec)


def dequantize(q: QTensor) -> torch.Tensor:
    """The `dequantize` op: float32((codes - zero_point) * scale)."""
    codes = q.codes.contiguous()
    out = torch.empty(codes.shape, dtype=torch.float32, device=codes.device)
    if codes.numel():
        inner, nq = flat_qparam_index(q.spec, codes.shape)
        scale = q.scale.to(device=codes.device, dtype=torch.float32).contiguous()
        zp = q.zero_point.to(device=codes.device, dtype=torch.int32).contiguous()
        K.dequantize_kernel[_grid(codes.numel())](codes, scale, zp, out, codes.numel(), inner, nq,
                                                  bucket(codes.numel(), 1 << 30))
    return out


def _check_packable(spec: QuantSpec) -> None:
    if spec.dtype not in PACK_DTYPES:
        raise SpecError(f"triton-gpu packs only 4-bit codes ({', '.join(PACK_DTYPES)}), not {spec.dtype}")


def pack4(codes: torch.Tensor) -> torch.Tensor:
    """(..., K) 4-bit codes → (..., ceil(K / 2)) uint8, the canonical storage."""
    codes = codes.contiguous()
    row_len = codes.shape[-1] if codes.ndim else 1
    row_bytes = (row_len + 1) // 2
    out = torch.empty((*codes.shape[:-1], row_bytes), dtype=torch.uint8, device=codes.device)
    if out.numel():
        K.pack4_kernel[_grid(out.numel())](codes, out, out.numel(), row_len, row_bytes, bucket(out.numel(), 1 << 30))
    return out


def pack_weight(q: QTensor) -> PackedTensor:
    _check_packable(q.spec)
    return PackedTensor(data=pack4(q.codes), shape=tuple(q.codes.shape), scale=q.scale,
                        zero_point=q.zero_point, spec=q.spec)


def unpack_weight(p: PackedTensor) -> QTensor:
    _check_packable(p.spec)
    shape = tuple(p.shape)
    row_len = shape[-1] if shape else 1
    data = p.data.contiguous()
    codes = torch.empty(shape, dtype=codes_dtype(p.spec), device=data.device)
    if codes.numel():
        K.unpack4_kernel[_grid(codes.numel())](data, codes, codes.numel(), row_len, (row_len + 1) // 2,
                                               bucket(codes.numel(), 1 << 30), SIGNED=p.spec.info.signed)
    return QTensor(codes=codes, scale=p.scale, zero_point=p.zero_point, spec=p.spec)
