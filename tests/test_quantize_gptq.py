"""GPTQ through the recipe: `algorithms: [{gptq: ...}]` collects input Hessians and uses GPTQ'd weights."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import qcore
from qcore.algorithms.gptq import supports
from qcore.errors import QcoreError, SpecError
from qcore.metrics import sqnr
from qcore.spec import QuantSpec


def _model_and_data() -> tuple[nn.Module, list[torch.Tensor]]:
    gen = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Linear(256, 128), nn.GELU(), nn.Linear(128, 64))
    mixing = torch.randn(256, 256, generator=gen) / 8
    batches = [torch.randn(64, 256, generator=gen) @ mixing for _ in range(8)]  # correlated inputs
    return model, batches


def _recipe(gptq: bool) -> dict:
    recipe = {"qcore": 1, "scheme": "w4a16", "targets": ["Linear"], "calibration": {"samples": 512}}
    return recipe | ({"algorithms": [{"gptq": {"damp": 0.01}}]} if gptq else {})


def test_gptq_beats_round_to_nearest_on_the_model_output(tmp_path) -> None:
    model, batches = _model_and_data()
    held_out = batches[-1]
    want = model(held_out).detach()
    rtn = qcore.quantize(copy.deepcopy(model), _recipe(False), progress=False, measure=False)
    gptq = qcore.quantize(copy.deepcopy(model), _recipe(True), batches[:-1], progress=False, measure=False)
    rtn_db, gptq_db = sqnr(want, rtn(held_out)), sqnr(want, gptq(held_out))
    assert gptq_db > rtn_db + 1.0, (rtn_db, gptq_db)
    state = qcore.state_of(gptq)
    assert "gptq" in state.calibration.observer
    assert [run.algorithm for run in state.layer("0").algorithms] == ["gptq"]
    qcore.save(gptq, tmp_path)
    loaded = qcore.load(tmp_path, lambda: _model_and_data()[0])
    assert torch.equal(loaded(held_out), gptq(held_out))
    recorded = qcore.load_recipe(qcore.read_metadata(tmp_path)["qcore.recipe"])
    assert [(a.name, a.options_dict()) for a in recorded.algorithms] == [
        ("gptq", {"damp": 0.01, "block_size": 128, "act_order": False})]


def test_gptq_without_calibration_data_names_the_layers() -> None:
    model, _ = _model_and_data()
    with pytest.raises(QcoreError, match=r"gptq needs calibration_data.*0, 2"):
        qcore.quantize(model, _recipe(True), progress=False, measure=False)
    assert isinstance(model[0], nn.Linear), "nothing may be modified"


def test_gptq_leaves_float_and_unsupported_specs_to_round_to_nearest() -> None:
    model, batches = _model_and_data()
    recipe = _recipe(True) | {"scheme": "fp16"}
    with pytest.warns(UserWarning, match=r"gptq applies to no layer \(0: GPTQ quantizes integer channel"):
        quantized = qcore.quantize(model, recipe, batches, progress=False, measure=False)
    assert qcore.state_of(quantized).calibration is None  # nothing needed calibration: one batch ran, for shapes


@pytest.mark.parametrize("spec", [QuantSpec("int8", "channel", axis=0), QuantSpec("int8", "channel", axis=-2),
                                  QuantSpec("int8", "channel", axis=1), QuantSpec("int4", "group", group_size=32),
                                  QuantSpec("int8"), QuantSpec("ternary", "channel"), QuantSpec("fp8_e4m3", "channel")])
def test_one_answer_to_whether_gptq_applies(spec: QuantSpec) -> None:
    """The recipe's layer check and the function agree, axis=-2 (the same axis 0 of an (N, K) weight) included."""
    from qcore.algorithms.gptq import gptq_quantize

    w = torch.randn(8, 64)
    support = supports(spec)
    if support:
        gptq_quantize(w, torch.eye(64), spec)
    else:
        with pytest.raises(SpecError) as info:
            gptq_quantize(w, torch.eye(64), spec)
        assert support.reason in str(info.value)
    assert bool(support) == (spec.granularity == "group" or spec.dtype == "int8" and spec.granularity == "channel"
                             and spec.axis in (0, -2))


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"dmp": 0.1}, "algorithms[0].gptq.dmp: unknown option 'dmp'; known: damp, block_size, act_order, layers; "
                       "did you mean 'damp'?"),
        ({"damp": 2}, "algorithms[0].gptq.damp: 'damp' must be < 1.0: 2.0"),
        ({"block_size": 0}, "algorithms[0].gptq.block_size: 'block_size' must be > 0: 0"),
        ({"block_size": 1.5}, "algorithms[0].gptq.block_size: expected an integer, got float 1.5"),
        ("yes", "algorithms[0].gptq: expected a mapping, got str 'yes'"),
    ],
)
def test_malformed_gptq_settings_are_reported_with_their_path(value, message) -> None:
    with pytest.raises(qcore.RecipeError) as info:
        qcore.load_recipe({"qcore": 1, "scheme": "w4a16", "algorithms": [{"gptq": value}]})
    assert message in str(info.value)


def test_gptq_settings_round_trip() -> None:
    recipe = qcore.load_recipe({"qcore": 1, "scheme": "w4a16",
                                "algorithms": [{"gptq": {"damp": 0.05, "block_size": 64}}]})
    (entry,) = recipe.algorithms
    assert (entry.options.damp, entry.options.block_size) == (0.05, 64)
    assert qcore.load_recipe(recipe.to_dict()) == recipe
