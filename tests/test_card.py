"""The quantization card: its JSON against the documented fields, float layers and their reasons, byte counts."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from torch import nn

from qcore import api
from qcore.card import CARD_FIELDS, Card, CardError, build_card, load_card, validate

RECIPE = {
    "qcore": 1,
    "scheme": "w8a8-dynamic",
    "targets": ["Linear"],
    "ignore": ["head"],
    "overrides": [{"match": "body.2", "scheme": "w4a16"}],
}


class Net(nn.Module):
    """Three Linear layers (one ignored, one int4 g128) and a LayerNorm the recipe does not target."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(128, 256), nn.GELU(), nn.Linear(256, 128))
        self.norm = nn.LayerNorm(128)
        self.head = nn.Linear(128, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.body(x)))


def _bytes(module: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in (*module.parameters(), *module.buffers()))


@pytest.fixture(scope="module")
def quantized() -> tuple[nn.Module, nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    float_model = Net().eval()
    model = copy.deepcopy(float_model)
    api.quantize(model, RECIPE, progress=False, measure=False)
    return float_model, model, torch.randn(32, 128)


@pytest.fixture(scope="module")
def card(quantized: tuple[nn.Module, nn.Module, torch.Tensor]) -> Card:
    float_model, model, x = quantized
    with torch.no_grad():
        return build_card(model, float_outputs=float_model(x), quant_outputs=model(x), eval_description="randn",
                          model_source="tests:Net")


def test_json_matches_documented_fields(card: Card) -> None:
    data = json.loads(json.dumps(card.to_dict(), allow_nan=False))
    assert validate(data) == []
    assert set(data) == set(CARD_FIELDS)


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d: d.pop("size"), "card.size: missing"),
        (lambda d: d.update(extra=1), "card.extra: unknown field"),
        (lambda d: d["layers"][0].update(in_features="128"), "card.layers[0].in_features: expected integer"),
        (lambda d: d["layers"][1]["weights"].update(bits=True), "card.layers[1].weights.bits: expected integer"),
        (lambda d: d["quality"].update(output_cosine_mean=float("nan")), "card.quality.output_cosine_mean"),
        (lambda d: d.update(calibration={"samples": 1}), "card.calibration.batches: missing"),
    ],
)
def test_validator_reports_each_problem_with_its_path(card: Card, mutate, expected: str) -> None:
    data = card.to_dict()
    mutate(data)
    problems = validate(data)
    assert any(p.startswith(expected) for p in problems), problems


def test_per_layer_schemes_kernels_and_rules(card: Card) -> None:
    layers = {layer.name: layer for layer in card.layers}
    assert set(layers) == {"body.0", "body.2", "head"}
    w8 = layers["body.0"]
    assert (w8.scheme, w8.rule) == ("w8a8-dynamic", "default")
    w = w8.weights
    assert (w.bits, w.signed, w.granularity, w.axis, w.symmetric, w.dynamic) == (8, True, "channel", 0, True, False)
    assert (w8.activations.granularity, w8.activations.dynamic) == ("token", True)
    w4 = layers["body.2"]
    assert (w4.weights.dtype, w4.weights.bits, w4.weights.group_size, w4.activations) == ("int4", 4, 128, None)
    assert "overrides[0]" in w4.rule
    for layer in (w8, w4):
        assert layer.kernel and "/" in layer.kernel and layer.why
        assert layer.weight_sqnr_db is not None and layer.weight_sqnr_db > (30 if layer is w8 else 15)
    markdown = card.to_markdown()
    assert "| `body.2` | w4a16 | int4 (4-bit signed) group128 sym static | float |" in markdown
    assert f"| `body.0` | default | `{w8.kernel}` |" in markdown


def test_float_layers_appear_with_reasons(card: Card) -> None:
    (head,) = card.float_layers
    assert head.name == "head" and head.kernel is None and head.weights is None
    assert "ignore" in head.float_reason
    assert head.quant_bytes == head.float_bytes
    markdown = card.to_markdown()
    float_section = markdown.split("## Left in float", 1)[1].split("##", 1)[0]
    assert "`head`" in float_section and head.float_reason in float_section
    assert any("head" in line and "left in float" in line for line in card.summary())


def test_bytes_before_and_after_are_consistent(quantized, card: Card) -> None:
    float_model, _, _ = quantized
    s = card.size
    assert s.model_float_bytes == _bytes(float_model)
    linear_float = _bytes(float_model.body[0]) + _bytes(float_model.body[2])
    assert s.quantized_linear_float_bytes == linear_float
    assert s.quantized_linear_bytes == sum(layer.quant_bytes for layer in card.quantized_layers)
    assert s.model_float_bytes - s.model_quant_bytes == s.quantized_linear_float_bytes - s.quantized_linear_bytes
    codes = 128 * 256 + 256 * 128 // 2  # int8 codes of body.0, packed int4 codes of body.2
    assert codes < s.quantized_linear_bytes < 0.3 * linear_float
    data = card.to_dict()["size"]
    assert data["quantized_linear_reduction"] == pytest.approx(1 - s.quantized_linear_bytes / linear_float)


def test_output_cosine_against_float(quantized, card: Card) -> None:
    float_model, model, x = quantized
    with torch.no_grad():
        cos = torch.nn.functional.cosine_similarity(float_model(x).double(), model(x).double(), dim=-1)
    q = card.quality
    assert q.outputs == 32 and q.eval_description == "randn"
    assert q.output_cosine_mean == pytest.approx(float(cos.mean()), abs=1e-9)
    assert q.output_cosine_worst == pytest.approx(float(cos.min()), abs=1e-9)
    assert q.weight_sqnr_worst_layer == "body.2"  # int4 loses more than int8


def test_outputs_must_come_in_matching_pairs(quantized) -> None:
    _, model, x = quantized
    with pytest.raises(ValueError, match="both"):
        build_card(model, float_outputs=x)
    with pytest.raises(ValueError, match="differ in shape"):
        build_card(model, float_outputs=x, quant_outputs=x[:3])
    assert build_card(model).quality.outputs == 0


def test_write_then_load_round_trips(card: Card, tmp_path) -> None:
    md, js = card.write(tmp_path / "out")
    assert md.read_text(encoding="utf-8") == card.to_markdown()
    assert sorted(p.name for p in md.parent.iterdir()) == ["card.json", "card.md"]  # no temporary files left
    assert load_card(md.parent).to_dict() == card.to_dict()


def test_load_card_names_the_bad_field(card: Card, tmp_path) -> None:
    data = card.to_dict()
    del data["layers"][0]["kernel"]
    (tmp_path / "card.json").write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(CardError, match=r"card\.json\.layers\[0\]\.kernel: missing"):
        load_card(tmp_path)
    with pytest.raises(CardError, match="no quantization card"):
        load_card(tmp_path / "nowhere")


def test_measurements_carry_targets_into_the_card(card: Card) -> None:
    from qcore.demo import targets

    figures = {targets.MEAN_COSINE: 0.999, targets.TOP1: 0.9, targets.SPEEDUP: 2.0}
    measured = {m.name: m for m in targets.measurements("minilm-w8a8-dynamic", card, figures)}
    assert measured[targets.MEAN_COSINE].passed is True
    assert measured[targets.TOP1].passed is False and measured[targets.TOP1].value_text == "90.0%"
    assert measured[targets.SPEEDUP].describe() == "speed-up vs fp32: 2.00x (target ≥ 1.30x: pass)"
    assert targets.STORAGE not in measured or measured[targets.STORAGE].minimum is None  # int8 and int4 mixed
    with_figures = card.with_measurements(measured.values())
    assert validate(with_figures.to_dict()) == []
    assert "top-1 neighbour agreement: 90.0% (target ≥ 95.0%: FAIL)" in with_figures.to_markdown()


def test_top1_agreement_counts_changed_neighbours_and_near_ties() -> None:
    from qcore.demo.evaluate import top1_agreement

    reference = torch.tensor([[1.0, 0.0], [0.96, 0.28], [0.0, 1.0], [0.28, 0.96]])
    assert top1_agreement(reference, reference) == 1.0
    # row 0's neighbour flips from row 1 to row 3 (reference cosines 0.96 vs 0.28): a real miss
    moved = reference.clone()
    moved[3] = torch.tensor([0.99, 0.141])
    assert top1_agreement(reference, moved) < 1.0
    assert top1_agreement(reference, moved, tie_margin=0.01) == top1_agreement(reference, moved)
    assert top1_agreement(reference, moved, tie_margin=1.0) == 1.0


def test_a_tuned_recipe_says_so_and_against_what_constraint(tmp_path) -> None:
    tuned = {"objective": "size", "constraint": {"metric": "mean cosine", "min": 0.995}, "predicted": 0.9961,
             "measured": 0.99583, "measured_on": "64 held-out sentences", "hardware": "abc123"}
    model = api.quantize(Net().eval(), {**RECIPE, "tuned": tuned}, progress=False, measure=False)
    card = build_card(model)
    expected = ("tuned by qcore tune for size under mean cosine ≥ 0.995 (predicted 0.99610, measured 0.99583 on "
                "64 held-out sentences) on hardware abc123")
    assert card.tuned == expected
    assert f"- Recipe {expected}" in card.to_markdown() and f"recipe {expected}" in card.summary()
    card.write(tmp_path)
    assert load_card(tmp_path).recipe_body["tuned"] == tuned
    assert build_card(api.quantize(Net().eval(), RECIPE, progress=False, measure=False)).tuned is None
