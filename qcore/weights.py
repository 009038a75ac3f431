"""A linear layer's weights quantized for a scheme: what `prepare` of every linear kernel receives.

Kept apart from `qcore.ops` so that the matcher (which times kernels on
sample weights) and the ops (which choose tensor kernels through the matcher)
do not import each other: the caller passes the `quantize` op to use.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from qcore.kernels import LinearWeights, QTensor
from qcore.spec import QuantScheme, QuantSpec

Quantize = Callable[[torch.Tensor, QuantSpec], QTensor]


def linear_weights(scheme: QuantScheme, weight: torch.Tensor, bias: torch.Tensor | None = None, *,
                   quantize: Quantize, act_scale: torch.Tensor | None = None,
                   act_zero_point: torch.Tensor | None = None, sample: torch.Tensor | None = None,
                   qweight: QTensor | None = None) -> LinearWeights:
    """Quantize a float (N, K) weight for `scheme` with `quantize` (or take `qweight`, quantized already).

    Static activation qparams come from `act_scale`/`act_zero_point` or, when
    absent, from a min-max over `sample` (what autotuning uses).
    """
    if qweight is None and scheme.weights is not None:
        qweight = quantize(weight.detach().float(), scheme.weights)
    act = scheme.input_activations
    if act is not None and act.info.scaled and not act.dynamic and act_scale is None:
        if sample is None:
            raise ValueError(f"scheme {scheme.name!r} has static activations: give act_scale or a sample")
        q = quantize(sample.detach().float(), act)
        act_scale, act_zero_point = q.scale, q.zero_point
    return LinearWeights(
        scheme=scheme,
        weight=qweight,
        bias=None if bias is None else bias.detach().float(),
        act_scale=act_scale,
        act_zero_point=act_zero_point,
        float_weight=None if qweight is not None else weight.detach().float(),
    )
