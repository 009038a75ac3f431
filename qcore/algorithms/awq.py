"""AWQ (Lin et al. 2024, arXiv:2306.00978) as the built-in algorithm plugin ``awq``.

Activation-aware weight scaling: a few input channels carry large
activations, and the weights they multiply matter most. AWQ scales those
weight columns up by s (and the input down by 1/s) before quantization, so
their relative rounding error shrinks; s is searched on a grid of exponents
of the calibration statistics, minimising the error of the balanced layers'
outputs on cached calibration inputs:

    s = mean|x|^r  (or, with duo scaling, mean|x|^r / mean|w|^(1-r)),  r in [0, 1)

normalised so that sqrt(max(s)·min(s)) = 1, with s = 1 (no scaling) always
a candidate, so the search never does worse than round-to-nearest on those
inputs. Layers reading the same input share s and 1/s folds into the op that
produces it (`qcore.algorithms.balance`). An optional clipping search then
shrinks each weight group's range where that lowers the output error.

The error is measured with the layer's own scheme: its weight quantizer, and
its activation quantizer when activations are quantized too (w8a8), exactly
as the chosen kernel will compute them.
"""

from __future__ import annotations

import attrs
import torch

from qcore.algorithm import AlgorithmContext, AlgorithmImpl, Collector, LayerWork
from qcore.algorithms import balance
from qcore.errors import ShapeError
from qcore.kernels import YES, Support, no
from qcore.nn.fake_quant import fake_quantize_with_mask
from qcore.qparams import check_finite, qparams_from_range
from qcore.spec import QuantSpec


class InputSample(Collector):
    """Mean |x| per input channel over every calibration row, and a fixed-size sample of the rows.

    The sample is a reservoir (each row kept with equal probability) drawn with
    a fixed seed, so the same data in the same order gives the same sample.
    """

    def __init__(self, in_features: int, max_rows: int) -> None:
        self.abs_sum = torch.zeros(in_features, dtype=torch.float64)
        self.rows = torch.empty(0, in_features)
        self.max_rows = max_rows
        self.samples = 0
        self._gen = torch.Generator().manual_seed(0)

    def observe(self, x: torch.Tensor) -> None:
        k = self.abs_sum.shape[0]
        if x.ndim == 0 or x.shape[-1] != k:
            raise ShapeError(f"activations of shape {tuple(x.shape)} do not end in in_features={k}")
        check_finite(x, "AWQ calibration activations")
        rows = x.detach().reshape(-1, k).float().cpu()
        self.abs_sum += rows.abs().sum(dim=0, dtype=torch.float64)
        room = self.max_rows - self.rows.shape[0]
        if room > 0:
            self.rows = torch.cat([self.rows, rows[:room]])
        rest = rows[max(room, 0):]
        if len(rest):
            seen = self.samples + max(room, 0) + torch.arange(1, len(rest) + 1)
            slot = (torch.rand(len(rest), generator=self._gen, dtype=torch.float64) * seen).long()
            keep = slot < self.max_rows
            self.rows[slot[keep]] = rest[keep]
        self.samples += rows.shape[0]

    @property
    def mean_abs(self) -> torch.Tensor:
        return (self.abs_sum / max(self.samples, 1)).float()

    def rescaled(self, m: torch.Tensor) -> InputSample:
        m = m.detach().float().cpu()
        out = InputSample(self.abs_sum.shape[0], self.max_rows)
        out.abs_sum = self.abs_sum * m.abs().double()
        out.rows = self.rows * m
        out.samples = self.samples
        return out


@attrs.frozen
class AwqOptions:
    grid: int = attrs.field(default=20, validator=attrs.validators.gt(0),
                            metadata={"help": "exponents tried for the scales (r = 0, 1/grid, ...)"})
    duo_scaling: bool = attrs.field(default=True, metadata={"help": "also divide by the weight magnitude"})
    clip: bool = attrs.field(default=True, metadata={"help": "search a clipping range per weight group afterwards"})
    clip_grid: int = attrs.field(default=20, validator=attrs.validators.gt(0),
                                 metadata={"help": "clipping ratios tried, from 1 down to 1 - max_shrink"})
    max_shrink: float = attrs.field(default=0.5, validator=[attrs.validators.gt(0.0), attrs.validators.lt(1.0)],
                                    metadata={"help": "largest fraction of a group's range the clip may cut"})
    max_rows: int = attrs.field(default=1024, validator=attrs.validators.gt(0),
                                metadata={"help": "calibration rows kept per layer for the scale search"})
    clip_rows: int = attrs.field(default=256, validator=attrs.validators.gt(0),
                                 metadata={"help": "of those, rows the clipping search measures on"})
    mappings: tuple[balance.MappingSpec, ...] = attrs.field(
        default=(), metadata={"help": "explicit folds (producer, consumers) instead of the ones found in the model"})


def _applies(_options: AwqOptions, layer: LayerWork) -> Support:
    spec = layer.scheme.weights
    if spec is None:
        return no("the scheme leaves weights in float")
    if spec.info.kind != "int" or spec.dtype in ("binary", "ternary"):
        return no(f"AWQ scales integer weights (int8, uint8, int4, uint4), not {spec.describe()}")
    if spec.granularity == "tensor":
        return no("AWQ needs per-channel or per-group weight scales; per-tensor scales cannot follow s")
    return YES


def _collector(options: AwqOptions, layer: LayerWork) -> InputSample:
    return InputSample(layer.in_features, options.max_rows)


def _fake(w: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    return fake_quantize_with_mask(w, spec)[0]


def _inputs(x: torch.Tensor, layer: LayerWork) -> torch.Tensor:
    """The input as the layer's kernel sees it: quantized per its activation spec (dynamic or min-max)."""
    act = layer.scheme.input_activations
    return x if act is None else _fake(x, act)


def _output_error(x: torch.Tensor, layers: tuple[LayerWork, ...], refs: list[torch.Tensor],
                  s: torch.Tensor) -> float:
    """Mean squared error of the layers' outputs with weights W·s quantized and inputs x / s."""
    xs = x / s
    total = 0.0
    for layer, ref in zip(layers, refs):
        spec = layer.scheme.weights
        assert spec is not None
        wq = _fake(layer.weight * s, spec)
        total += float((_inputs(xs, layer) @ wq.T - ref).pow(2).mean())
    return total


def _weight_mean(group: balance.Group) -> torch.Tensor:
    """AWQ's weight magnitude: |w| over its (group or row) max, averaged over output rows, per input channel."""
    parts = []
    for layer in group.layers:
        w = layer.weight.abs()
        spec = layer.scheme.weights
        assert spec is not None
        g = spec.group_size if spec.granularity == "group" and spec.group_size else w.shape[1]
        view = w.reshape(w.shape[0], -1, g)
        parts.append((view / view.amax(dim=-1, keepdim=True).clamp(min=1e-12)).reshape(w.shape))
    return torch.cat(parts).mean(dim=0)


def search_scale(x: torch.Tensor, x_mean: torch.Tensor, group: balance.Group, options: AwqOptions
                 ) -> tuple[torch.Tensor, float, float]:
    """(best s, its exponent r (-1 for no scaling), error reduction vs no scaling) for one group."""
    refs = [x @ layer.weight.T for layer in group.layers]
    ones = torch.ones_like(x_mean)
    base = _output_error(x, group.layers, refs, ones)
    best, best_r, best_err = ones, -1.0, base
    w_mean = _weight_mean(group) if options.duo_scaling else None
    for i in range(options.grid):
        r = i / options.grid
        s = x_mean.clamp(min=1e-4).pow(r)
        if w_mean is not None:
            s = s / w_mean.clamp(min=1e-4).pow(1 - r)
        s = (s / (s.max() * s.min()).sqrt()).clamp(min=1e-4)
        err = _output_error(x, group.layers, refs, s)
        if err < best_err:
            best, best_r, best_err = s, r, err
    return best, best_r, (1 - best_err / base) if base else 0.0


def clip_weight(layer: LayerWork, x: torch.Tensor, options: AwqOptions) -> tuple[torch.Tensor, float]:
    """(W clamped per weight group to the range that minimises that group's share of the output error,
    fraction of groups clipped)."""
    spec = layer.scheme.weights
    assert spec is not None
    x = x[:options.clip_rows]
    w = layer.weight
    n, k = w.shape
    g = spec.group_size if spec.granularity == "group" and spec.group_size else k
    wg = w.reshape(n, k // g, g)
    xg = x.reshape(-1, k // g, g).transpose(0, 1)  # (groups, rows, g)
    lo0, hi0 = wg.amin(dim=-1), wg.amax(dim=-1)
    best_err = torch.full((n, k // g), float("inf"))
    best = torch.ones(n, k // g)
    group_spec = attrs.evolve(spec, granularity="group", group_size=g, axis=0)
    for i in range(options.clip_grid):
        ratio = 1 - options.max_shrink * i / options.clip_grid
        lo, hi = lo0 * ratio, hi0 * ratio
        clipped = torch.maximum(torch.minimum(wg, hi[..., None]), lo[..., None])
        scale, zp = qparams_from_range(lo, hi, group_spec)
        q = fake_quantize_with_mask(clipped.reshape(n, k), group_spec, scale, zp)[0].reshape(n, k // g, g)
        err = torch.einsum("grc,ngc->ngr", xg, wg - q).pow(2).mean(dim=-1)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best = torch.where(better, torch.full_like(best, ratio), best)
    lo, hi = lo0 * best, hi0 * best
    out = torch.maximum(torch.minimum(wg, hi[..., None]), lo[..., None]).reshape(n, k)
    return out, float((best < 1).float().mean())


def _run(ctx: AlgorithmContext) -> None:
    options: AwqOptions = ctx.options
    groups = ctx.groups(ctx.layers, options.mappings)
    with ctx.progress("searching scales", len(groups)) as advance:
        for group in groups:
            stats = ctx.stats(group.layers[0])
            s, r, gain = search_scale(stats.rows, stats.mean_abs, group, options)
            if r >= 0:
                balance.apply_scale(ctx, group, s)
            text = f"scales r={r:g}, output error -{gain:.0%}" if r >= 0 else "no scaling helped"
            balance.note_group(ctx, group, text)
            advance(1)
    if not options.clip:
        return
    with ctx.progress("searching clipping ranges", len(ctx.layers)) as advance:
        for layer in ctx.layers:
            clipped, share = clip_weight(layer, ctx.stats(layer).rows, options)
            ctx.edit(layer.module, "weight", clipped)
            ctx.note(layer, f"clipped {share:.0%} of weight groups")
            advance(1)


def algorithm() -> AlgorithmImpl:
    return AlgorithmImpl(
        "awq", AwqOptions, applies=_applies, run=_run, kind="transform", collector=_collector,
        description="AWQ (Lin et al. 2024): activation-aware per-channel weight scales searched on calibration "
                    "inputs, folded into the preceding norm or Linear where exact; optional clipping search")
