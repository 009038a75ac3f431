"""The reference kernels: torch tensors in and out (on CPU), NumPy arithmetic from `numerics` inside."""

from __future__ import annotations

import attrs
import numpy as np
import torch

from qcore.errors import ShapeError, SpecError
from qcore.kernels import LinearWeights, PackedTensor, QTensor
from qcore.spec import QuantSpec
from qcore_cpu_reference import numerics, packing


def to_numpy(t: torch.Tensor) -> np.ndarray:
    """A CPU NumPy copy; floating tensors (bf16 and fp8 included) as float32, which is exact."""
    t = t.detach().cpu()
    if t.is_floating_point():
        t = t.to(torch.float32)
    return t.numpy()


def _codes_tensor(codes: np.ndarray, spec: QuantSpec) -> torch.Tensor:
    """Codes in the QTensor storage dtype: the torch float dtype, or int8 / uint8."""
    if spec.info.is_float:
        return torch.from_numpy(np.ascontiguousarray(codes, dtype=np.float32)).to(getattr(torch, spec.info.torch_dtype))
    storage = np.int8 if spec.info.signed else np.uint8
    return torch.from_numpy(np.ascontiguousarray(codes, dtype=storage))


def _qtensor(codes: np.ndarray, scale: np.ndarray, zero_point: np.ndarray, spec: QuantSpec) -> QTensor:
    return QTensor(
        _codes_tensor(codes, spec),
        torch.from_numpy(np.array(scale, dtype=np.float32)),
        torch.from_numpy(np.array(zero_point, dtype=np.int32)),
        spec,
    )


def _optional(t: torch.Tensor | None) -> np.ndarray | None:
    return None if t is None else to_numpy(t)


def quantize(
    x: torch.Tensor, spec: QuantSpec, scale: torch.Tensor | None = None, zero_point: torch.Tensor | None = None
) -> QTensor:
    """Codes of `x` for `spec`, with qparams from `x` (min-max) unless `scale` is given."""
    x_np = to_numpy(x).astype(np.float32)
    return _qtensor(*numerics.quantize(x_np, spec, _optional(scale), _optional(zero_point)), spec)


def dequantize(q: QTensor) -> torch.Tensor:
    """float32 values of `q`."""
    values = numerics.dequantize(to_numpy(q.codes), to_numpy(q.scale), to_numpy(q.zero_point), q.spec)
    return torch.from_numpy(np.ascontiguousarray(values))


def pack_weight(q: QTensor) -> PackedTensor:
    """Canonical storage: sub-byte codes packed into uint8, other formats unchanged."""
    shape = tuple(q.codes.shape)
    if q.spec.info.sub_byte:
        data = torch.from_numpy(packing.pack(to_numpy(q.codes), q.spec))
    else:
        data = q.codes.detach().cpu().clone()
    return PackedTensor(data, shape, q.scale.detach().cpu(), q.zero_point.detach().cpu(), q.spec)


def unpack_weight(p: PackedTensor) -> QTensor:
    """The QTensor that `pack_weight` stored."""
    if p.spec.info.sub_byte:
        codes = _codes_tensor(packing.unpack(to_numpy(p.data), tuple(p.shape), p.spec), p.spec)
    else:
        codes = p.data.detach().cpu().clone().reshape(p.shape)
    return QTensor(codes, p.scale.detach().cpu(), p.zero_point.detach().cpu(), p.spec)


@attrs.frozen(eq=False)
class PreparedLinear:
    """A layer ready for `linear`: the dequantized weight and bias in float64, the activation qparams."""

    weight: np.ndarray
    bias: np.ndarray | None
    act_spec: QuantSpec | None
    act_scale: np.ndarray | None
    act_zero_point: np.ndarray | None


def prepare_linear(w: LinearWeights) -> PreparedLinear:
    """Dequantize the weight once (float32 per the contract, held as float64 for the GEMM)."""
    act = w.scheme.input_activations
    if act is not None and act.info.scaled and not act.dynamic and w.act_scale is None:
        raise SpecError(
            f"scheme {w.scheme.name!r} has static activations ({act.describe()}) but LinearWeights.act_scale is None; "
            "calibrate first"
        )
    if w.weight is not None:
        weight = dequantize(w.weight)
    elif w.float_weight is not None:
        weight = w.float_weight
    else:
        raise SpecError(f"scheme {w.scheme.name!r}: LinearWeights has neither a quantized nor a float weight")
    static = act is not None and not act.dynamic
    return PreparedLinear(
        weight=to_numpy(weight).astype(np.float64),
        bias=None if w.bias is None else to_numpy(w.bias).astype(np.float64),
        act_spec=act,
        act_scale=_optional(w.act_scale) if static else None,
        act_zero_point=_optional(w.act_zero_point) if static else None,
    )


def linear(prepared: PreparedLinear, x: torch.Tensor) -> torch.Tensor:
    """float32(A @ deq(Wq).T + b) in float64, A the activation-quantized `x` viewed as (rows, K)."""
    n, k = prepared.weight.shape
    if x.ndim == 0 or x.shape[-1] != k:
        raise ShapeError(f"linear expects input of shape (..., {k}), got {tuple(x.shape)}")
    rows = to_numpy(x).astype(np.float32).reshape(-1, k)
    numerics.check_finite(rows)
    if prepared.act_spec is not None:
        rows = numerics.fake_quantize(rows, prepared.act_spec, prepared.act_scale, prepared.act_zero_point)
    out = rows.astype(np.float64) @ prepared.weight.T
    if prepared.bias is not None:
        out = out + prepared.bias
    return torch.from_numpy(out.astype(np.float32).reshape(*x.shape[:-1], n))
