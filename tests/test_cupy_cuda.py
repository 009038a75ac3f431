"""cupy-cuda backend, without a GPU: its CUDA sources compile, it costs nothing at import,
it says why it is unavailable, and its host-side logic (support checks, qparam indexing,
int4 packing) agrees with the contract. The kernels themselves are run in tests/gpu."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import attrs
import pytest
import torch

import qcore.ops
from qcore.hardware import CudaDevice, detect
from qcore.kernels import KernelRequest
from qcore.matcher import Matcher
from qcore.spec import PRESETS, QuantScheme, QuantSpec
from qcore_cupy_cuda import plugin, runtime
from qcore_cupy_cuda.linear import pack_int4

KERNELS = sorted(runtime.KERNEL_DIR.glob("*.cu"))


def _nvcc() -> str | None:
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH") or "/usr/local/cuda"
    found = shutil.which("nvcc") or str(Path(home) / "bin" / "nvcc")
    return found if Path(found).is_file() else None


def test_every_kernel_file_is_known_to_the_runtime() -> None:
    assert {p.name for p in KERNELS} == set(runtime.NAME_EXPRESSIONS)


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
@pytest.mark.parametrize("source", KERNELS, ids=lambda p: p.name)
def test_kernel_source_compiles_with_nvcc(source: Path, arch: str, tmp_path: Path) -> None:
    nvcc = _nvcc()
    if nvcc is None:
        pytest.skip("nvcc not found")
    cmd = [nvcc, f"-arch={arch}", "-std=c++17", f"-I{runtime.KERNEL_DIR}", "--ptx", "-o", str(tmp_path / "k.ptx"),
           str(source)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{' '.join(cmd)}\n{done.stdout}\n{done.stderr}"
    ptx = (tmp_path / "k.ptx").read_text()
    for name in runtime.NAME_EXPRESSIONS[source.name]:  # every instantiation was emitted
        assert name.split("<")[0] in ptx


def test_import_and_descriptors_do_not_import_cupy() -> None:
    code = (
        "import sys\n"
        "import qcore_cupy_cuda.plugin as p\n"
        "kernels = list(p.qcore_kernels())\n"
        "assert kernels and all(k.devices == ('cuda',) for k in kernels)\n"
        "print(sorted(m for m in sys.modules if m == 'cupy' or m.startswith('cupy.')))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
def test_unavailable_with_cupys_own_reason() -> None:
    cupy = pytest.importorskip("cupy")
    try:
        cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:
        expected = str(exc)
    else:
        pytest.skip("CuPy reaches a CUDA device here")
    (info,) = plugin.qcore_hardware()
    assert info.name == "cupy-cuda" and not info.available
    assert info.reason == f"CuPy: {expected}"


def test_unavailable_when_cupy_is_not_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "cupy", None)  # makes `import cupy` raise ImportError
    info = runtime.probe()
    assert not info.available
    assert info.reason.startswith("CuPy is not installed") and "cupy" in info.reason


def _gpu_hardware(sm: int = 90):
    return attrs.evolve(detect(), cuda=(CudaDevice(0, "test GPU", divmod(sm, 10), 80 << 30),))


def test_matcher_never_picks_it_for_cpu() -> None:
    matcher = Matcher(measure=False, hardware=_gpu_hardware())
    requests = [KernelRequest("linear", "cpu", scheme=PRESETS[s], shape=(1, 4096, 4096))
                for s in ("w4a16", "w8a8-dynamic")]
    requests.append(KernelRequest("quantize", "cpu", spec=QuantSpec("int8", "channel"), shape=(64, 64)))
    for request in requests:
        ok, rejected = matcher.candidates(request)
        assert all(c.kernel.backend != "cupy-cuda" for c in ok)
        ours = [c for c in rejected if c.kernel.backend == "cupy-cuda"]
        assert ours and all("cuda" in c.support.reason for c in ours)
        assert matcher.select(request).chosen.backend != "cupy-cuda"


def _check(kernel_name: str, request: KernelRequest, sm: int = 90):
    (kernel,) = [k for k in plugin.qcore_kernels() if k.name == kernel_name]
    return kernel.check(request, _gpu_hardware(sm))


@pytest.mark.parametrize(
    ("kernel", "scheme", "shape", "sm", "reason"),
    [
        ("linear-w8a8-dp4a", "w8a8-dynamic", (16, 4096, 4096), 90, ""),
        ("linear-w8a8-dp4a", "w8a8", (16, 4096, 4096), 80, ""),
        ("linear-w8a8-dp4a", "w8a8-dynamic", (16, 4096, 4096), 60, "sm_61"),
        ("linear-w8a8-dp4a", "w8a8-dynamic", (16, 4094, 4096), 90, "K=4094 is not a multiple of 4"),
        ("linear-w8a8-dp4a", "w8a16", (16, 4096, 4096), 90, "needs int8 symmetric activations"),
        ("linear-w8a8-dp4a", "fp8", (16, 4096, 4096), 90, "needs int8 symmetric per-channel"),
        ("linear-w4a16-gemv", "w4a16", (1, 4096, 4096), 90, ""),
        ("linear-w4a16-gemv", "w4a16-asym", (3, 256, 100), 75, ""),
        ("linear-w4a16-gemv", "w4a16", (1, 4160, 4096), 90, "group_size 128 does not divide K=4160"),
        ("linear-w4a16-gemv", "w4a16", (256, 4096, 4096), 90, "M <= 16"),
        ("linear-w4a16-gemv", "w8a8-dynamic", (1, 4096, 4096), 90, "weight-only kernel"),
    ],
)
def test_linear_support_reasons(kernel: str, scheme: str, shape: tuple[int, int, int], sm: int, reason: str) -> None:
    got = _check(kernel, KernelRequest("linear", "cuda", scheme=PRESETS[scheme], shape=shape), sm)
    assert got.ok == (reason == ""), got.reason
    assert reason in got.reason


def test_group_size_must_be_a_multiple_of_32() -> None:
    scheme = QuantScheme("w4-g48", QuantSpec("int4", "group", group_size=48))
    got = _check("linear-w4a16-gemv", KernelRequest("linear", "cuda", scheme=scheme, shape=(1, 96, 8)))
    assert not got.ok and "group_size 48 is not a multiple of 32" in got.reason


@pytest.mark.parametrize(
    ("spec", "shape", "reason"),
    [
        (QuantSpec("int4", "group", group_size=128), (8, 256), ""),
        (QuantSpec("uint8", "channel", axis=1, symmetric=False), (3, 5, 7), ""),
        (QuantSpec("int4", "group", group_size=128), (8, 200), "group_size 128 does not divide the last dimension 200"),
        (QuantSpec("fp8_e4m3", "channel"), (8, 8), "not fp8_e4m3"),
        (QuantSpec("binary", "channel"), (8, 8), "not binary"),
    ],
)
def test_tensor_op_support_reasons(spec: QuantSpec, shape: tuple[int, ...], reason: str) -> None:
    got = _check("quantize", KernelRequest("quantize", "cuda", spec=spec, shape=shape))
    assert got.ok == (reason == ""), got.reason
    assert reason in got.reason


def test_no_gpu_in_the_profile_is_a_refusal() -> None:
    (kernel,) = [k for k in plugin.qcore_kernels() if k.name == "linear-w4a16-gemv"]
    request = KernelRequest("linear", "cuda", scheme=PRESETS["w4a16"], shape=(1, 256, 8))
    got = kernel.check(request, attrs.evolve(detect(), cuda=()))
    assert not got.ok and "no CUDA device" in got.reason


@pytest.mark.parametrize("dtype", ["int4", "uint4"])
def test_pack_int4_is_the_canonical_packing(dtype: str) -> None:
    spec = QuantSpec(dtype, "group", group_size=8, symmetric=dtype == "int4")
    w = torch.randn(5, 32, generator=torch.Generator().manual_seed(1))
    q = qcore.ops.quantize(w, spec, backend="cpu-reference")
    assert torch.equal(pack_int4(q.codes), qcore.ops.pack_weight(q, backend="cpu-reference").data)


def test_pack_int4_low_nibble_first() -> None:
    codes = torch.tensor([[1, -2, -8, 7]], dtype=torch.int8)
    assert pack_int4(codes).tolist() == [[0xE1, 0x78]]
