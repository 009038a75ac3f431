"""`qcore.tune`: the smallest or fastest model within a quality budget, per layer, on this hardware.

Steps (one module each): the candidates (`candidates`), every candidate's
cost and sensitivity on every layer (`sweep`, on recorded inputs: `inputs`;
quality measures: `quality`), the exact multiple-choice knapsack (`solver`),
the verified choice (`choose`), the emitted recipe (`emit`), the report and
the picture of the fronts (`report`, `plot`). `tune` runs them all;
`profile` and `search` are the two halves, for reusing one profile.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from os import PathLike
from typing import Any

from torch import nn

from qcore.calibration import CalibrationData
from qcore.errors import QcoreError
from qcore.matcher import Matcher
from qcore.recipe import Recipe, load_recipe
from qcore.tuning.candidates import DEFAULT_CANDIDATES, FLOAT, Candidate, parse_candidates
from qcore.tuning.choose import Constraint, TuneError, TuneResult, search
from qcore.tuning.quality import COSINE, OutputCosine, Quality, Score, UserScore, materialize
from qcore.tuning.sweep import OBJECTIVES, Profile, profile

__all__ = ["COSINE", "DEFAULT_CANDIDATES", "FLOAT", "OBJECTIVES", "Candidate", "Constraint", "Profile", "Quality",
           "TuneError", "TuneResult", "base_recipe", "parse_candidates", "profile", "search", "tune"]

CandidateSpec = str | Mapping[str, Any] | Candidate


def base_recipe(recipe: Recipe | str | PathLike[str] | dict[str, Any] | None = None) -> Recipe:
    """What the tuner keeps from a recipe: targets, ignore, calibration, backend, strict; it chooses the rest."""
    if recipe is None:
        return load_recipe({"qcore": 1, "scheme": "none"})
    recipe = load_recipe(recipe)
    chosen = [what for what, set_ in (("scheme", recipe.scheme is not None), ("overrides", bool(recipe.overrides)),
                                      ("algorithms", bool(recipe.algorithms))) if set_]
    if chosen:
        raise QcoreError(f"the tuner's base recipe {recipe.source or ''} gives {', '.join(chosen)}: the tuner "
                         "chooses those per layer; give only targets, ignore, calibration, backend")
    return recipe


def tune(model: nn.Module, calibration_data: CalibrationData, *, objective: str = "size",
         constraint: float | Constraint = 0.995, candidates: Sequence[CandidateSpec] | None = None,
         eval_data: CalibrationData | None = None, score: Score | None = None,
         recipe: Recipe | str | PathLike[str] | dict[str, Any] | None = None, matcher: Matcher | None = None,
         progress: bool = True) -> TuneResult:
    """The cheapest per-layer choice of `candidates` on `objective` (``size`` or ``latency``) keeping `constraint`.

    `constraint` is the least quality: by default the mean cosine of the
    model's outputs against the float model's; with `score`, a user
    ``score(model) -> float`` (higher is better, e.g. a task metric) is the
    quality everywhere. The sensitivity sweep runs on `calibration_data`
    (batches or a callable, as `qcore.quantize` takes); the answer is
    verified end to end on `eval_data` (default: the calibration data) and
    tightened until it holds. `recipe` gives targets, ignore, calibration
    samples and backend (default: every Linear, 128 samples). The model is
    left as it was; the result holds the recipe (with its ``tuned`` record),
    the verified quantized model, the per-layer profile and every round.
    """
    if objective not in OBJECTIVES:
        raise QcoreError(f"unknown objective {objective!r}; known: {', '.join(OBJECTIVES)}")
    parsed = parse_candidates(candidates)
    base = base_recipe(recipe)
    matcher = matcher or Matcher()
    data = materialize(calibration_data)
    if score is not None:
        quality: Quality = UserScore(model, score)
        verify = quality
    else:
        quality = OutputCosine(model, data, "the calibration data")
        verify = quality if eval_data is None else OutputCosine(model, eval_data, "the evaluation data")
    if not isinstance(constraint, Constraint):
        constraint = Constraint(float(constraint), quality.name)
    made = profile(model, data, candidates=parsed, quality=quality, base=base, matcher=matcher,
                   objectives=(objective,), show=progress)
    return search(made, model, data, objective=objective, constraint=constraint, verify=verify, matcher=matcher,
                  show=progress)
