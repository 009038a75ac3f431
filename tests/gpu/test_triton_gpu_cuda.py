"""triton-gpu on CUDA, compiled: tensor ops equal cpu-reference, linear kernels track it at realistic sizes.

Everything goes through the registered descriptors (`KernelImpl.fn` /
`prepare`), so the lazy imports and the support checks are exercised too.
"""

from __future__ import annotations

import pytest
import torch

import qcore
from qcore.hardware import detect
from qcore.kernels import KernelImpl, KernelRequest, LinearWeights, QTensor
from qcore.matcher import Matcher
from qcore.metrics import sqnr
from qcore.spec import PRESETS, QuantSpec

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")]

BACKEND = "triton-gpu"
VS_REFERENCE_DB = 50.0
VS_FLOAT_DB = {"w8a8": 38.0, "w8a8-dynamic": 38.0, "w8a16": 43.0, "w4a16": 18.0, "w4a16-asym": 19.0}
SPECS = [
    QuantSpec("int8", "tensor"),
    QuantSpec("int8", "channel"),
    QuantSpec("uint8", "channel", axis=-1, symmetric=False),
    QuantSpec("int8", "token", dynamic=True),
    QuantSpec("uint8", "tensor", symmetric=False),
    QuantSpec("int4", "group", group_size=128),
    QuantSpec("uint4", "group", group_size=128, symmetric=False),
    QuantSpec("ternary", "channel"),
    QuantSpec("binary", "channel", axis=-1),
    QuantSpec("fp8_e4m3", "token", dynamic=True),
    QuantSpec("fp8_e4m3", "channel"),
    QuantSpec("fp8_e5m2", "channel"),
]


def kernel(kid: str) -> KernelImpl:
    return qcore.get_manager().kernels()[kid]


def ref(op: str) -> KernelImpl:
    return kernel(f"cpu-reference/{op}")


def skip_unless_supported(kid: str, request: KernelRequest) -> None:
    support = kernel(f"{BACKEND}/{kid}").check(request, detect())
    if not support:
        pytest.skip(f"{BACKEND}/{kid}: {support.reason}")


def to_cpu(q: QTensor) -> QTensor:
    return QTensor(q.codes.cpu(), q.scale.cpu(), q.zero_point.cpu(), q.spec)


def test_backend_available_with_capabilities() -> None:
    info = qcore.get_manager().backends()[BACKEND]
    assert info.available, info.reason
    assert info.devices == ("cuda",)
    assert f"sm_{detect().cuda[0].sm}" in info.capabilities
    assert ("fp8" in info.capabilities) == (min(d.sm for d in detect().cuda) >= 89)


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.describe().replace(" ", "-"))
@pytest.mark.parametrize("shape", [(1024, 4096), (3, 17, 384), (1, 128)], ids=str)
def test_quantize_dequantize_equal_reference(spec: QuantSpec, shape: tuple[int, ...]) -> None:
    skip_unless_supported("quantize", KernelRequest("quantize", "cuda", spec=spec, shape=shape))
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0)) * 3
    ours = kernel(f"{BACKEND}/quantize").fn(x.cuda(), spec)
    theirs = ref("quantize").fn(x, spec)
    got = to_cpu(ours)
    if got.codes.is_floating_point():
        assert torch.equal(got.codes.view(torch.uint8), theirs.codes.view(torch.uint8))
    else:
        assert torch.equal(got.codes, theirs.codes)
    assert torch.equal(got.scale, theirs.scale) and torch.equal(got.zero_point, theirs.zero_point)
    assert torch.equal(kernel(f"{BACKEND}/dequantize").fn(ours).cpu(), ref("dequantize").fn(theirs))


def test_ties_and_saturation_on_device() -> None:
    spec = QuantSpec("int8", "channel")
    x = torch.tensor([[0.5, 1.5, 2.5, -0.5, -2.5, 3.0e38], [1e-30, -3.0e38, 126.5, 127.5, -127.5, 0.0]])
    scale = torch.tensor([1.0, 1.0])
    ours = kernel(f"{BACKEND}/quantize").fn(x.cuda(), spec, scale.cuda())
    assert ours.codes.cpu().tolist() == [[0, 2, 2, 0, -2, 127], [0, -127, 126, 127, -127, 0]]
    assert torch.equal(ours.codes.cpu(), ref("quantize").fn(x, spec, scale).codes)


@pytest.mark.parametrize("dtype", ["fp8_e4m3", "fp8_e5m2"])
def test_fp8_codes_equal_reference_on_device(dtype: str) -> None:
    """Runs the kernel even while `support.FP8_WITHHELD` keeps the matcher off it: this is what lifts it."""
    if min(d.sm for d in detect().cuda) < 89:
        pytest.skip("fp8 needs sm_89+")
    spec = QuantSpec(dtype, "token", dynamic=True)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(4096, 4096, generator=gen) * torch.logspace(-12, 12, 4096, base=2.0)[:, None]
    ours = kernel(f"{BACKEND}/quantize").fn(x.cuda(), spec)
    theirs = ref("quantize").fn(x, spec)
    differ = (ours.codes.cpu().view(torch.uint8) != theirs.codes.view(torch.uint8)).nonzero()
    assert not len(differ), f"{len(differ)} codes differ, first at {differ[:5].tolist()}"


def test_non_finite_raises() -> None:
    x = torch.zeros(4, 64, device="cuda")
    x[2, 5] = float("nan")
    with pytest.raises(qcore.NonFiniteError, match=r"first at index \(2, 5\)"):
        kernel(f"{BACKEND}/quantize").fn(x, QuantSpec("int8"))


@pytest.mark.parametrize("spec", [QuantSpec("int4", "group", group_size=128),
                                  QuantSpec("uint4", "channel", symmetric=False)], ids=lambda s: s.describe())
def test_pack_unpack_equal_reference(spec: QuantSpec) -> None:
    q = ref("quantize").fn(torch.randn(1024, 4096), spec)
    on_gpu = QTensor(q.codes.cuda(), q.scale.cuda(), q.zero_point.cuda(), spec)
    packed = kernel(f"{BACKEND}/pack-int4").fn(on_gpu)
    assert torch.equal(packed.data.cpu(), ref("pack_weight").fn(q).data.reshape(packed.data.shape))
    assert torch.equal(kernel(f"{BACKEND}/unpack-int4").fn(packed).codes.cpu(), q.codes)


def layer(name: str, m: int, k: int, n: int) -> tuple[LinearWeights, LinearWeights, torch.Tensor, torch.Tensor]:
    """(weights on CPU for the reference, the same on CUDA, x on CPU, float output) on N(0,1) data."""
    gen = torch.Generator().manual_seed(m + k + n)
    scheme = PRESETS[name]
    x, w, b = torch.randn(m, k, generator=gen), torch.randn(n, k, generator=gen), torch.randn(n, generator=gen)
    act = {}
    if scheme.needs_calibration:
        q = ref("quantize").fn(x, scheme.input_activations)
        act = {"act_scale": q.scale, "act_zero_point": q.zero_point}
    q = ref("quantize").fn(w, scheme.weights)
    cpu = LinearWeights(scheme, q, b, **act)
    cuda = LinearWeights(scheme, QTensor(q.codes.cuda(), q.scale.cuda(), q.zero_point.cuda(), q.spec), b.cuda(),
                         **{key: v.cuda() for key, v in act.items()})
    return cpu, cuda, x, x @ w.T + b


def linear_kernel_for(name: str, shape: tuple[int, int, int]) -> KernelImpl:
    request = KernelRequest("linear", "cuda", scheme=PRESETS[name], shape=shape)
    ok, _ = Matcher(measure=False).candidates(request)
    mine = [c.kernel for c in ok if c.kernel.backend == BACKEND]
    assert len(mine) == 1, f"{BACKEND} should claim {name} at {shape}"
    return mine[0]


@pytest.mark.parametrize("name", list(VS_FLOAT_DB))
@pytest.mark.parametrize(("m", "k", "n"), [(1, 4096, 4096), (16, 4096, 11008), (512, 4096, 4096), (7, 384, 1000)],
                         ids=str)
def test_linear_tracks_reference_and_contract(name: str, m: int, k: int, n: int) -> None:
    impl = linear_kernel_for(name, (m, k, n))
    cpu_w, cuda_w, x, expected = layer(name, m, k, n)
    prepared = impl.prepare(cuda_w)
    ours = impl.fn(prepared, x.cuda())
    assert ours.dtype == torch.float32 and ours.shape == (m, n) and ours.is_cuda
    theirs = ref("linear").fn(ref("linear").prepare(cpu_w), x)
    assert sqnr(theirs, ours) >= VS_REFERENCE_DB
    assert sqnr(expected, ours) >= min(VS_FLOAT_DB[name], sqnr(expected, theirs) - 0.5)
    assert torch.equal(ours, impl.fn(prepared, x.cuda())), "two runs must be bit-identical"


@pytest.mark.parametrize("name", ["w4a16", "w4a16-asym", "w8a16"])
def test_decoding_gemv_every_config_and_half_inputs(name: str) -> None:
    """Every GEMV config on silicon at 1 × 4096 × 4096 (split-K counters and their reset included)."""
    from qcore_triton_gpu import gemv_kernels as GK
    from qcore_triton_gpu.linear import gemv

    impl = linear_kernel_for(name, (1, 4096, 4096))
    cpu_w, cuda_w, x, _ = layer(name, 1, 4096, 4096)
    prepared = impl.prepare(cuda_w)
    theirs = ref("linear").fn(ref("linear").prepare(cpu_w), x.half().float())
    for config in GK.CONFIGS:
        ours = gemv(prepared, x.cuda().half(), config)
        assert sqnr(theirs, ours) >= VS_REFERENCE_DB, config
        assert torch.equal(ours, gemv(prepared, x.cuda().half(), config)), f"{config}: not bit-identical"
        assert not prepared.locks.any(), f"{config}: split-K counters were not reset"
    assert sqnr(theirs, impl.fn(prepared, x.cuda().half())) >= VS_REFERENCE_DB


@pytest.mark.parametrize("name", ["w4a16", "w8a8-dynamic", "w8a8"])
@pytest.mark.parametrize("m", [1, 64])
def test_linear_replays_in_a_cuda_graph(name: str, m: int) -> None:
    """No host synchronisation in the call: it can be captured, and replays compute what eager calls do."""
    impl = linear_kernel_for(name, (m, 4096, 4096))
    _, cuda_w, x, _ = layer(name, m, 4096, 4096)
    prepared = impl.prepare(cuda_w)
    static = x.cuda().half()
    eager = impl.fn(prepared, static)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = impl.fn(prepared, static)
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(out, eager)
    static.mul_(-0.5)
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(out, impl.fn(prepared, static))


def test_int8_gemm_accumulates_exactly_at_extreme_codes() -> None:
    """K = 65536 of ±127 × ±127: the int32 accumulator must neither saturate nor round."""
    k, n = 65536, 32
    scheme = PRESETS["w8a8-dynamic"]
    w = torch.full((n, k), 1.0)
    w[1::2] = -1.0
    q = ref("quantize").fn(w, scheme.weights)
    impl = linear_kernel_for("w8a8-dynamic", (1, k, n))
    lw = LinearWeights(scheme, QTensor(q.codes.cuda(), q.scale.cuda(), q.zero_point.cuda(), q.spec))
    out = impl.fn(impl.prepare(lw), torch.ones(1, k, device="cuda")).cpu()
    expected = torch.tensor([float(k) if i % 2 == 0 else -float(k) for i in range(n)])
    assert torch.allclose(out[0], expected, rtol=1e-6, atol=0)
