"""How `qcore tune` scores a model: the mean cosine of its outputs against the float model's, or the user's score.

Outputs are what the data gives back: a callable's return value, or each
batch's ``model(batch)``; a mapping or model output counts by its first
tensor (``last_hidden_state``, ``logits``), a tuple by its first element.
They are compared row by row along the last dimension (an embedding, a
token's logits), in float64.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from qcore.calibration import CalibrationData
from qcore.errors import QcoreError
from qcore.metrics import cosine

COSINE = "mean cosine"
Score = Callable[[nn.Module], float]


def materialize(data: CalibrationData) -> CalibrationData:
    """Data that can run many times: a callable as it is, an iterable of batches as a list."""
    return data if callable(data) else list(data)


def _first_tensor(value: Any) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, Mapping):
        values: Sequence[Any] = list(value.values())
    elif isinstance(value, (list, tuple)):
        values = value
    else:
        values = ()
    for item in values:
        if isinstance(item, (torch.Tensor, Mapping, list, tuple)):
            return _first_tensor(item)
    raise QcoreError(f"cannot compare model outputs of type {type(value).__name__}: no tensor in them "
                     "(give qcore.tune a score(model) -> float instead)")


def outputs(model: nn.Module, data: CalibrationData) -> torch.Tensor:
    """The model's outputs on `data` as rows (n, D), float64, in the eval mode and without gradients."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            results = [data(model)] if callable(data) else [_call(model, batch) for batch in data]
    finally:
        model.train(was_training)
    rows = [_first_tensor(r).detach().to(torch.float64).cpu() for r in results]
    return torch.cat([r.reshape(-1, r.shape[-1]) if r.ndim else r.reshape(1, 1) for r in rows])


def _call(model: nn.Module, batch: Any) -> Any:
    return model(**batch) if isinstance(batch, Mapping) else model(batch)


class Quality:
    """A quality measure (higher is better): `name`, the float model's `reference`, and `measure(model)`."""

    name: str
    reference: float
    description: str

    def measure(self, model: nn.Module) -> float:
        raise NotImplementedError

    def run(self, model: nn.Module) -> None:
        """What `measure` runs of the model, without measuring (what an end-to-end timing times)."""
        raise NotImplementedError


class OutputCosine(Quality):
    """Mean cosine of the model's outputs on `data` against the float model's (1.0 for the float model)."""

    name = COSINE
    reference = 1.0

    def __init__(self, float_model: nn.Module, data: CalibrationData, description: str) -> None:
        self.data = materialize(data)
        self.description = description
        self.float_rows = outputs(float_model, self.data)

    def measure(self, model: nn.Module) -> float:
        rows = outputs(model, self.data)
        if rows.shape != self.float_rows.shape:
            raise QcoreError(f"the outputs changed shape: {tuple(self.float_rows.shape)} from the float model, "
                             f"{tuple(rows.shape)} now; is the data the same on every run?")
        return float(cosine(self.float_rows, rows).mean())

    def run(self, model: nn.Module) -> None:
        outputs(model, self.data)


class UserScore(Quality):
    """The caller's ``score(model) -> float`` (a task metric); the reference is the float model's score."""

    def __init__(self, float_model: nn.Module, score: Score, name: str = "score") -> None:
        self.score = score
        self.name = name
        self.description = getattr(score, "__name__", "score")
        self.reference = self.measure(float_model)

    def run(self, model: nn.Module) -> None:
        self.measure(model)

    def measure(self, model: nn.Module) -> float:
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                value = self.score(model)
        finally:
            model.train(was_training)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value != value:
            raise QcoreError(f"score(model) must return a finite number, got {value!r}")
        return float(value)

