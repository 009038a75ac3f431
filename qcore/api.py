"""The public entry points: quantize, plan, prepare_qat, convert, state_of.

`quantize` validates everything (recipe, weights, kernels, calibration data)
before it replaces a single module, so a failure leaves the model as it was.
The outcome is recorded on the model (`state_of`) for the card, `qcore.io`
and anyone asking what ran where and why.
"""

from __future__ import annotations

from os import PathLike
from typing import Any

import attrs
from torch import nn

from qcore.errors import QcoreError
from qcore.hardware import HardwareProfile
from qcore.kernels import QTensor
from qcore.matcher import Matcher, Plan
from qcore.nn.convert import (
    CalibrationData,
    CalibrationInfo,
    LayerRecord,
    Target,
    build_layers,
    calibrate,
    check_weights,
    find_targets,
    gptq_targets,
    needs_calibration,
    plan_layers,
    run_gptq,
    smoothing_factors,
    smoothquant_targets,
    recipe_name,
    swap,
)
from qcore.nn.fake_quant import FakeQuantLinear
from qcore.nn.modules import QuantLinear
from qcore.recipe import LayerRule, Recipe, load_recipe

RecipeSource = Recipe | str | PathLike[str] | dict[str, Any]

STATE_ATTR = "_qcore_state"
QAT_ATTR = "_qcore_qat"


@attrs.frozen
class QuantState:
    """What `quantize` (or `convert`, or `qcore.load`) did to a model."""

    recipe: Recipe
    plan: Plan
    layers: tuple[LayerRecord, ...]
    calibration: CalibrationInfo | None
    hardware: HardwareProfile

    def layer(self, name: str) -> LayerRecord:
        for record in self.layers:
            if record.name == name:
                return record
        raise KeyError(name)


@attrs.frozen
class QatState:
    """What `prepare_qat` decided per targeted layer, for `convert` to finish."""

    recipe: Recipe
    rules: tuple[LayerRule, ...]


def state_of(model: nn.Module) -> QuantState:
    """The QuantState recorded on a quantized model, with the kernel each QuantLinear runs now.

    Moving a model re-plans its layers (`QuantLinear.replan`), so the kernels
    are read from the layers; everything else is as recorded.
    """
    state = getattr(model, STATE_ATTR, None)
    if state is None:
        raise QcoreError(f"{type(model).__name__} is not quantized: run qcore.quantize, qcore.convert or qcore.load")
    live = {name: m.selection for name, m in model.named_modules() if isinstance(m, QuantLinear)}
    moved = {r.name: live[r.name] for r in state.layers if r.name in live and live[r.name].chosen.id != r.kernel}
    if not moved:
        return state
    layers = tuple(attrs.evolve(r, kernel=moved[r.name].chosen.id, why=moved[r.name].why()) if r.name in moved
                   else r for r in state.layers)
    plan = Plan(tuple(attrs.evolve(lp, selection=moved[lp.name]) if lp.name in moved else lp for lp in state.plan))
    return attrs.evolve(state, layers=layers, plan=plan)


def plan(model: nn.Module, recipe: RecipeSource, *, measure: bool = True, matcher: Matcher | None = None) -> Plan:
    """What would run where and why, without touching the model (M = 1 token per linear call)."""
    recipe = load_recipe(recipe)
    return plan_layers(find_targets(model, recipe), recipe, matcher or Matcher(measure=measure), {})


def quantize(model: nn.Module | str | PathLike[str], recipe: RecipeSource,
             calibration_data: CalibrationData | None = None, *, progress: bool = True, measure: bool = True,
             matcher: Matcher | None = None) -> nn.Module:
    """Quantize `model` in place per `recipe` and return it.

    `model` may be the path of a local Hugging Face model folder (``config.json``
    and safetensors), loaded with `qcore.hf.load_folder` first.

    `calibration_data` is an iterable of batches (each run as ``model(batch)``,
    or ``model(**batch)`` for a dict) or a callable ``fn(model)`` that runs the
    model itself; at most ``recipe.calibration.samples`` samples are used. It
    is required when a layer's scheme has static activations. Kernels are
    planned for the token count each layer saw in the first calibration batch,
    or for one token without calibration data.
    """
    from qcore.algorithms import HessianAccumulator
    from qcore.algorithms.smoothquant import ChannelAbsMax

    if not isinstance(model, nn.Module):
        from qcore.hf import load_folder

        model = load_folder(model)
    recipe = load_recipe(recipe)
    matcher = matcher or Matcher(measure=measure)
    targets = find_targets(model, recipe)
    check_weights(targets)
    static = needs_calibration(targets)
    gptq = gptq_targets(targets, recipe)
    smooth = smoothquant_targets(targets, recipe)
    if static and calibration_data is None:
        raise QcoreError(
            f"recipe {recipe_name(recipe)}: static activation schemes need calibration_data; layers: "
            + ", ".join(f"{t.name} ({t.rule.scheme.name})" for t in static)  # type: ignore[union-attr]
        )
    for algorithm, layers in (("smoothquant", smooth), ("gptq", gptq)):
        if layers and calibration_data is None:
            raise QcoreError(f"recipe {recipe_name(recipe)}: {algorithm} needs calibration_data (each layer's "
                             f"inputs); layers: " + ", ".join(t.name for t in layers))
    act_qparams: dict[str, Any] = {}
    tokens: dict[str, int] = {}
    info = None
    qweights: dict[str, QTensor] = {}
    factors: dict[str, Any] = {}
    if calibration_data is not None:
        plan_layers(targets, recipe, Matcher(matcher.manager, matcher.hardware, measure=False), {})
        hessians = {t.name: HessianAccumulator(t.module.in_features) for t in gptq}
        amaxes = {t.name: ChannelAbsMax(t.module.in_features) for t in smooth}
        sinks = {t.name: [s for s in (hessians.get(t.name), amaxes.get(t.name)) if s is not None] for t in targets}
        act_qparams, tokens, info = calibrate(model, targets, recipe, calibration_data, progress=progress,
                                              first_batch_only=not (static or gptq or smooth), sinks=sinks)
        factors = smoothing_factors(targets, recipe, amaxes)
        qweights = run_gptq(targets, recipe, hessians, factors)
    layer_plan = plan_layers(targets, recipe, matcher, tokens)
    return _finish(model, recipe, targets, layer_plan, act_qparams, info, matcher, qweights, factors)


def prepare_qat(model: nn.Module, recipe: RecipeSource, *, matcher: Matcher | None = None) -> nn.Module:
    """Replace the recipe's Linear layers by FakeQuantLinear for quantization-aware training; returns the model.

    Layers no kernel can run are handled as `quantize` would (error, or kept
    float per ``on_unsupported``), so training never optimizes a layer that
    `convert` cannot quantize.
    """
    recipe = load_recipe(recipe)
    targets = find_targets(model, recipe)
    check_weights(targets)
    layer_plan = plan_layers(targets, recipe, matcher or Matcher(measure=False), {})
    fakes = {
        t.name: FakeQuantLinear(t.name, t.module, t.rule.scheme, t.rule.backend)  # type: ignore[arg-type]
        for t, lp in zip(targets, layer_plan.layers)
        if lp.selection is not None
    }
    model = swap(model, fakes)
    setattr(model, QAT_ATTR, QatState(recipe, tuple(t.rule for t in targets)))
    return model


def convert(model: nn.Module, *, measure: bool = True, matcher: Matcher | None = None) -> nn.Module:
    """Turn a `prepare_qat` model's FakeQuantLinear layers into QuantLinear, as `quantize` would; returns it.

    Static activation qparams come from the ranges observed in training; the
    kernels are planned for the token count of the last training batch.
    """
    qat: QatState | None = getattr(model, QAT_ATTR, None)
    if qat is None:
        raise QcoreError(f"{type(model).__name__} was not prepared for QAT: run qcore.prepare_qat first")
    matcher = matcher or Matcher(measure=measure)
    targets = [Target(rule.name, model.get_submodule(rule.name), rule) for rule in qat.rules]
    fakes = [t for t in targets if isinstance(t.module, FakeQuantLinear)]
    act_qparams = {t.name: qp for t in fakes if (qp := t.module.act_qparams()) is not None}  # type: ignore[union-attr]
    tokens = {t.name: t.module.tokens for t in fakes}
    layer_plan = plan_layers(targets, qat.recipe, matcher, tokens)
    model = _finish(model, qat.recipe, targets, layer_plan, act_qparams, None, matcher, {}, {})
    unplanned = {t.name: t.module.to_float() for t, lp in zip(targets, layer_plan.layers)  # type: ignore[union-attr]
                 if lp.selection is None and isinstance(t.module, FakeQuantLinear)}
    model = swap(model, unplanned)
    delattr(model, QAT_ATTR)
    return model


def _finish(model: nn.Module, recipe: Recipe, targets: list[Target], layer_plan: Plan, act_qparams: dict[str, Any],
            info: CalibrationInfo | None, matcher: Matcher, qweights: dict[str, QTensor],
            factors: dict[str, Any]) -> nn.Module:
    built, records = build_layers(targets, layer_plan, act_qparams, qweights, factors)
    model = swap(model, built)
    setattr(model, STATE_ATTR, QuantState(recipe, layer_plan, records, info, matcher.hardware))
    return model
