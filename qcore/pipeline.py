"""`qcore.quantize`'s one pipeline, from a float model and a recipe to QuantLinear layers.

resolve targets → plan by priority (fail fast) → one calibration pass
feeding the static-activation observers and every algorithm's collectors →
the recipe's algorithms in order → observers of transformed layers (a second
pass, only when a transform moved a static layer's input) → plan by
measurement → build → swap.

Each targeted layer has one `LayerWork` record that every step reads and
writes. Nothing is swapped until everything succeeded; the model parameters
algorithms edited are restored when anything fails.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import attrs
import torch
from torch import nn

from qcore import ops
from qcore.algorithm import AlgorithmContext, AlgorithmImpl, Collector, LayerWork, ModelEdits
from qcore.algorithms import balance
from qcore.calibration import CalibrationData, CalibrationInfo, CalibrationSource, LayerHook, progress_bar
from qcore.errors import NoKernelError, NonFiniteError, PluginError, QcoreError, ShapeError
from qcore.kernels import KernelRequest
from qcore.matcher import LayerPlan, Matcher, Plan
from qcore.nn.convert import build_layers, in_layer, swap
from qcore.plugins import get_manager
from qcore.qparams import check_finite
from qcore.recipe import AlgorithmEntry, Recipe, RecipeError, RecipeProblem
from qcore.state import QuantState, attach


def recipe_name(recipe: Recipe) -> str:
    return recipe.source or "(inline recipe)"


# -- targets ---------------------------------------------------------------------------------------------


def resolve(model: nn.Module, recipe: Recipe) -> list[LayerWork]:
    """A record for every module the recipe resolves.

    A `targets` entry naming no module type of the model is an error listing
    the types it has (a typo must not quantize nothing); ignore/override
    patterns that match no layer warn, or fail when the recipe is strict.
    """
    types = sorted({type(m).__name__ for m in model.modules()})
    missing = [(i, t) for i, t in enumerate(recipe.targets) if t not in types]
    if missing:
        raise RecipeError([RecipeProblem(f"targets[{i}]", None, f"{t!r} is no module type of {type(model).__name__};"
                                         f" its types: {', '.join(types)}") for i, t in missing], recipe.source)
    names = [name for name, _ in model.named_modules()]
    unmatched = recipe.unmatched_patterns(names)
    if unmatched and recipe.strict:
        raise RecipeError([RecipeProblem("", None, f"{u} of {type(model).__name__} (strict)") for u in unmatched],
                          recipe.source)
    for message in unmatched:
        warnings.warn(f"recipe {recipe_name(recipe)}: {message} of {type(model).__name__}", stacklevel=3)
    layers = []
    for name, module in model.named_modules():
        rule = recipe.resolve(name, module)
        if rule is not None:
            layers.append(LayerWork(name, module, rule))
    return layers


def check_weights(layers: Sequence[LayerWork]) -> None:
    """NaN/Inf in any weight to be quantized is an error naming the layer, raised before anything changes."""
    for layer in layers:
        if layer.rule.scheme is None:
            continue
        for pname in ("weight", "bias"):
            tensor = getattr(layer.module, pname, None)
            if isinstance(tensor, torch.Tensor):
                try:
                    check_finite(tensor.detach(), pname)
                except NonFiniteError as exc:
                    raise NonFiniteError(f"layer {layer.name!r}: {exc}; nothing was modified") from None


def plan(layers: Sequence[LayerWork], recipe: Recipe, matcher: Matcher) -> Plan:
    """Choose each layer's kernel (its `selection`), or record why it stays float.

    The linear request's M is the token count the layer saw in the first
    calibration batch when there was one (the shape the model will mostly
    run at), else 1: decode-like use, where a quantized model's per-call
    cost matters most.
    """
    for layer in layers:
        layer.selection = None
        if layer.rule.scheme is None:
            layer.float_reason = layer.rule.reason or f"kept float by rule {layer.rule.rule}"
            continue
        try:
            layer.selection = _select(layer, recipe, matcher)
            layer.float_reason = None
        except NoKernelError as exc:
            if recipe.on_unsupported != "keep-float":
                raise NoKernelError(f"layer {layer.name!r} (rule {layer.rule.rule}): {exc}") from None
            layer.float_reason = f"unsupported, kept float: {exc}"
    return Plan(tuple(LayerPlan(w.name, w.selection, w.rule.reason if w.selection else w.float_reason or "")
                      for w in layers))


def _select(layer: LayerWork, recipe: Recipe, matcher: Matcher):  # type: ignore[no-untyped-def]
    module = layer.module
    if not isinstance(module, nn.Linear):
        raise NoKernelError(f"qcore quantizes nn.Linear layers; this is a {type(module).__name__}")
    spec = layer.scheme.weights
    if spec is not None and spec.granularity == "group" and module.in_features % spec.group_size:  # type: ignore[operator]
        raise NoKernelError(f"group_size {spec.group_size} does not divide in_features {module.in_features}")
    request = KernelRequest("linear", module.weight.device.type, scheme=layer.scheme,
                            shape=(layer.tokens or 1, module.in_features, module.out_features))
    return matcher.select(request, backend=layer.rule.backend, strict=recipe.strict)


# -- algorithms ------------------------------------------------------------------------------------------


@attrs.frozen(eq=False)
class Step:
    """One entry of the recipe's ``algorithms``: its implementation, the layers it runs on, their collectors."""

    entry: AlgorithmEntry
    impl: AlgorithmImpl
    layers: tuple[LayerWork, ...]
    stats: dict[str, Collector]
    skipped: tuple[tuple[str, str], ...]


def steps(layers: Sequence[LayerWork], recipe: Recipe) -> list[Step]:
    """Which layers each algorithm entry runs on (its `layers` patterns and its `applies` check)."""
    manager = get_manager()
    out = []
    quantized = [layer for layer in layers if layer.quantized]
    for i, entry in enumerate(recipe.algorithms):
        impl = manager.algorithm(entry.name)
        accepted, skipped = [], []
        for layer in quantized:
            if not entry.selects(layer.name):
                continue
            support = _call_plugin(impl, "applies", lambda: impl.applies(entry.options, layer))
            if support:
                accepted.append(layer)
            else:
                skipped.append((layer.name, support.reason))
        if entry.layers and not any(entry.selects(layer.name) for layer in quantized):
            warnings.warn(f"recipe {recipe_name(recipe)}: algorithms[{i}].{entry.name}.layers "
                          f"{list(entry.layers)} matches no quantized layer", stacklevel=3)
        elif not accepted:
            reasons = "; ".join(f"{name}: {why}" for name, why in skipped[:3])
            warnings.warn(f"recipe {recipe_name(recipe)}: algorithms[{i}] {entry.name} applies to no layer"
                          + (f" ({reasons})" if reasons else ""), stacklevel=3)
        stats = {}
        if impl.collector is not None:
            for layer in accepted:
                stats[layer.name] = _call_plugin(impl, "collector",
                                                 lambda layer=layer: impl.collector(entry.options, layer))
        out.append(Step(entry, impl, tuple(accepted), stats, tuple(skipped)))
    return out


def _call_plugin(impl: AlgorithmImpl, what: str, fn: Callable[[], Any]) -> Any:
    """Run plugin code; a qcore error passes through, anything else names the algorithm and its plugin."""
    try:
        return fn()
    except QcoreError:
        raise
    except Exception as exc:
        provider = impl.provider.describe() if impl.provider else "unknown plugin"
        raise PluginError(f"algorithm {impl.name} ({provider}) failed in {what}: {type(exc).__name__}: {exc}"
                          ) from exc


class Services:
    """What algorithm contexts share within one `quantize`: the dataflow folds, probes, progress bars."""

    def __init__(self, model: nn.Module, source: CalibrationSource | None, show: bool) -> None:
        self.model = model
        self.source = source
        self.show = show
        self._flows: dict[tuple[Any, ...], balance.Dataflow] = {}

    def groups(self, ctx: AlgorithmContext, layers: Sequence[LayerWork], mappings: tuple[Any, ...]
               ) -> list[balance.Group]:
        if mappings not in self._flows:
            if self.source is None:
                raise QcoreError(f"{ctx.impl.name}: finding where scales fold needs calibration data")

            def probe(hooks: Callable[[], contextlib.AbstractContextManager[None]]) -> list[torch.Tensor]:
                assert self.source is not None
                return self.source.probe(self.model, hooks)

            find = balance.named if mappings else balance.discover
            kwargs = {"mappings": mappings} if mappings else {}
            self._flows[mappings] = find(self.model, probe, progress=self.progress, **kwargs)
        return balance.groups(ctx, layers, self._flows[mappings])

    @contextlib.contextmanager
    def progress(self, description: str, total: int) -> Iterator[Callable[[int], None]]:
        with progress_bar(self.show) as bar:
            task = bar.add_task(description, total=total)
            yield lambda n: bar.advance(task, n)


def run_steps(model: nn.Module, layers: Sequence[LayerWork], work: list[Step], services: Services,
              edits: ModelEdits) -> None:
    """Each algorithm in recipe order, on its layers that no earlier algorithm quantized."""
    by_name = {layer.name: layer for layer in layers}
    for step in work:
        if step.impl.kind == "correct":
            for layer in step.layers:
                _finalize(layer)
            todo = list(step.layers)
        else:
            todo = [layer for layer in step.layers if layer.qweight is None]
        ctx = AlgorithmContext(step.impl, step.entry, model, todo, by_name, step.stats, edits, services)
        _call_plugin(step.impl, "run", lambda: step.impl.run(ctx))
        for layer in todo:
            if layer.qweight is not None and layer.qweight_by is None:
                layer.qweight_by = step.impl.name


def _finalize(layer: LayerWork) -> None:
    """The weights a ``correct`` algorithm works on: the quantizer's, else round-to-nearest's, fixed now."""
    spec = layer.scheme.weights
    if layer.qweight is None and spec is not None:
        with in_layer(layer.name):
            layer.qweight = ops.quantize(layer.weight, spec)
        layer.qweight_by = "round-to-nearest"


# -- calibration -----------------------------------------------------------------------------------------


def _observers(layers: Sequence[LayerWork], recipe: Recipe) -> tuple[dict[str, Any], set[str]]:
    """A fresh observer per layer with static activations, and the observer names used."""
    manager = get_manager()
    observers, names = {}, set()
    for layer in layers:
        act = layer.scheme.input_activations
        if layer.quantized and layer.scheme.needs_calibration and act is not None:
            name, options = recipe.observer_for(act)
            names.add(name)
            with in_layer(layer.name):
                observers[layer.name] = manager.observer(name).factory(act, **options)
    return observers, names


def _calibration_hooks(layers: Sequence[LayerWork], observe: Callable[[LayerWork, torch.Tensor], None]
                       ) -> dict[nn.Module, LayerHook]:
    def make(layer: LayerWork) -> LayerHook:
        def hook(x: torch.Tensor, tokens: int) -> None:
            try:
                check_finite(x.detach(), "calibration activation")
            except NonFiniteError as exc:
                raise NonFiniteError(f"layer {layer.name!r}: {exc}") from None
            if x.ndim == 0 or x.shape[-1] != layer.in_features:
                raise ShapeError(f"layer {layer.name!r}: input of shape {tuple(x.shape)} does not end in "
                                 f"in_features={layer.in_features}")
            if layer.tokens is None:
                layer.tokens = tokens
            with in_layer(layer.name):
                observe(layer, x)

        return hook

    return {layer.module: make(layer) for layer in layers}


def _needs(layers: Sequence[LayerWork], work: list[Step], recipe: Recipe) -> str:
    """Why calibration data is required ('' when it is not)."""
    static = [f"{w.name} ({w.scheme.name})" for w in layers if w.quantized and w.scheme.needs_calibration]
    if static:
        return "static activation schemes need calibration_data; layers: " + ", ".join(static)
    for step in work:
        if step.impl.needs_calibration and step.layers:
            return (f"{step.impl.name} needs calibration_data (each layer's inputs); layers: "
                    + ", ".join(w.name for w in step.layers))
    return ""


def calibrate(model: nn.Module, layers: Sequence[LayerWork], work: list[Step], recipe: Recipe,
              source: CalibrationSource | None, show: bool) -> tuple[CalibrationInfo | None, dict[str, Any]]:
    """The one calibration pass: token counts, observers of untransformed layers, every collector.

    Returns what ran, and the observers deferred to `observe_transformed`
    (layers a transform algorithm may move).
    """
    quantized = [w for w in layers if w.quantized]
    observers, observer_names = _observers(quantized, recipe)
    transformed = {w.name for step in work if step.impl.kind == "transform" for w in step.layers}
    now = {name: o for name, o in observers.items() if name not in transformed}
    later = {name: o for name, o in observers.items() if name in transformed}
    if source is None:
        return None, later
    collectors: dict[str, list[Collector]] = {}
    for step in work:
        for name, collector in step.stats.items():
            collectors.setdefault(name, []).append(collector)
    full = bool(observers) or bool(collectors)

    def observe(layer: LayerWork, x: torch.Tensor) -> None:
        if layer.name in now:
            now[layer.name].observe(x)
        for collector in collectors.get(layer.name, ()):
            collector.observe(x)

    with progress_bar(show and full) as bar:
        task = bar.add_task("calibrating", total=source.limit)
        samples, batches = source.run(model, _calibration_hooks(quantized, observe), first_batch_only=not full,
                                      advance=lambda rows: bar.advance(task, rows))
    if observers and batches == 0:
        raise QcoreError(f"recipe {recipe_name(recipe)}: the calibration data ran no batch through the model; "
                         "layers needing it: " + ", ".join(observers))
    _finish_observers(layers, now)
    if not full:
        return None, later
    labels = observer_names | {step.impl.name for step in work if step.stats}
    return CalibrationInfo(samples, batches, ", ".join(sorted(labels)) or "none"), later


def observe_transformed(model: nn.Module, layers: Sequence[LayerWork], observers: dict[str, Any],
                        source: CalibrationSource, show: bool) -> None:
    """A second pass for static observers whose layers' inputs a transform moved: they see the new inputs."""
    if not observers:
        return
    targets = [w for w in layers if w.name in observers]

    def observe(layer: LayerWork, x: torch.Tensor) -> None:
        observers[layer.name].observe(x)  # what the kernel will see: the layer's input scale is applied already

    with progress_bar(show) as bar:
        task = bar.add_task("calibrating transformed layers", total=source.limit)
        source.run(model, _calibration_hooks(targets, observe), advance=lambda rows: bar.advance(task, rows))
    _finish_observers(layers, observers)


def _finish_observers(layers: Sequence[LayerWork], observers: dict[str, Any]) -> None:
    for layer in layers:
        observer = observers.get(layer.name)
        if observer is None:
            continue
        if layer.tokens is None:
            raise QcoreError(f"layer {layer.name!r}: the calibration data never reached this layer; "
                             "cannot calibrate it")
        with in_layer(layer.name):
            layer.act_qparams = observer.qparams()


# -- the whole pipeline --------------------------------------------------------------------------------


def quantize(model: nn.Module, recipe: Recipe, data: CalibrationData | None, matcher: Matcher, *,
             show: bool) -> nn.Module:
    """Quantize `model` in place per `recipe` (see `qcore.quantize`); returns it."""
    layers = resolve(model, recipe)
    check_weights(layers)
    plan(layers, recipe, Matcher(matcher.manager, matcher.hardware, measure=False))
    work = steps(layers, recipe)
    needs = _needs(layers, work, recipe)
    if needs and data is None:
        raise QcoreError(f"recipe {recipe_name(recipe)}: {needs}")
    source = CalibrationSource(data, recipe.calibration.samples) if data is not None else None
    edits = ModelEdits()
    with edits.undo_on_error():
        info, later = calibrate(model, layers, work, recipe, source, show)
        run_steps(model, layers, work, Services(model, source, show), edits)
        if source is not None:
            observe_transformed(model, layers, later, source, show)
        plan(layers, recipe, matcher)
        built, records = build_layers(layers)
    edits.release()
    model = swap(model, built)
    attach(model, QuantState(recipe, records, info, matcher.hardware))
    return model
