"""Per-channel balancing (SmoothQuant, AWQ): which layers share an input, where a scale can fold, applying it.

Balancing multiplies a layer's weight columns by s and divides its input by
s, so the float layer computes the same thing while the quantizer sees other
ranges. Dividing the input costs nothing at run time when the op that
produces it can absorb 1/s: a norm's affine weight and bias (LayerNorm,
RMSNorm) or the rows of a preceding Linear (``v_proj`` before ``o_proj``,
``up_proj`` before ``down_proj``). Every Linear reading that output must then
be scaled by the same s, so such layers form a group.

Which op produces which layer's input is found from the model itself, not
from a list of architectures' module names:

1. one forward pass on calibration data records, for every Linear, the
   module whose output tensor *is* its input (a norm), and for the others the
   earlier Linears of the same block whose width matches (candidates);
2. each candidate fold is verified numerically: the producer's output is
   multiplied by a random positive d per channel and the consumers' inputs by
   1/d, and the model's outputs must not change (relative error below
   `FOLD_TOLERANCE`). A post-norm residual (BERT), a softmax or an activation
   between producer and consumer changes them, so such folds are rejected,
   with that reason, and the layer applies 1/s to its own input instead
   (`LayerWork.input_scale`, one multiply per call).

A recipe can name mappings instead (``mappings: [{producer: ..., consumers:
[...]}]``); they are verified the same way and a failure is an error.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import attrs
import torch
from torch import nn

from qcore.algorithm import AlgorithmContext, LayerWork
from qcore.errors import QcoreError
from qcore.patterns import matches

FOLD_TOLERANCE = 1e-3
"""Largest relative change of the model's outputs for which a fold counts as exact (float32 noise is ~1e-6)."""
PROBE_RANGE = (0.25, 4.0)
"""Range of the random per-channel factors d of the verification (large, so a broken fold shows)."""


@attrs.frozen
class MappingSpec:
    """A recipe's explicit fold: the module producing the input and the Linears consuming it."""

    producer: str = attrs.field(metadata={"help": "exact module name or re:REGEX of the producing op"})
    consumers: tuple[str, ...] = attrs.field(
        metadata={"help": "names or re:REGEX of the Linears reading its output, looked up under its parent"})


@attrs.frozen
class Fold:
    """A verified fold: scaling `producer`'s output by 1/s and the `consumers`' weight columns by s is exact."""

    producer: str
    consumers: tuple[str, ...]


@attrs.frozen
class Rejection:
    """A candidate fold that the numerical check refused: how much it changed the model's outputs."""

    producer: str
    consumers: tuple[str, ...]
    change: float

    @property
    def reason(self) -> str:
        return (f"not exact: scaling {self.producer}'s output by d and {', '.join(self.consumers)}'s input by 1/d "
                f"changes the model's outputs by {self.change:.2g} (something else reads it, or a non-linear op "
                "lies between)")


@attrs.frozen(eq=False)
class Group:
    """Layers balanced with one scale: the algorithm's `layers`, the other Linears reading the same input
    (`others`, scaled along), and the module absorbing 1/s (None: each layer scales its own input)."""

    layers: tuple[LayerWork, ...]
    producer: str | None
    others: tuple[str, ...] = ()
    note: str = ""

    @property
    def in_features(self) -> int:
        return self.layers[0].in_features


Probe = Callable[[Callable[[], contextlib.AbstractContextManager[None]]], list[torch.Tensor]]
"""Runs one calibration forward pass inside the given hook context and returns the model's output tensors."""


@attrs.frozen
class Dataflow:
    """The folds found (or named) in a model, and the candidates rejected with their reasons."""

    folds: tuple[Fold, ...]
    rejected: tuple[Rejection, ...]

    def fold_of(self, layer: str) -> Fold | None:
        for fold in self.folds:
            if layer in fold.consumers:
                return fold
        return None


def _linears(model: nn.Module) -> dict[str, nn.Linear]:
    return {name: m for name, m in model.named_modules() if isinstance(m, nn.Linear)}


def _foldable_output(module: nn.Module, width: int) -> bool:
    """Whether scaling `module`'s output channels is a matter of scaling its weight (and bias) rows."""
    if isinstance(module, nn.Linear):
        return module.out_features == width
    weight, bias = getattr(module, "weight", None), getattr(module, "bias", None)
    return (isinstance(weight, torch.Tensor) and weight.ndim == 1 and weight.numel() == width
            and (bias is None or isinstance(bias, torch.Tensor) and bias.shape == weight.shape)
            and all(p is weight or p is bias for p in module.parameters(recurse=False)))


def _trace(model: nn.Module, probe: Probe) -> tuple[dict[str, str | None], list[str]]:
    """(each Linear → the module whose output object is its input, or None; module names in call order)."""
    names = {id(m): name for name, m in model.named_modules()}
    produced: dict[int, tuple[str, torch.Tensor]] = {}
    source: dict[str, str | None] = {}
    order: list[str] = []

    def after(module: nn.Module, _args: Any, output: Any) -> None:
        if isinstance(output, torch.Tensor):
            produced.setdefault(id(output), (names[id(module)], output))

    def before(module: nn.Module, args: tuple[Any, ...]) -> None:
        name = names[id(module)]
        order.append(name)
        if isinstance(module, nn.Linear) and args and isinstance(args[0], torch.Tensor):
            found = produced.get(id(args[0]))
            source.setdefault(name, found[0] if found is not None else None)

    @contextlib.contextmanager
    def hooks() -> Iterator[None]:
        handles = [h for m in model.modules()
                   for h in (m.register_forward_hook(after), m.register_forward_pre_hook(before))]
        try:
            yield
        finally:
            for h in handles:
                h.remove()
            produced.clear()

    probe(hooks)
    return source, order


def _relative_change(ref: list[torch.Tensor], out: list[torch.Tensor]) -> float:
    """||out - ref|| / ||ref|| over every recorded tensor (float32 is plenty for a 1e-3 tolerance)."""
    num = sum(float(torch.linalg.vector_norm((a.float() - b.float())) ** 2) for a, b in zip(ref, out))
    den = sum(float(torch.linalg.vector_norm(a.float()) ** 2) for a in ref)
    return (num / den) ** 0.5 if den else float(num > 0)


def _verify(model: nn.Module, probe: Probe, baseline: list[torch.Tensor], producer: str,
            consumers: Sequence[str]) -> float:
    """How much the fold changes the model's outputs (relative; exact folds give float noise)."""
    modules = dict(model.named_modules())
    width = modules[consumers[0]].in_features
    gen = torch.Generator().manual_seed(0)
    lo, hi = PROBE_RANGE
    d = torch.exp(torch.empty(width).uniform_(torch.log(torch.tensor(lo)).item(), torch.log(torch.tensor(hi)).item(),
                                              generator=gen))

    def scale_out(_m: nn.Module, _a: Any, out: torch.Tensor) -> torch.Tensor:
        return out * d.to(out.device, out.dtype)

    def unscale_in(_m: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        return (args[0] / d.to(args[0].device, args[0].dtype), *args[1:])

    @contextlib.contextmanager
    def hooks() -> Iterator[None]:
        handles = [modules[producer].register_forward_hook(scale_out)]
        handles += [modules[c].register_forward_pre_hook(unscale_in) for c in consumers]
        try:
            yield
        finally:
            for h in handles:
                h.remove()

    return _relative_change(baseline, probe(hooks))


def discover(model: nn.Module, probe: Probe, *, progress: Callable[[str, int], Any] | None = None) -> Dataflow:
    """Folds of `model` found from its dataflow on calibration data and verified numerically (module docstring)."""
    linears = _linears(model)
    modules = dict(model.named_modules())
    source, order = _trace(model, probe)
    position = {name: i for i, name in reversed(list(enumerate(order)))}
    candidates: list[tuple[str, tuple[str, ...]]] = []
    by_producer: dict[str, list[str]] = {}
    for name, producer in source.items():
        if producer is not None and producer in modules and _foldable_output(modules[producer],
                                                                               linears[name].in_features):
            by_producer.setdefault(producer, []).append(name)
    candidates += [(p, tuple(cs)) for p, cs in by_producer.items()]
    for name, producer in source.items():
        if producer in by_producer:
            continue
        block = name.rsplit(".", 2)[0] + "." if name.count(".") >= 2 else ""
        earlier = [other for other, linear in linears.items()
                   if other != name and other.startswith(block) and linear.out_features == linears[name].in_features
                   and position.get(other, len(order)) < position.get(name, -1)]
        candidates += [(other, (name,)) for other in sorted(earlier, key=position.__getitem__, reverse=True)]
    return _check(model, probe, candidates, progress)


def named(model: nn.Module, probe: Probe, mappings: Sequence[MappingSpec], *,
          progress: Callable[[str, int], Any] | None = None) -> Dataflow:
    """Folds a recipe names explicitly, resolved per producer (consumers under its parent) and verified."""
    modules = dict(model.named_modules())
    linears = _linears(model)
    candidates = []
    for i, spec in enumerate(mappings):
        producers = [name for name in modules if name and matches(spec.producer, name)]
        if not producers:
            raise QcoreError(f"mappings[{i}]: producer {spec.producer!r} matches no module of {type(model).__name__}")
        for producer in producers:
            parent = producer.rsplit(".", 1)[0] + "." if "." in producer else ""
            consumers = tuple(name for name in linears if name.startswith(parent)
                              and any(matches(c, name) for c in spec.consumers))
            if not consumers:
                raise QcoreError(f"mappings[{i}]: no Linear under {parent or 'the model'} matches "
                                 f"{list(spec.consumers)} (consumers of {producer})")
            widths = {linears[c].in_features for c in consumers}
            if len(widths) != 1 or not _foldable_output(modules[producer], widths.pop()):
                raise QcoreError(f"mappings[{i}]: {producer} ({type(modules[producer]).__name__}) cannot absorb a "
                                 f"per-channel scale for {', '.join(consumers)} (its output width or parameters "
                                 "do not fit)")
            candidates.append((producer, consumers))
    flow = _check(model, probe, candidates, progress)
    if flow.rejected:
        r = flow.rejected[0]
        raise QcoreError(f"mapping {r.producer} -> {', '.join(r.consumers)}: {r.reason}")
    return flow


def _check(model: nn.Module, probe: Probe, candidates: Sequence[tuple[str, tuple[str, ...]]],
           progress: Callable[[str, int], Any] | None) -> Dataflow:
    baseline = probe(contextlib.nullcontext)
    folds: list[Fold] = []
    rejected: list[Rejection] = []
    taken: set[str] = set()
    bar = progress("verifying folds", len(candidates)) if progress and candidates else contextlib.nullcontext()
    with bar as advance:
        for producer, consumers in candidates:
            if taken.intersection(consumers):
                continue
            change = _verify(model, probe, baseline, producer, consumers)
            if change > FOLD_TOLERANCE:
                rejected.append(Rejection(producer, consumers, change))
            else:
                folds.append(Fold(producer, consumers))
                taken.update(consumers)
            if advance is not None:
                advance(1)
    return Dataflow(tuple(folds), tuple(rejected))


def groups(ctx: AlgorithmContext, layers: Sequence[LayerWork], flow: Dataflow) -> list[Group]:
    """`layers` split into groups: one per usable fold, a singleton (no producer) for each other layer.

    A fold is usable when nothing on it was quantized already (a producing
    Linear, or a consumer whose weights an earlier algorithm quantized).
    """
    wanted = {layer.name for layer in layers}
    work = ctx.all_layers
    out: list[Group] = []
    placed: set[str] = set()
    for fold in flow.folds:
        members = [work[c] for c in fold.consumers if c in wanted]
        if not members:
            continue
        blocked = [n for n in (fold.producer, *fold.consumers) if n in work and work[n].qweight is not None]
        if blocked:
            note = f"not folded into {fold.producer}: {', '.join(blocked)} quantized already"
            out += [Group((m,), None, note=note) for m in members]
        else:
            others = tuple(c for c in fold.consumers if c not in wanted)
            out.append(Group(tuple(members), fold.producer, others, f"folded into {fold.producer}"))
        placed.update(m.name for m in members)
    for layer in layers:
        if layer.name not in placed:
            tried = [r for r in flow.rejected if layer.name in r.consumers]
            why = (f"folding into {tried[0].producer} is not exact: outputs change by {tried[0].change:.2g}"
                   if tried else "no op before it can absorb it")
            out.append(Group((layer,), None, note=f"1/s applied by the layer ({why})"))
    return out


def apply_scale(ctx: AlgorithmContext, group: Group, s: torch.Tensor) -> None:
    """Weights of the group's Linears times s (per input channel); their input divided by s, folded or not."""
    work = ctx.all_layers
    s = s.detach().float().cpu()
    inv = 1.0 / s
    modules = dict(ctx.model.named_modules())
    for name in (*(m.name for m in group.layers), *group.others):
        module = modules[name]
        ctx.edit(module, "weight", module.weight.detach().float() * s.to(module.weight.device))
        layer = work.get(name)
        if layer is not None:
            layer.input_multiplier = inv if layer.input_multiplier is None else layer.input_multiplier * inv
    if group.producer is None:
        for layer in group.layers:
            ctx.scale_input(layer, inv)
        return
    producer = modules[group.producer]
    if isinstance(producer, nn.Linear):
        ctx.edit(producer, "weight", producer.weight.detach().float() * inv[:, None].to(producer.weight.device))
    else:
        ctx.edit(producer, "weight", producer.weight.detach().float() * inv.to(producer.weight.device))
    if getattr(producer, "bias", None) is not None:
        ctx.edit(producer, "bias", producer.bias.detach().float() * inv.to(producer.bias.device))


def note_group(ctx: AlgorithmContext, group: Group, text: str) -> None:
    """Record the run on every layer of `group`, and on the others scaled along (when they are quantized too)."""
    for layer in group.layers:
        ctx.note(layer, "; ".join(t for t in (text, group.note) if t))
    for name in group.others:
        if name in ctx.all_layers:
            ctx.note(ctx.all_layers[name], f"weights scaled along with {group.layers[0].name} ({group.note})")


def weight_absmax(ctx: AlgorithmContext, group: Group) -> torch.Tensor:
    """max |W[:, j]| per input channel over every Linear the group's scale touches (float32, CPU)."""
    modules = dict(ctx.model.named_modules())
    names = (*(m.name for m in group.layers), *group.others)
    return torch.stack([modules[n].weight.detach().float().abs().amax(dim=0).cpu() for n in names]).amax(dim=0)
