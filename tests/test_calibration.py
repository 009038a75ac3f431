"""Running calibration data: padding positions are not statistics, batches replay, probes are small."""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from qcore.calibration import PROBE_ROWS, CalibrationSource


class Masked(nn.Module):
    """Takes (input, attention_mask) the way Hugging Face models do; the Linear sees every position."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 3)

    def forward(self, inputs: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.proj(inputs)


def _record(model: nn.Module, data, **run) -> list[tuple[torch.Tensor, int]]:  # type: ignore[no-untyped-def]
    seen: list[tuple[torch.Tensor, int]] = []
    CalibrationSource(data, 100).run(model, {model.proj: lambda x, tokens: seen.append((x, tokens))}, **run)
    return seen


def test_padding_positions_are_left_out_of_what_layers_report() -> None:
    x = torch.arange(2 * 5 * 4, dtype=torch.float32).reshape(2, 5, 4)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    (rows, tokens), = _record(Masked(), [{"inputs": x, "attention_mask": mask}])
    assert tokens == 10 and rows.shape == (8, 4)  # planned for what runs, observed on what is real
    assert torch.equal(rows, x[mask.bool()])


def test_without_a_mask_or_with_one_that_does_not_fit_every_row_counts() -> None:
    x = torch.randn(2, 5, 4)
    (rows, _), = _record(Masked(), [{"inputs": x}])
    assert torch.equal(rows, x)
    (rows, _), = _record(Masked(), [{"inputs": x, "attention_mask": torch.ones(2, 7, dtype=torch.long)}])
    assert torch.equal(rows, x)


def test_a_callable_masks_too_and_an_iterator_is_replayed_for_probes() -> None:
    x = torch.randn(2, 5, 4)
    mask = torch.tensor([[1, 0, 0, 0, 0], [1, 1, 0, 0, 0]])
    model = Masked()
    (rows, _), = _record(model, lambda m: m(x, attention_mask=mask))
    assert rows.shape == (3, 4)
    source = CalibrationSource(iter([{"inputs": torch.randn(8, 5, 4)}]), 100)
    source.run(model, {})
    first = source.probe(model, contextlib.nullcontext)
    second = source.probe(model, contextlib.nullcontext)
    assert first[0].shape == (PROBE_ROWS, 5, 4) and torch.equal(first[0], second[0])
