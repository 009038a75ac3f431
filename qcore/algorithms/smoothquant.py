"""SmoothQuant's per-input-channel factors: what calibration measures and how the factors follow from it."""

from __future__ import annotations

import torch

from qcore.errors import ShapeError
from qcore.qparams import check_finite

MIN_FACTOR = 1e-5
"""Floor for a factor (and for the ranges it is made of): a dead channel must not divide by zero."""


class ChannelAbsMax:
    """Running max |x| per input channel of one Linear layer, over every calibration row."""

    label = "smoothquant channel max"

    def __init__(self, in_features: int) -> None:
        self._amax = torch.zeros(in_features, dtype=torch.float32)
        self.samples = 0

    def observe(self, x: torch.Tensor) -> None:
        x = x.detach()
        if x.shape[-1] != self._amax.shape[0]:
            raise ShapeError(f"activation of shape {tuple(x.shape)} does not end in in_features={self._amax.shape[0]}")
        check_finite(x, "calibration activation")
        rows = x.reshape(-1, x.shape[-1]).float().cpu()
        self._amax = torch.maximum(self._amax, rows.abs().amax(dim=0))
        self.samples += rows.shape[0]

    @property
    def amax(self) -> torch.Tensor:
        return self._amax.clone()


def smoothing_factors(act_amax: torch.Tensor, weight: torch.Tensor, alpha: float) -> torch.Tensor:
    """s_j = max|x_j|^alpha / max|W_:,j|^(1 - alpha), in float32 (the layer computes x / s, the weight W * s)."""
    w_amax = weight.detach().float().abs().amax(dim=0).cpu().clamp(min=MIN_FACTOR)
    x_amax = act_amax.float().clamp(min=MIN_FACTOR)
    return (x_amax.pow(alpha) / w_amax.pow(1.0 - alpha)).clamp(min=MIN_FACTOR)
