"""Bias correction: the mean output shift of quantized weights removed through the bias, once weights are final."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import qcore
from qcore.algorithms.bias_correction import InputMean


def _model_and_data() -> tuple[nn.Module, list[torch.Tensor]]:
    """One layer whose inputs have a positive mean (after GELU), where coarse weights shift the mean output."""
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(256, 32))
    data = [nn.functional.gelu(torch.randn(64, 256, generator=gen) + 0.5) for _ in range(4)]
    return model, data


def _recipe(*algorithms: dict) -> dict:
    return {"qcore": 1, "scheme": "w4a16", "calibration": {"samples": 256}, "algorithms": list(algorithms)}


def _mean_shift(model: nn.Module, quantized: nn.Module, data: list[torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([quantized(x) - model(x) for x in data]).mean(dim=0)


@pytest.mark.parametrize("first", [[], [{"gptq": {}}]])
def test_the_mean_output_shift_goes_and_the_error_falls(first: list) -> None:
    model, data = _model_and_data()
    plain = qcore.quantize(copy.deepcopy(model), _recipe(*first), data, progress=False, measure=False)
    corrected = qcore.quantize(copy.deepcopy(model), _recipe(*first, {"bias-correction": {}}), data,
                               progress=False, measure=False)
    before, after = _mean_shift(model, plain, data), _mean_shift(model, corrected, data)
    assert after.abs().max() < 0.05 * before.abs().max()  # exact on the calibration data, up to the kernel
    err = lambda q: sum(float((q(x) - model(x)).detach().pow(2).mean()) for x in data)  # noqa: E731
    assert err(corrected) < err(plain)
    # the codes are what the first algorithm (or round-to-nearest) made: only the bias moved
    assert torch.equal(corrected[0].weight_data, plain[0].weight_data)
    runs = qcore.state_of(corrected).layer("0").algorithms
    assert runs[-1].algorithm == "bias-correction" and "calibration rows" in runs[-1].note


def test_it_must_come_after_the_algorithms_that_change_weights() -> None:
    with pytest.raises(qcore.RecipeError, match=r"algorithms\[0\]: bias-correction corrects final weights, so it "
                                                r"must come after gptq"):
        qcore.load_recipe(_recipe({"bias-correction": {}}, {"gptq": {}}))


def test_layers_without_a_bias_are_left_alone() -> None:
    model = nn.Sequential(nn.Linear(128, 16, bias=False))
    data = [torch.randn(8, 128)]
    with pytest.warns(UserWarning, match="bias-correction applies to no layer .*no bias to absorb"):
        qcore.quantize(model, _recipe({"bias-correction": {}}), data, progress=False, measure=False)


def test_the_input_mean_rescales_exactly() -> None:
    x = torch.randn(10, 6)
    m = torch.linspace(-2, 2, 6)
    a, b = InputMean(6), InputMean(6)
    a.observe(x)
    b.observe(x * m)
    torch.testing.assert_close(a.rescaled(m).mean, b.mean)
