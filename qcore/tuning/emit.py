"""The tuned recipe: the base recipe with each layer's chosen candidate as an exact-name override.

The most common choice becomes the default scheme; every other layer gets
an override naming it exactly (``scheme: none`` keeps it float). Each
candidate's algorithms keep their order and are restricted to the layers
that chose it (``layers:``); an algorithm with the same options in several
chosen candidates is one entry covering all their layers. `qcore quantize`
with this recipe and the same calibration data rebuilds the model the tuner
verified.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from qcore.algorithm import LAYERS_OPTION
from qcore.recipe import NONE, Recipe, load_recipe
from qcore.tuning.candidates import Candidate


def _scheme_name(candidate: Candidate) -> str:
    return candidate.scheme.name if candidate.scheme is not None else NONE


def _algorithms(order: Sequence[Candidate], chosen: Mapping[str, Candidate]) -> list[dict[str, Any]]:
    entries: list[tuple[str, dict[str, Any], list[str]]] = []
    for candidate in order:
        names = [layer for layer, c in chosen.items() if c.name == candidate.name]
        if not names:
            continue
        for entry in candidate.algorithms:
            options = {k: v for k, v in entry.options_dict().items() if k != LAYERS_OPTION}
            same = next((e for e in entries if e[0] == entry.name and e[1] == options), None)
            if same is not None:
                same[2].extend(names)
            else:
                entries.append((entry.name, options, list(names)))
    return [{name: {**options, LAYERS_OPTION: layers}} for name, options, layers in entries]


def tuned_recipe(base: Recipe, candidates: Sequence[Candidate], chosen: Mapping[str, Candidate],
                 tuned: Mapping[str, Any]) -> Recipe:
    """`base` (targets, ignore, calibration, backend) with `chosen` (layer name → candidate) and the record."""
    counts = {c.name: sum(1 for x in chosen.values() if x.name == c.name) for c in candidates}
    default = max(candidates, key=lambda c: counts[c.name])  # the first of the most chosen
    data = base.to_dict()
    data["scheme"] = _scheme_name(default)
    data["overrides"] = [{"match": layer, "scheme": _scheme_name(c)} for layer, c in chosen.items()
                         if c.name != default.name]
    data["algorithms"] = _algorithms(candidates, chosen)
    data["tuned"] = dict(tuned)
    return load_recipe(data)


def to_yaml(recipe: Recipe, header: str) -> str:
    """The recipe as YAML, `header` as comment lines on top."""
    data = recipe.to_dict()
    for key, empty in (("ignore", []), ("overrides", []), ("schemes", {}), ("algorithms", [])):
        if data.get(key) == empty:
            del data[key]
    comments = "".join(f"# {line}\n" if line else "#\n" for line in header.splitlines())
    return comments + yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=120)
