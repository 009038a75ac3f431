"""Each targeted layer's calibration inputs, recorded in one pass and replayed for every candidate.

Every candidate runs the pipeline's calibration (its algorithms' collectors,
its observers) on the same inputs; `LayerInputs.record` runs the data through
the float model once, with the sample limit `qcore.quantize` applies, and
`Replay` feeds the recorded inputs to the pipeline's hooks instead of running
the model again. After a transform moved a layer's input (SmoothQuant, AWQ),
the replay feeds what the transformed model's layer would compute on: the
recorded input times the layer's `input_multiplier` (the part folded into
other ops and the part the layer applies itself alike).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence

import torch
from torch import nn

from qcore.algorithm import LayerWork
from qcore.calibration import CalibrationSource, LayerHook
from qcore.nn.convert import swap


class LayerInputs:
    """The inputs each module saw, in call order, and the (samples, batches) the pass ran."""

    def __init__(self, source: CalibrationSource, modules: Sequence[nn.Module]) -> None:
        self.source = source
        self.inputs: dict[nn.Module, list[tuple[torch.Tensor, int]]] = {m: [] for m in modules}
        self.counts = (0, 0)
        self.first_rows = 0

    @classmethod
    def record(cls, model: nn.Module, source: CalibrationSource, modules: Sequence[nn.Module],
               advance: Callable[[int], None]) -> LayerInputs:
        out = cls(source, modules)
        hooks = {m: (lambda x, tokens, m=m: out.inputs[m].append((x.detach().clone(), tokens))) for m in modules}
        first: list[int] = []

        def count(rows: int) -> None:
            first.append(rows)
            advance(rows)

        out.counts = source.run(model, hooks, advance=count)
        out.first_rows = first[0] if first else 0
        return out

    @property
    def nbytes(self) -> int:
        return sum(x.numel() * x.element_size() for xs in self.inputs.values() for x, _ in xs)

    def replay(self, layers: Sequence[LayerWork]) -> Replay:
        return Replay(self, {layer.module: layer for layer in layers})


def _factor(layer: LayerWork | None) -> torch.Tensor | None:
    """What the layer's kernel sees now relative to the recorded input (None: the same); the pipeline's
    hooks see that, the part the layer applies itself (`input_scale`) included."""
    return None if layer is None else layer.input_multiplier


class Replay(CalibrationSource):
    """A CalibrationSource whose passes replay recorded inputs; probes still run the model (the first call)."""

    def __init__(self, recorded: LayerInputs, layers: Mapping[nn.Module, LayerWork]) -> None:
        super().__init__(recorded.source.data, recorded.source.limit)
        self.recorded = recorded
        self.layers = layers

    def run(self, model: nn.Module, hooks: Mapping[nn.Module, LayerHook], *, first_batch_only: bool = False,
            advance: Callable[[int], None] = lambda rows: None) -> tuple[int, int]:
        for i, (module, hook) in enumerate(hooks.items()):
            factor = _factor(self.layers.get(module))
            recorded = self.recorded.inputs[module]
            for x, tokens in recorded[:1] if first_batch_only else recorded:
                hook(x if factor is None else x * factor.to(x.device, x.dtype), tokens)
                if i == 0:
                    advance(x.shape[0] if x.ndim > 1 else 1)
        if first_batch_only:
            return self.recorded.first_rows, 1
        return self.recorded.counts

    def probe(self, model: nn.Module, hooks: Callable[[], contextlib.AbstractContextManager[None]]
              ) -> list[torch.Tensor]:
        return self.recorded.source.probe(model, hooks)


@contextlib.contextmanager
def replaced(model: nn.Module, replacements: Mapping[str, nn.Module]) -> Iterator[None]:
    """`replacements` swapped in for the modules of those names, the originals put back afterwards."""
    originals = {name: model.get_submodule(name) for name in replacements}
    swap(model, replacements)
    try:
        yield
    finally:
        swap(model, originals)
