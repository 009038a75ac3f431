"""triton-gpu: registration, support checks, and every kernel under the Triton interpreter vs cpu-reference.

Triton reads TRITON_INTERPRET when a kernel is decorated, i.e. when
`qcore_triton_gpu.quant_kernels` / `linear_kernels` are imported. The `tg`
fixture sets the variable, imports those modules fresh, and on teardown
restores the environment and forgets the interpreted modules, so nothing else
in the same pytest process sees interpreted kernels or the variable.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import subprocess
import sys
import types
import zlib
from collections.abc import Callable, Iterator

import attrs
import numpy as np
import pytest
import torch
import triton
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import qcore
from qcore_triton_gpu.support import FP8_WITHHELD
from qcore.hardware import CudaDevice, detect
from qcore.kernels import KernelRequest, LinearWeights
from qcore.matcher import Matcher
from qcore.metrics import sqnr
from qcore.spec import PRESETS, QuantSpec

BACKEND = "triton-gpu"
KERNEL_MODULES = ("qcore_triton_gpu.quant_kernels", "qcore_triton_gpu.linear_kernels", "qcore_triton_gpu.gemv_kernels",
                  "qcore_triton_gpu.quantize", "qcore_triton_gpu.linear")
NO_CUDA = "no CUDA device (torch.cuda.is_available() is False)"


def _forget_kernel_modules() -> None:
    for name in KERNEL_MODULES:
        sys.modules.pop(name, None)


@contextlib.contextmanager
def _kernel_modules(interpret: bool) -> Iterator[Callable[[str], types.ModuleType]]:
    """Import the kernel modules afresh with TRITON_INTERPRET set or unset (triton.jit reads it at decoration)."""
    previous = os.environ.pop("TRITON_INTERPRET", None)
    if interpret:
        os.environ["TRITON_INTERPRET"] = "1"
    _forget_kernel_modules()
    try:
        yield lambda name: importlib.import_module(f"qcore_triton_gpu.{name}")
    finally:
        os.environ.pop("TRITON_INTERPRET", None)
        if previous is not None:
            os.environ["TRITON_INTERPRET"] = previous
        _forget_kernel_modules()


@pytest.fixture(scope="module")
def tg() -> Iterator[types.SimpleNamespace]:
    """The launchers (`quantize`, `linear` modules) with interpreted kernels, for CPU tensors."""
    with _kernel_modules(interpret=True) as load:
        yield types.SimpleNamespace(quantize=load("quantize"), linear=load("linear"))


def kernel(kernel_id: str) -> qcore.KernelImpl:
    return qcore.get_manager().kernels()[kernel_id]


def ref(op: str) -> qcore.KernelImpl:
    return kernel(f"cpu-reference/{op}")


def gpu_hardware(capability: tuple[int, int] = (9, 0)) -> qcore.HardwareProfile:
    return attrs.evolve(detect(), cuda=(CudaDevice(0, "fake GPU", capability, 80 << 30),))


def assert_same_qtensor(ours: qcore.QTensor, theirs: qcore.QTensor) -> None:
    assert ours.codes.dtype == theirs.codes.dtype
    assert ours.codes.shape == theirs.codes.shape
    if ours.codes.is_floating_point():  # fp8: compare the bit patterns
        assert torch.equal(ours.codes.view(torch.uint8), theirs.codes.view(torch.uint8))
    else:
        assert torch.equal(ours.codes, theirs.codes), (ours.codes != theirs.codes).nonzero()[:5]
    assert ours.scale.dtype == torch.float32 and ours.zero_point.dtype == torch.int32
    assert torch.equal(ours.scale, theirs.scale.reshape(ours.scale.shape))
    assert ours.scale.shape == theirs.scale.shape
    assert torch.equal(ours.zero_point, theirs.zero_point)


# ---------------------------------------------------------------- registration and support (no triton needed)


def test_listed_unavailable_without_cuda() -> None:
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    info = qcore.get_manager().backends()[BACKEND]
    assert not info.available
    assert info.reason == NO_CUDA
    assert info.provider is not None and info.provider.distribution == "qcore-triton-gpu"


def test_every_kernel_is_cuda_only() -> None:
    kernels = [k for k in qcore.get_manager().kernels().values() if k.backend == BACKEND]
    assert {k.op for k in kernels} == set(qcore.OPS)
    assert all(k.devices == ("cuda",) for k in kernels)


def test_plugin_import_does_not_import_triton() -> None:
    code = ("import sys, qcore, qcore_triton_gpu.plugin as p; list(p.qcore_kernels()); "
            "print('triton' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_matcher_never_picks_triton_for_cpu() -> None:
    matcher = Matcher(measure=False)
    for name in ("w8a8-dynamic", "w8a16", "w4a16", "w4a16-asym"):
        selection = matcher.select(KernelRequest("linear", "cpu", scheme=PRESETS[name], shape=(1, 256, 32)))
        assert selection.chosen.backend != BACKEND
    selection = matcher.select(KernelRequest("quantize", "cpu", spec=QuantSpec("int8")))
    assert selection.chosen.backend != BACKEND


def test_unavailable_backend_is_rejected_with_its_reason_on_cuda_requests() -> None:
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    matcher = Matcher(measure=False, hardware=gpu_hardware())
    ok, rejected = matcher.candidates(KernelRequest("linear", "cuda", scheme=PRESETS["w4a16"], shape=(1, 256, 32)))
    assert not [c for c in ok if c.kernel.backend == BACKEND]
    reasons = {c.support.reason for c in rejected if c.kernel.backend == BACKEND}
    assert reasons == {f"backend unavailable: {NO_CUDA}"}


@pytest.mark.parametrize(
    ("kernel_id", "request_", "capability", "reason"),
    [
        ("linear-weight-only", KernelRequest("linear", "cuda", scheme=PRESETS["w4a16"], shape=(1, 4096, 11008)),
         (9, 0), ""),
        ("linear-weight-only", KernelRequest("linear", "cuda", scheme=PRESETS["w4a16"], shape=(1, 100, 64)),
         (9, 0), "group_size 128 does not divide in_features 100"),
        ("linear-weight-only", KernelRequest("linear", "cuda", scheme=PRESETS["w8a16"], shape=(1, 100, 64)),
         (7, 5), "tf32 tl.dot needs compute capability sm_80+, this GPU is sm_75"),
        ("linear-weight-only", KernelRequest("linear", "cuda", scheme=PRESETS["w8a8-dynamic"]), (9, 0),
         "not a weight-only scheme"),
        ("linear-weight-only", KernelRequest("linear", "cuda", scheme=PRESETS["ternary"]), (9, 0),
         "weight dtype ternary is not fused (supported: int8, uint8, int4, uint4)"),
        ("linear-weight-only", KernelRequest("linear", "cuda", scheme=qcore.QuantScheme(
            "w4g16", QuantSpec("int4", "group", group_size=16))), (9, 0),
         "group_size 16 is not a multiple of 32 (the dequantization tile)"),
        ("linear-w8a8", KernelRequest("linear", "cuda", scheme=PRESETS["w8a8-dynamic"], shape=(7, 100, 9)),
         (8, 0), ""),
        ("linear-w8a8", KernelRequest("linear", "cuda", scheme=PRESETS["w8a8"]), (8, 6), ""),
        ("linear-w8a8", KernelRequest("linear", "cuda", scheme=PRESETS["w8a8-dynamic"]), (7, 5),
         "int8 tl.dot needs compute capability sm_80+, this GPU is sm_75"),
        ("linear-w8a8", KernelRequest("linear", "cuda", scheme=PRESETS["fp8"]), (9, 0),
         "weights must be int8 symmetric per output channel, not fp8_e4m3 channel(axis=0) sym static"),
        ("linear-w8a8", KernelRequest("linear", "cpu", scheme=PRESETS["w8a8-dynamic"]), (9, 0),
         "runs on cuda, not cpu"),
        ("quantize", KernelRequest("quantize", "cuda", spec=QuantSpec("fp8_e4m3")), (8, 9), FP8_WITHHELD),
        ("quantize", KernelRequest("quantize", "cuda", spec=QuantSpec("fp8_e4m3")), (8, 0),
         "fp8_e4m3 needs compute capability sm_89+, this GPU is sm_80"),
        ("quantize", KernelRequest("quantize", "cuda", spec=QuantSpec("fp16")), (9, 0),
         "fp16 is not a triton-gpu format (supported: int8, uint8, int4, uint4, ternary, binary, fp8_e4m3, "
         "fp8_e5m2)"),
        ("quantize", KernelRequest("quantize", "cuda", spec=QuantSpec("int4", "group", group_size=32),
                                   shape=(4, 48)), (9, 0), "group_size 32 does not divide the last dimension 48"),
        ("dequantize", KernelRequest("dequantize", "cuda", spec=QuantSpec("int8", "channel", axis=2),
                                     shape=(4, 48)), (9, 0), "channel axis 2 is out of range for a 2-d tensor"),
        ("pack-int4", KernelRequest("pack_weight", "cuda", spec=QuantSpec("ternary")), (9, 0),
         "triton-gpu packs only 4-bit codes (int4, uint4), not ternary"),
    ],
)
def test_supports_says_precisely_why(kernel_id: str, request_: KernelRequest, capability: tuple[int, int],
                                     reason: str) -> None:
    support = kernel(f"{BACKEND}/{kernel_id}").check(request_, gpu_hardware(capability))
    assert support.ok == (reason == "")
    assert support.reason == reason


def test_supports_without_any_gpu() -> None:
    request = KernelRequest("quantize", "cuda", spec=QuantSpec("int8"))
    support = kernel(f"{BACKEND}/quantize").check(request, attrs.evolve(detect(), cuda=()))
    assert support.reason == "no CUDA device detected"


# ---------------------------------------------------------------- quantize / dequantize under the interpreter

SPECS = [
    QuantSpec("int8"),
    QuantSpec("int8", symmetric=False),
    QuantSpec("uint8", symmetric=False),
    QuantSpec("int8", "channel", axis=0),
    QuantSpec("uint8", "channel", axis=-1, symmetric=False),
    QuantSpec("int4", "channel", axis=1),
    QuantSpec("int8", "token", dynamic=True),
    QuantSpec("uint4", "token", dynamic=True, symmetric=False),
    QuantSpec("int4", "group", group_size=4),
    QuantSpec("uint4", "group", group_size=4, symmetric=False),
    QuantSpec("int8", "group", group_size=12, symmetric=False),
    QuantSpec("ternary", "channel", axis=0),
    QuantSpec("binary", "channel", axis=0),
    QuantSpec("binary", "group", group_size=4),
    QuantSpec("fp8_e4m3"),
    QuantSpec("fp8_e4m3", "token", dynamic=True),
    QuantSpec("fp8_e5m2", "channel", axis=0),
]

SHAPES = [(12,), (3, 12), (5, 7, 12), (1, 36)]


def _data(kind: str, shape: tuple[int, ...]) -> torch.Tensor:
    gen = torch.Generator().manual_seed(zlib.crc32(repr((kind, shape)).encode()))  # str hash() varies per run
    if kind == "normal":
        return torch.randn(shape, generator=gen)
    if kind == "zeros":
        return torch.zeros(shape)
    if kind == "constant":
        return torch.full(shape, -0.75)
    if kind == "wide":  # outliers, tiny values and exact zeros together
        x = torch.randn(shape, generator=gen) * torch.logspace(-6, 4, shape[-1])
        return x * (torch.rand(shape, generator=gen) > 0.2)
    raise ValueError(kind)


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.describe().replace(" ", "-"))
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("kind", ["normal", "zeros", "constant", "wide"])
def test_quantize_and_dequantize_equal_reference(tg: types.SimpleNamespace, spec: QuantSpec,
                                                 shape: tuple[int, ...], kind: str) -> None:
    x = _data(kind, shape)
    try:
        theirs = ref("quantize").fn(x, spec)
    except qcore.ShapeError:  # e.g. channel axis 1 of a 1-d tensor: both must refuse
        with pytest.raises(qcore.ShapeError):
            tg.quantize.quantize(x, spec)
        return
    ours = tg.quantize.quantize(x, spec)
    assert_same_qtensor(ours, theirs)
    assert torch.equal(tg.quantize.dequantize(ours), ref("dequantize").fn(theirs))


@pytest.mark.parametrize("spec", [QuantSpec("int8"), QuantSpec("uint8", symmetric=False), QuantSpec("int4"),
                                  QuantSpec("uint4", symmetric=False)], ids=lambda s: s.describe())
def test_ties_round_half_to_even(tg: types.SimpleNamespace, spec: QuantSpec) -> None:
    x = torch.arange(-8.5, 9.0, 0.5) * 0.25  # with scale 0.25 every other quotient is an exact tie
    scale = torch.tensor(0.25)
    zp = torch.tensor(0 if spec.symmetric else 3, dtype=torch.int32)
    ours = tg.quantize.quantize(x, spec, scale, zp)
    assert_same_qtensor(ours, ref("quantize").fn(x, spec, scale, zp))
    qmin, qmax = spec.qrange
    expected = torch.clamp(torch.round(x / 0.25) + zp, qmin, qmax)
    assert torch.equal(ours.codes.to(torch.float32), expected)


def test_static_qparams_saturate_exactly(tg: types.SimpleNamespace) -> None:
    spec = QuantSpec("int8", "channel", axis=0)
    x = torch.tensor([[3.0e38, -3.0e38, 1.0, -1.0], [1e-30, -1e-30, 0.0, 200.0]])
    scale = torch.tensor([1e-3, 1.0])
    ours = tg.quantize.quantize(x, spec, scale)
    assert_same_qtensor(ours, ref("quantize").fn(x, spec, scale))
    assert ours.codes.tolist() == [[127, -127, 127, -127], [0, 0, 0, 127]]  # never -128 when symmetric


def test_fp8_ties_and_saturation(tg: types.SimpleNamespace) -> None:
    spec = QuantSpec("fp8_e4m3")
    # 1 + k/16 lies halfway between e4m3 neighbours (spacing 1/8) for odd k; 1e6 saturates to 448.
    x = torch.tensor([1 + 1 / 16, 1 + 3 / 16, -(1 + 5 / 16), 2**-10, 1e6, -1e6, 0.0, 447.0])
    ours = tg.quantize.quantize(x, spec, torch.tensor(1.0))
    assert_same_qtensor(ours, ref("quantize").fn(x, spec, torch.tensor(1.0)))
    assert ours.codes.float()[:3].tolist() == [1.0, 1.25, -1.25]
    assert ours.codes.float()[4:6].tolist() == [448.0, -448.0]


@pytest.mark.parametrize("dtype", ["fp8_e4m3", "fp8_e5m2"])
def test_fp8_every_value_and_every_midpoint(tg: types.SimpleNamespace, dtype: str) -> None:
    """All finite codes, the midpoints between neighbours (ties) and the floats just either side of them."""
    spec = QuantSpec(dtype)
    grid = torch.arange(256, dtype=torch.uint8).view(getattr(torch, spec.info.torch_dtype)).float()
    grid = grid[torch.isfinite(grid) & (grid >= 0)].unique()
    mid = (grid[:-1] + grid[1:]) / 2
    near = torch.cat([mid, torch.nextafter(mid, grid[1:]), torch.nextafter(mid, grid[:-1]), grid, grid[-1:] * 1.5])
    x = torch.cat([near, -near])
    ours = tg.quantize.quantize(x, spec, torch.tensor(1.0))
    assert_same_qtensor(ours, ref("quantize").fn(x, spec, torch.tensor(1.0)))
    assert torch.equal(ours.codes.float()[: len(mid)], mid.to(ours.codes.dtype).float())


def test_non_finite_is_an_error_before_launch(tg: types.SimpleNamespace) -> None:
    x = torch.zeros(2, 8)
    x[1, 3] = float("nan")
    x[1, 5] = float("inf")
    with pytest.raises(qcore.NonFiniteError, match=r"2 non-finite value\(s\); first at index \(1, 3\)"):
        tg.quantize.quantize(x, QuantSpec("int8"))


def test_shape_errors(tg: types.SimpleNamespace) -> None:
    with pytest.raises(qcore.ShapeError, match="group_size 5 does not divide the last dimension 12"):
        tg.quantize.quantize(torch.zeros(2, 12), QuantSpec("int4", "group", group_size=5))
    with pytest.raises(qcore.ShapeError, match=r"scale has shape \(3,\).*needs \(2,\)"):
        tg.quantize.quantize(torch.zeros(2, 12), QuantSpec("int8", "channel"), torch.ones(3))


def test_empty_tensor(tg: types.SimpleNamespace) -> None:
    q = tg.quantize.quantize(torch.zeros(0, 8), QuantSpec("int8", "token", dynamic=True))
    assert q.codes.shape == (0, 8) and q.scale.shape == (0,)
    assert tg.quantize.dequantize(q).shape == (0, 8)


@pytest.mark.parametrize("spec", [QuantSpec("int4", "group", group_size=4),
                                  QuantSpec("uint4", "channel", symmetric=False)], ids=lambda s: s.describe())
@pytest.mark.parametrize("shape", [(3, 12), (2, 3, 7), (5,)], ids=str)
def test_pack_unpack_equal_reference(tg: types.SimpleNamespace, spec: QuantSpec, shape: tuple[int, ...]) -> None:
    if spec.granularity == "group" and shape[-1] % 4:
        spec = attrs.evolve(spec, granularity="channel", group_size=None)
    q = ref("quantize").fn(torch.randn(shape), spec)
    ours = tg.quantize.pack_weight(q)
    theirs = ref("pack_weight").fn(q)
    assert ours.data.dtype == torch.uint8 and tuple(ours.shape) == tuple(theirs.shape)
    assert torch.equal(ours.data, theirs.data.reshape(ours.data.shape))
    assert torch.equal(tg.quantize.unpack_weight(ours).codes, q.codes)


# ---------------------------------------------------------------- linear under the interpreter

LINEAR_SCHEMES = ("w8a8-dynamic", "w8a8", "w8a16", "w4a16", "w4a16-asym")


def _layer(name: str, m: int, k: int, n: int, seed: int, bias: bool = True
           ) -> tuple[LinearWeights, torch.Tensor, torch.Tensor]:
    """(LinearWeights quantized by cpu-reference, input x, float output x @ W.T + b) on N(0,1) data."""
    gen = torch.Generator().manual_seed(seed)
    scheme = PRESETS[name]
    x = torch.randn(m, k, generator=gen)
    w = torch.randn(n, k, generator=gen)
    b = torch.randn(n, generator=gen) if bias else None
    act_scale = act_zp = None
    if scheme.needs_calibration:
        calibrated = ref("quantize").fn(x, scheme.input_activations)
        act_scale, act_zp = calibrated.scale, calibrated.zero_point
    lw = LinearWeights(scheme, ref("quantize").fn(w, scheme.weights), b, act_scale, act_zp)
    return lw, x, x @ w.T + (b if b is not None else 0)


def _run(tg: types.SimpleNamespace, lw: LinearWeights, x: torch.Tensor) -> torch.Tensor:
    if lw.scheme.weight_only:
        return tg.linear.weight_only_linear(tg.linear.prepare_weight_only(lw), x)
    return tg.linear.w8a8_linear(tg.linear.prepare_w8a8(lw), x)


def _reference(lw: LinearWeights, x: torch.Tensor) -> torch.Tensor:
    return ref("linear").fn(ref("linear").prepare(lw), x)


@pytest.mark.parametrize("name", LINEAR_SCHEMES)
@pytest.mark.parametrize(("m", "k", "n"), [(1, 256, 32), (3, 256, 48), (3, 128, 32), (17, 384, 48)],
                         ids=lambda v: str(v))
def test_linear_matches_reference(tg: types.SimpleNamespace, name: str, m: int, k: int, n: int) -> None:
    lw, x, _ = _layer(name, m, k, n, seed=m * k + n, bias=m != 3)
    ours = _run(tg, lw, x)
    theirs = _reference(lw, x)
    assert ours.dtype == torch.float32 and ours.shape == (m, n)
    assert sqnr(theirs, ours) >= 50.0


@pytest.mark.parametrize("splits", [1, 2, 4])
def test_dot_split_k_partials_sum_to_the_same_result(tg: types.SimpleNamespace, splits: int) -> None:
    lw, x, _ = _layer("w4a16", 9, 512, 32, seed=7)
    ours = tg.linear.dot(tg.linear.prepare_weight_only(lw), x, splits=splits)
    assert sqnr(_reference(lw, x), ours) >= 50.0


def _scheme(name: str, group_size: int | None) -> qcore.QuantScheme:
    """A preset with another weight group size (None: per output channel)."""
    w = PRESETS[name].weights
    assert w is not None
    w = attrs.evolve(w, granularity="group", group_size=group_size) if group_size else \
        attrs.evolve(w, granularity="channel", group_size=None, axis=0)
    return attrs.evolve(PRESETS[name], name=f"{name}-g{group_size}", weights=w)


GEMV_CASES = [("w4a16", 128, 1024), ("w4a16-asym", 32, 1024), ("w8a16", None, 1024), ("w4a16-asym", None, 1280),
              ("w8a16", 64, 1280)]


@pytest.mark.parametrize("index", range(len(GEMV_CASES)))
def test_gemv_every_config_matches_reference(tg: types.SimpleNamespace, index: int) -> None:
    """Every autotune config that fits (tiles of one group or many, K tails, split-K with its counters)."""
    gk = importlib.import_module("qcore_triton_gpu.gemv_kernels")
    name, group, k = GEMV_CASES[index]
    gen = torch.Generator().manual_seed(index)
    scheme = _scheme(name, group)
    w, x, b = torch.randn(40, k, generator=gen), torch.randn(3, k, generator=gen), torch.randn(40, generator=gen)
    lw = LinearWeights(scheme, ref("quantize").fn(w, scheme.weights), b)
    p = tg.linear.prepare_weight_only(lw)
    theirs = _reference(lw, x)
    args = {"GROUP": p.group, "n_groups": p.n_groups, "K": k}
    fitting = [c for c in gk.CONFIGS if gk._fits(c, args)]
    assert len(fitting) >= 4
    for config in fitting:
        ours = tg.linear.gemv(p, x, config)
        assert sqnr(theirs, ours) >= 50.0, config
        assert not p.locks.any(), f"{config}: split-K counters were not reset"


@pytest.mark.parametrize(("name", "group", "k"), [("w4a16", None, 33), ("w8a16", None, 64), ("w4a16-asym", 96, 384),
                                                 ("w4a16", 32, 32)], ids=str)
def test_gemv_takes_short_k_and_groups_that_are_not_powers_of_two(tg: types.SimpleNamespace, name: str,
                                                                   group: int | None, k: int) -> None:
    gen = torch.Generator().manual_seed(k)
    scheme = _scheme(name, group)
    w, x, b = torch.randn(24, k, generator=gen), torch.randn(2, k, generator=gen), torch.randn(24, generator=gen)
    lw = LinearWeights(scheme, ref("quantize").fn(w, scheme.weights), b)
    assert sqnr(_reference(lw, x), _run(tg, lw, x)) >= 50.0


def test_weight_only_with_no_input_features_is_the_bias(tg: types.SimpleNamespace) -> None:
    scheme = _scheme("w8a16", None)
    lw = LinearWeights(scheme, ref("quantize").fn(torch.zeros(8, 0), scheme.weights), torch.arange(8.0))
    assert torch.equal(_run(tg, lw, torch.zeros(3, 0)), torch.arange(8.0).expand(3, 8))


def test_gemv_takes_few_rows_only(tg: types.SimpleNamespace) -> None:
    lw, x, _ = _layer("w4a16", 5, 128, 32, seed=1)
    with pytest.raises(qcore.ShapeError, match="at most 4 rows, got 5"):
        tg.linear.gemv(tg.linear.prepare_weight_only(lw), x)


@pytest.mark.parametrize("name", ["w8a8-dynamic", "w8a8"])
def test_activation_codes_and_scales_equal_reference(tg: types.SimpleNamespace, name: str) -> None:
    """The row quantizer of w8a8: all-zero and constant rows, ties, a huge value beside tiny ones."""
    lw, x, _ = _layer(name, 6, 96, 16, seed=5)
    x[0] = 0.0
    x[1] = -2.5
    x[2, :8] = torch.tensor([0.5, 1.5, 2.5, -0.5, -1.5, 127.0, 63.5, -63.5])
    x[3, 0], x[3, 1:] = 60000.0, 1e-6
    p = tg.linear.prepare_w8a8(lw)
    spec = lw.scheme.input_activations
    for fed, exact in ((x, x), (x.half(), x.half().float())):  # half inputs are read as they are
        codes, scale = tg.linear.quantize_rows(p, fed)
        theirs = ref("quantize").fn(exact, spec, lw.act_scale)
        assert torch.equal(codes.long(), theirs.codes.long())
        assert torch.equal(scale.reshape(theirs.scale.shape), theirs.scale)


def test_linear_keeps_leading_dims_and_half_inputs(tg: types.SimpleNamespace) -> None:
    lw, x, _ = _layer("w4a16", 6, 128, 32, seed=3)
    x3 = x.reshape(2, 3, 128).half()
    ours = _run(tg, lw, x3)
    theirs = _reference(lw, x3.float())
    assert ours.shape == (2, 3, 32) and sqnr(theirs, ours) >= 50.0


def test_linear_is_deterministic(tg: types.SimpleNamespace) -> None:
    for name in ("w8a8-dynamic", "w4a16"):
        lw, x, _ = _layer(name, 2, 256, 32, seed=11)
        assert torch.equal(_run(tg, lw, x), _run(tg, lw, x))


# SQNR of the scheme itself vs the float layer, at sizes where the contract's N(0,1) calibration holds.
FLOAT_THRESHOLDS = {"w8a8-dynamic": 38.0, "w8a8": 38.0, "w8a16": 43.0, "w4a16": 18.0, "w4a16-asym": 19.0}


@pytest.mark.parametrize("name", LINEAR_SCHEMES)
def test_linear_meets_contract_thresholds_vs_float(tg: types.SimpleNamespace, name: str) -> None:
    lw, x, expected = _layer(name, 16, 128, 64, seed=2024)
    assert sqnr(expected, _run(tg, lw, x)) >= FLOAT_THRESHOLDS[name]


def test_w8a8_rejects_non_finite_activations(tg: types.SimpleNamespace) -> None:
    lw, x, _ = _layer("w8a8-dynamic", 2, 64, 32, seed=1)
    x[1, 2] = float("inf")
    with pytest.raises(qcore.NonFiniteError, match="linear input has 1 non-finite"):
        _run(tg, lw, x)


def test_linear_input_shape_error(tg: types.SimpleNamespace) -> None:
    lw, _, _ = _layer("w8a16", 1, 64, 32, seed=1)
    with pytest.raises(qcore.ShapeError, match=r"linear expects input of shape \(\.\.\., 64\), got \(2, 63\)"):
        _run(tg, lw, torch.zeros(2, 63))


def test_split_k_heuristic_is_a_power_of_two_within_k(tg: types.SimpleNamespace) -> None:
    split_k, span, cpu = tg.linear.split_k, tg.linear.MIN_SPLIT_SPAN, torch.device("cpu")
    assert split_k(1, 32, 64, cpu) == 1
    assert split_k(128, 32, 4096, cpu) == 1
    assert split_k(1, 32, 4096, cpu) > 1
    for k in (128, 256, 1024, 4096):
        s = split_k(1, 32, k, cpu)
        assert s >= 1 and s & (s - 1) == 0 and k // s >= span


@st.composite
def activation_rows(draw: st.DrawFn) -> torch.Tensor:
    """(M, K) activations of odd sizes, varied magnitudes, with zero rows, constant rows and exact ties mixed in."""
    m, k = draw(st.integers(1, 5)), draw(st.integers(1, 300))
    values = draw(hnp.arrays(np.float32, (m, k), elements=st.floats(-1e4, 1e4, width=32)))
    x = torch.from_numpy(values) * draw(st.sampled_from([1e-30, 1e-3, 1.0, 1e30]))
    for row in draw(st.lists(st.integers(0, m - 1), max_size=2)):
        x[row] = draw(st.sampled_from([0.0, -2.5, 1e-38]))
    if draw(st.booleans()):  # halves of a power-of-two scale: x / scale lands on .5 exactly
        x[0] = torch.arange(k, dtype=torch.float32) * 0.5 - k / 4
    return x


@settings(max_examples=40, deadline=None)
@given(x=activation_rows(), half=st.booleans())
def test_activation_rows_equal_reference_on_any_input(tg: types.SimpleNamespace, x: torch.Tensor,
                                                      half: bool) -> None:
    lw, _, _ = _layer("w8a8-dynamic", 1, x.shape[1], 8, seed=0)
    given_x = x.half() if half else x
    exact = given_x.float()
    assume(bool(torch.isfinite(exact).all()))
    codes, scale = tg.linear.quantize_rows(tg.linear.prepare_w8a8(lw), given_x)
    theirs = ref("quantize").fn(exact, lw.scheme.input_activations)
    assert torch.equal(codes.long(), theirs.codes.long())
    assert torch.equal(scale, theirs.scale)


@pytest.mark.parametrize(("name", "low", "high"), [("w4a16", -7, 7), ("w4a16-asym", -8, 7), ("w8a16", -127, 127)])
def test_gemv_sums_extreme_codes_exactly_over_large_k(tg: types.SimpleNamespace, name: str, low: int,
                                                      high: int) -> None:
    """Codes at both ends of their range over K = 4096 with scale 1: every sum is an integer below 2**24, so exact."""
    scheme = PRESETS[name]
    w = torch.full((16, 4096), float(high))
    w[:, 0::2] = low
    w[1::2] = w[1::2].flip(-1)
    w[:, :64] *= 0.5  # off the extremes (ties included) inside the first group; its range is unchanged
    q = ref("quantize").fn(w, scheme.weights)
    assert torch.equal(q.scale, torch.ones_like(q.scale))
    lw = LinearWeights(scheme, q)
    x = torch.full((2, 4096), 3.0)
    x[1, ::3] = -1.0
    expected = (x.double() @ ref("dequantize").fn(q).double().T).float()
    assert torch.equal(tg.linear.gemv(tg.linear.prepare_weight_only(lw), x), expected)


def test_weight_only_rejects_non_finite_activations(tg: types.SimpleNamespace) -> None:
    lw, x, _ = _layer("w4a16", 2, 128, 32, seed=1)
    x[1, 7] = float("nan")
    with pytest.raises(qcore.NonFiniteError, match=r"linear input has 1 non-finite value\(s\); first at index \(1, 7\)"):
        _run(tg, lw, x)


# ---------------------------------------------------------------- compiled for real GPUs (no GPU needed)

I32 = "i32"
QUANT_ARGS = {"x_ptr": "*fp32", "scale_ptr": "*fp32", "zp_ptr": "*i32", "out_ptr": "*u8", "numel": I32,
              "inner": I32, "nq": I32, "size_bucket": I32}
GEMV_ARGS = {"x_ptr": "*fp16", "w_ptr": "*u8", "scale_ptr": "*fp32", "zp_ptr": "*i32", "bias_ptr": "*fp32",
             "ws_ptr": "*fp32", "lock_ptr": "*i32", "out_ptr": "*fp32", "M": I32, "N": I32, "K": I32,
             "n_groups": I32, "stride_xm": I32, "stride_wn": I32}
INT8_GEMM_ARGS = {"a_ptr": "*i8", "a_scale_ptr": "*fp32", "stride_as": I32, "w_ptr": "*i8", "w_scale_ptr": "*fp32",
                  "bias_ptr": "*fp32", "out_ptr": "*fp32", "M": I32, "N": I32, "K": I32, "stride_am": I32,
                  "stride_wn": I32, "stride_om": I32, "m_bucket": I32}
WEIGHT_ONLY_ARGS = {"x_ptr": "*fp16", "w_ptr": "*u8", "scale_ptr": "*fp32", "zp_ptr": "*i32", "bias_ptr": "*fp32",
                    "out_ptr": "*fp32", "M": I32, "N": I32, "K": I32, "group": I32, "n_groups": I32,
                    "stride_xm": I32, "stride_wn": I32, "m_bucket": I32}
ROWS_ARGS = {"x_ptr": "*fp16", "scale_ptr": "*fp32", "codes_ptr": "*i8", "K": I32, "stride_xm": I32}
# (module, kernel, runtime argument types, constexprs incl. the config's, warps, stages, what the PTX must hold)
COMPILED = [
    ("quant_kernels", "quantize_kernel", QUANT_ARGS,
     dict(QMIN=-448, QMAX=448, MODE=2, FMAX=448.0, MANT_BITS=3, MIN_EXP=-6, BLOCK=4096), 8, 1, ""),
    ("quant_kernels", "quantize_rows_kernel", ROWS_ARGS, dict(QMAX=127, DYNAMIC=True, BLOCK=4096), 4, 1,
     "div.rn.f64"),
    ("gemv_kernels", "gemv_kernel", GEMV_ARGS,
     dict(BITS=4, SIGN_BIAS=8, ASYM=True, HAS_BIAS=True, GROUP=128, SPLIT_K=4, BLOCK_N=16, BLOCK_K=512, GS=128,
          G=4, ACC_W=4), 4, 2, "atom.global.gpu.acq_rel.add"),
    ("gemv_kernels", "gemv_kernel", GEMV_ARGS,
     dict(BITS=4, SIGN_BIAS=0, ASYM=True, HAS_BIAS=True, GROUP=128, SPLIT_K=8, BLOCK_N=32, BLOCK_K=128, GS=128,
          G=1, ACC_W=64), 4, 2, "atom.global.gpu.acq_rel.exch"),
    ("gemv_kernels", "gemv_kernel", GEMV_ARGS,
     dict(BITS=8, SIGN_BIAS=128, ASYM=False, HAS_BIAS=False, GROUP=4096, SPLIT_K=1, BLOCK_N=32, BLOCK_K=256,
          GS=256, G=1, ACC_W=256), 4, 2, ""),
    ("linear_kernels", "int8_gemm_kernel", INT8_GEMM_ARGS,
     dict(HAS_BIAS=True, BLOCK_M=128, BLOCK_N=256, BLOCK_K=128, GROUP_M=8, EVEN_K=True), 8, 3, "s32.s8.s8"),
    ("linear_kernels", "weight_only_kernel", WEIGHT_ONLY_ARGS,
     dict(BITS=4, SIGNED=True, ASYM=False, HAS_BIAS=True, SPLIT_K=4, BLOCK_M=16, BLOCK_N=64, BLOCK_K=64), 4, 4,
     "mma"),
]


@pytest.fixture(scope="module")
def compiled_modules() -> Iterator[Callable[[str], types.ModuleType]]:
    with _kernel_modules(interpret=False) as load:
        yield load


@pytest.mark.parametrize("sm", [80, 90])
@pytest.mark.parametrize("case", COMPILED, ids=lambda c: f"{c[1]}-{c[3].get('BITS', '')}-{c[3].get('G', '')}")
def test_kernel_compiles_for_gpu(compiled_modules: Callable[[str], types.ModuleType], case: tuple, sm: int) -> None:
    """Triton lowers every kernel to PTX and ptxas assembles it for sm_80 and sm_90, here without a GPU.

    The interpreter checks what the kernels compute; this checks what only a
    real compilation meets (layouts, tensor-core int8 dots, atomics, fp64).
    Pointers and strides are declared 16-divisible, as Triton specialises them at launch.
    """
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    module, name, args, constexprs, warps, stages, expect = case
    fn = getattr(compiled_modules(module), name)
    while not isinstance(fn, triton.runtime.JITFunction):  # autotuner → heuristics → JITFunction
        fn = fn.fn
    assert set(fn.arg_names) == set(args) | set(constexprs)
    index = {n: i for i, n in enumerate(fn.arg_names)}
    source = ASTSource(
        fn, {**args, **dict.fromkeys(constexprs, "constexpr")},
        constexprs={(index[n],): v for n, v in constexprs.items()},
        attrs={(index[n],): [["tt.divisibility", 16]] for n, t in args.items() if t.startswith("*") or "stride" in n},
    )
    options = {"num_warps": warps, "num_stages": stages, "enable_fp_fusion": True}  # Triton's default until 3.10
    binary = triton.compile(source, target=GPUTarget("cuda", sm, 32), options=options)
    assert binary.asm["cubin"] and expect in binary.asm["ptx"]
