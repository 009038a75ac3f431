"""What `qcore tune` may give a layer: candidates, each a recipe fragment (a scheme and the algorithms before it).

A candidate is written as a mapping (``{scheme: w8a8-dynamic, algorithms:
[{smoothquant: {alpha: 0.5}}]}``, the recipe's own syntax) or as a short
string, the scheme and algorithm names joined by ``+`` with default options
(``w8a8-dynamic+smoothquant``). Any scheme a plugin registers is accepted.
``float`` (keep the layer as it is) is always a candidate, added when not
given: a tuned model can always fall back to the float layer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from qcore.recipe import NONE, AlgorithmEntry, RecipeError, RecipeProblem, load_recipe
from qcore.spec import QuantScheme

FLOAT = "float"
_AWQ_GPTQ = ({"awq": {"clip": False}}, {"gptq": {"act_order": True, "damp": 0.1}})
DEFAULT_CANDIDATES: tuple[str | Mapping[str, Any], ...] = (
    FLOAT, "w8a16", "w8a8-dynamic+smoothquant",
    {"name": "w4a16+awq+gptq", "scheme": "w4a16", "algorithms": list(_AWQ_GPTQ)},
    {"name": "w4a16-asym+awq+gptq", "scheme": "w4a16-asym", "algorithms": list(_AWQ_GPTQ)},
)
"""Keep float; 8-bit weights; 8-bit weights and dynamic activations after SmoothQuant; 4-bit weight groups of
128, symmetric or with zero-points, scaled by AWQ and rounded by GPTQ in input-energy order (the settings
of `specs/recipes/minilm-w4a16.yaml`: AWQ's clipping off, since GPTQ does better from unclipped weights)."""


@attrs.frozen
class Candidate:
    """One way to treat a layer: `scheme` (None: keep it float) prepared by `algorithms`, in order."""

    name: str
    scheme: QuantScheme | None
    algorithms: tuple[AlgorithmEntry, ...] = ()

    @property
    def is_float(self) -> bool:
        return self.scheme is None

    def fragment(self) -> dict[str, Any]:
        """The recipe fragment (plain data), as a candidates file writes it."""
        data: dict[str, Any] = {"name": self.name, "scheme": self.scheme.name if self.scheme else NONE}
        if self.algorithms:
            data["algorithms"] = [{a.name: a.options_dict()} for a in self.algorithms]
        return data


FLOAT_CANDIDATE = Candidate(FLOAT, None)


def _fragment(spec: Any, where: str) -> tuple[str | None, dict[str, Any]]:
    """(name or None, recipe data) from a string or a mapping; a bad shape is a RecipeError at `where`."""
    if isinstance(spec, str):
        scheme, *algorithms = [part.strip() for part in spec.split("+")]
        if not scheme or not all(algorithms):
            raise RecipeError([RecipeProblem(where, None, f"{spec!r}: expected SCHEME[+ALGORITHM...]")])
        return None, {"scheme": NONE if scheme == FLOAT else scheme, "algorithms": [{a: {}} for a in algorithms]}
    if isinstance(spec, Mapping):
        unknown = sorted(set(spec) - {"name", "scheme", "algorithms"})
        if unknown or "scheme" not in spec:
            why = f"unknown keys {unknown}" if unknown else "needs a scheme"
            raise RecipeError([RecipeProblem(where, None, f"a candidate has name, scheme, algorithms; {why}")])
        name = spec.get("name")
        if name is not None and (not isinstance(name, str) or not name):
            raise RecipeError([RecipeProblem(f"{where}.name", None, f"expected a non-empty string, got {name!r}")])
        scheme = spec["scheme"]
        return name, {"scheme": NONE if scheme == FLOAT else scheme, "algorithms": spec.get("algorithms", [])}
    raise RecipeError([RecipeProblem(where, None, f"expected a string or a mapping, got {type(spec).__name__}")])


def _default_name(scheme: QuantScheme | None, algorithms: Sequence[AlgorithmEntry]) -> str:
    return "+".join([scheme.name if scheme else FLOAT, *(a.name for a in algorithms)])


def parse_candidate(spec: str | Mapping[str, Any] | Candidate, where: str = "candidate") -> Candidate:
    """A validated Candidate; problems are a RecipeError whose paths start at `where`."""
    if isinstance(spec, Candidate):
        return spec
    name, data = _fragment(spec, where)
    try:
        recipe = load_recipe({"qcore": 1, **data})
    except RecipeError as exc:
        raise RecipeError([attrs.evolve(p, path=f"{where}.{p.path}") for p in exc.problems]) from None
    if recipe.scheme is None and recipe.algorithms:
        raise RecipeError([RecipeProblem(f"{where}.algorithms", None, "a float candidate runs no algorithm")])
    return Candidate(name or _default_name(recipe.scheme, recipe.algorithms), recipe.scheme, recipe.algorithms)


def parse_candidates(specs: Sequence[str | Mapping[str, Any] | Candidate] | None = None) -> tuple[Candidate, ...]:
    """The candidates in the order given (default `DEFAULT_CANDIDATES`), float first when it was not given."""
    specs = DEFAULT_CANDIDATES if specs is None else specs
    if isinstance(specs, (str, Mapping)):
        raise TypeError("candidates: expected a list of candidates, got a single one")
    out = [parse_candidate(spec, f"candidates[{i}]") for i, spec in enumerate(specs)]
    names = [c.name for c in out]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise RecipeError([RecipeProblem("candidates", None, f"names given twice: {', '.join(repeated)} "
                                                             "(give each a distinct name)")])
    if not any(c.is_float for c in out):
        out.insert(0, FLOAT_CANDIDATE)
    return tuple(out)
