"""The demo's interop step: the quantized MiniLM written as a compressed-tensors folder and read back by the
compressed-tensors package's own dequantizer, to show that every weight survives bit for bit.

A recipe whose transforms (SmoothQuant, AWQ) leave a scale in front of a
layer's kernel (input_scale, not folded into the preceding op) cannot be
expressed in the format; the step then says so and exports the same recipe
without its transform algorithms instead.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

import attrs
import torch
from rich.table import Table
from torch import nn

from qcore import hf
from qcore.compressed_tensors.args import FormatError
from qcore.compressed_tensors.writer import WEIGHTS_FILE, ExportReport, export
from qcore.errors import QcoreError
from qcore.plugins import get_manager
from qcore.recipe import Recipe


@attrs.frozen
class Agreement:
    """What the export wrote and how the package's dequantization compares with qcore's, layer by layer."""

    report: ExportReport
    identical: int
    max_abs_diff: float
    note: str = ""

    @property
    def vllm(self) -> Counter[str]:
        return Counter(layer.serving.scheme or "none" for layer in self.report.quantized if layer.serving)


def dequantize_with_compressed_tensors(directory: Path) -> dict[str, torch.Tensor]:
    """Every tensor of an export, the quantized weights dequantized (float32) by compressed-tensors itself."""
    try:
        from compressed_tensors.entrypoints.convert.converters.ct_dequantizer import CompressedTensorsDequantizer
        from safetensors.torch import load_file
    except ImportError:
        raise QcoreError("the demo's export check needs compressed-tensors (pip install 'qcore[demo]')") from None
    dequantizer = CompressedTensorsDequantizer(directory, dtype=torch.float32)
    return dequantizer.process(load_file(directory / WEIGHTS_FILE))


def export_and_check(model: nn.Module, recipe: Recipe, out: Path,
                     requantize: Callable[[Recipe], nn.Module]) -> Agreement:
    """Export `model` (quantized with `recipe`) to `out` and compare the package's weights with qcore's."""
    note = ""
    try:
        report = export(model, out)
    except FormatError as exc:
        manager = get_manager()
        kept = tuple(a for a in recipe.algorithms if manager.algorithm(a.name).kind != "transform")
        if kept == recipe.algorithms:
            raise
        dropped = ", ".join(a.name for a in recipe.algorithms if a not in kept)
        note = f"{exc}. Exported the recipe without {dropped} instead."
        model = requantize(attrs.evolve(recipe, algorithms=kept))
        report = export(model, out)
    found = hf.root_of(model)
    root = found[1] if found is not None else model
    dense = dequantize_with_compressed_tensors(out)
    identical, worst = 0, 0.0
    for layer in report.quantized:
        ours = root.get_submodule(layer.name).dequantized_weight()  # type: ignore[operator]
        theirs = dense[f"{layer.name}.weight"]
        identical += bool(torch.equal(ours, theirs))
        worst = max(worst, float((ours - theirs).abs().max()))
    return Agreement(report, identical, worst, note)


def agreement_table(name: str, agreement: Agreement) -> Table:
    report = agreement.report
    table = Table(title=f"{name} as compressed-tensors, read back by compressed-tensors' dequantizer")
    table.add_column("")
    table.add_column("", overflow="fold")
    table.add_row("folder", f"{report.directory} ({report.format}; config.json, {WEIGHTS_FILE}"
                            + (f", {', '.join(report.tokenizer_files)})" if report.tokenizer_files else ")"))
    table.add_row("weights", f"{agreement.identical} of {len(report.quantized)} quantized layers bit-identical to "
                             f"qcore's (max |difference| {agreement.max_abs_diff:g})")
    table.add_row("vLLM", ", ".join(f"{scheme} x{n}" for scheme, n in sorted(agreement.vllm.items())))
    table.add_row("load with", f"transformers: AutoModel.from_pretrained('{report.directory}', "
                               "quantization_config=CompressedTensorsConfig(dequantize=True))")
    if agreement.note:
        table.add_row("note", agreement.note)
    return table
