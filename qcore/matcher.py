"""The capability matcher: filter → rank → choose, and say why.

For a `KernelRequest`: every registered kernel for the op is checked on the
detected hardware; those that cannot run it are kept as rejections with the
reason. The rest are ranked by time measured on the request's shape on this
machine (cached per hardware fingerprint, see `qcore.autotune`), or by their
declared priority when measuring is off. A pinned backend is preferred; when
it cannot serve, the matcher falls back to the best other kernel and says so,
unless `strict`, which turns any fallback into an error. A kernel with a
negative priority is a slow generic path (the reference oracle): it is a
candidate only when nothing else can run, and `strict` forbids it then too.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs
import torch

from qcore import autotune, weights
from qcore.errors import NoKernelError, UnknownNameError
from qcore.hardware import HardwareProfile, detect
from qcore.kernels import KernelImpl, KernelRequest, LinearWeights, QTensor, Support
from qcore.plugins import PluginManager, get_manager
from qcore.spec import QuantScheme, QuantSpec

AUTO = "auto"


@attrs.frozen
class Candidate:
    kernel: KernelImpl
    support: Support
    seconds: float | None = None
    cached: bool = False

    @property
    def is_fallback(self) -> bool:
        return self.kernel.priority < 0


@attrs.frozen
class Selection:
    """The matcher's decision for one request: the chosen kernel, the ranked alternatives, the rejections."""

    request: KernelRequest
    chosen: KernelImpl
    ranked: tuple[Candidate, ...]
    rejected: tuple[Candidate, ...]
    ranking: str
    backend: str = AUTO
    fallback_reason: str = ""

    @property
    def chosen_candidate(self) -> Candidate:
        return self.ranked[0]

    def why(self) -> str:
        """One line: why this kernel."""
        c = self.chosen_candidate
        if self.fallback_reason:
            base = f"fallback: {self.fallback_reason}"
        elif self.backend != AUTO:
            base = f"pinned backend {self.backend}"
        elif c.seconds is not None:
            base = f"fastest measured ({c.seconds * 1e3:.3f} ms)"
            if len(self.ranked) > 1 and self.ranked[1].seconds:
                base += f", {self.ranked[1].seconds / c.seconds:.2f}x ahead of {self.ranked[1].kernel.id}"
        else:
            base = f"highest priority ({c.kernel.priority}); not measured"
        return base

    def explain(self) -> str:
        r = self.request
        shape = "x".join(map(str, r.shape)) if r.shape else "any shape"
        lines = [f"{r.op} {r.subject} on {r.device}, shape {shape}: {self.chosen.id} ({self.why()})"]
        lines.append(f"  ranked by {self.ranking}:")
        for i, c in enumerate(self.ranked):
            t = f"{c.seconds * 1e3:10.3f} ms{' (cached)' if c.cached else ''}" if c.seconds is not None else "   not timed"
            mark = "*" if i == 0 else " "
            lines.append(f"   {mark} {c.kernel.id:<45} {t}  priority {c.kernel.priority}")
        if self.rejected:
            lines.append("  rejected:")
            for c in self.rejected:
                lines.append(f"     {c.kernel.id:<45} {c.support.reason}")
        return "\n".join(lines)


@attrs.frozen
class LayerPlan:
    name: str
    selection: Selection | None
    note: str = ""


@attrs.frozen
class Plan:
    """Per layer: the chosen kernel, the alternatives and the reason for each rejection."""

    layers: tuple[LayerPlan, ...]

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.layers)

    def __len__(self) -> int:
        return len(self.layers)

    def __getitem__(self, name: str) -> LayerPlan:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)

    def explain(self) -> str:
        out = []
        for layer in self.layers:
            if layer.selection is None:
                out.append(f"{layer.name}: float ({layer.note})")
            else:
                out.append(f"{layer.name}: " + layer.selection.explain())
        return "\n".join(out)


QuantizeWeights = Callable[..., LinearWeights]


class Matcher:
    """Chooses kernels. One per (manager, hardware, measuring on/off) is enough for a process."""

    def __init__(
        self,
        manager: PluginManager | None = None,
        hardware: HardwareProfile | None = None,
        *,
        measure: bool = True,
        cache: autotune.TimingCache | None = None,
        quantize_weights: QuantizeWeights | None = None,
    ) -> None:
        self.manager = manager or get_manager()
        self.hardware = hardware or detect()
        self.measure = measure
        self._cache = cache
        self._quantize_weights = quantize_weights or self._sample_weights

    def _sample_weights(self, scheme: QuantScheme, weight: torch.Tensor, sample: torch.Tensor | None
                        ) -> LinearWeights:
        """Weights to time a linear kernel with, quantized by the priority-ranked `quantize` kernels."""
        by_priority = Matcher(self.manager, self.hardware, measure=False)

        def quantize(x: torch.Tensor, spec: QuantSpec) -> QTensor:
            request = KernelRequest("quantize", x.device.type, spec=spec)
            return by_priority.select(request).chosen.fn(x, spec)

        return weights.linear_weights(scheme, weight, quantize=quantize, sample=sample)

    @property
    def cache(self) -> autotune.TimingCache:
        if self._cache is None:
            self._cache = autotune.TimingCache(self.hardware)
        return self._cache

    def time(self, kernel: KernelImpl, request: KernelRequest, *, give_up_s: float | None = None
             ) -> tuple[float, bool]:
        """(seconds per call of `kernel` on `request`'s shape, whether it came from the cache); measured once.

        Raises whatever the kernel raises. With `give_up_s`, a kernel whose second call takes longer is
        timed by that call alone (it has lost already).
        """
        key = autotune.cache_key(kernel, request)
        seconds = self.cache.get(key)
        if seconds is not None:
            return seconds, True
        call = autotune.make_call(kernel, request, self._quantize_weights)
        seconds = autotune.time_call(call, request.device, give_up_s=give_up_s)
        self.cache.put(key, seconds)
        return seconds, False

    def float_time(self, shape: tuple[int, int, int], device: str) -> tuple[float, bool]:
        """(seconds per call of the float matmul on a linear shape (M, K, N), whether cached): what a layer
        kept in float costs, timed and cached like a kernel (`time`)."""
        key = autotune.float_key(shape, device)
        seconds = self.cache.get(key)
        if seconds is not None:
            return seconds, True
        seconds = autotune.float_seconds(shape, device)
        self.cache.put(key, seconds)
        return seconds, False

    def candidates(self, request: KernelRequest) -> tuple[list[Candidate], list[Candidate]]:
        """(supported, rejected) for every kernel registered for the op."""
        backends = self.manager.backends()
        ok: list[Candidate] = []
        rejected: list[Candidate] = []
        for kernel in self.manager.kernels().values():
            if kernel.op != request.op:
                continue
            info = backends.get(kernel.backend)
            if info is not None and not info.available:
                support = Support(False, f"backend unavailable: {info.reason}")
            else:
                support = kernel.check(request, self.hardware)
                if support.ok and info is not None and request.device not in (info.devices or kernel.devices):
                    support = Support(False, f"backend {kernel.backend} found no {request.device} device here")
            (ok if support.ok else rejected).append(Candidate(kernel, support))
        return ok, rejected

    def select(self, request: KernelRequest, *, backend: str | None = AUTO, strict: bool = False) -> Selection:
        """Choose the kernel for `request`; raises NoKernelError when none can (or strict forbids it)."""
        backend = backend or AUTO
        if backend != AUTO and backend not in self.manager.backends():
            known = ", ".join(sorted(self.manager.backends()))
            raise UnknownNameError(f"unknown backend {backend!r}; known: {known}")
        ok, rejected = self.candidates(request)
        fallback_reason = ""
        if backend != AUTO:
            pinned = [c for c in ok if c.kernel.backend == backend]
            if not pinned:
                reasons = "; ".join(f"{c.kernel.id}: {c.support.reason}" for c in rejected if c.kernel.backend == backend)
                fallback_reason = f"pinned backend {backend} cannot run {request.op} {request.subject}" + (
                    f" ({reasons})" if reasons else f" (it has no {request.op} kernel)"
                )
                if strict:
                    raise NoKernelError(fallback_reason + "; strict forbids falling back")
            else:
                ok = pinned
        if any(not c.is_fallback for c in ok):
            rejected.extend(
                Candidate(c.kernel, Support(False, "slow fallback; used only when nothing else can run"))
                for c in ok
                if c.is_fallback
            )
            ok = [c for c in ok if not c.is_fallback]
        if not ok:
            raise NoKernelError(
                f"no kernel can run {request.op} {request.subject} on {request.device}"
                f" shape {request.shape}: " + "; ".join(f"{c.kernel.id}: {c.support.reason}" for c in rejected)
            )
        ranked, ranking, failed = self._rank(request, ok)
        rejected.extend(failed)
        if not ranked:
            raise NoKernelError(
                f"every kernel for {request.op} {request.subject} failed: "
                + "; ".join(f"{c.kernel.id}: {c.support.reason}" for c in failed)
            )
        if strict and ranked[0].is_fallback:
            raise NoKernelError(
                f"only the slow fallback {ranked[0].kernel.id} can run {request.op} {request.subject} on "
                f"{request.device}; strict forbids it (rejections: "
                + "; ".join(f"{c.kernel.id}: {c.support.reason}" for c in rejected)
                + ")"
            )
        return Selection(request, ranked[0].kernel, tuple(ranked), tuple(rejected), ranking, backend, fallback_reason)

    def _rank(self, request: KernelRequest, ok: list[Candidate]) -> tuple[list[Candidate], str, list[Candidate]]:
        by_priority = sorted(ok, key=lambda c: (-c.kernel.priority, c.kernel.id))
        if not self.measure or request.shape is None or request.op not in ("linear", "quantize") or len(ok) < 2:
            return by_priority, "declared priority", []
        timed: list[Candidate] = []
        failed: list[Candidate] = []
        best: float | None = None
        for c in by_priority:
            try:
                seconds, cached = self.time(c.kernel, request, give_up_s=None if best is None else 20 * best)
            except Exception as exc:
                failed.append(Candidate(c.kernel, Support(False, f"failed while timing: {type(exc).__name__}: {exc}")))
                continue
            best = seconds if best is None else min(best, seconds)
            timed.append(attrs.evolve(c, seconds=seconds, cached=cached))
        timed.sort(key=lambda c: (c.seconds, -c.kernel.priority))
        how = " (CUDA graph replays where the call can be captured)" if request.device == "cuda" else ""
        return timed, f"time measured on {self.hardware.fingerprint}{how}", failed

