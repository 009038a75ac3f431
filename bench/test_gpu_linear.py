"""`linear` for every backend available on CUDA × scheme on the GPU shapes, fp16 torch.matmul in the same run.

Run by bench/gpu.sh; skipped without a CUDA device. Each backend is pinned and
the matcher picks that backend's fastest kernel for the shape; `auto` is the
unpinned choice. Activations are fp16 (what a served model feeds a layer).

Weights are quantized by `QUANTIZER` (pinned, on the GPU) for every backend
alike, so a broken default quantize kernel cannot hide the linear kernels.

A GPU call at M=1 takes a few microseconds, less than launching it from
Python, so each benchmark round replays a CUDA graph of `REPS[M]` calls and
waits for it: the times are the kernels', not the launcher's. A kernel that
cannot be captured (it synchronises with the host) is timed as the same
number of eager calls, and `extra_info["timing"]` says which was used.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs
import pytest
import torch

from qcore.autotune import cuda_graph
from qcore.errors import NoKernelError
from qcore.kernels import KernelRequest
from qcore.matcher import AUTO, Matcher
from qcore.kernels import LinearWeights, QTensor
from qcore.ops import quantize
from qcore.plugins import get_manager
from qcore.spec import QuantScheme, QuantSpec

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")]

SHAPES = [(1, 4096, 4096), (16, 4096, 4096), (256, 4096, 4096), (4096, 4096, 4096)]
SCHEMES = ["w4a16", "w8a8-dynamic", "w8a16", "fp8"]
REPS = {1: 100, 16: 100, 256: 20, 4096: 3}  # calls per round: a round lasts well over a launch
ROUNDS = 10
QUANTIZER = "torch-fallback"


def _backends() -> list[str]:
    if not torch.cuda.is_available():
        return []
    infos = get_manager().backends()
    return sorted(n for n, i in infos.items() if i.available and "cuda" in i.devices) + [AUTO]


def _inputs(shape: tuple[int, int, int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    m, k, n = shape
    gen = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(m, k, generator=gen, device="cuda", dtype=torch.float16)
    return x, torch.randn(n, k, generator=gen, device="cuda"), torch.randn(n, generator=gen, device="cuda")


def _quantize_weights(scheme: QuantScheme, weight: torch.Tensor, sample: torch.Tensor | None) -> LinearWeights:
    """`linear_weights` with the weight (and static activation) qparams from the `QUANTIZER` backend."""
    def q(t: torch.Tensor, spec: QuantSpec) -> QTensor:
        return quantize(t.float(), spec, backend=QUANTIZER)

    act = scheme.input_activations
    static = act is not None and act.info.scaled and not act.dynamic
    qa = q(sample, act) if static and sample is not None else None
    return LinearWeights(scheme, q(weight, scheme.weights) if scheme.weights is not None else None,
                         act_scale=None if qa is None else qa.scale, act_zero_point=None if qa is None else qa.zero_point,
                         float_weight=None if scheme.weights is not None else weight.float())


def _rounds(fn: Callable[[], object], reps: int) -> tuple[Callable[[], None], str]:
    """One benchmark round: `reps` calls of `fn` then a wait, as a CUDA graph replay when `fn` can be captured."""
    replay = cuda_graph(fn, reps)
    if replay is not None:
        return replay, "cuda-graph"

    def eager() -> None:
        for _ in range(reps):
            fn()
        torch.cuda.synchronize()

    return eager, "eager"


def _measure(benchmark, bench_record, fn: Callable[[], object], shape: tuple[int, int, int], **info) -> None:
    reps = REPS[shape[0]]
    run, timing = _rounds(fn, reps)
    bench_record(benchmark, group=",".join(map(str, shape)), shape=list(shape), **info)
    benchmark.extra_info.update({"timing": timing, "calls_per_round": reps, "device": torch.cuda.get_device_name()})
    benchmark.pedantic(run, rounds=ROUNDS, iterations=1, warmup_rounds=1)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_fp16_baseline(benchmark, bench_record, shape) -> None:
    x, w, _ = _inputs(shape)
    wt = w.half().t()
    _measure(benchmark, bench_record, lambda: torch.matmul(x, wt), shape, backend="torch",
             kernel="torch.matmul fp16", scheme="fp16", baseline=True)


@pytest.mark.parametrize("backend", _backends())
@pytest.mark.parametrize("scheme_name", SCHEMES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_linear(benchmark, bench_record, shape, scheme_name, backend) -> None:
    scheme = get_manager().scheme(scheme_name)
    request = KernelRequest("linear", "cuda", scheme=scheme, shape=shape)
    try:
        selection = Matcher(quantize_weights=_quantize_weights).select(request, backend=backend)
    except NoKernelError as exc:
        pytest.skip(f"no backend can run {scheme_name} on cuda: {exc}")
    if selection.fallback_reason:
        pytest.skip(selection.fallback_reason)
    x, w, b = _inputs(shape)
    kernel = selection.chosen
    prepared = kernel.prepare(attrs.evolve(_quantize_weights(scheme, w, x), bias=b))
    _measure(benchmark, bench_record, lambda: kernel.fn(prepared, x), shape, backend=backend, kernel=kernel.id,
             scheme=scheme_name)
