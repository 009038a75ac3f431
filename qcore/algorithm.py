"""The algorithm plugin contract: the descriptor, the per-layer record algorithms work on, their context.

A quantization algorithm (GPTQ, SmoothQuant, AWQ, a third party's) is an
`AlgorithmImpl` returned by the ``qcore_algorithms`` hook. `qcore.quantize`
(`qcore.pipeline`) runs the algorithms a recipe lists, in order, each on the
layers its `applies` check accepts:

1. during the one calibration pass, each accepted layer's `Collector` (made
   by `collector`) sees that layer's inputs;
2. then `run(ctx)` uses those statistics. A ``transform`` algorithm changes
   weights and inputs before quantization (SmoothQuant, AWQ: weight columns
   times s, the input divided by s, folded into the op producing the input
   where that is exact; see `qcore.algorithms.balance`). A ``quantize``
   algorithm produces the quantized weight (`LayerWork.qweight`, GPTQ)
   instead of round-to-nearest; later transforms and quantizers no longer
   see that layer. A ``correct`` algorithm runs on final weights (the
   quantizer's, or round-to-nearest's, set on the layer before it runs) and
   may change only what is not quantized: the bias (bias correction).

Statistics are collected once, on the float model's inputs. When an earlier
algorithm transformed a layer's input (x became x·m per channel), a later
algorithm reads its statistics through ``Collector.rescaled(m)``, which must
give exactly what collecting on x·m would have given.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs
import torch
from torch import nn

from qcore.errors import QcoreError, SpecError
from qcore.kernels import Provider, QTensor, Support
from qcore.spec import QuantScheme

if TYPE_CHECKING:
    from qcore.matcher import Selection
    from qcore.recipe import AlgorithmEntry, LayerRule

KINDS: tuple[str, ...] = ("transform", "quantize", "correct")
LAYERS_OPTION = "layers"
"""The option every algorithm takes: name patterns restricting it to some layers (default: all it applies to)."""


class Collector:
    """Calibration statistics of one layer's input, for one algorithm.

    `observe(x)` is called with the layer's input (..., K) on every calibration
    forward pass; `samples` counts the rows seen (the pipeline reports a layer
    the data never reached). `rescaled(m)` returns the statistics the same
    inputs would give with each channel j multiplied by ``m[j]`` (float32,
    shape (K,)): a transform earlier in the recipe moved the layer's input.
    """

    samples: int = 0

    def observe(self, x: torch.Tensor) -> None:
        raise NotImplementedError

    def rescaled(self, m: torch.Tensor) -> Collector:
        raise NotImplementedError


@attrs.frozen
class AlgorithmRun:
    """That an algorithm ran on a layer, with which options, and what it did there (card and checkpoint)."""

    algorithm: str
    options: Mapping[str, Any]
    note: str = ""

    def describe(self) -> str:
        opts = ", ".join(f"{k}={v}" for k, v in self.options.items() if v not in ([], (), None))
        return f"{self.algorithm}({opts})" + (f": {self.note}" if self.note else "")


@attrs.define(eq=False)
class LayerWork:
    """One targeted layer while `quantize` runs: the one record of what happens to it.

    `rule` is the recipe's decision; `selection` the kernel planned for it
    (None: it stays float, and `float_reason` says why). The float weight and
    bias live in the module: transforms edit them in place (undone when
    quantizing fails). `input_multiplier` is the per-channel factor between
    the input calibration saw and the one the layer sees now (None:
    unchanged); `input_scale` the part the layer applies itself at run time,
    because no preceding op could absorb it. `qweight` is the weight a
    ``quantize`` algorithm produced (`qweight_by`); `act_qparams` the static
    activation qparams; `tokens` the row count of the first calibration batch
    (what the kernel is planned for); `runs` the algorithms that touched it.
    """

    name: str
    module: nn.Module
    rule: LayerRule
    selection: Selection | None = None
    float_reason: str | None = None
    input_multiplier: torch.Tensor | None = None
    input_scale: torch.Tensor | None = None
    qweight: QTensor | None = None
    qweight_by: str | None = None
    act_qparams: tuple[torch.Tensor, torch.Tensor] | None = None
    tokens: int | None = None
    runs: list[AlgorithmRun] = attrs.field(factory=list)

    @property
    def scheme(self) -> QuantScheme:
        """The layer's scheme (only quantized layers reach algorithms, so it is never None there)."""
        assert self.rule.scheme is not None
        return self.rule.scheme

    @property
    def quantized(self) -> bool:
        return self.selection is not None

    @property
    def weight(self) -> torch.Tensor:
        """The current float weight (N, K) as float32 (a copy when the module keeps another dtype)."""
        return self.module.weight.detach().float()

    @property
    def in_features(self) -> int:
        return int(self.module.weight.shape[1])


Applies = Callable[[Any, LayerWork], Support]
MakeCollector = Callable[[Any, LayerWork], Collector]
Run = Callable[["AlgorithmContext"], None]


def _check_name(_inst: Any, attr: attrs.Attribute, value: str) -> None:
    if not value or not isinstance(value, str) or not value.replace("-", "_").isidentifier():
        raise SpecError(f"AlgorithmImpl.{attr.name} must be a name like 'gptq' or 'mse-clip', got {value!r}")


def _check_options(_inst: Any, _attr: attrs.Attribute, value: type) -> None:
    if not (isinstance(value, type) and attrs.has(value)):
        raise SpecError(f"AlgorithmImpl.options must be an attrs class (the typed option schema), got {value!r}")
    if LAYERS_OPTION in attrs.fields_dict(value):
        raise SpecError(f"AlgorithmImpl.options: {LAYERS_OPTION!r} is the option every algorithm takes; "
                        "do not declare it")


@attrs.frozen
class AlgorithmImpl:
    """A quantization algorithm, as a recipe names it in ``algorithms:``.

    - `name`: its recipe entry (``algorithms: [{gptq: {damp: 0.01}}]``).
    - `options`: an attrs class whose fields are the options, with types and
      defaults (``float``, ``int``, ``bool``, ``str``, ``Literal[...]``,
      ``tuple[X, ...]``, ``X | None``, nested attrs classes) and attrs
      validators for ranges; the recipe validator checks every entry against
      it (`qcore.options`). ``metadata={"help": ...}`` documents an option
      for ``qcore algorithms``. Every algorithm also takes ``layers`` (name
      patterns), handled by qcore.
    - `applies(options, layer) -> Support`: the one answer to "does this
      algorithm apply to this layer", with the reason when it does not.
    - `collector(options, layer) -> Collector`: the statistics it collects
      on each accepted layer during calibration (None: it needs no data).
    - `run(ctx)`: what it does with them (see `AlgorithmContext`).
    - `kind`: ``transform`` (changes weights and inputs before quantization),
      ``quantize`` (produces the quantized weight) or ``correct`` (adjusts
      what stays float, such as the bias, once the weights are final).
    - `qat`: whether it can run for quantization-aware training
      (``prepare_qat`` refuses a recipe listing one that cannot).
    """

    name: str = attrs.field(validator=_check_name)
    options: type = attrs.field(validator=_check_options)
    applies: Applies
    run: Run
    kind: str = attrs.field(validator=attrs.validators.in_(KINDS))
    collector: MakeCollector | None = None
    qat: bool = False
    description: str = ""
    provider: Provider | None = None

    @property
    def needs_calibration(self) -> bool:
        return self.collector is not None


class ModelEdits:
    """What algorithms change in the float model while `quantize` runs, undone together by `rollback`.

    Parameter and buffer replacements (`set`), and the input scales of layers
    that apply 1/s themselves (`scale_input`): their weights already hold W·s,
    so until QuantLinear replaces them the float layer must see x/s too, or
    the model every later probe and calibration pass runs would be wrong.
    """

    def __init__(self) -> None:
        self._original: dict[tuple[int, str], tuple[nn.Module, torch.Tensor]] = {}
        self._hooks: dict[int, Any] = {}

    def set(self, module: nn.Module, name: str, value: torch.Tensor) -> None:
        current = getattr(module, name, None)
        if not isinstance(current, torch.Tensor) or tuple(current.shape) != tuple(value.shape):
            found = tuple(current.shape) if isinstance(current, torch.Tensor) else current
            raise QcoreError(f"cannot replace {type(module).__name__}.{name} ({found}) by a tensor of shape "
                             f"{tuple(value.shape)}")
        self._original.setdefault((id(module), name), (module, current.detach().clone()))
        with torch.no_grad():
            current.copy_(value.to(device=current.device, dtype=current.dtype))

    def scale_input(self, module: nn.Module, scale: Callable[[], torch.Tensor | None]) -> None:
        """Until `release`, `module` multiplies its input by ``scale()`` (read at each call; None: nothing)."""
        if id(module) in self._hooks:
            return

        def pre_hook(_m: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
            s = scale()
            return None if s is None else (args[0] * s.to(args[0].device, args[0].dtype), *args[1:])

        self._hooks[id(module)] = module.register_forward_pre_hook(pre_hook)

    def release(self) -> None:
        """Remove the input-scale hooks (the QuantLinear layers apply their scales from now on)."""
        for handle in self._hooks.values():
            handle.remove()
        self._hooks.clear()

    def rollback(self) -> None:
        with torch.no_grad():
            for (_, name), (module, original) in self._original.items():
                getattr(module, name).copy_(original)
        self._original.clear()
        self.release()

    @contextlib.contextmanager
    def undo_on_error(self) -> Iterator[None]:
        try:
            yield
        except BaseException:
            self.rollback()
            raise


class AlgorithmContext:
    """What `AlgorithmImpl.run` gets: its options, its layers and their statistics, and the model to edit.

    `layers` are the layers this entry runs on (model order); `all_layers`
    every targeted layer by name. Edits of the model go through `edit`, so
    that `quantize` can put the model back as it was when anything fails.
    """

    def __init__(self, impl: AlgorithmImpl, entry: AlgorithmEntry, model: nn.Module, layers: Sequence[LayerWork],
                 all_layers: Mapping[str, LayerWork], stats: Mapping[str, Collector], edits: ModelEdits,
                 services: Any) -> None:
        self.impl = impl
        self.entry = entry
        self.options = entry.options
        self.model = model
        self.layers = tuple(layers)
        self.all_layers = all_layers
        self._stats = stats
        self._edits = edits
        self._services = services

    def stats(self, layer: LayerWork) -> Any:
        """This algorithm's statistics of `layer`'s input as the layer sees it now (rescaled after transforms)."""
        collector = self._stats.get(layer.name)
        if collector is None:
            raise QcoreError(f"layer {layer.name!r}: {self.impl.name} collected no statistics for it")
        if collector.samples == 0:
            raise QcoreError(f"layer {layer.name!r}: the calibration data never reached this layer; "
                             f"{self.impl.name} needs its inputs")
        m = layer.input_multiplier
        return collector if m is None else collector.rescaled(m)

    def note(self, layer: LayerWork, text: str = "") -> None:
        """Record on `layer` that this algorithm ran there, with its options and a short note."""
        layer.runs.append(AlgorithmRun(self.impl.name, self.entry.options_dict(), text))

    def edit(self, module: nn.Module, name: str, value: torch.Tensor) -> None:
        """Replace parameter or buffer `name` of `module` by `value` (same shape; cast to its dtype), undoably."""
        self._edits.set(module, name, value)

    def scale_input(self, layer: LayerWork, factor: torch.Tensor) -> None:
        """`layer` multiplies its input by `factor` (per channel) from now on, at run time too.

        For a transform whose 1/s no preceding op can absorb: the factor goes
        into `layer.input_scale` (the QuantLinear applies it), and the float
        layer applies it meanwhile, so the model stays exact for later passes.
        """
        layer.input_scale = factor if layer.input_scale is None else layer.input_scale * factor
        self._edits.scale_input(layer.module, lambda: layer.input_scale)

    def groups(self, layers: Sequence[LayerWork], mappings: Sequence[Any] = ()) -> list[Any]:
        """`layers` grouped by the op producing their input where a per-channel scale folds into it exactly.

        See `qcore.algorithms.balance`: found once per `quantize` from the
        model's own dataflow on calibration data, or from explicit `mappings`
        (`balance.MappingSpec`), and verified numerically either way.
        """
        return self._services.groups(self, layers, tuple(mappings))

    def progress(self, description: str, total: int) -> contextlib.AbstractContextManager[Callable[[int], None]]:
        """A progress bar for long work; the context gives a function that advances it."""
        return self._services.progress(f"{self.impl.name}: {description}", total)
