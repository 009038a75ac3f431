"""Cost and sensitivity of every candidate on every layer: what the solver chooses from.

For each targeted layer and candidate:

- cost: the bytes the layer stores and the measured time of the kernel the
  matcher picks for that scheme on the layer's real shape (tokens of the
  first calibration batch, in and out features), cached per hardware
  fingerprint; keeping the layer float costs its float bytes and the float
  matmul timed the same way (`Matcher.float_time`);
- sensitivity: the quality lost when only that layer is quantized with that
  candidate: the pipeline runs a one-layer recipe (the candidate's scheme on
  that layer, its algorithms) on the model, the quantized layer is swapped in,
  the data runs once and the quality is measured; then the layer and every
  parameter the algorithms edited are put back.

What keeps it affordable: the calibration data runs through the model once,
recording every targeted layer's inputs, and each one-layer pipeline
calibrates from that record (`qcore.tuning.inputs`); the dataflow search of
SmoothQuant and AWQ runs once; kernel timings come from the cache after the
first layer of a shape; and where the quality loss cannot be negative (the
default cosine), a candidate no cheaper than float on every objective asked
for is not scored: float beats it. `SweepCost` says what it all took.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence

import attrs
import torch
from torch import nn

from qcore import pipeline
from qcore.algorithm import LayerWork, ModelEdits
from qcore.calibration import CalibrationData, CalibrationSource, progress_bar
from qcore.errors import QcoreError
from qcore.hardware import HardwareProfile
from qcore.matcher import Matcher
from qcore.nn.convert import build_layers
from qcore.recipe import Override, Recipe
from qcore.tuning.candidates import Candidate
from qcore.tuning.inputs import LayerInputs, replaced
from qcore.tuning.quality import COSINE, Quality

FLOAT_KERNEL = "torch.matmul (float)"
OBJECTIVES = ("size", "latency")


@attrs.frozen
class Option:
    """One candidate on one layer: bytes stored, seconds per call of its kernel, quality lost (None: not scored)."""

    candidate: str
    bytes: int
    seconds: float
    kernel: str
    loss: float | None
    note: str = ""

    def cost(self, objective: str) -> float:
        return float(self.bytes) if objective == "size" else self.seconds


@attrs.frozen
class LayerProfile:
    """One targeted layer: its shape (tokens, in, out) and its options, float first; candidates it cannot take."""

    name: str
    shape: tuple[int, int, int]
    options: tuple[Option, ...]
    unavailable: tuple[tuple[str, str], ...] = ()

    def option(self, candidate: str) -> Option | None:
        return next((o for o in self.options if o.candidate == candidate), None)

    @property
    def float(self) -> Option:
        return self.options[0]


@attrs.frozen
class SweepCost:
    """What profiling cost: seconds per phase, forward passes run and skipped, bytes of recorded inputs."""

    record_seconds: float
    quantize_seconds: float
    score_seconds: float
    passes: int
    skipped: int
    recorded_bytes: int

    @property
    def seconds(self) -> float:
        return self.record_seconds + self.quantize_seconds + self.score_seconds

    def describe(self) -> str:
        return (f"{self.seconds:.0f} s: inputs recorded in {self.record_seconds:.1f} s "
                f"({self.recorded_bytes / 2**20:.0f} MiB), one-layer quantizations {self.quantize_seconds:.1f} s, "
                f"{self.passes} scoring passes {self.score_seconds:.1f} s"
                + (f", {self.skipped} skipped (no cheaper than float)" if self.skipped else ""))


@attrs.frozen
class Profile:
    """Every layer's options, and what they were measured with (quality, data, hardware, kernels present)."""

    candidates: tuple[Candidate, ...]
    layers: tuple[LayerProfile, ...]
    quality: str
    reference: float
    data: str
    base: Recipe
    hardware: HardwareProfile
    kernels: tuple[str, ...]
    cost: SweepCost
    objectives: tuple[str, ...] = OBJECTIVES
    threads: int = 1

    def candidate(self, name: str) -> Candidate:
        return next(c for c in self.candidates if c.name == name)


def targets(model: nn.Module, base: Recipe, candidates: Sequence[Candidate]) -> list[LayerWork]:
    """The layers the base recipe targets and does not ignore (nn.Linear only: what qcore quantizes)."""
    probe = next((c.scheme for c in candidates if c.scheme is not None), None)
    if probe is None:
        return []
    layers = pipeline.resolve(model, attrs.evolve(base, scheme=probe))
    return [w for w in layers if w.rule.scheme is not None and isinstance(w.module, nn.Linear)]


def one_layer_recipe(base: Recipe, layer: str, candidate: Candidate) -> Recipe:
    """The base recipe with `candidate` on the one layer named `layer` and every other layer float."""
    return attrs.evolve(base, scheme=None, overrides=(Override(layer, candidate.scheme),),
                        algorithms=candidate.algorithms, on_unsupported="keep-float", tuned=None, source=None)


def linear_kernels(matcher: Matcher, device: str) -> tuple[str, ...]:
    """The linear kernels on `device` of the available backends, with their distributions' versions."""
    backends = matcher.manager.backends()
    out = []
    for kernel in matcher.manager.kernels().values():
        info = backends.get(kernel.backend)
        if kernel.op == "linear" and device in kernel.devices and (info is None or info.available):
            version = kernel.provider.version if kernel.provider and kernel.provider.version else "-"
            out.append(f"{kernel.id} {version}")
    return tuple(sorted(out))


class _Sweep:
    """The state one `profile` call shares: model, recorded inputs, matcher, the dataflow search, the clock."""

    def __init__(self, model: nn.Module, base: Recipe, recorded: LayerInputs, matcher: Matcher,
                 quality: Quality, prune: tuple[str, ...]) -> None:
        self.model, self.base, self.recorded, self.matcher, self.quality = model, base, recorded, matcher, quality
        self.prune = prune
        self.services = pipeline.Services(model, recorded.source, False)
        self.by_priority = Matcher(matcher.manager, matcher.hardware, measure=False)
        self.quantize_seconds = self.score_seconds = 0.0
        self.passes = self.skipped = 0

    def option(self, layer: LayerWork, float_option: Option, candidate: Candidate) -> Option | str:
        """The candidate's option on `layer`, or why the candidate cannot run there."""
        recipe = one_layer_recipe(self.base, layer.name, candidate)
        edits = ModelEdits()
        start = time.perf_counter()
        try:
            with warnings.catch_warnings():  # the base recipe's warnings were given once, by `targets`
                warnings.simplefilter("ignore")
                work_layers = pipeline.resolve(self.model, recipe)
                pipeline.plan(work_layers, recipe, self.by_priority)
                (work,) = [w for w in work_layers if w.name == layer.name]
                if not work.quantized:
                    return work.float_reason or "unsupported"
                steps = pipeline.steps(work_layers, recipe)
                replay = self.recorded.replay(work_layers)
                _, later = pipeline.calibrate(self.model, work_layers, steps, recipe, replay, False)
                pipeline.run_steps(self.model, work_layers, steps, self.services, edits)
                pipeline.observe_transformed(self.model, work_layers, later, replay, False)
                pipeline.plan(work_layers, recipe, self.matcher)
                if not work.quantized:
                    return work.float_reason or "unsupported"
                built, records = build_layers([work])
            selection = work.selection
            assert selection is not None
            seconds = selection.chosen_candidate.seconds
            if seconds is None:
                seconds, _ = self.matcher.time(selection.chosen, selection.request)
            skipped = "; ".join(f"{s.impl.name} skipped: {why}" for s in steps for _, why in s.skipped)
            option = Option(candidate.name, records[0].quant_bytes, seconds, selection.chosen.id, None, skipped)
            self.quantize_seconds += time.perf_counter() - start
            if self.prune and all(option.cost(o) >= float_option.cost(o) for o in self.prune):
                self.skipped += 1
                return attrs.evolve(option, note="; ".join(filter(None, (option.note, "not scored: no cheaper than "
                                                                         "float, which loses nothing"))))
            start = time.perf_counter()
            with replaced(self.model, built):
                measured = self.quality.measure(self.model)
            self.passes += 1
            self.score_seconds += time.perf_counter() - start
            return attrs.evolve(option, loss=self.quality.reference - measured)
        finally:
            edits.rollback()


def _float_option(name: str, layer: LayerWork, shape: tuple[int, int, int], matcher: Matcher) -> Option:
    module = layer.module
    nbytes = sum(t.numel() * t.element_size() for t in (module.weight, module.bias) if t is not None)
    seconds, _ = matcher.float_time(shape, module.weight.device.type)
    return Option(name, nbytes, seconds, FLOAT_KERNEL, 0.0)


def profile(model: nn.Module, data: CalibrationData, *, candidates: Sequence[Candidate], quality: Quality,
            base: Recipe, matcher: Matcher, objectives: Sequence[str] = OBJECTIVES, data_description: str = "",
            show: bool = True, log: Callable[[str], None] = lambda line: None) -> Profile:
    """Cost and sensitivity of every candidate on every targeted layer of `model` (left as it was)."""
    for objective in objectives:
        if objective not in OBJECTIVES:
            raise QcoreError(f"unknown objective {objective!r}; known: {', '.join(OBJECTIVES)}")
    layers = targets(model, base, candidates)
    if not layers:
        raise QcoreError(f"nothing to tune: the recipe targets no nn.Linear of {type(model).__name__} "
                         f"(targets {list(base.targets)}, ignore {list(base.ignore)})")
    source = CalibrationSource(data, base.calibration.samples)
    start = time.perf_counter()
    with progress_bar(show) as bar:
        task = bar.add_task("recording each layer's calibration inputs", total=source.limit)
        recorded = LayerInputs.record(model, source, [w.module for w in layers], lambda n: bar.advance(task, n))
    record_seconds = time.perf_counter() - start
    missing = [w.name for w in layers if not recorded.inputs[w.module]]
    if missing:
        raise QcoreError("the calibration data never reached " + ", ".join(missing[:5])
                         + (f" and {len(missing) - 5} more" if len(missing) > 5 else ""))
    log(f"recorded the inputs of {len(layers)} layers ({recorded.counts[0]} samples) in {record_seconds:.1f} s")
    prune = tuple(objectives) if quality.name == COSINE else ()
    sweep = _Sweep(model, base, recorded, matcher, quality, prune)
    quantized = [c for c in candidates if not c.is_float]
    float_name = next(c.name for c in candidates if c.is_float)
    out = []
    with progress_bar(show) as bar:
        task = bar.add_task("sensitivity and cost", total=len(layers) * len(quantized))
        for layer in layers:
            _, tokens = recorded.inputs[layer.module][0]
            shape = (tokens, layer.module.in_features, layer.module.out_features)
            float_option = _float_option(float_name, layer, shape, matcher)
            options, unavailable = [float_option], []
            for candidate in quantized:
                bar.update(task, description=f"{candidate.name} on {layer.name}")
                result = sweep.option(layer, float_option, candidate)
                if isinstance(result, Option):
                    options.append(result)
                else:
                    unavailable.append((candidate.name, result))
                bar.advance(task)
            out.append(LayerProfile(layer.name, shape, tuple(options), tuple(unavailable)))
    cost = SweepCost(record_seconds, sweep.quantize_seconds, sweep.score_seconds, sweep.passes, sweep.skipped,
                     recorded.nbytes)
    log(f"profiled {len(layers)} layers x {len(quantized)} candidates in {cost.describe()}")
    return Profile(tuple(candidates), tuple(out), quality.name, quality.reference, data_description or
                   quality.description, base, matcher.hardware,
                   linear_kernels(matcher, layers[0].module.weight.device.type), cost, tuple(objectives),
                   torch.get_num_threads())
