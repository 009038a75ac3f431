"""w8a8 (dynamic per-token or static per-tensor int8 activations × int8 per-channel weights) on the int8 GEMMs.

One pass over x (two sweeps over each row while it is in L1) computes the contract's qparams and codes
and writes them in the layout the micro-kernel reads; the micro-kernel sums int8 × int8 products exactly in int32 on pre-packed weight
panels; the epilogue subtracts zero-point × column sum, scales by row × channel and adds the bias.
"""

from __future__ import annotations

import ctypes
import math

import torch

from qcore.errors import SpecError
from qcore.kernels import KernelRequest, LinearWeights, QTensor, Support, linear_rows
from qcore.spec import QuantSpec
from qcore_cpu_native import packing
from qcore_cpu_native.claims import answer, int8_activations, int8_weights, k_limit
from qcore_cpu_native.isa import Isa, unavailable
from qcore_cpu_native.library import Int8Layer, Unavailable, check, library
from qcore_cpu_native.prepared import Prepared, pointer

TOKEN_SYM, TOKEN_ASYM, STATIC = 0, 1, 2


def supports(isa: Isa, request: KernelRequest, hardware: object) -> Support:
    scheme = request.scheme
    assert scheme is not None
    return answer(int8_weights(scheme.weights), int8_activations(scheme.input_activations), k_limit(request),
                  unavailable(isa))


def _mode(act: QuantSpec, scale: torch.Tensor | None, zero_point: torch.Tensor | None, what: str
          ) -> tuple[int, float, int]:
    """(QnActMode, static scale, static zero-point) for an activation spec and its calibrated qparams."""
    if act.dynamic:
        return (TOKEN_SYM if act.symmetric else TOKEN_ASYM), 1.0, 0
    if scale is None:
        raise SpecError(f"{what}: static activations ({act.describe()}) need calibrated act_scale")
    if scale.numel() != 1:
        raise SpecError(f"{what}: static activation qparams must be per tensor, got shape {tuple(scale.shape)}")
    value = float(scale)
    if not (math.isfinite(value) and value > 0):
        raise SpecError(f"{what}: act_scale must be finite and positive, got {value}")
    return STATIC, value, 0 if zero_point is None else int(zero_point.reshape(()))


def prepare(isa: Isa, w: LinearWeights) -> Prepared:
    q = w.weight
    act = w.scheme.input_activations
    assert q is not None and act is not None
    codes = q.codes.detach().cpu().to(torch.int8)
    if codes.numel() and int(codes.min()) < -127:
        raise SpecError(f"int8 weight codes reach {int(codes.min())}; symmetric codes stay in [-127, 127]")
    n, k = codes.shape
    bp = packing.int8_quads(codes)
    colsum = packing.per_channel(codes.sum(1, dtype=torch.int32), n, torch.int32)
    wscale = packing.per_channel(q.scale.detach().cpu(), n, torch.float32)
    bias = None if w.bias is None else packing.per_channel(w.bias.detach().cpu(), n, torch.float32)
    mode, scale, zp = _mode(act, w.act_scale, w.act_zero_point, f"scheme {w.scheme.name!r}")
    qmin, qmax = act.qrange
    lib = library()
    layer = Int8Layer(isa.code, mode, n, k, bp.data_ptr(), colsum.data_ptr(), wscale.data_ptr(), pointer(bias),
                      scale, zp, qmin, qmax)
    tensors = tuple(t for t in (bp, colsum, wscale, bias) if t is not None)
    return Prepared(f"int8-{isa.name}", lib.linear_int8, layer, tensors, n, k)  # type: ignore[union-attr]


def activation_codes(x: torch.Tensor, spec: QuantSpec, scale: torch.Tensor | None = None,
                     zero_point: torch.Tensor | None = None) -> QTensor:
    """The activation codes and qparams the int8 kernels multiply, per row of `x` (..., K).

    For checking them against the contract: the GEMM uses exactly these. Per-token specs give one scale
    per row; static specs take the given per-tensor `scale` and `zero_point`.
    """
    if int8_activations(spec):
        raise SpecError(f"cpu-native does not quantize {spec.describe()} activations: {int8_activations(spec)}")
    lib = library()
    if isinstance(lib, Unavailable):
        raise RuntimeError(lib.reason)
    k = x.shape[-1]
    rows = linear_rows(x, k, check=False).detach()
    m = rows.shape[0]
    mode, value, zp = _mode(spec, scale, zero_point, "activation_codes")
    qmin, qmax = spec.qrange
    layer = Int8Layer(0, mode, 1, k, None, None, None, None, value, zp, qmin, qmax)
    codes = torch.empty(m, k, dtype=torch.int8)
    scales = torch.empty(m, dtype=torch.float32)
    zps = torch.empty(m, dtype=torch.int32)
    status = lib.quantize_rows(ctypes.addressof(layer), rows.data_ptr(), m, codes.data_ptr(), scales.data_ptr(),
                               zps.data_ptr())
    check(status, "activation_codes", rows)
    lead = x.shape[:-1]
    if spec.dynamic:
        return QTensor(codes.reshape(*lead, k), scales.reshape(lead), zps.reshape(lead), spec)
    return QTensor(codes.reshape(*lead, k), scales[:1].reshape(()) if m else torch.tensor(value),
                   zps[:1].reshape(()) if m else torch.tensor(zp, dtype=torch.int32), spec)
