"""``qcore export DIR --out OUT``: a qcore checkpoint as a compressed-tensors folder, and who would serve it.

DIR is a directory written by ``qcore quantize`` (or ``qcore.save``). Its float
skeleton comes from ``--model`` (the same sources as ``qcore quantize``), or
from the transformers config the checkpoint recorded, or from the model source
its card names. OUT receives ``config.json`` and ``model.safetensors`` (and the
tokenizer files of a model loaded from a local folder); the table says, per
Linear layer, its config group and format and which vLLM scheme would serve it
or why none would.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

from qcore.commands import make_console

if TYPE_CHECKING:
    from torch import nn

    from qcore.compressed_tensors.writer import ExportReport

FORMATS = ("compressed-tensors",)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("export", help="write a qcore checkpoint as a compressed-tensors folder",
                                   description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("directory", metavar="DIR", help="directory written by `qcore quantize`")
    parser.add_argument("--out", required=True, metavar="OUT", help="folder for config.json and model.safetensors")
    parser.add_argument("--model", metavar="MODEL",
                        help="the float model's source, as for `qcore quantize` (default: the recorded config, "
                             "else the card's model source)")
    parser.add_argument("--format", default=FORMATS[0], choices=FORMATS, help="checkpoint format (%(default)s)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import attrs

    from qcore import hf, io
    from qcore.compressed_tensors.writer import export

    console = make_console()
    with console.status(f"loading {args.directory}"):
        model = io.load(args.directory, _skeleton(args.directory, args.model))
    report = export(model, args.out, format=args.format)
    if not report.tokenizer_files:
        report = attrs.evolve(report, tokenizer_files=tuple(hf.copy_tokenizer(_card_source(args.directory),
                                                                               report.directory)))
    print_report(console, report)
    return 0


def _card_source(directory: str) -> str:
    """The model source the card of `directory` names ('' without a card)."""
    from qcore.card import CARD_JSON, load_card

    return load_card(directory).model_source if (Path(directory) / CARD_JSON).is_file() else ""


def _skeleton(directory: str, source: str | None) -> nn.Module | None:
    """The float model for `qcore.load`: from `source`, else None (recorded config), else the card's source."""
    from qcore.compressed_tensors.reader import quantization_config
    from qcore.demo.models import load_model
    from qcore.io import read_metadata

    if source is None:
        if quantization_config(directory) is not None or "qcore.model_config" in read_metadata(directory):
            return None
        source = _card_source(directory) or None
    return load_model(source).model if source else None


def print_report(console: Console, report: ExportReport) -> None:
    """The per-layer table of an ExportReport and what was written."""
    table = Table(title=f"compressed-tensors export ({report.format}) → {report.directory}")
    for column in ("layer", "out x in", "qcore scheme", "group / format", "vLLM"):
        table.add_column(column, overflow="fold")
    for layer in report.layers:
        vllm = "float (ignore)" if layer.serving is None else (
            f"[green]{layer.serving.scheme}[/]: {layer.serving.detail}" if layer.serving.scheme
            else f"[yellow]none[/]: {layer.serving.detail}")
        table.add_row(layer.name, f"{layer.shape[0]}x{layer.shape[1]}", layer.scheme or "float",
                      f"{layer.group} / {layer.format}" if layer.group else "-", vllm)
    console.print(table)
    served = sum(1 for layer in report.quantized if layer.serving and layer.serving.scheme)
    console.print(f"{len(report.quantized)} quantized Linear layers, {served} of them servable by vLLM's "
                  f"compressed-tensors schemes; {len(report.layers) - len(report.quantized)} float (in ignore)")
    extra = f" and {', '.join(report.tokenizer_files)}" if report.tokenizer_files else ""
    console.print(f"wrote {report.directory / 'config.json'}, {report.directory / 'model.safetensors'}{extra}")
