"""Bias correction (Nagel et al. 2019, arXiv:1906.04721) as the built-in algorithm plugin ``bias-correction``.

Quantizing W to Q changes a layer's output by x·(W - Q)ᵀ. Its mean over the
data, E[x]·(W - Q)ᵀ, is a systematic shift that no amount of averaging
removes; it is large where inputs have a non-zero mean (after GELU, SiLU or a
LayerNorm's bias) and weights are coarse (4-bit). Adding it to the bias
removes it exactly on the calibration data, at no cost at run time. It runs
once the weights are final (kind ``correct``): after GPTQ, or on the
round-to-nearest weights the layer would get anyway.
"""

from __future__ import annotations

import attrs
import torch

from qcore.algorithm import AlgorithmContext, AlgorithmImpl, Collector, LayerWork
from qcore.errors import ShapeError
from qcore.kernels import YES, Support, no
from qcore.qparams import check_finite, dequantize_codes


class InputMean(Collector):
    """Running mean of one layer's input per channel (float64 sum and row count)."""

    def __init__(self, in_features: int) -> None:
        self.sum = torch.zeros(in_features, dtype=torch.float64)
        self.samples = 0

    def observe(self, x: torch.Tensor) -> None:
        k = self.sum.shape[0]
        if x.ndim == 0 or x.shape[-1] != k:
            raise ShapeError(f"activations of shape {tuple(x.shape)} do not end in in_features={k}")
        check_finite(x, "bias-correction calibration activations")
        rows = x.detach().reshape(-1, k).to(device="cpu", dtype=torch.float64)
        self.sum += rows.sum(dim=0)
        self.samples += rows.shape[0]

    @property
    def mean(self) -> torch.Tensor:
        return self.sum / max(self.samples, 1)

    def rescaled(self, m: torch.Tensor) -> InputMean:
        out = InputMean(self.sum.shape[0])
        out.sum, out.samples = self.sum * m.detach().to(device="cpu", dtype=torch.float64), self.samples
        return out


@attrs.frozen
class BiasCorrectionOptions:
    pass


def _applies(_options: BiasCorrectionOptions, layer: LayerWork) -> Support:
    if layer.scheme.weights is None:
        return no("the scheme leaves weights in float: nothing to correct")
    if getattr(layer.module, "bias", None) is None:
        return no("the layer has no bias to absorb the shift")
    return YES


def _collector(_options: BiasCorrectionOptions, layer: LayerWork) -> InputMean:
    return InputMean(layer.in_features)


def shift(weight: torch.Tensor, quantized: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    """E[x]·(W - Q)ᵀ per output channel (float64): what quantization moves the mean output by."""
    return (weight.double() - quantized.double()) @ mean.double()


def _run(ctx: AlgorithmContext) -> None:
    for layer in ctx.layers:
        assert layer.qweight is not None  # a `correct` algorithm sees final weights
        stats = ctx.stats(layer)
        q = layer.qweight
        delta = shift(layer.weight, dequantize_codes(q.codes, q.scale, q.zero_point, q.spec), stats.mean)
        bias = layer.module.bias
        ctx.edit(layer.module, "bias", bias.detach().double() + delta.to(bias.device))
        ctx.note(layer, f"mean output shift up to {float(delta.abs().max()):.3g} removed "
                        f"({stats.samples} calibration rows)")


def algorithm() -> AlgorithmImpl:
    return AlgorithmImpl(
        "bias-correction", BiasCorrectionOptions, applies=_applies, run=_run, kind="correct", collector=_collector,
        description="bias correction (Nagel et al. 2019): the mean output shift quantization causes, measured on "
                    "calibration inputs, added back to the bias (after the weights are final)")
