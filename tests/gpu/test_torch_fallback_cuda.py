"""torch-fallback on CUDA: tensor ops equal the cpu-reference oracle, every CUDA linear kernel tracks it."""

from __future__ import annotations

import pytest
import torch

import qcore
from qcore.hardware import detect
from qcore.kernels import KernelImpl, KernelRequest, LinearWeights, QTensor
from qcore.matcher import Matcher
from qcore.metrics import sqnr
from qcore.spec import PRESETS, QuantScheme, QuantSpec

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")]

BACKEND = "torch-fallback"
VS_REFERENCE_DB = 50.0
VS_FLOAT_DB = {"w8a8": 38.0, "w8a8-dynamic": 38.0, "w8a16": 43.0, "w4a16": 18.0, "w4a16-asym": 19.0}
SPECS = [
    QuantSpec("int8", "channel"),
    QuantSpec("int8", "token", dynamic=True),
    QuantSpec("uint8", "tensor", symmetric=False),
    QuantSpec("int4", "group", group_size=32),
    QuantSpec("uint4", "group", group_size=32, symmetric=False),
    QuantSpec("ternary", "channel"),
    QuantSpec("binary", "channel", axis=-1),
    QuantSpec("fp8_e4m3", "token", dynamic=True),
    QuantSpec("fp8_e5m2", "channel"),
    QuantSpec("fp16"),
    QuantSpec("bf16"),
]


def float_floor(scheme_name: str, reference_db: float) -> float:
    """The scheme's threshold against float, or what the reference itself reaches on this draw (w8a16 sits at ~43)."""
    return min(VS_FLOAT_DB[scheme_name], reference_db - 0.5)


def kernel(kid: str) -> KernelImpl:
    return qcore.get_manager().kernels()[kid]


def cuda_linear_kernels() -> list[KernelImpl]:
    return [k for k in qcore.get_manager().kernels().values()
            if k.backend == BACKEND and k.op == "linear" and "cuda" in k.devices]


def claimed(k: KernelImpl, scheme: QuantScheme, shape: tuple[int, int, int]) -> bool:
    return bool(k.check(KernelRequest("linear", "cuda", scheme=scheme, shape=shape), detect()))


def weights_for(scheme: QuantScheme, w: torch.Tensor, b: torch.Tensor, x: torch.Tensor) -> LinearWeights:
    """Quantized on CPU by the reference, then moved to the GPU."""
    rq = kernel("cpu-reference/quantize").fn
    a = scheme.input_activations
    act = {}
    if a is not None and a.info.scaled and not a.dynamic:
        q = rq(x, a)
        act = {"act_scale": q.scale.cuda(), "act_zero_point": q.zero_point.cuda()}
    if scheme.weights is None:
        return LinearWeights(scheme, None, b.cuda(), float_weight=w.cuda(), **act)
    q = rq(w, scheme.weights)
    return LinearWeights(scheme, QTensor(q.codes.cuda(), q.scale.cuda(), q.zero_point.cuda(), q.spec), b.cuda(), **act)


def reference_linear(scheme: QuantScheme, w: torch.Tensor, b: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    rq, k = kernel("cpu-reference/quantize").fn, kernel("cpu-reference/linear")
    lw = weights_for(scheme, w, b, x)
    cpu = LinearWeights(scheme, None if lw.weight is None else rq(w, scheme.weights), b,
                        None if lw.act_scale is None else lw.act_scale.cpu(),
                        None if lw.act_zero_point is None else lw.act_zero_point.cpu(),
                        None if scheme.weights is not None else w)
    return k.fn(k.prepare(cpu), x)


@pytest.mark.parametrize("spec", SPECS, ids=[s.describe() for s in SPECS])
def test_tensor_ops_on_cuda_equal_reference(spec: QuantSpec) -> None:
    x = torch.randn(5, 96, generator=torch.Generator().manual_seed(0)) * 7
    want = kernel("cpu-reference/quantize").fn(x, spec)
    got = kernel(f"{BACKEND}/quantize").fn(x.cuda(), spec)
    assert got.codes.is_cuda and got.codes.dtype == want.codes.dtype
    assert torch.equal(got.codes.cpu().to(torch.float32), want.codes.to(torch.float32))
    assert torch.equal(got.scale.cpu(), want.scale) and torch.equal(got.zero_point.cpu(), want.zero_point)
    assert torch.equal(kernel(f"{BACKEND}/dequantize").fn(got).cpu(), kernel("cpu-reference/dequantize").fn(want))
    packed = kernel(f"{BACKEND}/pack_weight").fn(got)
    assert torch.equal(packed.data.cpu(), kernel("cpu-reference/pack_weight").fn(want).data)
    assert torch.equal(kernel(f"{BACKEND}/unpack_weight").fn(packed).codes, got.codes)


LINEAR_K, LINEAR_N = 512, 128
CASES = [
    (k.name, s, m)
    for k in cuda_linear_kernels()
    for s in PRESETS
    for m in (3, 64)
    if torch.cuda.is_available() and claimed(k, PRESETS[s], (m, LINEAR_K, LINEAR_N))
]


@pytest.mark.parametrize(("name", "scheme_name", "m"), CASES)
def test_cuda_linear_kernel_quality(name: str, scheme_name: str, m: int) -> None:
    k, scheme = kernel(f"{BACKEND}/{name}"), PRESETS[scheme_name]
    K, N = LINEAR_K, LINEAR_N
    gen = torch.Generator().manual_seed(2)
    x, w, b = torch.randn(m, K, generator=gen), torch.randn(N, K, generator=gen), torch.randn(N, generator=gen)
    out = k.fn(k.prepare(weights_for(scheme, w, b, x)), x.cuda().reshape(1, m, K))
    assert out.is_cuda and out.dtype == torch.float32 and out.shape == (1, m, N)
    out = out.reshape(m, N).cpu()
    want, exact = reference_linear(scheme, w, b, x), torch.nn.functional.linear(x, w, b)
    assert sqnr(want, out) >= VS_REFERENCE_DB
    if scheme_name in VS_FLOAT_DB:
        assert sqnr(exact, out) >= float_floor(scheme_name, sqnr(exact, want))


def test_expected_cuda_kernels_claim_their_schemes() -> None:
    cap = min(d.capability for d in detect().cuda)
    shape = (64, 512, 128)
    assert claimed(kernel(f"{BACKEND}/int-mm"), PRESETS["w8a8-dynamic"], shape)
    assert claimed(kernel(f"{BACKEND}/dequant-matmul-fp16"), PRESETS["w4a16"], shape)
    assert claimed(kernel(f"{BACKEND}/scaled-mm-fp8"), PRESETS["fp8"], shape) == (cap >= (8, 9))
    assert claimed(kernel(f"{BACKEND}/int4pack-cuda"), PRESETS["w4a16"], shape) == (cap >= (8, 0))


def test_int_mm_accumulates_extreme_codes_exactly() -> None:
    scheme, m, K, N = PRESETS["w8a8-dynamic"], 32, 16384, 16
    x = torch.full((m, K), 3.0)
    w = torch.where(torch.arange(N) % 2 == 0, 1.0, -1.0)[:, None] * torch.full((N, K), 0.5)
    lw = weights_for(scheme, w, torch.zeros(N), x)
    k = kernel(f"{BACKEND}/int-mm")
    out = k.fn(k.prepare(lw), x.cuda()).cpu().to(torch.float64)
    exact = (127 * 127 * K) * torch.where(torch.arange(N) % 2 == 0, 1.0, -1.0).to(torch.float64)
    exact = exact * lw.weight.scale.cpu().to(torch.float64) * (3.0 / 127)
    torch.testing.assert_close(out, exact.expand(m, N), rtol=1e-5, atol=0)


def test_measured_selection_runs_every_candidate() -> None:
    for name in ("w8a8-dynamic", "w4a16", "fp8"):
        request = KernelRequest("linear", "cuda", scheme=PRESETS[name], shape=(64, 1024, 1024))
        selection = Matcher(measure=True).select(request)
        assert selection.chosen.backend != "cpu-reference"
        assert not [c for c in selection.rejected if "failed while timing" in c.support.reason], selection.explain()
        print(selection.explain())


def test_backend_reports_cuda() -> None:
    info = qcore.get_manager().backend(BACKEND)
    assert "cuda" in info.devices and any("sm_" in c for c in info.capabilities)
