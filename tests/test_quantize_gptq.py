"""GPTQ through the recipe: `gptq:` makes `quantize` collect input Hessians and use GPTQ'd weights."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import qcore
from qcore.errors import QcoreError
from qcore.metrics import sqnr


def _model_and_data() -> tuple[nn.Module, list[torch.Tensor]]:
    gen = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Linear(256, 128), nn.GELU(), nn.Linear(128, 64))
    mixing = torch.randn(256, 256, generator=gen) / 8
    batches = [torch.randn(64, 256, generator=gen) @ mixing for _ in range(8)]  # correlated inputs
    return model, batches


def _recipe(gptq: bool) -> dict:
    recipe = {"qcore": 1, "scheme": "w4a16", "targets": ["Linear"], "calibration": {"samples": 512}}
    return recipe | ({"gptq": {"damp": 0.01}} if gptq else {})


def test_gptq_beats_round_to_nearest_on_the_model_output(tmp_path) -> None:
    model, batches = _model_and_data()
    held_out = batches[-1]
    want = model(held_out).detach()
    rtn = qcore.quantize(copy.deepcopy(model), _recipe(False), progress=False, measure=False)
    gptq = qcore.quantize(copy.deepcopy(model), _recipe(True), batches[:-1], progress=False, measure=False)
    rtn_db, gptq_db = sqnr(want, rtn(held_out)), sqnr(want, gptq(held_out))
    assert gptq_db > rtn_db + 1.0, (rtn_db, gptq_db)
    assert "gptq" in qcore.state_of(gptq).calibration.observer
    qcore.save(gptq, tmp_path)
    loaded = qcore.load(tmp_path, lambda: _model_and_data()[0])
    assert torch.equal(loaded(held_out), gptq(held_out))
    assert qcore.load_recipe(qcore.read_metadata(tmp_path)["qcore.recipe"]).gptq is not None


def test_gptq_without_calibration_data_names_the_layers() -> None:
    model, _ = _model_and_data()
    with pytest.raises(QcoreError, match=r"gptq needs calibration_data.*0, 2"):
        qcore.quantize(model, _recipe(True), progress=False, measure=False)
    assert isinstance(model[0], nn.Linear), "nothing may be modified"


def test_gptq_leaves_float_and_unsupported_specs_to_round_to_nearest() -> None:
    model, batches = _model_and_data()
    recipe = _recipe(True) | {"scheme": "fp16"}
    quantized = qcore.quantize(model, recipe, batches, progress=False, measure=False)
    assert qcore.state_of(quantized).calibration is None  # nothing needed calibration: one batch ran, for shapes


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"dmp": 0.1}, "gptq.dmp: unknown key 'dmp'; known: damp, block_size; did you mean 'damp'?"),
        ({"damp": 2}, "gptq.damp: must be in [0, 1), got 2"),
        ({"block_size": 0}, "gptq.block_size: must be a positive integer, got 0"),
        ("yes", "gptq: expected a mapping or a boolean (true/false), got str 'yes'"),
    ],
)
def test_malformed_gptq_settings_are_reported_with_their_path(value, message) -> None:
    with pytest.raises(qcore.RecipeError) as info:
        qcore.load_recipe({"qcore": 1, "scheme": "w4a16", "gptq": value})
    assert message in str(info.value)


def test_gptq_settings_round_trip() -> None:
    recipe = qcore.load_recipe({"qcore": 1, "scheme": "w4a16", "gptq": {"damp": 0.05, "block_size": 64}})
    assert (recipe.gptq.damp, recipe.gptq.block_size) == (0.05, 64)
    assert qcore.load_recipe(recipe.to_dict()) == recipe
    assert qcore.load_recipe({"qcore": 1, "scheme": "w4a16", "gptq": False}).gptq is None
