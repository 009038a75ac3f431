"""GPTQ: lower output error than round-to-nearest, contract-shaped results, clear errors."""

from __future__ import annotations

import pytest
import torch

from qcore import ops
from qcore.algorithms.gptq import HessianAccumulator, gptq_quantize
from qcore.errors import NonFiniteError, ShapeError, SpecError
from qcore.metrics import sqnr
from qcore.spec import QuantSpec

N, K, ROWS = 64, 256, 1024

SPECS = {
    "int4-g128-sym": QuantSpec("int4", "group", group_size=128),
    "uint4-g128-asym": QuantSpec("uint4", "group", group_size=128, symmetric=False),
    "int8-channel": QuantSpec("int8", "channel", axis=0),
}


def _layer(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Correlated activations X = Z @ A (what makes GPTQ's error feedback pay off) and a weight."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(ROWS, K, generator=gen) @ torch.randn(K, K, generator=gen) / K**0.5
    return x, torch.randn(N, K, generator=gen)


def _hessian(x: torch.Tensor) -> torch.Tensor:
    acc = HessianAccumulator(x.shape[-1])
    acc.observe(x)
    return acc.hessian


@pytest.mark.parametrize("name", list(SPECS))
def test_gptq_beats_round_to_nearest_on_output_error(name: str) -> None:
    spec = SPECS[name]
    x, w = _layer()
    ref = x @ w.T
    rtn = sqnr(ref, x @ ops.dequantize(ops.quantize(w, spec)).T)
    gptq = sqnr(ref, x @ ops.dequantize(gptq_quantize(w, _hessian(x), spec)).T)
    print(f"{name}: output SQNR RTN {rtn:.2f} dB, GPTQ {gptq:.2f} dB")
    assert gptq >= rtn + 1.0


@pytest.mark.parametrize("name", list(SPECS))
def test_result_is_a_contract_qtensor(name: str) -> None:
    spec = SPECS[name]
    x, w = _layer(1)
    q = gptq_quantize(w, _hessian(x), spec, block_size=64)
    qmin, qmax = spec.qrange
    assert q.codes.shape == (N, K)
    assert q.codes.dtype == (torch.int8 if spec.info.signed else torch.uint8)
    assert int(q.codes.min()) >= qmin and int(q.codes.max()) <= qmax
    qshape = (N,) if spec.granularity == "channel" else (N, K // spec.group_size)
    assert q.scale.shape == qshape and q.scale.dtype == torch.float32
    assert q.zero_point.shape == qshape and q.zero_point.dtype == torch.int32
    if spec.symmetric:
        assert not q.zero_point.any()
    deq = ops.dequantize(q)
    assert deq.shape == (N, K) and torch.isfinite(deq).all()
    # The backend's dequantize is the contract's, applied to these codes and qparams.
    view = (N, 1) if spec.granularity == "channel" else (N, K // spec.group_size, 1)
    codes = q.codes.to(torch.float64).reshape(*view[:-1], -1)
    expect = ((codes - q.zero_point.reshape(view)) * q.scale.to(torch.float64).reshape(view)).float()
    assert torch.equal(deq, expect.reshape(N, K))


@pytest.mark.parametrize("name", list(SPECS))
def test_identity_hessian_gives_round_to_nearest(name: str) -> None:
    """With H = I, Hinv is diagonal: no error reaches other columns, so every code is RTN's."""
    spec = SPECS[name]
    _, w = _layer(2)
    q = gptq_quantize(w, torch.eye(K, dtype=torch.float64), spec)
    rtn = ops.quantize(w, spec)
    assert torch.equal(q.codes, rtn.codes)
    assert torch.equal(q.scale, rtn.scale) and torch.equal(q.zero_point, rtn.zero_point)


@pytest.mark.parametrize("block_size", [1, 100, 256])
def test_block_size_only_changes_float_rounding(block_size: int) -> None:
    """Lazy batching is exact in real arithmetic, so other block sizes may differ only on rounding ties."""
    spec = SPECS["int8-channel"]
    x, w = _layer(3)
    h = _hessian(x)
    a = gptq_quantize(w, h, spec)
    b = gptq_quantize(w, h, spec, block_size=block_size)
    assert torch.equal(a.scale, b.scale)
    assert int((a.codes != b.codes).sum()) <= 2


def test_dead_columns_are_zeroed() -> None:
    spec = SPECS["uint4-g128-asym"]
    x, w = _layer(4)
    dead = torch.tensor([0, 5, 130, 255])
    x[:, dead] = 0.0
    q = gptq_quantize(w, _hessian(x), spec)
    deq = ops.dequantize(q)
    assert torch.isfinite(deq).all()
    assert not deq[:, dead].any()
    ref = x @ w.T
    assert sqnr(ref, x @ deq.T) > sqnr(ref, x @ ops.dequantize(ops.quantize(w, spec)).T)


def test_accumulator_running_mean_matches_one_batch() -> None:
    x, _ = _layer(5)
    acc = HessianAccumulator(K)
    for chunk in x.reshape(8, -1, 16, K):  # leading dims flatten to rows
        acc.observe(chunk)
    x64 = x.to(torch.float64)
    assert acc.samples == ROWS
    assert acc.hessian.dtype == torch.float64
    torch.testing.assert_close(acc.hessian, 2.0 * x64.T @ x64 / ROWS, rtol=1e-12, atol=1e-12)


def test_nan_in_activations_raises() -> None:
    acc = HessianAccumulator(4)
    x = torch.ones(3, 4)
    x[1, 2] = float("nan")
    with pytest.raises(NonFiniteError):
        acc.observe(x)
    assert acc.samples == 0


@pytest.mark.parametrize(
    "spec",
    [
        QuantSpec("int8", "tensor"),
        QuantSpec("int8", "token", dynamic=True),
        QuantSpec("fp8_e4m3", "channel"),
        QuantSpec("fp16"),
        QuantSpec("binary", "channel"),
        QuantSpec("ternary", "channel"),
        QuantSpec("int8", "channel", axis=1),
    ],
    ids=lambda s: s.describe(),
)
def test_unsupported_specs_raise(spec: QuantSpec) -> None:
    with pytest.raises(SpecError, match="GPTQ"):
        gptq_quantize(torch.zeros(8, 16), torch.eye(16), spec)


def test_shape_errors() -> None:
    spec = QuantSpec("int4", "group", group_size=128)
    with pytest.raises(ShapeError, match="group_size"):
        gptq_quantize(torch.zeros(8, 96), torch.eye(96), spec)
    with pytest.raises(ShapeError, match="hessian"):
        gptq_quantize(torch.zeros(8, 128), torch.eye(64), spec)
    with pytest.raises(ShapeError):
        HessianAccumulator(16).observe(torch.zeros(4, 8))


@pytest.mark.parametrize("name", list(SPECS))
def test_act_order_keeps_the_contract_layout_and_does_not_lose_to_plain_gptq(name: str) -> None:
    """Static groups: qparams are round-to-nearest's, fixed before the columns are visited in Hessian order."""
    spec = SPECS[name]
    x, w = _layer(2)
    x = x * torch.linspace(0.1, 4.0, K)  # inputs of very different energy: the order matters
    ref = x @ w.T
    plain = gptq_quantize(w, _hessian(x), spec)
    ordered = gptq_quantize(w, _hessian(x), spec, act_order=True)
    rtn = ops.quantize(w, spec)
    assert torch.equal(ordered.scale, rtn.scale) and torch.equal(ordered.zero_point, rtn.zero_point)
    qmin, qmax = spec.qrange
    assert int(ordered.codes.min()) >= qmin and int(ordered.codes.max()) <= qmax
    assert sqnr(ref, x @ ops.dequantize(ordered).T) >= sqnr(ref, x @ ops.dequantize(plain).T) - 0.5
    assert torch.equal(ordered.codes, gptq_quantize(w, _hessian(x), spec, act_order=True).codes)
