"""The figures the demo must reach, by recipe, turned into card `Measurement`s.

Cosine, top-1 and speed-up targets belong to a recipe (``minilm-<scheme>``);
the storage target follows from the weights' width: int8 weights must save
at least 73% of the quantized Linear layers' bytes (scales and float biases
cost the rest), int4 in groups of 128 at least 85%. Recipes mixing widths
have no storage target.
"""

from __future__ import annotations

from qcore.card import Card, Measurement

MEAN_COSINE = "mean embedding cosine"
TOP1 = "top-1 neighbour agreement"
TIE_MARGIN = 0.01
TOP1_TIES = f"top-1 agreement, near-ties (Δcos ≤ {TIE_MARGIN:g}) counted"
SPEEDUP = "speed-up vs fp32"
STORAGE = "quantized Linear storage saved"

MINIMUMS: dict[str, dict[str, float]] = {
    "w8a8-dynamic": {MEAN_COSINE: 0.999, TOP1: 0.95, SPEEDUP: 1.3},
    "w8a16": {MEAN_COSINE: 0.999},
    "w4a16": {MEAN_COSINE: 0.99, TOP1: 0.90},
}
STORAGE_MINIMUMS: dict[tuple[int, int | None], float] = {(8, None): 0.73, (4, 128): 0.85}
UNITS = {SPEEDUP: "x", TOP1: "%", TOP1_TIES: "%", STORAGE: "%"}


def storage_minimum(card: Card) -> float | None:
    """The storage target for the weights' width, when every quantized layer shares one."""
    widths = {(layer.weights.bits, layer.weights.group_size) for layer in card.quantized_layers if layer.weights}
    return STORAGE_MINIMUMS.get(widths.pop()) if len(widths) == 1 else None


def measurements(recipe_name: str, card: Card, figures: dict[str, float]) -> list[Measurement]:
    """Every figure with its target for this recipe (None where it has none), in a stable order."""
    minimums = dict(MINIMUMS.get(recipe_name.removeprefix("minilm-"), {}))
    storage = storage_minimum(card)
    if storage is not None:
        minimums[STORAGE] = storage
    figures = {**figures, STORAGE: card.size.quantized_linear_reduction}
    return [Measurement(name, value, UNITS.get(name, ""), minimums.get(name)) for name, value in figures.items()]
