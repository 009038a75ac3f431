"""`linear` for every available backend × scheme on the issue's CPU shapes, fp32 F.linear in the same run.

Each backend is pinned and the matcher picks that backend's fastest kernel for
the shape; `auto` is the matcher's unpinned choice. bench/report.py turns the
results into ratios against fp32 (written to bench/results/).
"""

from __future__ import annotations

import pytest
import torch

from qcore.errors import NoKernelError
from qcore.kernels import KernelRequest
from qcore.matcher import AUTO, Matcher
from qcore.ops import linear_weights
from qcore.plugins import get_manager

SHAPES = [(1, 4096, 4096), (16, 4096, 4096), (256, 4096, 4096), (2048, 384, 1536), (2048, 1536, 384)]
"""Decoding (M=1), small and large batches of a 4096-wide layer, and all-MiniLM-L6-v2's two Linear shapes
(384↔1536) at M=2048 tokens."""
SCHEMES = ["w8a8-dynamic", "w8a8", "w8a16", "w4a16", "fp16"]
SLOW_BACKENDS = {"cpu-reference"}
SLOW_MACS = 2**30
"""The float64 NumPy oracle takes seconds a call beyond this many multiply-adds: it is timed below it only."""


def _backends() -> list[str]:
    infos = get_manager().backends()
    return [n for n, i in infos.items() if i.available and "cpu" in i.devices] + [AUTO]


def _inputs(shape: tuple[int, int, int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    m, k, n = shape
    gen = torch.Generator().manual_seed(0)
    return torch.randn(m, k, generator=gen), torch.randn(n, k, generator=gen), torch.randn(n, generator=gen)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_fp32_baseline(benchmark, bench_record, shape) -> None:
    x, w, b = _inputs(shape)
    bench_record(benchmark, group=",".join(map(str, shape)), backend="torch", kernel="F.linear fp32",
                 scheme="fp32", shape=list(shape), baseline=True)
    benchmark(torch.nn.functional.linear, x, w, b)


@pytest.mark.parametrize("backend", _backends())
@pytest.mark.parametrize("scheme_name", SCHEMES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_linear(benchmark, bench_record, shape, scheme_name, backend) -> None:
    scheme = get_manager().scheme(scheme_name)
    request = KernelRequest("linear", "cpu", scheme=scheme, shape=shape)
    try:
        selection = Matcher().select(request, backend=backend)
    except NoKernelError as exc:
        pytest.skip(f"no backend can run {scheme_name}: {exc}")
    if selection.fallback_reason:
        pytest.skip(selection.fallback_reason)
    if backend in SLOW_BACKENDS and shape[0] * shape[1] * shape[2] > SLOW_MACS:
        pytest.skip(f"{backend} is the float64 oracle: timed up to {SLOW_MACS} multiply-adds only")
    x, w, b = _inputs(shape)
    kernel = selection.chosen
    prepared = kernel.prepare(linear_weights(scheme, w, b, sample=x))
    bench_record(benchmark, group=",".join(map(str, shape)), backend=backend, kernel=kernel.id,
                 scheme=scheme_name, shape=list(shape))
    if backend in SLOW_BACKENDS:
        benchmark.pedantic(kernel.fn, args=(prepared, x), rounds=2, iterations=1, warmup_rounds=0)
    else:
        benchmark(kernel.fn, prepared, x)
