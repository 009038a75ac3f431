"""cpu-native's kernels, one column per ISA path, against fp32 F.linear and torch-fallback in the same run.

Every kernel of the cpu-native backend that this CPU can run is timed on the issue's shapes for each scheme
it claims (pinned, no matcher), beside torch-fallback's fastest kernel (the matcher pinned to it) and the
fp32 baseline of the group. `QCORE_CPU_NATIVE_ISA=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 ATEN_CPU_CAPABILITY=avx2`
runs the same bench as a CPU without AVX-512/VNNI would (fp32 included; see plugins/cpu-native/README.md).
"""

from __future__ import annotations

import pytest
import torch

from qcore.errors import NoKernelError
from qcore.kernels import KernelImpl, KernelRequest
from qcore.matcher import Matcher
from qcore.ops import linear_weights
from qcore.plugins import get_manager

pytest.importorskip("qcore_cpu_native")

from test_linear import SHAPES, _inputs  # noqa: E402

SCHEMES = ["w8a8-dynamic", "w8a8", "w8a16", "w4a16", "w4a16-asym"]


def _native() -> list[KernelImpl]:
    return sorted((k for k in get_manager().kernels().values() if k.backend == "cpu-native"), key=lambda k: k.id)


def _group(shape: tuple[int, int, int]) -> str:
    return ",".join(map(str, shape))


def _column(kernel: KernelImpl) -> str:
    """One report column per ISA path: cpu-native:avx2, cpu-native:avx-vnni, ..."""
    return "cpu-native:" + kernel.name.removeprefix("int8-").removeprefix("weight-only-")


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_fp32(benchmark, bench_record, shape) -> None:
    x, w, b = _inputs(shape)
    bench_record(benchmark, group=_group(shape), backend="torch", kernel="F.linear fp32", scheme="fp32",
                 shape=list(shape), baseline=True)
    benchmark(torch.nn.functional.linear, x, w, b)


@pytest.mark.parametrize("kernel", _native(), ids=lambda k: k.name)
@pytest.mark.parametrize("scheme_name", SCHEMES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_cpu_native(benchmark, bench_record, shape, scheme_name, kernel) -> None:
    scheme = get_manager().scheme(scheme_name)
    support = kernel.check(KernelRequest("linear", "cpu", scheme=scheme, shape=shape), Matcher().hardware)
    if not support:
        pytest.skip(f"{kernel.id}: {support.reason}")
    x, w, b = _inputs(shape)
    prepared = kernel.prepare(linear_weights(scheme, w, b, sample=x))
    bench_record(benchmark, group=_group(shape), backend=_column(kernel), kernel=kernel.id, scheme=scheme_name,
                 shape=list(shape))
    benchmark(kernel.fn, prepared, x)


@pytest.mark.parametrize("scheme_name", SCHEMES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_torch_fallback(benchmark, bench_record, shape, scheme_name) -> None:
    scheme = get_manager().scheme(scheme_name)
    try:
        kernel = Matcher().select(KernelRequest("linear", "cpu", scheme=scheme, shape=shape),
                                  backend="torch-fallback", strict=True).chosen
    except NoKernelError as exc:
        pytest.skip(str(exc))
    x, w, b = _inputs(shape)
    prepared = kernel.prepare(linear_weights(scheme, w, b, sample=x))
    bench_record(benchmark, group=_group(shape), backend="torch-fallback", kernel=kernel.id, scheme=scheme_name,
                 shape=list(shape))
    benchmark(kernel.fn, prepared, x)
