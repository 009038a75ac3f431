"""The public entry points: quantize, plan, prepare_qat, convert (and state_of, from `qcore.state`).

`quantize` validates everything (recipe, weights, kernels, calibration data)
and runs the recipe's algorithms before it replaces a single module, so a
failure leaves the model as it was (`qcore.pipeline`). The outcome is
recorded on the model (`state_of`) for the card, `qcore.io` and anyone asking
what ran where and why.
"""

from __future__ import annotations

from os import PathLike
from typing import Any

import attrs
from torch import nn

from qcore import pipeline
from qcore.algorithm import LayerWork
from qcore.calibration import CalibrationData
from qcore.errors import QcoreError
from qcore.matcher import Matcher, Plan
from qcore.nn.convert import build_layers, swap
from qcore.nn.fake_quant import FakeQuantLinear
from qcore.plugins import get_manager
from qcore.recipe import LayerRule, Recipe, load_recipe
from qcore.state import QuantState, attach, state_of

RecipeSource = Recipe | str | PathLike[str] | dict[str, Any]

QAT_ATTR = "_qcore_qat"

__all__ = ["QuantState", "convert", "plan", "prepare_qat", "quantize", "state_of"]


@attrs.frozen
class QatState:
    """What `prepare_qat` decided per targeted layer, for `convert` to finish."""

    recipe: Recipe
    rules: tuple[LayerRule, ...]


def plan(model: nn.Module, recipe: RecipeSource, *, measure: bool = True, matcher: Matcher | None = None) -> Plan:
    """What would run where and why, without touching the model (M = 1 token per linear call)."""
    recipe = load_recipe(recipe)
    return pipeline.plan(pipeline.resolve(model, recipe), recipe, matcher or Matcher(measure=measure))


def quantize(model: nn.Module | str | PathLike[str], recipe: RecipeSource,
             calibration_data: CalibrationData | None = None, *, progress: bool = True, measure: bool = True,
             matcher: Matcher | None = None) -> nn.Module:
    """Quantize `model` in place per `recipe` and return it.

    `model` may be the path of a local Hugging Face model folder (``config.json``
    and safetensors), loaded with `qcore.hf.load_folder` first.

    `calibration_data` is an iterable of batches (each run as ``model(batch)``,
    or ``model(**batch)`` for a dict; iterated once) or a callable
    ``fn(model)`` that runs the model itself; at most
    ``recipe.calibration.samples`` samples are used. It is required when a
    layer's scheme has static activations or an algorithm of the recipe
    collects statistics. Kernels are planned for the token count each layer
    saw in the first calibration batch, or for one token without data.
    """
    if not isinstance(model, nn.Module):
        from qcore.hf import load_folder

        model = load_folder(model)
    recipe = load_recipe(recipe)
    return pipeline.quantize(model, recipe, calibration_data, matcher or Matcher(measure=measure), show=progress)


def prepare_qat(model: nn.Module, recipe: RecipeSource, *, matcher: Matcher | None = None) -> nn.Module:
    """Replace the recipe's Linear layers by FakeQuantLinear for quantization-aware training; returns the model.

    Layers no kernel can run are handled as `quantize` would (error, or kept
    float per ``on_unsupported``), so training never optimizes a layer that
    `convert` cannot quantize. A recipe listing an algorithm that cannot run
    in QAT is an error.
    """
    recipe = load_recipe(recipe)
    manager = get_manager()
    refused = [f"algorithms[{i}] {a.name}" for i, a in enumerate(recipe.algorithms)
               if not manager.algorithm(a.name).qat]
    if refused:
        raise QcoreError(f"recipe {pipeline.recipe_name(recipe)}: {', '.join(refused)} cannot run in "
                         "quantization-aware training (they need calibration statistics of a trained model); "
                         "quantize the trained model with them instead, or remove them for prepare_qat")
    layers = pipeline.resolve(model, recipe)
    pipeline.check_weights(layers)
    pipeline.plan(layers, recipe, matcher or Matcher(measure=False))
    fakes = {w.name: FakeQuantLinear(w.name, w.module, w.scheme, w.rule.backend)  # type: ignore[arg-type]
             for w in layers if w.quantized}
    model = swap(model, fakes)
    setattr(model, QAT_ATTR, QatState(recipe, tuple(w.rule for w in layers)))
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
    layers = [LayerWork(rule.name, model.get_submodule(rule.name), rule) for rule in qat.rules]
    for layer in layers:
        if isinstance(layer.module, FakeQuantLinear):
            layer.act_qparams, layer.tokens = layer.module.act_qparams(), layer.module.tokens
    pipeline.plan(layers, qat.recipe, matcher)
    built, records = build_layers(layers)
    unplanned = {w.name: w.module.to_float() for w in layers  # type: ignore[union-attr]
                 if w.selection is None and isinstance(w.module, FakeQuantLinear)}
    model = swap(model, {**built, **unplanned})
    attach(model, QuantState(qat.recipe, records, None, matcher.hardware))
    delattr(model, QAT_ATTR)
    return model
