"""SmoothQuant through the recipe: activation outliers moved into the weights, kept across save/load."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import qcore
from qcore.algorithms.smoothquant import ChannelAbsMax, smoothing_factors
from qcore.errors import QcoreError
from qcore.metrics import sqnr


def _model_and_data() -> tuple[nn.Module, list[torch.Tensor]]:
    gen = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Linear(128, 256), nn.GELU(), nn.Linear(256, 64))
    outliers = torch.ones(128)
    outliers[[3, 40, 77]] = 60.0  # a few activation channels far larger than the rest, as after LayerNorm
    batches = [torch.randn(32, 128, generator=gen) * outliers for _ in range(6)]
    return model, batches


def _recipe(alpha: float | None) -> dict:
    recipe = {"qcore": 1, "scheme": "w8a8-dynamic", "targets": ["Linear"], "calibration": {"samples": 160}}
    return recipe | ({"algorithms": [{"smoothquant": {"alpha": alpha}}]} if alpha is not None else {})


def test_smoothquant_improves_w8a8_dynamic_on_outlier_channels_and_survives_save_load(tmp_path) -> None:
    model, batches = _model_and_data()
    held_out = batches[-1]
    want = model(held_out).detach()
    plain = qcore.quantize(copy.deepcopy(model), _recipe(None), progress=False, measure=False)
    smooth = qcore.quantize(copy.deepcopy(model), _recipe(0.5), batches[:-1], progress=False, measure=False)
    plain_db, smooth_db = sqnr(want, plain(held_out)), sqnr(want, smooth(held_out))
    assert smooth_db > plain_db + 3.0, (plain_db, smooth_db)
    # no op before either layer can absorb 1/s (the model input; a GELU), so each layer scales its input
    assert smooth[0].input_scale is not None and smooth[0].input_scale.shape == (128,)
    assert smooth[2].input_scale is not None
    state = qcore.state_of(smooth)
    assert "smoothquant" in state.calibration.observer
    run = state.layer("2").algorithms[0]
    assert run.algorithm == "smoothquant" and run.options == {"alpha": 0.5, "mappings": []}
    assert "1/s applied by the layer (folding into 0 is not exact: outputs change by" in run.note
    qcore.save(smooth, tmp_path)
    loaded = qcore.load(tmp_path, lambda: _model_and_data()[0])
    assert torch.equal(loaded(held_out), smooth(held_out))
    assert torch.equal(loaded[0].input_scale, smooth[0].input_scale)
    assert qcore.state_of(loaded).layer("2").algorithms == state.layer("2").algorithms


def test_factors_follow_the_formula() -> None:
    acc = ChannelAbsMax(3)
    acc.observe(torch.tensor([[1.0, -8.0, 0.0], [-2.0, 4.0, 0.0]]))
    w_amax = torch.tensor([[0.5, 2.0, 1.0], [-4.0, 1.0, 0.0]]).abs().amax(dim=0)
    s = smoothing_factors(acc.amax, w_amax, 0.5)
    expected = torch.tensor([(2.0 / 4.0) ** 0.5, (8.0 / 2.0) ** 0.5, (1e-5 / 1.0) ** 0.5])
    assert torch.allclose(s, expected) and acc.samples == 2


def test_statistics_rescale_exactly() -> None:
    acc = ChannelAbsMax(3)
    x = torch.tensor([[1.0, -8.0, 0.5], [-2.0, 4.0, 0.0]])
    m = torch.tensor([0.5, -2.0, 4.0])
    acc.observe(x)
    direct = ChannelAbsMax(3)
    direct.observe(x * m)
    assert torch.equal(acc.rescaled(m).amax, direct.amax)


def test_smoothquant_needs_calibration_data_and_skips_weight_only_layers() -> None:
    model, batches = _model_and_data()
    with pytest.raises(QcoreError, match="smoothquant needs calibration_data"):
        qcore.quantize(model, _recipe(0.5), progress=False, measure=False)
    recipe = _recipe(0.5) | {"overrides": [{"match": "2", "scheme": "w8a16"}]}
    quantized = qcore.quantize(model, recipe, batches, progress=False, measure=False)
    assert quantized[0].input_scale is not None and quantized[2].input_scale is None
    assert qcore.state_of(quantized).layer("2").algorithms == ()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"alpha": 1.5}, "algorithms[0].smoothquant.alpha: 'alpha' must be <= 1.0: 1.5"),
        ({"alpa": 0.5}, "algorithms[0].smoothquant.alpa: unknown option 'alpa'; known: alpha, mappings, layers; "
                        "did you mean 'alpha'?"),
        ({"alpha": "high"}, "algorithms[0].smoothquant.alpha: expected a number, got str 'high'"),
        ({"mappings": [{"producer": "ln"}]}, "algorithms[0].smoothquant.mappings: item 0: consumers: required"),
    ],
)
def test_malformed_smoothquant_settings(value, message) -> None:
    with pytest.raises(qcore.RecipeError) as info:
        qcore.load_recipe({"qcore": 1, "scheme": "w8a8-dynamic", "algorithms": [{"smoothquant": value}]})
    assert message in str(info.value)
