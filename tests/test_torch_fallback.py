"""torch-fallback against the cpu-reference oracle: every op, every dtype × granularity, every linear kernel.

Tensor ops must give the reference's codes, scales and zero-points exactly;
each linear kernel that claims a scheme must stay >= 50 dB from the
reference's linear and meet the scheme's own thresholds against float.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import qcore
from qcore.errors import NonFiniteError, ShapeError, SpecError
from qcore.hardware import detect
from qcore.kernels import KernelImpl, KernelRequest, LinearWeights, QTensor
from qcore.metrics import sqnr
from qcore.spec import DTYPES, PRESETS, QuantScheme, QuantSpec

BACKEND = "torch-fallback"
REFERENCE = "cpu-reference"
GROUP = 16
VS_REFERENCE_DB = 50.0
VS_FLOAT_DB = {"w8a8": 38.0, "w8a8-dynamic": 38.0, "w8a16": 43.0, "w4a16": 18.0, "w4a16-asym": 19.0}
BF16_OUTPUT = {"int8pack", "int4pack", "int4pack-cuda"}  # kernels whose op rounds its output to bf16


def all_specs() -> list[QuantSpec]:
    """Every valid dtype × granularity × symmetry (channel on both ends, groups of 16, dynamic tokens)."""
    variants = [
        ("tensor", {}),
        ("channel", {"axis": 0}),
        ("channel", {"axis": -1}),
        ("group", {"group_size": GROUP}),
        ("token", {"dynamic": True}),
    ]
    specs = []
    for dtype in DTYPES:
        for granularity, extra in variants:
            for symmetric in (True, False):
                try:
                    specs.append(QuantSpec(dtype, granularity, symmetric=symmetric, **extra))
                except SpecError:
                    continue
    return specs


SPECS = all_specs()
SPEC_IDS = [s.describe().replace(" ", "-") for s in SPECS]


def kernel(backend: str, name: str) -> KernelImpl:
    kernels = qcore.get_manager().kernels()
    key = f"{backend}/{name}"
    assert key in kernels, f"{key} is not registered; have {sorted(kernels)}"
    return kernels[key]


def ours(op: str) -> KernelImpl:
    return kernel(BACKEND, op)


def ref(op: str) -> KernelImpl:
    return kernel(REFERENCE, op)


def linear_kernels() -> list[KernelImpl]:
    return [k for k in qcore.get_manager().kernels().values() if k.backend == BACKEND and k.op == "linear"]


def assert_same_qtensor(got: QTensor, want: QTensor) -> None:
    assert got.codes.dtype == want.codes.dtype
    assert got.codes.shape == want.codes.shape
    assert torch.equal(got.codes.to(torch.float32), want.codes.to(torch.float32)), (got.codes, want.codes)
    assert got.scale.dtype == torch.float32 and got.zero_point.dtype == torch.int32
    assert got.scale.shape == want.scale.shape and torch.equal(got.scale, want.scale.to(torch.float32))
    assert torch.equal(got.zero_point, want.zero_point.to(torch.int32))


finite = st.floats(-1e4, 1e4, allow_nan=False, allow_infinity=False, width=32)


@st.composite
def tensors(draw: st.DrawFn) -> torch.Tensor:
    """1- to 3-d float32 tensors whose last dimension is a multiple of the group size, varied magnitudes."""
    lead = draw(st.lists(st.integers(1, 4), min_size=0, max_size=2))
    shape = (*lead, GROUP * draw(st.integers(1, 3)))
    values = draw(hnp.arrays(np.float32, shape, elements=finite))
    magnitude = draw(st.sampled_from([1e-6, 1e-2, 1.0, 1e3]))
    return torch.from_numpy(values) * magnitude


@pytest.mark.parametrize("spec", SPECS, ids=SPEC_IDS)
@given(x=tensors(), shrink=st.sampled_from([1.0, 0.5, 1e-3]))
def test_tensor_ops_match_reference(spec: QuantSpec, x: torch.Tensor, shrink: float) -> None:
    """quantize (min-max and calibrated), dequantize, pack and unpack give the reference's results exactly.

    The calibrated qparams come from `x * shrink`, so most of `x` lies outside their range and saturates.
    """
    want = ref("quantize").fn(x, spec)
    assert_same_qtensor(ours("quantize").fn(x, spec), want)
    calibrated = ref("quantize").fn(x * shrink, spec)
    clamped = ref("quantize").fn(x, spec, calibrated.scale, calibrated.zero_point)
    assert_same_qtensor(ours("quantize").fn(x, spec, calibrated.scale, calibrated.zero_point), clamped)
    assert torch.equal(ours("dequantize").fn(want), ref("dequantize").fn(want))
    packed, ref_packed = ours("pack_weight").fn(want), ref("pack_weight").fn(want)
    assert packed.data.dtype == ref_packed.data.dtype and torch.equal(packed.data, ref_packed.data)
    assert packed.shape == tuple(x.shape)
    assert_same_qtensor(ours("unpack_weight").fn(ref_packed), want)


def test_packing_layout_low_nibble_first() -> None:
    spec = QuantSpec("int4", "channel")
    q = QTensor(torch.tensor([[1, -2, 7]], dtype=torch.int8), torch.ones(1), torch.zeros(1, dtype=torch.int32), spec)
    packed = ours("pack_weight").fn(q)
    assert packed.data.tolist() == [[0xE1, 0x07]]
    assert torch.equal(ours("unpack_weight").fn(packed).codes, q.codes)


@pytest.mark.parametrize("spec", SPECS, ids=SPEC_IDS)
@pytest.mark.parametrize("fill", [0.0, 2.5, -3.0])
def test_zero_and_constant_tensors(spec: QuantSpec, fill: float) -> None:
    x = torch.full((3, 2 * GROUP), fill)
    got, want = ours("quantize").fn(x, spec), ref("quantize").fn(x, spec)
    assert_same_qtensor(got, want)
    assert torch.isfinite(got.scale).all() and (got.scale > 0).all()
    if fill == 0.0:
        assert torch.equal(got.scale, torch.ones_like(got.scale))


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_input_is_rejected(bad: float) -> None:
    x = torch.ones(4, 8)
    x[2, 5] = bad
    x[3, 1] = bad
    with pytest.raises(NonFiniteError, match=r"2 non-finite.*\(2, 5\)"):
        ours("quantize").fn(x, QuantSpec("int8"))
    scheme = PRESETS["w8a16"]
    k = ours("dequant-matmul")
    prepared = k.prepare(LinearWeights(scheme, ours("quantize").fn(torch.ones(3, 8), scheme.weights)))
    with pytest.raises(NonFiniteError):
        k.fn(prepared, x)


def test_exact_ties_round_half_to_even() -> None:
    spec = QuantSpec("int8")
    scale = torch.tensor(0.25)
    k = torch.arange(-6, 6, dtype=torch.float32)
    x = (k + 0.5) * scale
    got = ours("quantize").fn(x, spec, scale)
    assert torch.equal(got.codes.to(torch.int64), torch.round(k + 0.5).to(torch.int64))
    assert torch.equal(got.codes, ref("quantize").fn(x, spec, scale).codes)


@pytest.mark.parametrize("dtype", ["int8", "int4", "ternary"])
def test_huge_values_saturate_without_minus_128(dtype: str) -> None:
    spec = QuantSpec(dtype)
    x = torch.tensor([3e38, -3e38, 1.0, -1.0])
    q = ours("quantize").fn(x, spec, torch.tensor(1e-3))
    qmin, qmax = spec.qrange
    assert q.codes.tolist() == [qmax, qmin, qmax, qmin] and qmin == -qmax


def test_float_formats_saturate() -> None:
    x = torch.tensor([1e6, -1e6, 1.0])
    assert ours("quantize").fn(x, QuantSpec("fp16")).codes.tolist() == [65504.0, -65504.0, 1.0]
    fp8 = ours("quantize").fn(x, QuantSpec("fp8_e4m3"), torch.tensor(1.0))
    assert fp8.codes.to(torch.float32).tolist() == [448.0, -448.0, 1.0]


def test_group_size_not_dividing_k_is_a_shape_error() -> None:
    with pytest.raises(ShapeError, match="group_size 16 does not divide the last dimension 20"):
        ours("quantize").fn(torch.ones(2, 20), QuantSpec("int4", "group", group_size=16))


ODD_SPECS = [
    QuantSpec("int8", "channel"),
    QuantSpec("uint4", "group", group_size=41, symmetric=False),
    QuantSpec("int8", "token", dynamic=True),
    QuantSpec("fp8_e4m3", "channel"),
    QuantSpec("binary", "channel", axis=-1),
]


@pytest.mark.parametrize("spec", ODD_SPECS, ids=[s.describe() for s in ODD_SPECS])
def test_odd_sizes_match_reference(spec: QuantSpec) -> None:
    x = torch.randn(17, 1025, generator=torch.Generator().manual_seed(0)) * 3
    want = ref("quantize").fn(x, spec)
    assert_same_qtensor(ours("quantize").fn(x, spec), want)
    assert torch.equal(ours("pack_weight").fn(want).data, ref("pack_weight").fn(want).data)


# -- linear ----------------------------------------------------------------------------------------


def weights_for(scheme: QuantScheme, w: torch.Tensor, b: torch.Tensor, x: torch.Tensor) -> LinearWeights:
    """LinearWeights quantized by the reference (static activation qparams from `x`)."""
    a = scheme.input_activations
    act = {}
    if a is not None and a.info.scaled and not a.dynamic:
        q = ref("quantize").fn(x, a)
        act = {"act_scale": q.scale, "act_zero_point": q.zero_point}
    if scheme.weights is None:
        return LinearWeights(scheme, None, b, float_weight=w, **act)
    return LinearWeights(scheme, ref("quantize").fn(w, scheme.weights), b, **act)


def reference_linear(lw: LinearWeights, x: torch.Tensor) -> torch.Tensor:
    k = ref("linear")
    return k.fn(k.prepare(lw), x)


def float_floor(scheme_name: str, reference_db: float) -> float:
    """The scheme's threshold against float, or what the reference itself reaches on this draw (w8a16 sits at ~43)."""
    return min(VS_FLOAT_DB[scheme_name], reference_db - 0.5)


def claimed(k: KernelImpl, scheme: QuantScheme, shape: tuple[int, int, int]) -> bool:
    return bool(k.check(KernelRequest("linear", "cpu", scheme=scheme, shape=shape), detect()))


LINEAR_SHAPE = (6, 256, 32)
LINEAR_CASES = [(k.name, s) for k in linear_kernels() for s in PRESETS if claimed(k, PRESETS[s], LINEAR_SHAPE)]


@pytest.mark.parametrize(("name", "scheme_name"), LINEAR_CASES)
def test_linear_kernel_quality(name: str, scheme_name: str) -> None:
    """N(0,1) data: >= 50 dB from the reference, the scheme's thresholds from float, bit-identical reruns."""
    k, scheme = ours(name), PRESETS[scheme_name]
    lead, (_, K, N) = (2, 3), LINEAR_SHAPE
    gen = torch.Generator().manual_seed(1)
    x, w, b = torch.randn(*lead, K, generator=gen), torch.randn(N, K, generator=gen), torch.randn(N, generator=gen)
    lw = weights_for(scheme, w, b, x)
    out = k.fn(k.prepare(lw), x)
    assert out.dtype == torch.float32 and out.shape == (*lead, N)
    want, exact = reference_linear(lw, x), torch.nn.functional.linear(x, w, b)
    assert sqnr(want, out) >= VS_REFERENCE_DB
    if scheme_name in VS_FLOAT_DB:
        assert sqnr(exact, out) >= float_floor(scheme_name, sqnr(exact, want))
    assert torch.equal(k.fn(k.prepare(lw), x), out), "two runs differ"


@pytest.mark.parametrize("scheme_name", list(PRESETS))
@given(
    m=st.integers(1, 5),
    k_blocks=st.integers(1, 2),
    n_blocks=st.integers(1, 3),
    magnitude=st.sampled_from([1e-3, 1.0, 1e3]),
    seed=st.integers(0, 2**16),
)
def test_linear_kernels_track_reference(scheme_name: str, m: int, k_blocks: int, n_blocks: int,
                                        magnitude: float, seed: int) -> None:
    scheme = PRESETS[scheme_name]
    K, N = 128 * k_blocks, 16 * n_blocks
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(m, K, generator=gen) * magnitude
    lw = weights_for(scheme, torch.randn(N, K, generator=gen), torch.randn(N, generator=gen), x)
    want = reference_linear(lw, x)
    kernels = [k for k in linear_kernels() if claimed(k, scheme, (m, K, N))]
    assert kernels
    for k in kernels:
        assert sqnr(want, k.fn(k.prepare(lw), x)) >= VS_REFERENCE_DB, k.id


def test_every_preset_has_a_claiming_cpu_kernel() -> None:
    for scheme in PRESETS.values():
        assert any(claimed(k, scheme, (4, 256, 32)) for k in linear_kernels()), scheme.name


@pytest.mark.parametrize("scheme_name", ["w8a8", "w8a8-dynamic", "w8a16"])
def test_int8_linear_does_not_saturate_at_extreme_values(scheme_name: str) -> None:
    """K = 16384 codes of ±127 × 127: any int16 intermediate would saturate; compare with int64."""
    scheme, K, N = PRESETS[scheme_name], 16384, 16
    x = torch.full((2, K), 3.0)
    signs = torch.where(torch.arange(N) % 2 == 0, 1.0, -1.0)
    w = signs[:, None] * torch.full((N, K), 0.5)
    lw = weights_for(scheme, w, None, x)
    codes_w = lw.weight.codes.to(torch.int64)
    if scheme.input_activations is None:
        exact = (x.to(torch.float64) @ (codes_w.to(torch.float64) * lw.weight.scale.to(torch.float64)[:, None]).T)
    else:
        qx = ref("quantize").fn(x, scheme.input_activations, lw.act_scale, lw.act_zero_point)
        acc = (qx.codes.to(torch.int64) - qx.zero_point.to(torch.int64).reshape(-1, 1)) @ codes_w.T
        assert int(acc.abs().max()) == 127 * 127 * K
        exact = acc.to(torch.float64) * qx.scale.to(torch.float64).reshape(-1, 1) * lw.weight.scale.to(torch.float64)
    kernels = [k for k in linear_kernels() if claimed(k, scheme, (2, K, N))]
    assert len(kernels) >= 2, [k.id for k in kernels]
    for k in kernels:
        out = k.fn(k.prepare(lw), x).to(torch.float64)
        rtol = 2.0**-8 if k.name in BF16_OUTPUT else 1e-5
        torch.testing.assert_close(out, exact, rtol=rtol, atol=0, msg=lambda m: f"{k.id}: {m}")


def test_fbgemm_rejected_without_vnni_and_claimed_with_it() -> None:
    k, hw = ours("fbgemm-qdq"), detect()
    request = KernelRequest("linear", "cpu", scheme=PRESETS["w8a8-dynamic"], shape=(1, 4096, 4096))
    vnni = type(hw)(**{**{f: getattr(hw, f) for f in ("arch", "cpu_model", "cores", "torch_version")},
                       "isa": hw.isa | {"vnni"}})
    assert k.check(request, vnni)
    many = KernelRequest("linear", "cpu", scheme=PRESETS["w8a8-dynamic"], shape=(4, 4096, 4096))
    assert "M == 1" in k.check(many, vnni).reason
    assert k.check(KernelRequest("linear", "cpu", scheme=PRESETS["w8a8"], shape=(4, 4096, 4096)), vnni)
    if not (hw.has("vnni") or hw.has("amx")):
        assert "saturates" in k.check(request, hw).reason


def test_fbgemm_plumbing_is_exact_where_int16_cannot_saturate() -> None:
    """Weight codes within ±63 keep every u8×s8 pair sum below 2^15, so even AVX2 fbgemm is exact."""
    scheme, K, N = PRESETS["w8a8-dynamic"], 64, 8
    gen = torch.Generator().manual_seed(3)
    codes = torch.randint(-63, 64, (N, K), generator=gen, dtype=torch.int8)
    weight = QTensor(codes, torch.rand(N, generator=gen) + 0.1, torch.zeros(N, dtype=torch.int32), scheme.weights)
    lw = LinearWeights(scheme, weight, torch.randn(N, generator=gen))
    x = torch.randn(3, K, generator=gen)
    k = ours("fbgemm-qdq")
    torch.testing.assert_close(k.fn(k.prepare(lw), x), reference_linear(lw, x), rtol=1e-5, atol=1e-5)


def test_int8pack_refuses_k_not_multiple_of_8() -> None:
    request = KernelRequest("linear", "cpu", scheme=PRESETS["w8a16"], shape=(2, 1025, 17))
    support = ours("int8pack").check(request, detect())
    assert not support and "K % 8" in support.reason


def test_odd_sized_linear_matches_reference() -> None:
    gen = torch.Generator().manual_seed(5)
    x, w = torch.randn(3, 1025, generator=gen), torch.randn(17, 1025, generator=gen)
    lw = weights_for(PRESETS["w8a8-dynamic"], w, None, x)
    k = ours("dequant-matmul")
    assert sqnr(reference_linear(lw, x), k.fn(k.prepare(lw), x)) >= VS_REFERENCE_DB


def test_group_weights_need_supported_group_sizes() -> None:
    scheme = QuantScheme("w4g16", QuantSpec("int4", "group", group_size=16))
    support = ours("int4pack").check(KernelRequest("linear", "cpu", scheme=scheme, shape=(1, 256, 32)), detect())
    assert not support and "group_size in" in support.reason


def test_backend_info_names_engines() -> None:
    info = qcore.get_manager().backend(BACKEND)
    assert info.available and "cpu" in info.devices
    assert any(c.startswith("engine:") for c in info.capabilities)
    assert ("cuda" in info.devices) == torch.cuda.is_available()
