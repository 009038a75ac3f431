"""The steps from a float model to a quantized one: find targets, check, calibrate, plan, build, swap.

`qcore.api` composes them; they are separate so that post-training
quantization and QAT conversion share every step after calibration. Nothing
here modifies the model until `swap`, which runs only after every layer has
been validated, planned and built.
"""

from __future__ import annotations

import contextlib
import itertools
import sys
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import attrs
import torch
from torch import nn

from qcore import metrics, ops
from qcore.errors import NoKernelError, NonFiniteError, QcoreError
from qcore.kernels import KernelRequest, QTensor
from qcore.matcher import LayerPlan, Matcher, Plan
from qcore.nn.modules import QuantLinear
from qcore.plugins import get_manager
from qcore.qparams import check_finite
from qcore.recipe import LayerRule, Recipe, RecipeError, RecipeProblem
from qcore.spec import QuantScheme

CalibrationData = Iterable[Any] | Callable[[nn.Module], Any]


@attrs.frozen(eq=False)
class Target:
    """A module the recipe speaks about, with the rule that decided its fate."""

    name: str
    module: nn.Module
    rule: LayerRule


@attrs.frozen
class CalibrationInfo:
    """How much data calibrated the static activation qparams, and with which observer(s)."""

    samples: int
    batches: int
    observer: str


@attrs.frozen
class LayerRecord:
    """What happened to one targeted layer: its scheme and kernel, or why it stayed float, and what it cost."""

    name: str
    scheme: QuantScheme | None
    rule: str
    kernel: str | None
    why: str
    float_reason: str | None
    in_features: int
    out_features: int
    float_bytes: int
    quant_bytes: int
    weight_sqnr: float | None


@contextlib.contextmanager
def in_layer(name: str) -> Iterator[None]:
    """Re-raise a qcore error with the layer's name in front, keeping its type."""
    try:
        yield
    except QcoreError as exc:
        raise type(exc)(f"layer {name!r}: {exc}") from exc


def recipe_name(recipe: Recipe) -> str:
    return recipe.source or "(inline recipe)"


def find_targets(model: nn.Module, recipe: Recipe) -> list[Target]:
    """Every module the recipe resolves; unmatched patterns warn, or fail when the recipe is strict."""
    names = [name for name, _ in model.named_modules()]
    unmatched = recipe.unmatched_patterns(names)
    if unmatched and recipe.strict:
        raise RecipeError([RecipeProblem("", None, f"{u} of {type(model).__name__} (strict)") for u in unmatched],
                          recipe.source)
    for message in unmatched:
        warnings.warn(f"recipe {recipe_name(recipe)}: {message} of {type(model).__name__}", stacklevel=3)
    targets = []
    for name, module in model.named_modules():
        rule = recipe.resolve(name, module)
        if rule is not None:
            targets.append(Target(name, module, rule))
    return targets


def check_weights(targets: Iterable[Target]) -> None:
    """NaN/Inf in any weight to be quantized is an error naming the layer, raised before anything changes."""
    for t in targets:
        if t.rule.scheme is None:
            continue
        for pname in ("weight", "bias"):
            tensor = getattr(t.module, pname, None)
            if isinstance(tensor, torch.Tensor):
                try:
                    check_finite(tensor.detach(), pname)
                except NonFiniteError as exc:
                    raise NonFiniteError(f"layer {t.name!r}: {exc}; nothing was modified") from None


def needs_calibration(targets: Iterable[Target]) -> list[Target]:
    return [t for t in targets if t.rule.scheme is not None and t.rule.scheme.needs_calibration]


def gptq_targets(targets: Iterable[Target], recipe: Recipe) -> list[Target]:
    """The layers whose weights the recipe's `gptq` quantizes (integer channel/group weight specs)."""
    if recipe.gptq is None:
        return []
    return [t for t in targets if t.rule.scheme is not None and recipe.gptq.applies_to(t.rule.scheme.weights)
            and isinstance(t.module, nn.Linear)]


def smoothquant_targets(targets: Iterable[Target], recipe: Recipe) -> list[Target]:
    """The layers the recipe's `smoothquant` smooths (dynamic integer activations)."""
    if recipe.smoothquant is None:
        return []
    return [t for t in targets if recipe.smoothquant.applies_to(t.rule.scheme) and isinstance(t.module, nn.Linear)]


def _reached(name: str, sink: Any, what: str) -> None:
    if sink.samples == 0:
        raise QcoreError(f"layer {name!r}: the calibration data never reached this layer; {what} needs its inputs")


def smoothing_factors(targets: Iterable[Target], recipe: Recipe, amaxes: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """SmoothQuant's per-input-channel factors s of each smoothed layer (weight × s, input / s)."""
    from qcore.algorithms.smoothquant import smoothing_factors as factors

    found: dict[str, torch.Tensor] = {}
    for t in targets:
        if t.name in amaxes:
            _reached(t.name, amaxes[t.name], "SmoothQuant")
            assert recipe.smoothquant is not None
            found[t.name] = factors(amaxes[t.name].amax, t.module.weight, recipe.smoothquant.alpha)
    return found


def weight_to_quantize(t: Target, factors: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """The layer's float weight as its quantizer sees it: scaled by SmoothQuant's factors when smoothed."""
    weight = t.module.weight.detach().float()
    s = factors.get(t.name)
    return weight if s is None else weight * s.to(weight.device)


def run_gptq(targets: Iterable[Target], recipe: Recipe, hessians: Mapping[str, Any],
             factors: Mapping[str, torch.Tensor]) -> dict[str, QTensor]:
    """GPTQ-quantized weights of the `gptq_targets`, from the input Hessians calibration collected.

    A smoothed layer multiplies x / s by W·s, so its Hessian is that of x / s.
    """
    from qcore.algorithms import gptq_quantize

    quantized: dict[str, QTensor] = {}
    if recipe.gptq is None:
        return quantized
    for t in targets:
        if t.name not in hessians:
            continue
        _reached(t.name, hessians[t.name], "GPTQ")
        hessian = hessians[t.name].hessian
        s = factors.get(t.name)
        if s is not None:
            inv = 1.0 / s.to(torch.float64)
            hessian = hessian * inv[:, None] * inv[None, :]
        with in_layer(t.name):
            quantized[t.name] = gptq_quantize(weight_to_quantize(t, factors), hessian,
                                              t.rule.scheme.weights,  # type: ignore[union-attr]
                                              damp=recipe.gptq.damp, block_size=recipe.gptq.block_size)
    return quantized


def plan_layers(targets: Iterable[Target], recipe: Recipe, matcher: Matcher, tokens: Mapping[str, int]) -> Plan:
    """One LayerPlan per target.

    The linear request's M is the number of tokens the layer saw in the first
    calibration batch when there was one (the shape the model will mostly run
    at), else 1: decode-like use, one token at a time, which is where a
    quantized model's per-call cost matters most.
    """
    layers = []
    for t in targets:
        if t.rule.scheme is None:
            layers.append(LayerPlan(t.name, None, t.rule.reason or f"kept float by rule {t.rule.rule}"))
            continue
        try:
            layers.append(LayerPlan(t.name, _select(t, recipe, matcher, tokens.get(t.name, 1)), t.rule.reason))
        except NoKernelError as exc:
            if recipe.on_unsupported != "keep-float":
                raise NoKernelError(f"layer {t.name!r} (rule {t.rule.rule}): {exc}") from None
            layers.append(LayerPlan(t.name, None, f"unsupported, kept float: {exc}"))
    return Plan(tuple(layers))


def _select(t: Target, recipe: Recipe, matcher: Matcher, m: int):  # type: ignore[no-untyped-def]
    if not isinstance(t.module, nn.Linear):
        raise NoKernelError(f"qcore quantizes nn.Linear layers; this is a {type(t.module).__name__}")
    spec = t.rule.scheme.weights  # type: ignore[union-attr]
    if spec is not None and spec.granularity == "group" and t.module.in_features % spec.group_size:  # type: ignore[operator]
        raise NoKernelError(f"group_size {spec.group_size} does not divide in_features {t.module.in_features}")
    device = t.module.weight.device.type
    request = KernelRequest("linear", device, scheme=t.rule.scheme, shape=(m, t.module.in_features,
                                                                           t.module.out_features))
    return matcher.select(request, backend=t.rule.backend, strict=recipe.strict)


class _Enough(Exception):
    """Raised inside a hook to stop a calibration callable once enough samples ran."""


def _rows(batch: Any) -> int:
    """Leading dimension of the first tensor in a batch (1 when there is none)."""
    if isinstance(batch, torch.Tensor):
        return batch.shape[0] if batch.ndim else 1
    values = batch.values() if isinstance(batch, Mapping) else batch if isinstance(batch, (list, tuple)) else ()
    for value in values:
        if isinstance(value, torch.Tensor) or isinstance(value, (Mapping, list, tuple)):
            return _rows(value)
    return 1


def _head(batch: Any, n: int, rows: int) -> Any:
    """The first `n` samples of a batch: tensors whose leading dimension is the batch's are cut."""
    if isinstance(batch, torch.Tensor):
        return batch[:n] if batch.ndim and batch.shape[0] == rows else batch
    if isinstance(batch, Mapping):
        return {k: _head(v, n, rows) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)) and any(isinstance(v, torch.Tensor) for v in batch):
        return type(batch)(_head(v, n, rows) for v in batch)
    return batch


class _Calibrator:
    """Forward pre-hooks on the targeted layers: finiteness, first-batch token counts, observers."""

    def __init__(self, observers: dict[str, Any], limit: int | None, on_pass: Callable[[int], None],
                 sinks: Mapping[str, Sequence[Any]]) -> None:
        self.observers, self.limit, self.on_pass, self.sinks = observers, limit, on_pass, sinks
        self.tokens: dict[str, int] = {}
        self.samples = 0
        self.batches = 0
        self._first: str | None = None

    def hook(self, name: str) -> Callable[..., None]:
        def pre_hook(_module: nn.Module, args: tuple[Any, ...]) -> None:
            x = args[0]
            if self.limit is not None:
                self._count_pass(name, x)
            try:
                check_finite(x.detach(), "calibration activation")
            except NonFiniteError as exc:
                raise NonFiniteError(f"layer {name!r}: {exc}") from None
            self.tokens.setdefault(name, max(1, x.numel() // max(1, x.shape[-1])))
            observer = self.observers.get(name)
            for sink in ([observer] if observer is not None else []) + list(self.sinks.get(name, ())):
                with in_layer(name):
                    sink.observe(x)

        return pre_hook

    def _count_pass(self, name: str, x: torch.Tensor) -> None:
        """For a callable: the first layer to run marks each forward pass; stop once `limit` samples ran."""
        if self._first is None:
            self._first = name
        if name != self._first:
            return
        assert self.limit is not None
        if self.samples >= self.limit:
            raise _Enough
        rows = x.shape[0] if x.ndim > 1 else 1
        self.samples += rows
        self.batches += 1
        self.on_pass(rows)


def _progress(enabled: bool):  # type: ignore[no-untyped-def]
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    return Progress(TextColumn("[bold]calibrating"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console, transient=True, disable=not (enabled and console.is_terminal))


def calibrate(model: nn.Module, targets: list[Target], recipe: Recipe, data: CalibrationData, *,
              progress: bool = True, first_batch_only: bool = False,
              sinks: Mapping[str, Sequence[Any]] | None = None
              ) -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor]], dict[str, int], CalibrationInfo | None]:
    """Run calibration data through the float model.

    Returns the static activation qparams of the layers that need them, the
    token count each targeted layer saw in the first batch (for planning), and
    what was run. With `first_batch_only` (nothing needs calibration) only one
    batch runs, for the token counts, and no CalibrationInfo is returned.
    `sinks` (layer name → objects with `observe(x)` and a `label`, e.g. an
    algorithm's statistics) see each layer's inputs too.
    """
    sinks = sinks or {}
    static = needs_calibration(targets)
    manager = get_manager()
    observers: dict[str, Any] = {}
    observer_names: set[str] = set()
    for t in static:
        spec = t.rule.scheme.input_activations  # type: ignore[union-attr]
        name, options = recipe.observer_for(spec)
        observer_names.add(name)
        with in_layer(t.name):
            observers[t.name] = manager.observer(name).factory(spec, **options)
    limit = 1 if first_batch_only else recipe.calibration.samples
    linears = [t for t in targets if t.rule.scheme is not None and isinstance(t.module, nn.Linear)]
    was_training = model.training
    with _progress(progress and not first_batch_only) as bar:
        task = bar.add_task("calibrating", total=limit)
        calibrator = _Calibrator(observers, limit if callable(data) else None,
                                 lambda rows: bar.advance(task, rows), sinks)
        handles = [t.module.register_forward_pre_hook(calibrator.hook(t.name)) for t in linears]
        try:
            model.eval()
            with torch.no_grad():
                if callable(data):
                    with contextlib.suppress(_Enough):
                        data(model)
                elif first_batch_only:
                    _feed(model, itertools.islice(data, 1), sys.maxsize, calibrator, lambda rows: None)
                else:
                    _feed(model, data, limit, calibrator, lambda rows: bar.advance(task, rows))
        finally:
            for handle in handles:
                handle.remove()
            model.train(was_training)
    if static and calibrator.batches == 0:
        raise QcoreError(
            f"recipe {recipe_name(recipe)}: the calibration data ran no batch through the model; layers needing it: "
            + ", ".join(t.name for t in static)
        )
    qparams = {}
    for name, observer in observers.items():
        if name not in calibrator.tokens:
            raise QcoreError(f"layer {name!r}: the calibration data never reached this layer; cannot calibrate it")
        with in_layer(name):
            qparams[name] = observer.qparams()
    info = None if first_batch_only else CalibrationInfo(
        calibrator.samples, calibrator.batches,
        ", ".join(sorted(observer_names | {s.label for found in sinks.values() for s in found})) or "none")
    return qparams, calibrator.tokens, info


def _feed(model: nn.Module, data: Iterable[Any], limit: int, calibrator: _Calibrator,
          advance: Callable[[int], None]) -> None:
    for batch in data:
        remaining = limit - calibrator.samples
        rows = _rows(batch)
        if rows > remaining:
            batch, rows = _head(batch, remaining, rows), remaining
        if isinstance(batch, Mapping):
            model(**batch)
        else:
            model(batch)
        calibrator.samples += rows
        calibrator.batches += 1
        advance(rows)
        if calibrator.samples >= limit:
            return


def _nbytes(*tensors: torch.Tensor | None) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if t is not None)


def build_layers(targets: list[Target], plan: Plan, act_qparams: Mapping[str, tuple[torch.Tensor, torch.Tensor]],
                 qweights: Mapping[str, QTensor], factors: Mapping[str, torch.Tensor]
                 ) -> tuple[dict[str, QuantLinear], tuple[LayerRecord, ...]]:
    """Quantize each planned layer's weights into a QuantLinear (the model is not touched) and record it.

    Weights already quantized by an algorithm (`qweights`, e.g. GPTQ) are used as
    they are; the others are rounded to nearest by the contract's quantize op.
    Smoothed layers (`factors`) quantize W·s and divide their input by s.
    """
    built: dict[str, QuantLinear] = {}
    records = []
    for t, lp in zip(targets, plan.layers):
        module = t.module
        weight, bias = getattr(module, "weight", None), getattr(module, "bias", None)
        float_bytes = _nbytes(weight, bias)
        shape = dict(in_features=getattr(module, "in_features", 0), out_features=getattr(module, "out_features", 0))
        if lp.selection is None:
            records.append(LayerRecord(t.name, None, t.rule.rule, None, lp.note, lp.note, **shape,
                                       float_bytes=float_bytes, quant_bytes=float_bytes, weight_sqnr=None))
            continue
        scheme = t.rule.scheme
        assert scheme is not None and isinstance(module, nn.Linear)
        act_scale, act_zero_point = act_qparams.get(t.name, (None, None))
        with in_layer(t.name):
            weight = weight_to_quantize(t, factors)
            weights = ops.linear_weights(scheme, weight, module.bias, act_scale=act_scale,
                                         act_zero_point=act_zero_point, qweight=qweights.get(t.name))
            s = factors.get(t.name)
            layer = QuantLinear(t.name, weights, lp.selection,
                                input_scale=None if s is None else (1.0 / s).to(weight.device))
            sqnr = metrics.sqnr(weight, layer.dequantized_weight()) if scheme.weights is not None else None
        built[t.name] = layer
        records.append(LayerRecord(t.name, scheme, t.rule.rule, layer.kernel_id, lp.selection.why(), None, **shape,
                                   float_bytes=float_bytes, quant_bytes=layer.storage_bytes(), weight_sqnr=sqnr))
    return built, tuple(records)


def swap(model: nn.Module, replacements: Mapping[str, nn.Module]) -> nn.Module:
    """Put each replacement where its module was (every place a shared module appears); returns the model.

    A model that is itself a replaced layer is returned replaced.
    """
    if "" in replacements:
        return replacements[""]
    by_id = {id(model.get_submodule(name)): new for name, new in replacements.items()}
    for parent in list(model.modules()):
        for child_name, child in list(parent._modules.items()):
            if child is not None and id(child) in by_id:
                setattr(parent, child_name, by_id[id(child)])
    return model
