"""QAT: fake quantization equals the contract's quantize→dequantize, STE gradients, training, convert."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from qcore import api, metrics, ops
from qcore.errors import QcoreError
from qcore.nn import FakeQuantLinear, QuantLinear, fake_quantize
from qcore.nn.fake_quant import fake_quantize_with_mask
from qcore.spec import PRESETS, QuantSpec

REFERENCE = "cpu-reference"  # the contract's executable form
SPECS = [
    QuantSpec("int8", "channel", axis=0),
    QuantSpec("int8", "tensor", symmetric=False),
    QuantSpec("uint8", "channel", axis=1, symmetric=False),
    QuantSpec("int4", "group", group_size=16),
    QuantSpec("uint4", "group", group_size=16, symmetric=False),
    QuantSpec("ternary", "channel"),
    QuantSpec("binary", "channel"),
    QuantSpec("int8", "token", dynamic=True),
    QuantSpec("fp8_e4m3", "channel"),
    QuantSpec("fp8_e5m2", "tensor"),
    QuantSpec("fp16"),
    QuantSpec("bf16"),
]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.describe())
def test_fake_quantize_equals_contract_quantize_dequantize(spec: QuantSpec) -> None:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(24, 64, generator=gen) * 3
    x[0, :4] = torch.tensor([0.0, 1e-9, -70000.0, 70000.0])  # saturation and tiny values
    expected = ops.dequantize(ops.quantize(x, spec, backend=REFERENCE), backend=REFERENCE)
    assert torch.equal(fake_quantize(x, spec), expected)


def test_fake_quantize_with_given_qparams_equals_contract() -> None:
    spec = QuantSpec("int8", "tensor", symmetric=False)
    x = torch.randn(5, 7, 16)
    scale, zero_point = torch.tensor(0.01), torch.tensor(-3, dtype=torch.int32)
    expected = ops.dequantize(ops.quantize(x, spec, scale, zero_point, backend=REFERENCE), backend=REFERENCE)
    assert torch.equal(fake_quantize(x, spec, scale, zero_point), expected)


def test_straight_through_gradient_is_masked_outside_the_range() -> None:
    spec = QuantSpec("int8", "tensor")
    x = torch.tensor([-2.0, -1.0, 0.3, 1.0, 1.28, 5.0], requires_grad=True)
    scale, zero_point = torch.tensor(0.01), torch.tensor(0, dtype=torch.int32)
    fake_quantize(x, spec, scale, zero_point).backward(torch.arange(1.0, 7.0))
    assert torch.equal(x.grad, torch.tensor([0.0, 2.0, 3.0, 4.0, 0.0, 0.0]))
    _, mask = fake_quantize_with_mask(x, spec, scale, zero_point)
    assert mask.tolist() == [False, True, True, True, False, False]


def toy_task() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    x = torch.randn(256, 16)
    teacher = nn.Sequential(nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 4))
    with torch.no_grad():
        y = teacher(x)
    return nn.Sequential(nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 4)), x, y


def test_prepare_qat_trains_and_converts_close_to_the_qat_model() -> None:
    model, x, y = toy_task()
    api.prepare_qat(model, {"qcore": 1, "scheme": "w8a8"})
    assert all(isinstance(model[i], FakeQuantLinear) for i in (0, 2))
    losses = []
    for _ in range(40):  # plain SGD by hand: torch.optim would import torch._dynamo (seconds)
        model.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        assert model[0].weight.grad.abs().sum() > 0
        with torch.no_grad():
            for p in model.parameters():
                p -= 0.2 * p.grad
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    model.eval()
    lo, hi = model[2].act_min.clone(), model[2].act_max.clone()
    model(x * 10)  # eval mode: the observed range does not move
    assert torch.equal(model[2].act_min, lo) and torch.equal(model[2].act_max, hi)
    qat_out = model(x).detach()
    api.convert(model, measure=False)
    assert all(isinstance(model[i], QuantLinear) for i in (0, 2))
    assert not hasattr(model, api.QAT_ATTR)
    assert metrics.sqnr(qat_out, model(x)) > 35  # two layers: a backend's rounding differences compound
    expected_scale = ops.quantize(torch.stack([lo, hi]), PRESETS["w8a8"].input_activations).scale
    assert torch.equal(model[2].act_scale, expected_scale)


def test_dynamic_scheme_and_keep_float_layers_in_qat() -> None:
    model, x, _ = toy_task()
    api.prepare_qat(model, {"qcore": 1, "scheme": "w8a8-dynamic", "ignore": ["2"]})
    assert isinstance(model[0], FakeQuantLinear) and type(model[2]) is nn.Linear
    expected = nn.functional.linear(fake_quantize(x, PRESETS["w8a8-dynamic"].input_activations),
                                    fake_quantize(model[0].weight, PRESETS["w8a8-dynamic"].weights), model[0].bias)
    assert torch.equal(model[0](x), expected)
    api.convert(model, measure=False)
    state = api.state_of(model)
    assert state.kernel("0") is not None and state.layer("2").float_reason
    assert type(model[2]) is nn.Linear


def test_convert_needs_prepare_and_static_ranges() -> None:
    model, x, _ = toy_task()
    with pytest.raises(QcoreError, match="prepare_qat"):
        api.convert(model)
    api.prepare_qat(model, {"qcore": 1, "scheme": "w8a8"})
    model.eval()
    with pytest.raises(QcoreError, match="layer '0'.*no observed range"):
        model(x)
    with pytest.raises(QcoreError, match="layer '0'.*no observed range"):
        api.convert(model, measure=False)
