"""cpu-native against the contract: its activation codes against the cpu-reference oracle, its linear kernels
against exact integer sums and the reference linear, on every ISA path this CPU can run.

Paths this CPU lacks are skipped with the missing feature named (the kernels then decline with that reason,
which `test_kernels_decline_what_the_cpu_lacks` checks); the conformance kit runs them all.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import attrs
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import qcore
from qcore.commands import conformance as command
from qcore.errors import NonFiniteError, ShapeError, SpecError
from qcore.kernels import KernelImpl, KernelRequest, LinearWeights, QTensor
from qcore.metrics import sqnr
from qcore.spec import PRESETS, QuantScheme, QuantSpec

pytest.importorskip("qcore_cpu_native")

from qcore_cpu_native import isa as isas  # noqa: E402
from qcore_cpu_native import plugin  # noqa: E402
from qcore_cpu_native.library import Unavailable, library  # noqa: E402
from qcore_cpu_native.linear_int8 import activation_codes  # noqa: E402

BACKEND = "cpu-native"
PATHS = {f"int8-{p.name}": p for p in isas.INT8} | {f"weight-only-{p.name}": p for p in isas.FLOAT}
INT8 = [name for name in PATHS if name.startswith("int8")]
WEIGHT_ONLY = [name for name in PATHS if name.startswith("weight-only")]
SYM_TOKEN = QuantSpec("int8", "token", dynamic=True)
ASYM_TOKEN = QuantSpec("int8", "token", symmetric=False, dynamic=True)
ASYM_DYNAMIC = QuantScheme("w8a8-asym-dynamic", QuantSpec("int8", "channel", axis=0), ASYM_TOKEN)
ASYM_STATIC = QuantScheme("w8a8-asym-static", QuantSpec("int8", "channel", axis=0),
                          QuantSpec("int8", "tensor", symmetric=False, observer="minmax"))
W4_SMALL_GROUPS = QuantScheme("w4a16-g16", QuantSpec("int4", "group", group_size=16), None)
W4_ASYM_INT4 = QuantScheme("w4a16-int4-asym", QuantSpec("int4", "group", group_size=32, symmetric=False), None)
W4_CHANNEL = QuantScheme("w4a16-channel", QuantSpec("uint4", "channel", axis=0, symmetric=False), None)


def kernel(name: str) -> KernelImpl:
    return qcore.get_manager().kernels()[f"{BACKEND}/{name}"]


def runnable(name: str) -> KernelImpl:
    """The kernel, or a skip naming what this CPU lacks (the reason its `supports` gives)."""
    reason = isas.unavailable(PATHS[name])
    if reason:
        pytest.skip(reason)
    return kernel(name)


def here(names: list[str]) -> list[str]:
    """The kernels of `names` this CPU can run."""
    return [name for name in names if isas.unavailable(PATHS[name]) is None]


def oracle(op: str) -> KernelImpl:
    return qcore.get_manager().kernels()[f"cpu-reference/{op}"]


def weights(scheme: QuantScheme, w: torch.Tensor, b: torch.Tensor | None, x: torch.Tensor) -> LinearWeights:
    """Weights quantized by the oracle; static activation qparams calibrated (min-max) on `x`."""
    quantize = oracle("quantize").fn
    act = scheme.input_activations
    act_q = quantize(x, act) if act is not None and not act.dynamic else None
    return LinearWeights(scheme, quantize(w, scheme.weights), b,
                         act_scale=None if act_q is None else act_q.scale,
                         act_zero_point=None if act_q is None else act_q.zero_point)


def run(k: KernelImpl, lw: LinearWeights, x: torch.Tensor) -> torch.Tensor:
    return k.fn(k.prepare(lw), x)


def reference(lw: LinearWeights, x: torch.Tensor) -> torch.Tensor:
    ref = oracle("linear")
    return ref.fn(ref.prepare(lw), x)


def exact_int8(lw: LinearWeights, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(exact float64 result from int64 sums of the oracle's codes, the bound sum |products| · scales)."""
    act = lw.scheme.input_activations
    assert act is not None and lw.weight is not None
    qa = oracle("quantize").fn(x, act, lw.act_scale, lw.act_zero_point)
    zp = qa.zero_point.long().reshape(-1, 1) if act.dynamic else qa.zero_point.long()
    a = qa.codes.long() - zp
    w = lw.weight.codes.long()
    scales = (qa.scale.double().reshape(-1, 1) if act.dynamic else qa.scale.double()) * lw.weight.scale.double()
    exact = (a @ w.T).double() * scales + (0 if lw.bias is None else lw.bias.double())
    return exact, (a.abs() @ w.abs().T).double() * scales


def randn(*shape: int, seed: int = 0, scale: float = 1.0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * scale


# -- the backend as qcore sees it ---------------------------------------------------------------------------


def test_backend_is_listed_available_with_its_isa() -> None:
    info = qcore.get_manager().backends()[BACKEND]
    lib = library()
    assert not isinstance(lib, Unavailable), lib
    assert info.available and info.devices == ("cpu",)
    assert "isa:avx2+fma" in info.capabilities


def test_unbuilt_library_makes_the_backend_unavailable_with_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(plugin, "library", lambda: Unavailable("the compiled library is not built"))
    monkeypatch.setattr(isas, "library", lambda: Unavailable("the compiled library is not built"))
    [info] = plugin.qcore_hardware()
    assert not info.available and info.reason == "the compiled library is not built"
    request = KernelRequest("linear", scheme=PRESETS["w8a8-dynamic"], shape=(1, 64, 64))
    assert kernel("int8-avx2").check(request, None).reason == "the compiled library is not built"


def test_a_cpu_without_avx2_makes_the_backend_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    lib = library()
    assert not isinstance(lib, Unavailable)
    old = attrs.evolve(lib, features=0)
    monkeypatch.setattr(plugin, "library", lambda: old)
    monkeypatch.setattr(isas, "library", lambda: old)
    [info] = plugin.qcore_hardware()
    assert not info.available and "lacks avx2+fma" in info.reason
    request = KernelRequest("linear", scheme=PRESETS["w4a16"], shape=(1, 128, 16))
    assert "lacks avx2+fma, avx512f/bw/vl/dq" in kernel("weight-only-avx512").check(request, None).reason


def test_kernels_decline_what_the_cpu_lacks_or_the_cap_leaves_out(monkeypatch: pytest.MonkeyPatch) -> None:
    lib = library()
    assert not isinstance(lib, Unavailable)
    request = KernelRequest("linear", scheme=PRESETS["w8a8-dynamic"], shape=(1, 64, 64))
    for path in isas.INT8:
        support = kernel(f"int8-{path.name}").check(request, None)
        missing = path.needs & ~lib.features
        assert support.ok == (not missing), support
        if missing:
            assert "lacks" in support.reason and isas.features_text(missing)[0] in support.reason
    monkeypatch.setenv(isas.ENV, "avx2")
    assert kernel("int8-avx2").check(request, None).ok
    assert kernel("int8-avx512-vnni").check(request, None).reason == f"{isas.ENV}=avx2 leaves out avx512-vnni"


def test_importing_the_plugin_loads_no_library() -> None:
    code = ("import qcore; m = qcore.get_manager(); m.kernels(); import qcore_cpu_native.library as l; "
            "print(l.library.cache_info().currsize)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "0"


def test_conformance_passes(tmp_path: Path) -> None:
    rc = command.main([BACKEND, "--report", str(tmp_path)])
    results = json.loads((tmp_path / "conformance.json").read_text())["results"]
    failures = [f"{r['kernel']} {r['subject']} {r['rule']}: {r['message']}" for r in results if r["status"] == "fail"]
    assert rc == 0 and not failures, "\n".join(failures)
    for name in PATHS:
        rows = [r for r in results if r["kernel"] == f"{BACKEND}/{name}"]
        reason = isas.unavailable(PATHS[name])
        if reason is None:
            assert any(r["status"] == "pass" for r in rows), name
        else:
            assert {r["status"] for r in rows} == {"unsupported"} and all(reason in r["message"] for r in rows)


@pytest.mark.parametrize(("scheme", "why"), [
    (PRESETS["fp8"], "fp8_e4m3 weights"),
    (QuantScheme("w8a8-u8", QuantSpec("int8", "channel", axis=0), QuantSpec("uint8", "token", symmetric=False,
                                                                            dynamic=True)), "uint8 activations"),
    (QuantScheme("w8a8-g", QuantSpec("int8", "group", group_size=32), SYM_TOKEN), "group32 weight scales"),
    (QuantScheme("w8a8-aw", QuantSpec("int8", "channel", axis=0, symmetric=False), SYM_TOKEN), "asymmetric int8"),
    (QuantScheme("w8a8-dt", QuantSpec("int8", "channel", axis=0), QuantSpec("int8", dynamic=True)),
     "dynamic tensor activation scales"),
])
def test_int8_kernel_declines_with_a_reason(scheme: QuantScheme, why: str) -> None:
    support = kernel("int8-avx2").check(KernelRequest("linear", scheme=scheme, shape=(4, 64, 8)), None)
    assert not support.ok and why in support.reason


def test_weight_only_kernel_declines_with_a_reason() -> None:
    odd = QuantScheme("w4a16-g12", QuantSpec("int4", "group", group_size=12), None)
    assert "whole 32-bit words" in kernel("weight-only-avx2").check(
        KernelRequest("linear", scheme=odd, shape=(1, 48, 8)), None).reason
    assert "quantizes activations" in kernel("weight-only-avx2").check(
        KernelRequest("linear", scheme=PRESETS["w8a8-dynamic"], shape=(1, 48, 8)), None).reason
    assert "int32 sums could overflow" in kernel("int8-avx2").check(
        KernelRequest("linear", scheme=PRESETS["w8a8-dynamic"], shape=(1, 2**17 + 4, 8)), None).reason


# -- activation codes: exactly the oracle's ---------------------------------------------------------------


def assert_codes_equal(x: torch.Tensor, spec: QuantSpec, scale: torch.Tensor | None = None,
                       zero_point: torch.Tensor | None = None) -> None:
    got = activation_codes(x, spec, scale, zero_point)
    want = oracle("quantize").fn(x, spec, scale, zero_point)
    assert torch.equal(got.scale, want.scale.reshape(got.scale.shape)), (got.scale, want.scale)
    assert torch.equal(got.zero_point, want.zero_point.reshape(got.zero_point.shape))
    bad = got.codes != want.codes
    assert not bad.any(), (x[bad], got.codes[bad], want.codes[bad])


FINITE = st.floats(width=32, allow_nan=False, allow_infinity=False, allow_subnormal=True)


def f32(value: float) -> float:
    return float(np.float32(value))


@st.composite
def rows(draw: st.DrawFn) -> np.ndarray:
    """Rows mixing N(0,1)-like values, huge and tiny magnitudes, zeros, repeats and exact half-code ties."""
    m = draw(st.integers(1, 4))
    k = draw(st.integers(1, 45))
    kind = draw(st.sampled_from(["any", "ties", "near-ties", "constant", "zero"]))
    if kind == "zero":
        return np.zeros((m, k), np.float32)
    if kind == "constant":
        return np.full((m, k), draw(FINITE), np.float32)
    if kind == "any":
        return np.array(draw(st.lists(FINITE, min_size=m * k, max_size=m * k)), np.float32).reshape(m, k)
    scale = np.float32(draw(st.floats(f32(1e-3), f32(1e3), width=32)))
    halves = np.array(draw(st.lists(st.integers(-127, 126), min_size=m * k, max_size=m * k)), np.float64) + 0.5
    x = (halves * np.float64(scale)).astype(np.float32)  # an exact tie wherever the product is representable
    if kind == "near-ties":
        x = np.nextafter(x, np.where(draw(st.booleans()), np.inf, -np.inf)).astype(np.float32)
    x = x.reshape(m, k)
    x[:, 0] = np.float32(127.0) * scale  # fixes the per-token scale at `scale` (rounded)
    return x


@given(x=rows(), spec=st.sampled_from([SYM_TOKEN, ASYM_TOKEN]))
def test_dynamic_activation_codes_equal_the_oracle(x: np.ndarray, spec: QuantSpec) -> None:
    assert_codes_equal(torch.from_numpy(x), spec)


@given(x=rows(), scale=st.floats(f32(1.2e-7), f32(1e4), width=32), zp=st.integers(-128, 127), symmetric=st.booleans())
def test_static_activation_codes_equal_the_oracle(x: np.ndarray, scale: float, zp: int, symmetric: bool) -> None:
    spec = QuantSpec("int8", "tensor", symmetric=symmetric)
    assert_codes_equal(torch.from_numpy(x), spec, torch.tensor(scale), torch.tensor(0 if symmetric else zp))


def test_ties_round_half_to_even_and_saturate() -> None:
    x = torch.tensor([[127.0, 0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 126.5, -126.5, 3e38, -3e38, 1e-45]])
    got = activation_codes(x, QuantSpec("int8", "tensor"), torch.tensor(1.0))
    assert got.codes.tolist() == [[127, 0, 2, 2, 0, -2, -2, 126, -126, 127, -127, 0]]
    assert_codes_equal(x, SYM_TOKEN)
    assert_codes_equal(x, ASYM_TOKEN)


def test_float32_quotients_that_land_on_a_tie_round_by_the_exact_quotient() -> None:
    """x / s rounded to float32 is an exact half where the float64 quotient is not: the fix-up decides."""
    found = []
    for s in np.linspace(0.01, 3.0, 97, dtype=np.float32):
        for n in range(-127, 127):
            for direction in (np.inf, -np.inf):
                x = np.nextafter(np.float32((n + 0.5) * np.float64(s)), np.float32(direction))
                if np.float32(x) / s == np.float32(n + 0.5) and np.float64(x) / np.float64(s) != n + 0.5:
                    found.append((x, s))
    assert len(found) > 100
    x = torch.tensor([v for v, _ in found])
    for s in sorted({float(s) for _, s in found})[:20]:
        assert_codes_equal(x[None, :], QuantSpec("int8", "tensor"), torch.tensor(s))


def test_activation_codes_reject_nonfinite_input() -> None:
    x = randn(3, 40)
    x[2, 17] = float("nan")
    with pytest.raises(NonFiniteError, match=r"1 non-finite value\(s\); first at index \(2, 17\)"):
        activation_codes(x, SYM_TOKEN)


# -- int8 GEMMs: exact sums, every ISA bit-identical ------------------------------------------------------


SHAPES = [(1, 1, 1), (1, 4, 16), (3, 5, 17), (5, 13, 33), (9, 64, 31), (17, 100, 48), (2, 7, 1), (65, 36, 40)]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("scheme", [PRESETS["w8a8-dynamic"], PRESETS["w8a8"], ASYM_DYNAMIC, ASYM_STATIC],
                         ids=lambda s: s.name)
def test_int8_paths_are_exact_and_agree_bit_for_bit(scheme: QuantScheme, shape: tuple[int, int, int]) -> None:
    m, k, n = shape
    x, w, b = randn(m, k, seed=1, scale=3.0), randn(n, k, seed=2), randn(n, seed=3)
    lw = weights(scheme, w, b, x)
    exact, bound = exact_int8(lw, x)
    outs = {name: run(kernel(name), lw, x) for name in here(INT8)}
    first = next(iter(outs.values()))
    for name, y in outs.items():
        assert y.dtype == torch.float32 and y.shape == (m, n)
        err = (y.double() - exact).abs()
        assert bool((err <= 2**-21 * (bound + exact.abs())).all()), (name, float(err.max()))
        assert torch.equal(y, first), name


@pytest.mark.parametrize("name", INT8)
def test_int8_sums_at_extreme_codes_for_k_65536(name: str) -> None:
    k = 65536
    ker = runnable(name)
    ones = torch.ones(k)
    alternating = 1.0 - 2.0 * (torch.arange(k) % 2).float()
    x = torch.stack([ones, -ones, alternating])
    w = torch.stack([ones, -ones, alternating, -alternating])
    for scheme in (PRESETS["w8a8-dynamic"], ASYM_DYNAMIC):
        lw = weights(scheme, w, None, x)
        exact, _ = exact_int8(lw, x)
        y = run(ker, lw, x)
        assert torch.equal(y, exact.float()), (name, scheme.name, y, exact)


@pytest.mark.parametrize("name", INT8)
def test_int8_edge_rows(name: str) -> None:
    ker = runnable(name)
    w, b = randn(24, 40, seed=4), randn(24, seed=5)
    lw = weights(PRESETS["w8a8-dynamic"], w, b, randn(2, 40))
    x = torch.stack([torch.zeros(40), torch.full((40,), 2.5), randn(40, seed=6)])
    y = run(ker, lw, x)
    assert torch.equal(y[0], b)  # a zero row has codes 0: only the bias is left, exactly
    exact, _ = exact_int8(lw, x)
    assert torch.allclose(y.double(), exact, rtol=1e-6, atol=1e-6)
    assert run(ker, lw, torch.zeros(0, 40)).shape == (0, 24)
    y3 = run(ker, lw, x.reshape(3, 1, 40).expand(3, 2, 40))
    assert y3.shape == (3, 2, 24) and torch.equal(y3[:, 1], y)
    with pytest.raises(ShapeError):
        run(ker, lw, torch.zeros(3, 41))
    x[1, 3] = float("inf")
    with pytest.raises(NonFiniteError, match=r"first at index \(1, 3\)"):
        run(ker, lw, x)


def test_int8_prepare_rejects_codes_outside_the_symmetric_range() -> None:
    lw = weights(PRESETS["w8a8-dynamic"], randn(4, 8), None, randn(1, 8))
    assert lw.weight is not None
    codes = lw.weight.codes.clone()
    codes[1, 2] = -128
    bad = LinearWeights(lw.scheme, QTensor(codes, lw.weight.scale, lw.weight.zero_point, lw.weight.spec))
    with pytest.raises(SpecError, match="-128"):
        kernel("int8-avx2").prepare(bad)


@given(m=st.integers(1, 20), k=st.integers(1, 80), n=st.integers(1, 40), seed=st.integers(0, 2**16),
       scheme=st.sampled_from([PRESETS["w8a8-dynamic"], ASYM_DYNAMIC]))
def test_int8_matches_exact_sums_on_random_shapes(m: int, k: int, n: int, seed: int, scheme: QuantScheme) -> None:
    x, w = randn(m, k, seed=seed, scale=10.0), randn(n, k, seed=seed + 1)
    lw = weights(scheme, w, None, x)
    exact, bound = exact_int8(lw, x)
    for name in here(INT8):
        err = (run(kernel(name), lw, x).double() - exact).abs()
        assert bool((err <= 2**-21 * (bound + exact.abs())).all()), name


# -- weight-only ------------------------------------------------------------------------------------------


WO_SCHEMES = [PRESETS["w8a16"], PRESETS["w4a16"], PRESETS["w4a16-asym"], W4_SMALL_GROUPS, W4_ASYM_INT4, W4_CHANNEL]
WO_SHAPES = [(1, 128, 16), (3, 256, 17), (5, 384, 33), (9, 128, 1), (17, 512, 40)]


@pytest.mark.parametrize("name", WEIGHT_ONLY)
@pytest.mark.parametrize("shape", WO_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("scheme", WO_SCHEMES, ids=lambda s: s.name)
def test_weight_only_matches_the_reference(name: str, scheme: QuantScheme, shape: tuple[int, int, int]) -> None:
    ker = runnable(name)
    m, k, n = shape
    x, w, b = randn(m, k, seed=7), randn(n, k, seed=8), randn(n, seed=9)
    lw = weights(scheme, w, b, x)
    want = reference(lw, x)
    got = run(ker, lw, x)
    assert got.dtype == torch.float32 and got.shape == (m, n)
    # float32 sums: each output within K ulps of sum |x · w|
    bound = (x.double().abs() @ oracle("dequantize").fn(lw.weight).double().abs().T) * k * 2**-24 + 1e-30
    assert bool(((got.double() - want.double()).abs() <= bound + b.double().abs() * 2**-23).all())
    assert sqnr(want, got) > 100


@pytest.mark.parametrize("name", WEIGHT_ONLY)
def test_weight_only_edge_cases(name: str) -> None:
    ker = runnable(name)
    k = 13  # per-channel int4: K not a multiple of the 8 codes of a word
    x, w, b = randn(4, k, seed=10), randn(6, k, seed=11), randn(6, seed=12)
    lw = weights(W4_CHANNEL, w, b, x)
    assert torch.allclose(run(ker, lw, x), reference(lw, x), rtol=1e-5, atol=1e-5)
    for scheme in (PRESETS["w4a16"], PRESETS["w8a16"]):
        zero = weights(scheme, torch.zeros(24, 256), b.repeat(4), x.repeat(1, 20)[:, :256])
        assert torch.equal(run(ker, zero, randn(3, 256)), b.repeat(4).expand(3, 24))  # zero codes: exactly the bias
        lw = weights(scheme, randn(24, 256, seed=13), None, randn(2, 256))
        x = randn(2, 256, seed=14)
        x[0, 200] = float("-inf")
        with pytest.raises(NonFiniteError, match=r"first at index \(0, 200\)"):
            run(ker, lw, x)
        assert run(ker, lw, torch.zeros(0, 256)).shape == (0, 24)


@given(m=st.integers(1, 12), groups=st.integers(1, 4), g=st.sampled_from([8, 16, 64, 128]), n=st.integers(1, 40),
       seed=st.integers(0, 2**16), dtype=st.sampled_from(["int4", "uint4"]), symmetric=st.booleans(),
       magnitude=st.sampled_from([1e-3, 1.0, 1e4]))
def test_weight_only_groups_on_random_shapes(m: int, groups: int, g: int, n: int, seed: int, dtype: str,
                                             symmetric: bool, magnitude: float) -> None:
    if dtype == "uint4" and symmetric:
        symmetric = False
    scheme = QuantScheme("w4", QuantSpec(dtype, "group", group_size=g, symmetric=symmetric), None)
    x, w = randn(m, groups * g, seed=seed, scale=magnitude), randn(n, groups * g, seed=seed + 1)
    lw = weights(scheme, w, None, x)
    want = reference(lw, x)
    for name in here(WEIGHT_ONLY):
        assert sqnr(want, run(kernel(name), lw, x)) > 100, name


# -- threads ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", INT8 + WEIGHT_ONLY)
def test_results_do_not_depend_on_the_thread_count(name: str) -> None:
    ker = runnable(name)
    scheme = PRESETS["w8a8-dynamic"] if name.startswith("int8") else PRESETS["w4a16"]
    x, w = randn(70, 256, seed=15), randn(200, 256, seed=16)
    p = ker.prepare(weights(scheme, w, randn(200), x))
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = ker.fn(p, x)
        torch.set_num_threads(max(2, before))
        assert torch.equal(ker.fn(p, x), one)
    finally:
        torch.set_num_threads(before)


def test_k_limit_is_what_int32_can_hold() -> None:
    from qcore_cpu_native.claims import K_LIMIT

    assert 128 * 127 * K_LIMIT < 2**31 and K_LIMIT >= 65536  # every sum fits; the contract asks 65536
