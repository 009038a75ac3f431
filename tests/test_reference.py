"""The cpu-reference oracle checked against docs/numerics.md.

Expected values are derived by hand, from an independent formula written here
in torch float64, or from torch's own dtype casts (for the float formats).
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import qcore
from qcore.errors import NonFiniteError, ShapeError, SpecError
from qcore.kernels import OPS, KernelRequest, LinearWeights, QTensor
from qcore.spec import DTYPES, PRESETS, QuantScheme, QuantSpec
from qcore_cpu_reference import ops
from qcore_cpu_reference.floats import round_to_format

EPS32 = float(np.finfo(np.float32).eps)
INT_SPECS = [
    QuantSpec("int8"),
    QuantSpec("int4"),
    QuantSpec("ternary"),
    QuantSpec("int8", symmetric=False),
    QuantSpec("uint8", symmetric=False),
    QuantSpec("int4", symmetric=False),
    QuantSpec("uint4", symmetric=False),
]
FLOAT_DTYPES = {
    "fp8_e4m3": torch.float8_e4m3fn,
    "fp8_e5m2": torch.float8_e5m2,
    "fp16": torch.float16,
    "bf16": torch.bfloat16,
}


def codes(x, spec: QuantSpec, scale=None, zero_point=None) -> list:
    q = ops.quantize(torch.as_tensor(x, dtype=torch.float32), spec, scale, zero_point)
    return q.codes.tolist()


def sqnr(ref: torch.Tensor, out: torch.Tensor) -> float:
    return float(20 * torch.log10(ref.norm() / (ref - out).norm()))


def spec_like(spec: QuantSpec, **changes) -> QuantSpec:
    return QuantSpec(**{**spec.to_dict(), **changes})


# -- codes: rounding, saturation, ranges ------------------------------------


def test_exact_ties_round_half_to_even_with_given_scale():
    ks = np.arange(-130, 131)
    x = (ks + 0.5) * 0.25
    got = codes(x, QuantSpec("int8"), torch.tensor(0.25))
    even = [k if k % 2 == 0 else k + 1 for k in ks.tolist()]
    assert got == [max(-127, min(127, e)) for e in even]


def test_exact_ties_round_half_to_even_with_computed_scale():
    ks = np.arange(-127, 127)
    x = np.append((ks + 0.5) * 0.25, 127 * 0.25)  # amax 31.75 makes the scale exactly 0.25
    q = ops.quantize(torch.tensor(x, dtype=torch.float32), QuantSpec("int8"))
    assert float(q.scale) == 0.25
    assert q.codes.tolist() == [k if k % 2 == 0 else k + 1 for k in ks.tolist()] + [127]


@pytest.mark.parametrize(
    ("spec", "low", "high"),
    [
        (QuantSpec("int8"), -127, 127),
        (QuantSpec("int4"), -7, 7),
        (QuantSpec("ternary"), -1, 1),
        (QuantSpec("int8", symmetric=False), -128, 127),
        (QuantSpec("uint8", symmetric=False), 0, 255),
        (QuantSpec("uint4", symmetric=False), 0, 15),
    ],
)
def test_huge_finite_values_saturate(spec, low, high):
    x = [-3.4e38, -1e30, 1e30, 3.4e38]
    assert codes(x, spec, torch.tensor(1.0), torch.tensor(0)) == [low, low, high, high]


@pytest.mark.parametrize(("dtype", "fmax"), [(d, DTYPES[d].fmax) for d in FLOAT_DTYPES])
def test_float_formats_saturate_to_fmax(dtype, fmax):
    q = ops.quantize(torch.tensor([-3.4e38, 3.4e38, 1.0]), QuantSpec(dtype), torch.tensor(1.0))
    assert q.codes.dtype == FLOAT_DTYPES[dtype]
    assert q.codes.float().tolist() == [-fmax, fmax, 1.0]


@given(hnp.arrays(np.float32, hnp.array_shapes(min_dims=1, max_dims=3, max_side=6),
                  elements=st.floats(width=32, allow_nan=False, allow_infinity=False)))
def test_symmetric_codes_never_reach_minus_128(x):
    for dtype, qmax in (("int8", 127), ("int4", 7)):
        for spec in (QuantSpec(dtype), QuantSpec(dtype, "channel", axis=-1), QuantSpec(dtype, "token", dynamic=True)):
            q = ops.quantize(torch.from_numpy(x), spec)
            assert int(q.codes.min()) >= -qmax and int(q.codes.max()) <= qmax
            assert torch.all(q.scale >= EPS32) and torch.all(torch.isfinite(q.scale))


@given(hnp.arrays(np.float32, hnp.array_shapes(min_dims=1, max_dims=3, max_side=6),
                  elements=st.floats(-1e6, 1e6, width=32)),
       st.sampled_from(INT_SPECS))
def test_error_is_within_one_step(x, spec):
    """Computed qparams never saturate: symmetric error ≤ scale/2, asymmetric ≤ one step."""
    q = ops.quantize(torch.from_numpy(x), spec)
    lo, hi = spec.qrange
    assert lo <= int(q.codes.min()) and int(q.codes.max()) <= hi
    err = (ops.dequantize(q).double() - torch.from_numpy(x).double()).abs()
    step = float(q.scale)
    assert float(err.max()) <= (0.5 * step * (1 + 1e-6) if spec.symmetric else step * (1 + 1e-6)) + 1e-38


# -- qparams ------------------------------------------------------------------


DTYPE_SYMMETRY = [(d, DTYPES[d].signed) for d in sorted(DTYPES)] + [("int8", False), ("int4", False)]


@pytest.mark.parametrize(
    ("dtype", "symmetric", "granularity"),
    [(d, sym, g) for d, sym in DTYPE_SYMMETRY for g in ("tensor", "channel", "token", "group")
     if DTYPES[d].scaled or g == "tensor"],
)
def test_all_zero_sets_give_scale_one_and_exact_zeros(dtype, symmetric, granularity):
    spec = QuantSpec(dtype, granularity, group_size=2 if granularity == "group" else None,
                     symmetric=symmetric, dynamic=granularity == "token")
    x = torch.zeros(3, 4, 4)
    if granularity != "tensor":
        x[0] = torch.randn(4, 4)  # channel 0 and the rows/groups under it are not zero; every other set is
    q = ops.quantize(x, spec)
    zero_sets = slice(1, None) if granularity != "tensor" else ...
    assert torch.all(q.scale[zero_sets] == 1.0) and torch.all(q.zero_point[zero_sets] == 0)
    assert torch.all(torch.isfinite(q.scale)) and torch.all(q.scale >= EPS32)
    zero_value = 1.0 if dtype == "binary" else 0.0  # binary has no zero code: +1 times the scale 1.0
    assert torch.all(ops.dequantize(q)[x == 0] == zero_value)


@pytest.mark.parametrize("spec", INT_SPECS, ids=lambda s: s.describe())
def test_constant_channels_give_finite_scales(spec):
    x = torch.tensor([[2.5] * 5, [-0.75] * 5, [1e-3] * 5])
    q = ops.quantize(x, spec_like(spec, granularity="channel", axis=0))
    assert torch.all(torch.isfinite(q.scale)) and torch.all(q.scale > 0)
    deq = ops.dequantize(q)
    assert torch.all(deq == deq[:, :1])  # a constant channel stays constant
    assert torch.allclose(deq, x, rtol=1e-6, atol=0)


def test_symmetric_scale_formula_by_hand():
    q = ops.quantize(torch.tensor([0.5, -2.54, 1.0]), QuantSpec("int8"))
    assert float(q.scale) == float(np.float32(np.float64(np.float32(2.54)) / 127))
    assert q.codes.tolist() == [25, -127, 50]  # 0.5/0.02 = 25.0000..., 1.0/0.02 = 50


def test_scale_is_floored_at_eps():
    q = ops.quantize(torch.tensor([1e-45, 0.0]), QuantSpec("int8"))
    assert float(q.scale) == EPS32 and q.codes.tolist() == [0, 0]


def test_asymmetric_zero_point_by_hand():
    q = ops.quantize(torch.tensor([-1.0, 0.0, 3.0]), QuantSpec("uint8", symmetric=False))
    assert float(q.scale) == float(np.float32(4 / 255))
    assert int(q.zero_point) == 64 and q.zero_point.dtype == torch.int32  # 0 - rne(-63.75)
    assert q.codes.tolist() == [0, 64, 255] and q.codes.dtype == torch.uint8
    assert ops.dequantize(q)[1] == 0.0  # zero is exactly representable


@pytest.mark.parametrize(
    ("x", "dtype", "zero_point"),
    [([0.5, 2.0], "int8", -128), ([0.5, 2.0], "uint8", 0), ([-2.55, -1.0], "int8", 127), ([-2.55, -1.0], "uint8", 255)],
)
def test_asymmetric_range_includes_zero(x, dtype, zero_point):
    q = ops.quantize(torch.tensor(x), QuantSpec(dtype, symmetric=False))
    assert int(q.zero_point) == zero_point
    x32 = np.float32(x).astype(np.float64)
    lo, hi = min(x32.min(), 0.0), max(x32.max(), 0.0)
    assert float(q.scale) == float(np.float32((hi - lo) / 255))


def test_binary_codes_and_mean_abs_scale():
    q = ops.quantize(torch.tensor([[1.0, -3.0, 0.0, 2.0], [0.0, 0.0, 0.0, 0.0]]), QuantSpec("binary", "channel"))
    assert q.codes.tolist() == [[1, -1, 1, 1], [1, 1, 1, 1]]
    assert q.scale.tolist() == [1.5, 1.0]
    assert ops.dequantize(q).tolist() == [[1.5, -1.5, 1.5, 1.5], [1.0, 1.0, 1.0, 1.0]]


def test_ternary_by_hand():
    assert codes([0.2, -1.0, 0.6, 0.4, 0.5], QuantSpec("ternary")) == [0, -1, 1, 0, 0]


def test_dequantize_rounds_once():
    scale = np.float32(0.1)
    q = QTensor(torch.tensor([3, -7], dtype=torch.int8), torch.tensor(scale), torch.tensor(2, dtype=torch.int32),
                QuantSpec("int8", symmetric=False))
    assert ops.dequantize(q).tolist() == [float(np.float32(1 * float(scale))), float(np.float32(-9 * float(scale)))]


# -- granularity ----------------------------------------------------------------


@pytest.mark.parametrize("axis", [0, 1, 2, -1, -2, -3])
def test_per_channel_on_every_axis(axis):
    shape = [3, 3, 3]
    view = [1, 1, 1]
    view[axis] = 3
    x = torch.randn(*shape) * torch.tensor([1.0, 10.0, 100.0]).reshape(view)
    q = ops.quantize(x, QuantSpec("int8", "channel", axis=axis))
    others = [d for d in range(3) if d != axis % 3]
    amax = x.abs().amax(dim=others).double()
    assert q.scale.shape == (3,)
    assert q.scale.tolist() == (amax / 127).float().tolist()
    assert len(set(q.scale.tolist())) == 3
    for i in range(3):
        single = ops.quantize(x.select(axis, i), QuantSpec("int8"))
        assert torch.equal(q.codes.select(axis, i), single.codes)


@given(hnp.arrays(np.float32, st.tuples(st.integers(1, 4), st.integers(1, 4), st.sampled_from([2, 4, 6])),
                  elements=st.floats(-100, 100, width=32)),
       st.sampled_from(INT_SPECS + [QuantSpec("fp8_e4m3"), QuantSpec("binary")]))
def test_token_and_group_sets_match_per_slice_tensor_quantization(x, spec):
    """One scale per row (token) or per run of g (group): each set quantizes as a tensor on its own."""
    t = torch.from_numpy(x)
    token = ops.quantize(t, spec_like(spec, granularity="token", dynamic=True))
    group = ops.quantize(t, spec_like(spec, granularity="group", group_size=2))
    assert token.scale.shape == t.shape[:-1] and group.scale.shape == (*t.shape[:-1], t.shape[-1] // 2)
    for i in range(t.shape[0]):
        for j in range(t.shape[1]):
            row = ops.quantize(t[i, j], spec)
            assert torch.equal(token.codes[i, j], row.codes) and token.scale[i, j] == row.scale
            for g in range(t.shape[2] // 2):
                run = ops.quantize(t[i, j, 2 * g:2 * g + 2], spec)
                assert torch.equal(group.codes[i, j, 2 * g:2 * g + 2], run.codes)
                assert group.scale[i, j, g] == run.scale and group.zero_point[i, j, g] == run.zero_point


def test_group_size_must_divide_last_dim():
    with pytest.raises(ShapeError, match=r"group_size 4 does not divide the last dimension 6"):
        ops.quantize(torch.randn(2, 6), QuantSpec("int4", "group", group_size=4))


@pytest.mark.parametrize("axis", [2, -3])
def test_channel_axis_out_of_range(axis):
    with pytest.raises(ShapeError, match=f"axis {axis}"):
        ops.quantize(torch.randn(2, 6), QuantSpec("int8", "channel", axis=axis))


def test_given_qparams_of_wrong_shape_are_a_shape_error():
    with pytest.raises(ShapeError, match=r"\(5,\).*\(3,\)"):
        ops.quantize(torch.randn(3, 4), QuantSpec("int8", "channel"), torch.ones(5))


def test_given_qparams_are_used_and_returned_in_canonical_shape():
    spec = QuantSpec("int8", "channel", axis=-1, symmetric=False)
    q = ops.quantize(torch.tensor([[1.0, 1.0], [-1.0, 2.0]]), spec, torch.tensor([0.5, 0.25]), torch.tensor([1, -3]))
    assert q.codes.tolist() == [[3, 1], [-1, 5]]
    assert q.scale.dtype == torch.float32 and q.zero_point.dtype == torch.int32


@pytest.mark.parametrize("scale", [0.0, -1.0, float("nan")])
def test_given_scale_must_be_finite_and_positive(scale):
    with pytest.raises(ValueError, match="finite and positive"):
        ops.quantize(torch.randn(3), QuantSpec("int8"), torch.tensor(scale))


# -- non-finite input -------------------------------------------------------------


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_input_is_rejected_with_count_and_first_index(bad):
    x = torch.zeros(3, 4)
    x[1, 2] = bad
    x[2, 0] = float("nan")
    with pytest.raises(NonFiniteError, match=r"2 non-finite.*\(1, 2\)"):
        ops.quantize(x, QuantSpec("int8", "channel"))


# -- float formats against torch's casts ----------------------------------------


def _grid(dtype: torch.dtype) -> np.ndarray:
    """Every finite value of a float format, sorted, as float64."""
    bits = torch.finfo(dtype).bits
    store = {8: (np.uint8, torch.uint8), 16: (np.int16, torch.int16)}[bits]
    patterns = torch.from_numpy(np.arange(2**bits, dtype=np.uint16 if bits == 16 else np.uint8).view(store[0]))
    values = patterns.view(dtype).double().numpy()
    return np.unique(values[np.isfinite(values)])


@pytest.mark.parametrize("name", sorted(FLOAT_DTYPES))
def test_float_rounding_matches_torch_on_random_bits_ties_and_subnormals(name):
    dtype = FLOAT_DTYPES[name]
    fmax = DTYPES[name].fmax
    rng = np.random.default_rng(0)
    random_bits = rng.integers(0, 2**32, 200_000, dtype=np.uint64).astype(np.uint32).view(np.float32)
    log_spread = rng.standard_normal(100_000) * np.exp2(rng.uniform(-150, 20, 100_000))
    grid = _grid(dtype)
    ties = (grid[1:] + grid[:-1]) / 2  # every tie, subnormal ones included
    near_ties = np.concatenate([np.nextafter(ties.astype(np.float32), np.float32(np.inf)),
                                np.nextafter(ties.astype(np.float32), np.float32(-np.inf))])
    v = np.concatenate([random_bits[np.isfinite(random_bits)], log_spread, grid, ties, near_ties, [3.4e38, -3.4e38]])
    v = np.clip(v, -fmax, fmax).astype(np.float32)
    expected = torch.from_numpy(v).to(dtype).float().numpy()
    assert np.array_equal(round_to_format(v, name).view(np.uint32), expected.view(np.uint32))


@pytest.mark.parametrize("name", sorted(FLOAT_DTYPES))
def test_float_ties_go_to_even_mantissa(name):
    dtype = FLOAT_DTYPES[name]
    grid = _grid(dtype)
    positive = grid[grid >= 0]
    ties = ((positive[1:] + positive[:-1]) / 2).astype(np.float32)
    got = ops.quantize(torch.from_numpy(ties), QuantSpec(name), torch.tensor(1.0)).codes
    bits = got.view(torch.uint8 if torch.finfo(dtype).bits == 8 else torch.int16)
    assert torch.all(bits % 2 == 0)


def test_fp16_rounding_matches_numpy():
    v = np.random.default_rng(1).standard_normal(50_000).astype(np.float32) * 1e4
    v = np.clip(v, -65504, 65504).astype(np.float32)
    assert np.array_equal(round_to_format(v, "fp16"), v.astype(np.float16).astype(np.float32))


@pytest.mark.parametrize("name", ["fp8_e4m3", "fp8_e5m2"])
def test_fp8_quantize_divides_by_scale_then_casts(name):
    x = torch.randn(4, 8) * 3
    q = ops.quantize(x, QuantSpec(name, "channel", axis=0))
    expected_scale = (x.abs().amax(dim=1).double() / DTYPES[name].fmax).float()
    assert torch.equal(q.scale, expected_scale)
    ratio = (x.double() / q.scale.double()[:, None]).float().clamp(-DTYPES[name].fmax, DTYPES[name].fmax)
    assert torch.equal(q.codes.float(), ratio.to(FLOAT_DTYPES[name]).float())
    assert torch.equal(ops.dequantize(q), q.codes.float() * q.scale[:, None])


@pytest.mark.parametrize("name", ["fp16", "bf16"])
def test_fp16_bf16_are_casts(name):
    x = torch.randn(5, 7) * 100
    q = ops.quantize(x, QuantSpec(name))
    assert q.scale.shape == () and float(q.scale) == 1.0 and int(q.zero_point) == 0
    assert torch.equal(q.codes, x.to(FLOAT_DTYPES[name]))
    assert torch.equal(ops.dequantize(q), x.to(FLOAT_DTYPES[name]).float())


# -- packing ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "codes_", "packed"),
    [
        (QuantSpec("int4"), [1, 2], [0x21]),
        (QuantSpec("int4"), [-1, 0], [0x0F]),
        (QuantSpec("int4"), [-8, 7, 3], [0x78, 0x03]),
        (QuantSpec("uint4", symmetric=False), [15, 0, 9], [0x0F, 0x09]),
        (QuantSpec("ternary"), [1, -1, 0, 1, -1], [0b01_00_11_01, 0b11]),
        (QuantSpec("binary"), [1, -1, -1, 1, 1, 1, 1, 1, 1], [0b11111001, 0x01]),
    ],
)
def test_packing_by_hand(spec, codes_, packed):
    dtype = torch.int8 if spec.info.signed else torch.uint8
    q = QTensor(torch.tensor(codes_, dtype=dtype), torch.tensor(1.0), torch.tensor(0, dtype=torch.int32), spec)
    p = ops.pack_weight(q)
    assert p.data.dtype == torch.uint8 and p.data.tolist() == packed and p.shape == (len(codes_),)
    assert ops.unpack_weight(p).codes.tolist() == codes_


@given(st.sampled_from([QuantSpec("int4"), QuantSpec("uint4", symmetric=False), QuantSpec("ternary"),
                        QuantSpec("binary"), QuantSpec("int8"), QuantSpec("fp8_e4m3")]),
       hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=9), st.integers(0, 2**31))
def test_pack_unpack_round_trip(spec, shape, seed):
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(seed))
    q = ops.quantize(x, spec_like(spec, granularity="channel", axis=0))
    p = ops.pack_weight(q)
    if spec.info.sub_byte:
        per = 8 // spec.bits
        assert p.data.shape == (*shape[:-1], -(-shape[-1] // per))
    else:
        assert torch.equal(p.data, q.codes) and p.data.dtype == q.codes.dtype
    back = ops.unpack_weight(p)
    assert torch.equal(back.codes, q.codes) and back.codes.dtype == q.codes.dtype
    assert torch.equal(back.scale, q.scale) and torch.equal(back.zero_point, q.zero_point)


def test_unpack_rejects_bytes_of_the_wrong_shape():
    q = ops.quantize(torch.randn(2, 5), QuantSpec("int4"))
    p = ops.pack_weight(q)
    with pytest.raises(ShapeError, match=r"\(2, 3\)"):
        ops.unpack_weight(qcore.PackedTensor(p.data, (2, 7), p.scale, p.zero_point, p.spec))


# -- linear ---------------------------------------------------------------------------


def _int8_weights(n: int, k: int, seed: int = 0) -> tuple[QTensor, torch.Tensor]:
    """A QTensor with hand-chosen codes and power-of-two scales, and its exact float64 value."""
    g = torch.Generator().manual_seed(seed)
    codes_ = torch.randint(-127, 128, (n, k), generator=g, dtype=torch.int8)
    scale = torch.exp2(torch.randint(-8, -4, (n,), generator=g).float())
    q = QTensor(codes_, scale, torch.zeros(n, dtype=torch.int32), QuantSpec("int8", "channel"))
    return q, codes_.double() * scale.double()[:, None]


def _dyadic(*shape: int, seed: int = 0) -> torch.Tensor:
    """Multiples of 2**-8 below 4 in magnitude: float64 dot products of these are exact in any order."""
    return torch.randint(-1023, 1024, shape, generator=torch.Generator().manual_seed(seed)).float() / 256


def _run(weights: LinearWeights, x: torch.Tensor) -> torch.Tensor:
    return ops.linear(ops.prepare_linear(weights), x)


def test_linear_weight_only_is_float64_gemm_rounded_once():
    q, w64 = _int8_weights(5, 16)
    bias = torch.randn(5)
    x = _dyadic(2, 3, 16)
    out = _run(LinearWeights(PRESETS["w8a16"], q, bias), x)
    expected = (x.double() @ w64.T + bias.double()).float()
    assert out.shape == (2, 3, 5) and out.dtype == torch.float32
    assert torch.equal(out, expected)


def test_linear_dynamic_per_token_activations():
    q, w64 = _int8_weights(6, 32, seed=1)
    x = torch.randn(4, 2, 32)
    out = _run(LinearWeights(PRESETS["w8a8-dynamic"], q), x)
    rows = x.reshape(-1, 32).double()
    scale = (rows.abs().amax(dim=1) / 127).float().double()[:, None]
    a = (torch.round(rows / scale).clamp(-127, 127) * scale).float().double()
    assert torch.equal(out, (a @ w64.T).float().reshape(4, 2, 6))


def test_linear_static_activations_use_calibrated_qparams():
    scheme = QuantScheme("a8-static-asym", QuantSpec("int8", "channel"), QuantSpec("uint8", symmetric=False))
    q, w64 = _int8_weights(3, 8, seed=2)
    x = torch.randn(5, 8)
    weights = LinearWeights(scheme, q, None, torch.tensor(0.02), torch.tensor(128, dtype=torch.int32))
    scale = float(np.float32(0.02))
    a = ((torch.round(x.double() / scale) + 128).clamp(0, 255) - 128) * scale
    assert torch.equal(_run(weights, x), (a.float().double() @ w64.T).float())


def test_linear_static_activations_without_qparams_is_an_error():
    q, _ = _int8_weights(3, 8)
    with pytest.raises(SpecError, match="w8a8.*act_scale"):
        ops.prepare_linear(LinearWeights(PRESETS["w8a8"], q))


def test_linear_with_float_weights_and_quantized_activations():
    scheme = QuantScheme("a8-only", None, QuantSpec("int8", "tensor", dynamic=True))
    w = _dyadic(4, 8)
    x = torch.tensor([[0.5, -1.27, 0.0, 0.25, 1.0, -0.5, 0.125, 0.3]])
    scale = np.float64(np.float32(1.27 / 127))
    a = (torch.round(x.double() / scale).clamp(-127, 127) * scale).float().double()
    out = _run(LinearWeights(scheme, None, float_weight=w), x)
    assert torch.equal(out, (a @ w.double().T).float())


def test_linear_rejects_wrong_input_width():
    q, _ = _int8_weights(3, 8)
    with pytest.raises(ShapeError, match=r"\(\.\.\., 8\).*\(2, 7\)"):
        _run(LinearWeights(PRESETS["w8a16"], q), torch.randn(2, 7))


@pytest.mark.parametrize(
    ("name", "min_db"),
    [("w8a8", 38), ("w8a8-dynamic", 38), ("w8a16", 43), ("w4a16", 18), ("w4a16-asym", 19), ("fp8", 25),
     ("fp16", 60), ("ternary", 1), ("binary", 3)],
)
def test_linear_every_preset_meets_the_contract_quality(name, min_db):
    scheme = PRESETS[name]
    g = torch.Generator().manual_seed(3)
    w, x, b = torch.randn(32, 256, generator=g), torch.randn(3, 5, 256, generator=g), torch.randn(32, generator=g)
    qw = ops.quantize(w, scheme.weights)
    weights = LinearWeights(scheme, qw, b)
    if scheme.needs_calibration:
        calibrated = ops.quantize(x, scheme.input_activations)
        weights = LinearWeights(scheme, qw, b, calibrated.scale, calibrated.zero_point)
    out = _run(weights, x)
    assert out.shape == (3, 5, 32) and out.dtype == torch.float32
    assert sqnr(x @ w.T + b, out) >= min_db
    assert torch.equal(out, _run(weights, x))  # two runs: bit-identical


def test_linear_non_finite_activation_is_rejected():
    q, _ = _int8_weights(3, 8)
    x = torch.zeros(2, 8)
    x[1, 3] = float("inf")
    with pytest.raises(NonFiniteError, match=r"1 non-finite.*\(1, 3\)"):
        _run(LinearWeights(PRESETS["w8a8-dynamic"], q), x)


# -- registration ---------------------------------------------------------------------------


def test_plugin_registers_every_op_through_the_manager():
    manager = qcore.get_manager()
    kernels = {k.op: k for k in manager.kernels().values() if k.backend == "cpu-reference"}
    assert set(kernels) == set(OPS)
    for kernel in kernels.values():
        assert kernel.priority < 0 and kernel.devices == ("cpu",)
        assert kernel.provider is not None and kernel.provider.distribution == "qcore-cpu-reference"
    info = manager.backends()["cpu-reference"]
    assert info.available and info.devices == ("cpu",) and f"numpy {np.__version__}" in info.capabilities
    assert not [p for p in manager.problems if p.plugin == "cpu-reference"]


def test_plugin_supports_every_request_on_cpu_only():
    kernels = {k.op: k for k in qcore.get_manager().kernels().values() if k.backend == "cpu-reference"}
    hardware = qcore.detect_hardware()
    for scheme in PRESETS.values():
        assert kernels["linear"].check(KernelRequest("linear", scheme=scheme, shape=(4, 256, 32)), hardware)
        assert not kernels["linear"].check(KernelRequest("linear", "cuda", scheme=scheme), hardware)
    for dtype in DTYPES:
        spec = QuantSpec(dtype, symmetric=DTYPES[dtype].signed)
        for op in ("quantize", "dequantize", "pack_weight", "unpack_weight"):
            assert kernels[op].check(KernelRequest(op, spec=spec), hardware)


def test_kernels_called_through_their_descriptors():
    kernels = {k.op: k for k in qcore.get_manager().kernels().values() if k.backend == "cpu-reference"}
    x = torch.randn(4, 6)
    q = kernels["quantize"].fn(x, QuantSpec("int4", "group", group_size=3))
    p = kernels["pack_weight"].fn(q)
    assert torch.equal(kernels["unpack_weight"].fn(p).codes, q.codes)
    assert torch.equal(kernels["dequantize"].fn(q), ops.dequantize(q))
    prepared = kernels["linear"].prepare(LinearWeights(PRESETS["w4a16"], None, float_weight=x))
    assert kernels["linear"].fn(prepared, torch.randn(2, 6)).shape == (2, 4)


def test_importing_the_plugin_is_cheap():
    code = (
        "import sys, qcore_cpu_reference.plugin as p; list(p.qcore_kernels());"
        "assert 'qcore_cpu_reference.ops' not in sys.modules and 'qcore_cpu_reference.numerics' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
