"""int8pack: `aten._weight_int8pack_mm` (int8 weights, bf16 activations, float accumulation) on CPU.

Quantized activations go in as their integer (or fp8/bf16) codes, which bf16
holds exactly, and the activation and weight scales are applied afterwards in
float32: the quantization semantics are exact, the product is rounded to bf16
once. Float activations (weight-only schemes) go in as two bf16 rows, rounded
value and rounding error (16 significant bits), and the halves are added.
The op crashes for K not a multiple of 8 (torch 2.13), so such K are refused.
"""

from __future__ import annotations

import attrs
import torch

from qcore.errors import ShapeError
from qcore.kernels import YES, KernelRequest, LinearWeights, QTensor, Support, no
from qcore_torch_fallback.activations import ActivationQuant, as_rows, bf16_pair, finish, fold_pair
from qcore_torch_fallback.claims import divisible, first, per_row_activations, per_row_int_weights, static_per_tensor

OP = "_weight_int8pack_mm"
K_MULTIPLE = 8


@attrs.frozen(eq=False)
class Int8Packed:
    codes: torch.Tensor
    ones: torch.Tensor
    col_scale: torch.Tensor
    bias: torch.Tensor | None
    act: ActivationQuant


def column_scales(q: QTensor) -> torch.Tensor:
    """One float32 scale per output channel (a per-tensor scale repeated)."""
    return q.scale.to(torch.float32).expand(q.codes.shape[0]).contiguous()


def supports(request: KernelRequest, hardware: object) -> Support:
    assert request.scheme is not None
    a = request.scheme.input_activations
    reason = first(
        per_row_int_weights(request.scheme.weights, OP),
        None if a is None or a.dtype == "bf16" else per_row_activations(a, OP, kinds=("int", "fp8_e4m3", "fp8_e5m2")),
        static_per_tensor(a),
        divisible(request, OP, k=K_MULTIPLE),
    )
    return no(reason) if reason else YES


def prepare(w: LinearWeights) -> Int8Packed:
    assert w.weight is not None
    codes = w.weight.codes.to(torch.int8).contiguous()
    if codes.shape[1] % K_MULTIPLE:
        raise ShapeError(f"{OP} needs in_features % {K_MULTIPLE} == 0, got {codes.shape[1]}")
    ones = torch.ones(codes.shape[0], dtype=torch.bfloat16, device=codes.device)
    bias = None if w.bias is None else w.bias.to(torch.float32)
    return Int8Packed(codes, ones, column_scales(w.weight), bias, ActivationQuant.of(w, codes.device))


def run(p: Int8Packed, x: torch.Tensor) -> torch.Tensor:
    rows = as_rows(x, p.codes.shape[1])
    if p.act.spec is None:
        y = fold_pair(torch.ops.aten._weight_int8pack_mm(bf16_pair(rows), p.codes, p.ones)) * p.col_scale
    else:
        c, r = p.act.codes(rows, torch.bfloat16)
        y = torch.ops.aten._weight_int8pack_mm(c, p.codes, p.ones).to(torch.float32) * p.col_scale
        if r is not None:
            y = y * r
    return finish(y, x, p.bias)
