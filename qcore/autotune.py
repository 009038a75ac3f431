"""Timing of kernel candidates on the requested shape, cached per hardware fingerprint.

The cache lives in ``$QCORE_CACHE_DIR`` (default ``~/.cache/qcore``), one JSON
file per hardware fingerprint, so timings never cross machines. A file that
cannot be read or parsed, or that belongs to another fingerprint, is ignored
and rewritten on the next save; writes go to a temporary file then rename.
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from qcore.files import atomic_write
from qcore.hardware import HardwareProfile
from qcore.kernels import KernelImpl, KernelRequest, LinearWeights

log = logging.getLogger(__name__)

CACHE_VERSION = 3
"""3: the fastest sample, not the median (2: CUDA timings are graph replays; 1 timed eager calls)."""


def cache_dir() -> Path:
    return Path(os.environ.get("QCORE_CACHE_DIR") or Path.home() / ".cache" / "qcore")


class TimingCache:
    """Seconds per call, keyed by kernel, request and version, for one hardware fingerprint."""

    def __init__(self, hardware: HardwareProfile, directory: Path | None = None) -> None:
        self.fingerprint = hardware.fingerprint
        self.path = (directory or cache_dir()) / f"autotune-{self.fingerprint}.json"
        self._entries: dict[str, float] = self._read()

    def _read(self) -> dict[str, float]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable autotune cache %s (%s); it will be rewritten", self.path, exc)
            return {}
        if isinstance(data, dict) and isinstance(data.get("version"), int) and data["version"] != CACHE_VERSION:
            log.info("autotune cache %s is version %s, this qcore writes %s: its timings will be measured again",
                     self.path, data["version"], CACHE_VERSION)
            return {}
        ok = (
            isinstance(data, dict)
            and data.get("version") == CACHE_VERSION
            and data.get("fingerprint") == self.fingerprint
            and isinstance(data.get("timings"), dict)
        )
        if not ok:
            log.warning("ignoring autotune cache %s: wrong format or fingerprint; it will be rewritten", self.path)
            return {}
        return {k: float(v) for k, v in data["timings"].items() if isinstance(v, (int, float))}

    def get(self, key: str) -> float | None:
        return self._entries.get(key)

    def put(self, key: str, seconds: float) -> None:
        self._entries[key] = seconds
        self._write()

    def _write(self) -> None:
        payload = {"version": CACHE_VERSION, "fingerprint": self.fingerprint, "timings": self._entries}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(self.path, json.dumps(payload, indent=0, sort_keys=True))
        except OSError as exc:
            log.warning("could not write autotune cache %s: %s", self.path, exc)


def cache_key(kernel: KernelImpl, request: KernelRequest) -> str:
    version = kernel.provider.version if kernel.provider and kernel.provider.version else "-"
    subject = request.scheme.to_dict() if request.scheme else request.spec.to_dict()  # type: ignore[union-attr]
    return json.dumps([kernel.id, version, request.op, subject, request.shape, request.device], sort_keys=True)


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _timed(fn: Callable[[], Any], device: str, calls: int) -> float:
    _sync(device)
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    _sync(device)
    return (time.perf_counter() - start) / calls


def cuda_graph(fn: Callable[[], Any], calls: int) -> Callable[[], None] | None:
    """A callable that replays `calls` captured calls of `fn` and waits for them; None if `fn` cannot be captured.

    On a GPU a small kernel runs in microseconds, less than launching it from
    Python; replaying a graph times the device work, as a server that captures
    its decoding step sees it. `fn` is called once first on a side stream
    (compilation, tuning and allocation must happen outside the capture). A
    call that synchronises with the host cannot be captured: the caller then
    times eager calls.
    """
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        fn()
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.graph(graph):
            for _ in range(calls):
                fn()
    except Exception as exc:  # noqa: BLE001 - any failure to capture means: time eager calls
        log.debug("cannot capture a CUDA graph, timing eager calls: %s", exc)
        torch.cuda.synchronize()
        return None

    def replay() -> None:
        graph.replay()
        torch.cuda.synchronize()

    return replay


def time_call(fn: Callable[[], Any], device: str, *, budget_s: float = 0.25, max_reps: int = 25,
              give_up_s: float | None = None) -> float:
    """Seconds per call: the fastest sample after a warm-up call; gives up early when one warm call exceeds
    `give_up_s`.

    Each sample runs enough calls back to back (synchronising only at its ends)
    to last about a millisecond. The minimum, not the median: on a shared
    machine other processes only ever add time, and the kernels being ranked
    should be compared by what they cost, not by the load when each ran. On CUDA the calls are a replayed `cuda_graph`
    when they can be captured, so microsecond kernels are timed by the device,
    not by Python's launch overhead.
    """
    _timed(fn, device, 1)  # warm-up: lazy initialisation, compilation, caches
    second = _timed(fn, device, 1)
    if give_up_s is not None and second > give_up_s:
        return second
    calls = max(1, min(1000, int(1e-3 / max(second, 1e-7))))
    replay = cuda_graph(fn, calls) if device == "cuda" else None
    samples: list[float] = []
    deadline = time.perf_counter() + budget_s
    while len(samples) < max_reps and (len(samples) < 3 or time.perf_counter() < deadline):
        samples.append(_timed(replay, device, 1) / calls if replay else _timed(fn, device, calls))
    return min(samples)


def activation_dtype(device: str) -> torch.dtype:
    """What a served model feeds its layers: float16 on CUDA, float32 on CPU."""
    return torch.float16 if device == "cuda" else torch.float32


def benchmark_inputs(shape: tuple[int, ...], device: str, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Deterministic N(0,1) activations (M, K) in `activation_dtype` and float32 weight (N, K) for a linear shape."""
    m, k, n = shape
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(m, k, generator=gen).to(device, activation_dtype(device))
    w = torch.randn(n, k, generator=gen).to(device)
    return x, w


def float_seconds(shape: tuple[int, int, int], device: str) -> float:
    """Seconds per float `x @ W.T` of a linear `shape` (M, K, N): the baseline kernels are compared with.

    Timed like a kernel (`time_call`, the same deterministic inputs, the
    activation dtype the matcher times kernels with).
    """
    x, w = benchmark_inputs(shape, device)
    wt = w.to(x.dtype).t()
    return time_call(lambda: torch.matmul(x, wt), device)


def float_key(shape: tuple[int, int, int], device: str) -> str:
    """The timing-cache key of the float matmul on a linear shape (next to the kernels' keys)."""
    dtype = str(activation_dtype(device)).removeprefix("torch.")
    return json.dumps(["float:torch.matmul", torch.__version__, "linear", dtype, list(shape), device])


def make_call(kernel: KernelImpl, request: KernelRequest, quantize_weights: Callable[..., LinearWeights]
              ) -> Callable[[], Any]:
    """A zero-argument callable running `kernel` once on synthetic data for `request`."""
    if request.op == "linear":
        assert request.shape is not None
        x, w = benchmark_inputs(request.shape, request.device)
        assert kernel.prepare is not None
        prepared = kernel.prepare(quantize_weights(request.scheme, w, x))
        return lambda: kernel.fn(prepared, x)
    assert request.spec is not None and request.shape is not None
    gen = torch.Generator().manual_seed(0)
    t = torch.randn(*request.shape, generator=gen).to(request.device)
    if request.op == "quantize":
        return lambda: kernel.fn(t, request.spec)
    raise NotImplementedError(f"timing of {request.op} kernels is not supported; rank them by priority")


def median_seconds(runs: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median wall time of each callable over `repeats` runs, after one untimed warm-up each.

    The callables take turns (a, b, a, b, ...) so that a slow spell of a
    shared machine hits all of them alike instead of biasing the ratio.
    """
    if repeats < 1:
        raise ValueError("median_seconds: repeats must be at least 1")
    for fn in runs.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, fn in runs.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}
