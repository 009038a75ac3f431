"""What `quantize` did to a model: one record per targeted layer, kept on the model (`state_of`).

The records say what happened (scheme, rule, algorithms and their options,
bytes, weight SQNR, or why a layer stayed float). Which kernel a layer runs
is not copied into them: the QuantLinear layer holds its selection (moving a
model re-plans it), and `state_of` reads it from there.
"""

from __future__ import annotations

from collections.abc import Iterator

import attrs
from torch import nn

from qcore.algorithm import AlgorithmRun
from qcore.calibration import CalibrationInfo
from qcore.errors import QcoreError
from qcore.hardware import HardwareProfile
from qcore.matcher import LayerPlan, Plan, Selection
from qcore.nn.modules import QuantLinear
from qcore.recipe import Recipe
from qcore.spec import QuantScheme

STATE_ATTR = "_qcore_state"


@attrs.frozen
class LayerRecord:
    """One targeted layer: its scheme, or why it stayed float; which algorithms ran; what it cost."""

    name: str
    scheme: QuantScheme | None
    rule: str
    float_reason: str | None
    in_features: int
    out_features: int
    float_bytes: int
    quant_bytes: int
    weight_sqnr: float | None
    algorithms: tuple[AlgorithmRun, ...] = ()
    tokens: int | None = None


@attrs.frozen
class QuantState:
    """What `quantize` (or `convert`, or `qcore.load`) did to a model, with the kernel each layer runs now.

    `selections` are read from the model's QuantLinear layers by `state_of`;
    the state stored on the model has none.
    """

    recipe: Recipe
    layers: tuple[LayerRecord, ...]
    calibration: CalibrationInfo | None
    hardware: HardwareProfile
    selections: dict[str, Selection] = attrs.field(factory=dict, eq=False)

    def layer(self, name: str) -> LayerRecord:
        for record in self.layers:
            if record.name == name:
                return record
        raise KeyError(name)

    def __iter__(self) -> Iterator[LayerRecord]:
        return iter(self.layers)

    def selection(self, name: str) -> Selection | None:
        return self.selections.get(name)

    def kernel(self, name: str) -> str | None:
        selection = self.selections.get(name)
        return selection.chosen.id if selection is not None else None

    def why(self, name: str) -> str:
        """Why the layer runs its kernel, or why it stayed float."""
        selection = self.selections.get(name)
        return selection.why() if selection is not None else self.layer(name).float_reason or ""

    @property
    def plan(self) -> Plan:
        return Plan(tuple(LayerPlan(r.name, self.selections.get(r.name), r.float_reason or "") for r in self.layers))


def attach(model: nn.Module, state: QuantState) -> None:
    """Record `state` on `model` (without selections: the layers hold those)."""
    setattr(model, STATE_ATTR, attrs.evolve(state, selections={}))


def state_of(model: nn.Module) -> QuantState:
    """The QuantState recorded on a quantized model, with the kernel each QuantLinear runs now."""
    state = getattr(model, STATE_ATTR, None)
    if state is None:
        raise QcoreError(f"{type(model).__name__} is not quantized: run qcore.quantize, qcore.convert or qcore.load")
    live = {name: m.selection for name, m in model.named_modules() if isinstance(m, QuantLinear)}
    return attrs.evolve(state, selections={r.name: live[r.name] for r in state.layers if r.name in live})
