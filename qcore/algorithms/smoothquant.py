"""SmoothQuant (Xiao et al. 2023, arXiv:2211.10438) as the built-in algorithm plugin ``smoothquant``.

Per input channel j, s_j = max|x_j|^alpha / max|W_:,j|^(1 - alpha) from
calibration data; weights are quantized as W·diag(s) and the input is divided
by s, moving activation outliers into the weights, where per-channel scales
absorb them. Layers reading one norm's output share s (the max over their
weights) so that 1/s folds into the norm; see `qcore.algorithms.balance`.
"""

from __future__ import annotations

import attrs
import torch

from qcore.algorithm import AlgorithmContext, AlgorithmImpl, Collector, LayerWork
from qcore.algorithms import balance
from qcore.errors import ShapeError
from qcore.kernels import YES, Support, no
from qcore.qparams import check_finite

MIN_FACTOR = 1e-5
"""Floor for a factor (and for the ranges it is made of): a dead channel must not divide by zero."""


class ChannelAbsMax(Collector):
    """Running max |x| per input channel of one Linear layer, over every calibration row."""

    def __init__(self, in_features: int) -> None:
        self.amax = torch.zeros(in_features, dtype=torch.float32)
        self.samples = 0

    def observe(self, x: torch.Tensor) -> None:
        x = x.detach()
        if x.shape[-1] != self.amax.shape[0]:
            raise ShapeError(f"activation of shape {tuple(x.shape)} does not end in in_features={self.amax.shape[0]}")
        check_finite(x, "calibration activation")
        rows = x.reshape(-1, x.shape[-1]).float().cpu()
        self.amax = torch.maximum(self.amax, rows.abs().amax(dim=0))
        self.samples += rows.shape[0]

    def rescaled(self, m: torch.Tensor) -> ChannelAbsMax:
        out = ChannelAbsMax(self.amax.shape[0])
        out.amax = self.amax * m.detach().float().cpu().abs()
        out.samples = self.samples
        return out


def smoothing_factors(act_amax: torch.Tensor, w_amax: torch.Tensor, alpha: float) -> torch.Tensor:
    """s_j = max|x_j|^alpha / max|W_:,j|^(1 - alpha), in float32 (the layer computes x / s, the weight W * s)."""
    w = w_amax.float().clamp(min=MIN_FACTOR)
    x = act_amax.float().clamp(min=MIN_FACTOR)
    return (x.pow(alpha) / w.pow(1.0 - alpha)).clamp(min=MIN_FACTOR)


@attrs.frozen
class SmoothQuantOptions:
    alpha: float = attrs.field(default=0.5, validator=[attrs.validators.ge(0.0), attrs.validators.le(1.0)],
                               metadata={"help": "migration strength: 0 keeps activations, 1 moves all to weights"})
    mappings: tuple[balance.MappingSpec, ...] = attrs.field(
        default=(), metadata={"help": "explicit folds (producer, consumers) instead of the ones found in the model"})


def _applies(_options: SmoothQuantOptions, layer: LayerWork) -> Support:
    scheme = layer.scheme
    act = scheme.input_activations
    if scheme.weights is None:
        return no("the scheme leaves weights in float: nothing absorbs the outliers")
    if act is None or act.info.kind != "int" or act.granularity not in ("token", "tensor"):
        return no("smooths integer per-token or per-tensor activations; this scheme has "
                  + (act.describe() if act is not None else "float activations"))
    return YES


def _collector(_options: SmoothQuantOptions, layer: LayerWork) -> ChannelAbsMax:
    return ChannelAbsMax(layer.in_features)


def _run(ctx: AlgorithmContext) -> None:
    options: SmoothQuantOptions = ctx.options
    for group in ctx.groups(ctx.layers, options.mappings):
        act = torch.stack([ctx.stats(layer).amax for layer in group.layers]).amax(dim=0)
        s = smoothing_factors(act, balance.weight_absmax(ctx, group), options.alpha)
        balance.apply_scale(ctx, group, s)
        balance.note_group(ctx, group, f"factors {float(s.min()):.3g}..{float(s.max()):.3g}")


def algorithm() -> AlgorithmImpl:
    return AlgorithmImpl(
        "smoothquant", SmoothQuantOptions, applies=_applies, run=_run, kind="transform", collector=_collector,
        description="SmoothQuant (Xiao et al. 2023): per-channel factors move activation outliers into the "
                    "weights; folded into the preceding norm or Linear where exact")
