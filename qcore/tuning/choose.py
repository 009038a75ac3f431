"""From a profile to a verified recipe: solve, quantize, measure, tighten until the constraint holds.

The solver predicts quality additively: the float model's quality minus the
loss each chosen candidate caused alone. Layers interact (errors compound,
transforms shared by a norm's consumers change each other's weights), so
every answer is verified: the model is quantized with the emitted recipe by
`qcore.quantize` and measured end to end. When the measured quality misses
the constraint, the prediction was too optimistic, and the solver must
predict more: the least of three corrections, each above the failed
prediction: the constraint plus the miss (predicted - measured); the loss
budget shrunk by the ratio of predicted to measured loss (errors that
compound); half way from the failed prediction to the float model's quality.
The requirement rises above the failed prediction every round, so each round
rules out the last answer and every answer predicted no better: the rounds
end, at worst with every layer float, which meets any constraint the float
model meets.

For ``latency`` the answer is also timed end to end against the float model
(the verification data, taking turns, median of `END_TO_END_REPEATS`): per-layer
kernel times miss what a whole forward pass sees (other token counts, caches,
a busy machine). An answer measured slower than float is replaced by the
float model itself, so a latency result is never slower than float.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import attrs
from torch import nn

from qcore import api, autotune
from qcore.calibration import CalibrationData
from qcore.errors import QcoreError
from qcore.matcher import Matcher
from qcore.recipe import Recipe
from qcore.tuning import solver
from qcore.tuning.candidates import Candidate
from qcore.tuning.emit import tuned_recipe
from qcore.tuning.quality import Quality
from qcore.tuning.sweep import LayerProfile, Option, Profile

LOSS_UNIT = 1e-10
"""Quality is solved in integer steps of this size (cosine losses of one layer run from ~1e-7 to ~1e-2)."""
TIME_UNIT = 1e-9
MAX_ROUNDS = 8
END_TO_END_REPEATS = 5


class TuneError(QcoreError):
    """No combination of candidates can meet the constraint (the message names the best reachable quality)."""


@attrs.frozen
class Constraint:
    """The least quality the tuned model must keep, on `metric` (higher is better)."""

    min_quality: float
    metric: str

    def describe(self) -> str:
        return f"{self.metric} ≥ {self.min_quality:g}"


@attrs.frozen
class Round:
    """One solve and its verification: what the solver had to predict, what it predicted, what was measured."""

    choice: tuple[str, ...]
    required: float
    predicted: float
    measured: float


@attrs.frozen
class Point:
    """A choice for every layer, summed: bytes, seconds per call of the layers' kernels, predicted quality."""

    label: str
    bytes: int
    seconds: float
    predicted: float | None


def total(profile: Profile, label: str, options: Sequence[Option]) -> Point:
    losses = [o.loss for o in options]
    predicted = None if any(loss is None for loss in losses) else profile.reference - math.fsum(losses)  # type: ignore[arg-type]
    return Point(label, sum(o.bytes for o in options), math.fsum(o.seconds for o in options), predicted)


def uniform(profile: Profile, candidate: Candidate) -> Point:
    """Every layer on `candidate` (float where it cannot run)."""
    return total(profile, candidate.name, [layer.option(candidate.name) or layer.float for layer in profile.layers])


def _scored(layer: LayerProfile) -> list[Option]:
    return [o for o in layer.options if o.loss is not None]


def _units(value: float, unit: float) -> int:
    return round(value / unit)


def solve(profile: Profile, objective: str, required: float) -> tuple[str, ...] | None:
    """The cheapest choice on `objective` whose predicted quality is at least `required` (None: none is)."""
    rows = [_scored(layer) for layer in profile.layers]
    unit = 1.0 if objective == "size" else TIME_UNIT
    costs = [[_units(o.cost(objective), unit) for o in row] for row in rows]
    losses = [[_units(o.loss, LOSS_UNIT) for o in row] for row in rows]  # type: ignore[arg-type]
    budget = math.floor((profile.reference - required) / LOSS_UNIT + 1e-6)
    picked = solver.solve(costs, losses, budget)
    return None if picked is None else tuple(row[i].candidate for row, i in zip(rows, picked))


def best_reachable(profile: Profile) -> float:
    return profile.reference - math.fsum(min(o.loss for o in _scored(layer)) for layer in profile.layers)  # type: ignore[misc]


def front(profile: Profile, objective: str, steps: int = 24) -> list[Point]:
    """Least cost for predicted quality levels from the worst uniform candidate up to the float model's."""
    levels = {p.predicted for c in profile.candidates if (p := uniform(profile, c)).predicted is not None}
    low = min(levels)
    levels |= {low + (profile.reference - low) * i / steps for i in range(steps + 1)}
    points: dict[tuple[str, ...], Point] = {}
    for level in sorted(levels):
        choice = solve(profile, objective, level)
        if choice is not None and choice not in points:
            points[choice] = chosen_point(profile, choice, "front")
    return sorted(points.values(), key=lambda p: (getattr(p, "bytes" if objective == "size" else "seconds")))


def chosen_point(profile: Profile, choice: Sequence[str], label: str) -> Point:
    options = [layer.option(name) for layer, name in zip(profile.layers, choice)]
    return total(profile, label, options)  # type: ignore[arg-type]


@attrs.frozen(eq=False)
class TuneResult:
    """The tuned recipe, the per-layer choice, every verification round, and what the search cost."""

    recipe: Recipe
    objective: str
    constraint: Constraint
    profile: Profile
    rounds: tuple[Round, ...]
    verified_on: str
    search_seconds: float
    model: nn.Module | None = None
    end_to_end: tuple[float, float] | None = None
    note: str = ""

    @property
    def choice(self) -> tuple[str, ...]:
        return self.rounds[-1].choice

    @property
    def predicted(self) -> float:
        return self.rounds[-1].predicted

    @property
    def measured(self) -> float:
        return self.rounds[-1].measured

    @property
    def point(self) -> Point:
        return chosen_point(self.profile, self.choice, "tuned")

    @property
    def seconds(self) -> float:
        """Profiling and searching together: what tuning took."""
        return self.profile.cost.seconds + self.search_seconds


def search(profile: Profile, float_model: nn.Module, calibration_data: CalibrationData, *, objective: str,
           constraint: Constraint, verify: Quality, matcher: Matcher, show: bool = True,
           log: Callable[[str], None] = lambda line: None) -> TuneResult:
    """Solve, verify with `verify` on a quantized copy of `float_model`, tighten until the constraint holds."""
    if objective not in profile.objectives:
        raise QcoreError(f"the profile was made for {', '.join(profile.objectives)}, not {objective}")
    start = time.perf_counter()
    reachable = best_reachable(profile)
    if reachable < constraint.min_quality:
        raise TuneError(f"no combination of candidates meets {constraint.describe()}: the best reachable "
                        f"{profile.quality} is {reachable:.6g} (predicted; the float model's is "
                        f"{profile.reference:.6g})")
    required, rounds, model = constraint.min_quality, [], None
    for i in range(MAX_ROUNDS + 1):
        choice = solve(profile, objective, required) if i < MAX_ROUNDS else None
        if choice is None:
            choice = tuple(layer.float.candidate for layer in profile.layers)
            log(f"round {i + 1}: keeping every layer float (the rounds did not converge)")
        predicted = chosen_point(profile, choice, "").predicted
        assert predicted is not None
        recipe = _recipe(profile, objective, constraint, choice, predicted, None, verify.description, matcher)
        if all(name == layer.float.candidate for layer, name in zip(profile.layers, choice)):
            model, measured = None, verify.reference
        else:
            model = api.quantize(copy.deepcopy(float_model), recipe, calibration_data, progress=show,
                                 matcher=matcher)
            measured = verify.measure(model)
        rounds.append(Round(choice, required, predicted, measured))
        log(f"round {i + 1}: predicted {profile.quality} {predicted:.5f} (needed {required:.5f}), measured "
            f"{measured:.5f} on {verify.description}")
        if measured >= constraint.min_quality:
            break
        required = _tightened(profile.reference, constraint.min_quality, predicted, measured)
    end_to_end, note = None, ""
    if objective == "latency" and model is not None:
        quantized = model
        times = autotune.median_seconds({"float": lambda: verify.run(float_model),
                                         "tuned": lambda: verify.run(quantized)}, END_TO_END_REPEATS)
        end_to_end = (times["float"], times["tuned"])
        log(f"end to end on {verify.description}: float {times['float'] * 1e3:.0f} ms, tuned "
            f"{times['tuned'] * 1e3:.0f} ms ({times['float'] / times['tuned']:.2f}x)")
        if times["tuned"] > times["float"]:
            note = (f"the answer predicted {chosen_point(profile, rounds[-1].choice, '').seconds * 1e3:.1f} ms of "
                    f"layer time was {times['tuned'] / times['float']:.2f}x float's time end to end: every layer "
                    "kept float")
            log(note)
            floats = tuple(layer.float.candidate for layer in profile.layers)
            rounds.append(Round(floats, rounds[-1].required, profile.reference, verify.reference))
            model = None
    final = _recipe(profile, objective, constraint, rounds[-1].choice, rounds[-1].predicted, rounds[-1].measured,
                    verify.description, matcher)
    return TuneResult(final, objective, constraint, profile, tuple(rounds), verify.description,
                      time.perf_counter() - start, model, end_to_end, note)


def _tightened(reference: float, least: float, predicted: float, measured: float) -> float:
    """What the next solve must predict after `predicted` was measured at `measured` < `least`."""
    ratio = (reference - predicted) / (reference - measured)
    return min(least + (predicted - measured), reference - (reference - least) * ratio, (predicted + reference) / 2)


def _recipe(profile: Profile, objective: str, constraint: Constraint, choice: Sequence[str], predicted: float,
            measured: float | None, measured_on: str, matcher: Matcher) -> Recipe:
    record: dict[str, Any] = {
        "objective": objective,
        "constraint": {"metric": constraint.metric, "min": constraint.min_quality},
        "predicted": round(predicted, 6),
        "hardware": matcher.hardware.fingerprint,
        "candidates": [c.name for c in profile.candidates],
    }
    if measured is not None:
        record |= {"measured": round(measured, 6), "measured_on": measured_on}
    chosen = {layer.name: profile.candidate(name) for layer, name in zip(profile.layers, choice)}
    return tuned_recipe(profile.base, profile.candidates, chosen, record)
