"""qcore.tune on small models: the search, its verification, the emitted recipe, the report and the CLI."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import yaml
from torch import nn

import qcore
from qcore import cli
from qcore.card import build_card
from qcore.matcher import Matcher
from qcore.nn.modules import QuantLinear
from qcore.plugins import PluginManager, set_manager
from qcore.recipe import RecipeError, load_recipe
from qcore.spec import QuantScheme, QuantSpec
from qcore.tuning import TuneError, parse_candidates, tune
from qcore.tuning.choose import uniform
from qcore.tuning.report import write
from test_cli_quantize import factory  # noqa: F401 (the fixture: a tiny text model made by a factory)

CANDIDATES = ["float", "w8a16", "w4a16+gptq"]
BASE = {"qcore": 1, "scheme": "none", "calibration": {"samples": 48}}


class Block(nn.Module):
    """A norm feeding two Linears (a fold SmoothQuant can use) and a residual, sized for groups of 128."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.norm = nn.LayerNorm(128)
        self.up = nn.Linear(128, 256)
        self.gate = nn.Linear(128, 256)
        self.down = nn.Linear(256, 128)
        self.head = nn.Linear(128, 32)
        self.tail = nn.Linear(32, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(x)
        return self.tail(torch.relu(self.head(x + self.down(torch.relu(self.up(h)) * torch.sigmoid(self.gate(h))))))


def batches(n: int = 4, rows: int = 16) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return [torch.randn(rows, 128, generator=gen) * torch.linspace(0.2, 3.0, 128) for _ in range(n)]


def quantized_count(model: nn.Module) -> int:
    return sum(isinstance(m, QuantLinear) for m in model.modules())


@pytest.fixture(scope="module")
def size_result(tmp_path_factory):  # type: ignore[no-untyped-def]
    """One tuned model for several tests, timed in the session's own cache (as the autouse fixture sets it)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("QCORE_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "qcore-cache"))
        return tune(Block().eval(), batches(), objective="size", constraint=0.995, candidates=CANDIDATES,
                    eval_data=batches(2, 8), recipe=BASE, progress=False)


def test_size_tuning_meets_the_constraint_end_to_end_and_saves_bytes(size_result) -> None:  # type: ignore[no-untyped-def]
    result = size_result
    assert [layer.name for layer in result.profile.layers] == ["up", "gate", "down", "head", "tail"]
    assert result.measured >= 0.995 and result.predicted >= 0.995
    point, float_point = result.point, uniform(result.profile, result.profile.candidates[0])
    assert point.bytes < float_point.bytes
    tail = result.profile.layers[4]
    assert tail.option("w4a16+gptq") is None
    assert tail.unavailable == (("w4a16+gptq", "unsupported, kept float: group_size 128 does not divide "
                                               "in_features 32"),)
    state = qcore.state_of(result.model)
    for layer, name in zip(result.profile.layers, result.choice):
        record = state.layer(layer.name)
        scheme = result.profile.candidate(name).scheme
        assert record.scheme == scheme
    assert build_card(result.model).tuned.startswith("tuned by qcore tune for size under mean cosine ≥ 0.995")


def test_every_layer_offers_float_first_with_zero_loss(size_result) -> None:  # type: ignore[no-untyped-def]
    assert parse_candidates(["w8a16"])[0].is_float
    for layer in size_result.profile.layers:
        assert (layer.float.candidate, layer.float.loss, layer.float.kernel) == ("float", 0.0,
                                                                                  "torch.matmul (float)")
        assert layer.float.seconds > 0 and layer.float.bytes == sum(
            t.numel() * 4 for t in (Block().get_submodule(layer.name).weight, Block().get_submodule(layer.name).bias))


def test_the_emitted_recipe_reapplied_gives_the_same_plan_and_outputs(size_result, tmp_path) -> None:  # type: ignore[no-untyped-def]
    result = size_result
    written, notes = write(result, tmp_path / "tuned.yaml", tmp_path / "report")
    assert notes == [] and [p.name for p in written] == ["tuned.yaml", "report.md", "report.json", "fronts.png"]
    recipe = load_recipe(tmp_path / "tuned.yaml")
    assert recipe.tuned["objective"] == "size" and recipe.tuned["measured"] == pytest.approx(result.measured)
    again = qcore.quantize(Block().eval(), recipe, batches(), progress=False)
    tuned, redone = qcore.state_of(result.model), qcore.state_of(again)
    assert [(r.name, r.scheme, r.algorithms) for r in tuned] == [(r.name, r.scheme, r.algorithms) for r in redone]
    assert {r.name: tuned.kernel(r.name) for r in tuned} == {r.name: redone.kernel(r.name) for r in redone}
    x = batches(1, 8)[0]
    with torch.no_grad():
        assert torch.equal(result.model(x), again(x))
    assert (tmp_path / "report" / "fronts.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["rounds"][-1]["measured"] == pytest.approx(result.measured)
    assert {t["label"] for t in report["totals"]} == {"tuned", *CANDIDATES}
    assert report["fronts"]["size"] and "hardware" in report
    assert "| tuned |" in (tmp_path / "report" / "report.md").read_text()


def test_the_same_inputs_give_the_same_recipe(size_result) -> None:  # type: ignore[no-untyped-def]
    again = tune(Block().eval(), batches(), objective="size", constraint=0.995, candidates=CANDIDATES,
                 eval_data=batches(2, 8), recipe=BASE, progress=False)
    first, second = size_result.recipe.to_dict(), again.recipe.to_dict()
    assert first == second


def test_a_wrong_additive_prediction_is_caught_and_tightened() -> None:
    """Each layer alone loses 0.001, but two or more together lose 0.05: only verification can see that."""

    def score(model: nn.Module) -> float:
        k = quantized_count(model)
        return 1.0 - 0.001 * k - (0.05 if k >= 2 else 0.0)

    result = tune(Block().eval(), batches(), objective="size", constraint=0.99, candidates=["float", "w8a16"],
                  score=score, recipe=BASE, progress=False)
    first, last = result.rounds[0], result.rounds[-1]
    assert first.predicted >= 0.99 > first.measured
    assert len(result.rounds) >= 2 and last.measured >= 0.99
    assert quantized_count(result.model) == 1 and result.measured == pytest.approx(0.999)
    assert last.required > first.required


def test_latency_never_picks_a_kernel_slower_than_float(monkeypatch) -> None:
    matcher = Matcher()
    monkeypatch.setattr(matcher, "float_time", lambda shape, device: (1e-9, True))
    result = tune(Block().eval(), batches(), objective="latency", constraint=0.99, candidates=CANDIDATES,
                  recipe=BASE, matcher=matcher, progress=False)
    assert set(result.choice) == {"float"} and result.model is None and result.measured == 1.0
    assert result.recipe.scheme is None and result.recipe.overrides == ()
    options = sum(len(layer.options) - 1 for layer in result.profile.layers)
    assert result.profile.cost.passes == 0 and result.profile.cost.skipped == options == 9
    assert all(o.loss is None and "not scored" in o.note for layer in result.profile.layers
               for o in layer.options[1:])


def test_an_impossible_constraint_names_the_best_reachable_quality() -> None:
    with pytest.raises(TuneError, match=r"no combination of candidates meets mean cosine ≥ 1\.5: the best "
                                        r"reachable mean cosine is 1 \(predicted; the float model's is 1\)"):
        tune(Block().eval(), batches(), constraint=1.5, candidates=CANDIDATES, recipe=BASE, progress=False)
    with pytest.raises(TuneError, match="best reachable score is 0.5"):
        tune(Block().eval(), batches(), constraint=0.9, candidates=CANDIDATES, score=lambda m: 0.5,
             recipe=BASE, progress=False)


def test_a_plugin_scheme_is_a_candidate() -> None:
    scheme = QuantScheme("w8g32", QuantSpec("int8", "group", group_size=32), None, "int8 weights in groups of 32")

    class Plugin:
        @qcore.hookimpl
        def qcore_schemes(self):  # type: ignore[no-untyped-def]
            yield scheme

    previous = set_manager(PluginManager({"schemes": Plugin()}))
    try:
        result = tune(Block().eval(), batches(), constraint=0.99, candidates=["w8g32"], recipe=BASE,
                      progress=False)
    finally:
        set_manager(previous)
    assert [c.name for c in result.profile.candidates] == ["float", "w8g32"]
    assert set(result.choice) == {"w8g32"} and result.recipe.scheme == scheme


@pytest.mark.parametrize(("candidates", "message"), [
    (["w9a9"], r"candidates\[0\]\.scheme: unknown scheme 'w9a9'"),
    (["w8a16+gtpq"], r"candidates\[0\]\.algorithms\[0\]\.gtpq: unknown algorithm 'gtpq'.*did you mean 'gptq'"),
    ([{"scheme": "w8a16", "algos": []}], r"candidates\[0\]: a candidate has name, scheme, algorithms; unknown"),
    (["w8a16", {"scheme": "w8a16"}], "names given twice: w8a16"),
])
def test_bad_candidates_are_named_with_their_path(candidates, message) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(RecipeError, match=message):
        parse_candidates(candidates)


def test_the_base_recipe_may_not_choose_schemes() -> None:
    with pytest.raises(qcore.QcoreError, match="gives scheme, algorithms: the tuner chooses those per layer"):
        tune(Block().eval(), batches(), recipe={"qcore": 1, "scheme": "w8a16", "algorithms": [{"gptq": {}}]},
             progress=False)


def test_the_model_is_left_as_it_was(size_result) -> None:  # type: ignore[no-untyped-def]
    model = Block().eval()
    before = copy.deepcopy(model.state_dict())
    tune(model, batches(), constraint=0.99, candidates=["float", "w8a8-dynamic+smoothquant"], recipe=BASE,
         progress=False)
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert not any(isinstance(m, QuantLinear) for m in model.modules())


def test_the_cli_writes_a_recipe_that_qcore_quantize_reproduces(factory, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    code = cli.main(["tune", "--model", factory, "--objective", "size", "--min-cosine", "0.999",
                     "--candidates", "w8a16,w4a16+gptq", "--samples", "24", "--score-samples", "12",
                     "--out", str(tmp_path / "t.yaml"), "--report", str(tmp_path / "report")])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "size under mean cosine ≥ 0.999" in out and "held-out sentences" in out and "torch threads" in out
    data = yaml.safe_load((tmp_path / "t.yaml").read_text())
    assert data["calibration"]["samples"] == 24 and data["tuned"]["constraint"]["min"] == 0.999
    assert cli.main(["quantize", str(tmp_path / "t.yaml"), "--model", factory, "--out", str(tmp_path / "q")]) == 0
    card = json.loads((tmp_path / "q" / "card.json").read_text())
    assert card["recipe"]["body"]["tuned"]["objective"] == "size"


def test_the_cli_refuses_a_sample_count_that_leaves_nothing_to_verify(tmp_path, capsys) -> None:
    assert cli.main(["tune", "--model", "minilm", "--min-cosine", "0.99", "--samples", "100000",
                     "--out", str(tmp_path / "t.yaml")]) == 2
    assert "leaves none of the" in capsys.readouterr().err



def test_a_latency_answer_slower_end_to_end_is_replaced_by_float(monkeypatch) -> None:
    """Per-layer timings say w8a16 pays; the end-to-end timing says otherwise: the float model is the answer."""
    matcher = Matcher()
    monkeypatch.setattr(matcher, "float_time", lambda shape, device: (1.0, True))
    monkeypatch.setattr(qcore.autotune, "median_seconds", lambda runs, repeats: {"float": 1.0, "tuned": 1.5})
    result = tune(Block().eval(), batches(), objective="latency", constraint=0.99, candidates=["float", "w8a16"],
                  recipe=BASE, matcher=matcher, progress=False)
    assert result.end_to_end == (1.0, 1.5) and "1.50x float's time end to end: every layer kept float" in result.note
    assert result.rounds[0].choice == ("w8a16",) * 5 and set(result.choice) == {"float"} and result.model is None
    assert result.recipe.scheme is None and result.measured == 1.0
