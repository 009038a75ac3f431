"""dequant-matmul: any scheme; the weight is dequantized once, the activation spec applied per call.

The general path: in float32 (cpu and cuda) it is the reference up to the
float32 accumulation order; the fp16 variant on cuda trades range and a few
bits for tensor-core speed.
"""

from __future__ import annotations

import attrs
import torch

from qcore.kernels import YES, KernelRequest, LinearWeights, Support, no
from qcore_torch_fallback.activations import ActivationQuant, as_rows, finish
from qcore_torch_fallback.claims import static_per_tensor
from qcore_torch_fallback.codes import dequantize


@attrs.frozen(eq=False)
class Dequantized:
    weight: torch.Tensor
    bias: torch.Tensor | None
    act: ActivationQuant


def float_weight(w: LinearWeights) -> torch.Tensor:
    """The (N, K) float32 weight the reference multiplies."""
    if w.weight is not None:
        return dequantize(w.weight)
    assert w.float_weight is not None
    return w.float_weight.to(torch.float32)


def supports(request: KernelRequest, hardware: object) -> Support:
    assert request.scheme is not None
    reason = static_per_tensor(request.scheme.input_activations)
    return no(reason) if reason else YES


def prepare(dtype: torch.dtype, w: LinearWeights) -> Dequantized:
    weight = float_weight(w)
    bias = None if w.bias is None else w.bias.to(weight.device, torch.float32)
    return Dequantized(weight.to(dtype).contiguous(), bias, ActivationQuant.of(w, weight.device))


def run(p: Dequantized, x: torch.Tensor) -> torch.Tensor:
    a = p.act.fake_quant(as_rows(x, p.weight.shape[1]))
    y = torch.nn.functional.linear(a.to(p.weight.dtype), p.weight).to(torch.float32)
    return finish(y, x, p.bias)
