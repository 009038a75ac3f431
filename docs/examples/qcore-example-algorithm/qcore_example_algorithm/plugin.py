"""MSE-optimal weight clipping as a qcore algorithm: the recipe entry ``mse-clip``.

Round-to-nearest takes each channel's (or group's) full min-max range, so
one large weight stretches the step for all the others. This algorithm
tries narrower ranges, ``[min, max]`` times 1, 1 - max_shrink/grid, ... and
keeps, per channel or group, the one whose quantized weights are closest to
the float ones (mean squared error). It needs no calibration data and
produces the quantized weight itself (kind ``quantize``), through qcore's
own quantize op, so the codes follow the numerics contract exactly.

Use it in a recipe::

    algorithms:
      - mse-clip: {grid: 50, max_shrink: 0.3}
"""

from __future__ import annotations

import attrs
import torch

import qcore
from qcore import AlgorithmContext, AlgorithmImpl, LayerWork
from qcore.kernels import YES, Support, no
from qcore.qparams import qparams_from_range, reduce, reduce_minmax


@attrs.frozen
class ClipOptions:
    grid: int = attrs.field(default=40, validator=attrs.validators.gt(1),
                            metadata={"help": "ranges tried per channel or group"})
    max_shrink: float = attrs.field(default=0.3, validator=[attrs.validators.gt(0.0), attrs.validators.lt(1.0)],
                                    metadata={"help": "largest fraction of the range that may be cut"})


def applies(_options: ClipOptions, layer: LayerWork) -> Support:
    spec = layer.scheme.weights
    if spec is None or spec.info.kind != "int" or spec.dtype in ("binary", "ternary"):
        return no("clips integer weights (int8, uint8, int4, uint4)")
    if spec.granularity not in ("channel", "group"):
        return no(f"needs a range per channel or group, not {spec.granularity}")
    return YES


def clipped_qtensor(weight: torch.Tensor, spec: qcore.QuantSpec, options: ClipOptions) -> tuple[qcore.QTensor, float]:
    """The quantized weight with the best range per set, and the mean fraction of range kept."""
    lo, hi = reduce_minmax(weight, spec)
    best_err = torch.full_like(lo, float("inf"))
    best_ratio = torch.ones_like(lo)
    for i in range(options.grid):
        ratio = 1.0 - options.max_shrink * i / (options.grid - 1)
        scale, zero_point = qparams_from_range(lo * ratio, hi * ratio, spec)
        q = qcore.ops.quantize(weight, spec, scale, zero_point)
        err = reduce((qcore.ops.dequantize(q) - weight).pow(2), spec, "mean")
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best_ratio = torch.where(better, torch.full_like(best_ratio, ratio), best_ratio)
    scale, zero_point = qparams_from_range(lo * best_ratio, hi * best_ratio, spec)
    return qcore.ops.quantize(weight, spec, scale, zero_point), float(best_ratio.mean())


def run(ctx: AlgorithmContext) -> None:
    options: ClipOptions = ctx.options
    for layer in ctx.layers:
        spec = layer.scheme.weights
        assert spec is not None
        layer.qweight, kept = clipped_qtensor(layer.weight, spec, options)
        ctx.note(layer, f"kept {kept:.1%} of the range on average")


@qcore.hookimpl
def qcore_algorithms():  # type: ignore[no-untyped-def]
    yield AlgorithmImpl(
        "mse-clip", ClipOptions, applies=applies, run=run, kind="quantize",
        description="MSE-optimal clipping range per channel or group, then round-to-nearest (example plugin)")
