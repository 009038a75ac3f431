"""The schema of ``card.json``, as data (`CARD_FIELDS`) and as a checker (`validate`).

``card.json`` fields (`CARD_FIELDS` is the same thing as data; `validate`
checks a dict against it, and `load_card` refuses a file that fails):

- ``qcore_card`` (int): format version, `CARD_FORMAT`.
- ``qcore_version`` (str), ``created`` (str, ISO 8601 UTC).
- ``model``: ``source`` (how the model was obtained: a directory, ``minilm``,
  or ``package.module:function``; the same thing rebuilds it for
  ``qcore.load``), ``type`` (its Python class).
- ``recipe``: ``name``, ``source`` (path or null), ``scheme`` (the default
  scheme), ``body`` (the validated recipe as a dict).
- ``hardware``: ``description``, ``fingerprint``, ``profile`` (HardwareProfile
  as a dict).
- ``calibration``: null when no calibration ran, else ``samples``,
  ``batches``, ``observer``.
- ``layers``: one object per layer the recipe targeted, quantized or not:
  ``name``, ``rule`` (the recipe rule that decided it), ``in_features``,
  ``out_features``, ``scheme`` (name, null when left float), ``weights`` and
  ``activations`` (null when float, else ``dtype``, ``bits``, ``signed``,
  ``granularity``, ``axis`` (channel only), ``group_size`` (group only),
  ``symmetric``, ``dynamic``, ``observer`` (static activations only)),
  ``kernel`` (backend/kernel id, null when float), ``why`` (why that kernel),
  ``float_reason`` (why the layer stayed float, null when quantized),
  ``float_bytes``, ``quant_bytes`` (equal to float_bytes when float),
  ``weight_sqnr_db`` (null: not measured, or exact), ``algorithms`` (the
  recipe's algorithms that ran on the layer, in order: ``algorithm``,
  ``options`` as the recipe gave them, ``note`` saying what it did there).
- ``size``: bytes of the quantized Linear layers before/after
  (``quantized_linear_float_bytes``, ``quantized_linear_bytes``) and of every
  parameter and buffer of the model (``model_float_bytes``,
  ``model_quant_bytes``), with ``quantized_linear_reduction`` and
  ``model_reduction`` (fractions saved, 0..1).
- ``quality``: ``weight_sqnr_worst_db`` and ``weight_sqnr_worst_layer``
  (null when nothing was measured), ``outputs`` (how many model outputs were
  compared with the float model, 0 when none), ``output_cosine_mean``,
  ``output_cosine_worst`` (null when none), ``eval_description`` (what the
  inputs were), ``measurements`` (list of ``name``, ``value``, ``unit``,
  ``minimum`` (the target, or null), ``passed`` (null without a target));
  unit ``%`` means value and minimum are fractions.
"""

from __future__ import annotations

import math
from typing import Any

CARD_FORMAT = 2
"""Version of the card.json layout below; a reader refuses others."""

# A schema node is: a type (bool is never accepted for int/float); a tuple of
# alternative nodes (None among them: the value may be null); a dict (an object
# with exactly these keys); a one-element list (a list of items of that node).

_NUMBER = (int, float)
_TENSOR_FIELDS: dict[str, Any] = {
    "dtype": str,
    "bits": int,
    "signed": bool,
    "granularity": str,
    "axis": (int, None),
    "group_size": (int, None),
    "symmetric": bool,
    "dynamic": bool,
    "observer": (str, None),
}
_LAYER_FIELDS: dict[str, Any] = {
    "name": str,
    "rule": str,
    "in_features": int,
    "out_features": int,
    "scheme": (str, None),
    "weights": (_TENSOR_FIELDS, None),
    "activations": (_TENSOR_FIELDS, None),
    "kernel": (str, None),
    "why": str,
    "float_reason": (str, None),
    "float_bytes": int,
    "quant_bytes": int,
    "weight_sqnr_db": (*_NUMBER, None),
    "algorithms": [{"algorithm": str, "options": dict, "note": str}],
}
CARD_FIELDS: dict[str, Any] = {
    "qcore_card": int,
    "qcore_version": str,
    "created": str,
    "model": {"source": str, "type": str},
    "recipe": {"name": str, "source": (str, None), "scheme": str, "body": dict},
    "hardware": {"description": str, "fingerprint": str, "profile": dict},
    "calibration": ({"samples": int, "batches": int, "observer": str}, None),
    "layers": [_LAYER_FIELDS],
    "size": {
        "quantized_linear_float_bytes": int,
        "quantized_linear_bytes": int,
        "quantized_linear_reduction": _NUMBER,
        "model_float_bytes": int,
        "model_quant_bytes": int,
        "model_reduction": _NUMBER,
    },
    "quality": {
        "weight_sqnr_worst_db": (*_NUMBER, None),
        "weight_sqnr_worst_layer": (str, None),
        "outputs": int,
        "output_cosine_mean": (*_NUMBER, None),
        "output_cosine_worst": (*_NUMBER, None),
        "eval_description": str,
        "measurements": [{"name": str, "value": _NUMBER, "unit": str, "minimum": (*_NUMBER, None),
                          "passed": (bool, None)}],
    },
}


def _node_name(node: Any) -> str:
    if node is None:
        return "null"
    if isinstance(node, type):
        return {str: "string", int: "integer", float: "number", bool: "boolean", dict: "object"}.get(
            node, node.__name__)
    if isinstance(node, dict):
        return "object"
    if isinstance(node, list):
        return "list"
    return " or ".join(dict.fromkeys(_node_name(n) for n in node))


def validate(data: Any, schema: Any = CARD_FIELDS, path: str = "card") -> list[str]:
    """Every way `data` departs from `schema` (default `CARD_FIELDS`), each as ``path: problem``."""
    if schema is None:
        return [] if data is None else [f"{path}: expected null, got {type(data).__name__}"]
    if isinstance(schema, tuple):
        for alternative in schema:
            if not validate(data, alternative, path):
                return []
        if len(schema) == 2 and None in schema and data is not None:  # a nullable node: say what is wrong inside
            return validate(data, next(n for n in schema if n is not None), path)
        return [f"{path}: expected {_node_name(schema)}, got {type(data).__name__}"]
    if isinstance(schema, dict):
        if not isinstance(data, dict):
            return [f"{path}: expected object, got {type(data).__name__}"]
        problems = [f"{path}.{key}: missing" for key in schema if key not in data]
        problems += [f"{path}.{key}: unknown field" for key in data if key not in schema]
        for key, node in schema.items():
            if key in data:
                problems += validate(data[key], node, f"{path}.{key}")
        return problems
    if isinstance(schema, list):
        if not isinstance(data, list):
            return [f"{path}: expected list, got {type(data).__name__}"]
        return [p for i, item in enumerate(data) for p in validate(item, schema[0], f"{path}[{i}]")]
    ok = isinstance(data, schema) and not (isinstance(data, bool) and schema in (int, float))
    if schema is float and isinstance(data, float):
        ok = math.isfinite(data)
    return [] if ok else [f"{path}: expected {_node_name(schema)}, got {type(data).__name__} {data!r}"]
