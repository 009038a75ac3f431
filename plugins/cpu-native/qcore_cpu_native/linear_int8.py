"""w8a8 (dynamic per-token or static per-tensor int8 activations × int8 per-channel weights) on the int8 GEMMs.

One pass over x per row computes the contract's qparams and codes and writes them in the packed layout
the micro-kernel reads; the micro-kernel sums int8 × int8 products exactly in int32 on pre-packed weight
panels; the epilogue subtracts zero-point × column sum, scales by row × channel and adds the bias.
"""

from __future__ import annotations

import math

import torch

from qcore.errors import SpecError
from qcore.kernels import KernelRequest, LinearWeights, Support
from qcore_cpu_native import packing
from qcore_cpu_native.claims import answer, int8_activations, int8_weights, k_limit
from qcore_cpu_native.isa import Isa, unavailable
from qcore_cpu_native.library import Int8Layer, library
from qcore_cpu_native.prepared import Prepared, pointer

TOKEN_SYM, TOKEN_ASYM, STATIC = 0, 1, 2


def supports(isa: Isa, request: KernelRequest, hardware: object) -> Support:
    scheme = request.scheme
    assert scheme is not None
    return answer(int8_weights(scheme.weights), int8_activations(scheme.input_activations), k_limit(request),
                  unavailable(isa))


def _static_qparams(w: LinearWeights) -> tuple[float, int]:
    if w.act_scale is None:
        raise SpecError(f"scheme {w.scheme.name!r}: static activations need calibrated act_scale")
    if w.act_scale.numel() != 1:
        raise SpecError(f"scheme {w.scheme.name!r}: static activation qparams must be per tensor, "
                        f"got shape {tuple(w.act_scale.shape)}")
    scale = float(w.act_scale)
    if not (math.isfinite(scale) and scale > 0):
        raise SpecError(f"scheme {w.scheme.name!r}: act_scale must be finite and positive, got {scale}")
    zp = 0 if w.act_zero_point is None else int(w.act_zero_point.reshape(()))
    return scale, zp


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
    mode, scale, zp = (TOKEN_SYM if act.symmetric else TOKEN_ASYM), 1.0, 0
    if not act.dynamic:
        mode, (scale, zp) = STATIC, _static_qparams(w)
    qmin, qmax = act.qrange
    lib = library()
    layer = Int8Layer(isa.code, mode, n, k, bp.data_ptr(), colsum.data_ptr(), wscale.data_ptr(), pointer(bias),
                      scale, zp, qmin, qmax)
    tensors = tuple(t for t in (bp, colsum, wscale, bias) if t is not None)
    return Prepared(f"int8-{isa.name}", lib.linear_int8, layer, tensors, n, k)  # type: ignore[union-attr]
