"""The demo: quantize all-MiniLM-L6-v2 with a recipe and measure it against the float model, in one run.

For each recipe: a copy of the float model is quantized (calibrated on a
stride through the built-in sentences when the recipe has static
activations), then both models encode the whole built-in set. Reported: the
plan (backend kernel per layer and why), the card summary, sizes, mean and
worst embedding cosine, top-1 nearest-neighbour agreement, and the median
time to encode the set (float and quantized take turns, same batch size,
torch's default thread count). Every figure is printed next to its target.
The checkpoint and card go to ``build/demo/<recipe>/``; the same model as a
compressed-tensors folder to ``build/demo/<recipe>-compressed-tensors/``, read
back by compressed-tensors' own dequantizer to show every weight agrees.
"""

from __future__ import annotations

import argparse
import copy
import functools
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import attrs
import torch
from rich import box
from rich.console import Console
from rich.table import Table
from torch import nn

from qcore import api, io
from qcore.card import Card, Measurement, build_card, format_bytes, recipe_name, tensor_bytes
from qcore.commands import make_console
from qcore.demo import targets
from qcore.demo.interop import Agreement, agreement_table, export_and_check
from qcore.autotune import median_seconds
from qcore.demo.evaluate import top1_agreement
from qcore.demo.models import ENCODE_BATCH, MINILM, LoadedModel, load_minilm
from qcore.demo.sentences import SENTENCES, TOPICS, sample_sentences
from qcore.errors import QcoreError
from qcore.recipe import Recipe, load_recipe

RECIPES_DIR = Path(__file__).resolve().parent / "recipes"
"""Links to specs/recipes/, so the recipes ship inside the wheel."""
DEFAULT_RECIPE = RECIPES_DIR / "minilm-w8a8-dynamic.yaml"
OUT_DIR = Path("build") / "demo"


@attrs.frozen
class Result:
    """One recipe's outcome: its card (figures and targets included) and the timings behind the speed-up."""

    name: str
    card: Card
    float_seconds: float
    quant_seconds: float
    quantize_seconds: float
    out: Path

    def measurement(self, name: str) -> Measurement:
        return next(m for m in self.card.quality.measurements if m.name == name)

    @property
    def failed(self) -> list[Measurement]:
        return [m for m in self.card.quality.measurements if m.passed is False]


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m qcore.demo", description=__doc__.split("\n\n", 1)[0])
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--recipe", type=Path, default=DEFAULT_RECIPE, help=f"recipe (default {DEFAULT_RECIPE.name})")
    which.add_argument("--all", action="store_true", help=f"every {RECIPES_DIR.name}/minilm-*.yaml, one table")
    parser.add_argument("--out", type=Path, default=OUT_DIR, help=f"where checkpoints and cards go ({OUT_DIR})")
    parser.add_argument("--repeats", type=_positive, default=3, help="timed encodings of the set per model (median)")
    parser.add_argument("--check", action="store_true", help="exit 1 when a figure misses its target")
    return parser.parse_args(argv)


def quantized_copy(loaded: LoadedModel, recipe: Recipe, *, progress: bool = True) -> nn.Module:
    """A copy of the float model quantized with `recipe`, calibrated on a stride through the built-in sentences.

    The calibration callable is passed even to dynamic recipes: `qcore.quantize`
    then runs one batch, so that kernels are planned for realistic token counts.
    """
    model = copy.deepcopy(loaded.model)
    calibration = functools.partial(loaded.encode, sample_sentences(recipe.calibration.samples))
    return api.quantize(model, recipe, calibration, progress=progress)


def run_recipe(loaded: LoadedModel, path: Path, float_emb: torch.Tensor, out_root: Path, repeats: int,
               console: Console) -> Result:
    """Quantize a copy of the float model with one recipe, measure it, save it with its card."""
    recipe = load_recipe(path)
    name = recipe_name(recipe)
    start = time.perf_counter()
    model = quantized_copy(loaded, recipe)
    quantize_seconds = time.perf_counter() - start
    with console.status(f"{name}: encoding {len(SENTENCES)} sentences, timing fp32 vs quantized"):
        quant_emb = loaded.encode(SENTENCES, model)
        times = median_seconds({"float": lambda: loaded.encode(SENTENCES),
                                "quant": lambda: loaded.encode(SENTENCES, model)}, repeats)
    card = build_card(model, float_outputs=float_emb, quant_outputs=quant_emb, model_source=MINILM,
                      eval_description=f"the {len(SENTENCES)} built-in sentences, {len(TOPICS)} topics")
    figures = {
        targets.MEAN_COSINE: card.quality.output_cosine_mean,
        targets.TOP1: top1_agreement(float_emb, quant_emb),
        targets.TOP1_TIES: top1_agreement(float_emb, quant_emb, tie_margin=targets.TIE_MARGIN),
        targets.SPEEDUP: times["float"] / times["quant"],
    }
    card = card.with_measurements(targets.measurements(name, card, figures))
    out = out_root / name
    io.save(model, out)
    card.write(out)
    return Result(name, card, times["float"], times["quant"], quantize_seconds, out)


def export_compressed_tensors(loaded: LoadedModel, path: Path, result: Result, console: Console) -> Agreement:
    """The saved model re-loaded, exported to ``<out>/<recipe>-compressed-tensors`` and read back by the package."""
    recipe = load_recipe(path)
    with console.status(f"{result.name}: exporting as compressed-tensors and dequantizing with compressed-tensors"):
        model = io.load(result.out, copy.deepcopy(loaded.model))
        return export_and_check(model, recipe, result.out.parent / f"{result.name}-compressed-tensors",
                                lambda r: quantized_copy(loaded, r, progress=False))


def _verdict(m: Measurement) -> str:
    return {None: "", True: "[green]pass[/]", False: "[red]FAIL[/]"}[m.passed]


def figures_table(result: Result) -> Table:
    table = Table(title=f"{result.name} vs fp32 on {len(SENTENCES)} sentences (batch {ENCODE_BATCH}, "
                        f"{torch.get_num_threads()} torch threads)")
    for column in ("figure", "value", "target", ""):
        table.add_column(column)
    for m in result.card.quality.measurements:
        table.add_row(m.name, m.value_text, m.target_text or "-", _verdict(m))
    table.add_row("worst embedding cosine", f"{result.card.quality.output_cosine_worst:.5f}", "-", "")
    table.add_row("encode time fp32 / quantized (median)",
                  f"{result.float_seconds * 1e3:.0f} ms / {result.quant_seconds * 1e3:.0f} ms", "", "")
    return table


def comparison_table(results: Sequence[Result]) -> Table:
    """One row per recipe, narrow enough for an 80-column terminal (✓/✗: the figure's target)."""
    table = Table(title=f"all-MiniLM-L6-v2, minilm-* recipes vs fp32 ({len(SENTENCES)} sentences)",
                  box=box.SIMPLE_HEAD, pad_edge=False)
    names = (targets.STORAGE, targets.MEAN_COSINE, targets.TOP1, targets.SPEEDUP)
    table.add_column("recipe", no_wrap=True, min_width=12)
    for column in ("Linear saved", "cos mean", "cos worst", "top-1", "speed-up", "targets"):
        table.add_column(column, justify="right")
    table.add_column("algorithms")
    for r in results:
        cells = {}
        for name in names:
            m = r.measurement(name)
            cells[name] = m.value_text + ("" if m.passed is None else " ✓" if m.passed else " ✗")
        checked = [m for m in r.card.quality.measurements if m.passed is not None]
        table.add_row(
            r.name.removeprefix("minilm-"), cells[targets.STORAGE], cells[targets.MEAN_COSINE],
            f"{r.card.quality.output_cosine_worst:.5f}", cells[targets.TOP1], cells[targets.SPEEDUP],
            f"{len(checked) - len(r.failed)}/{len(checked)}",
            ", ".join(dict.fromkeys(run.algorithm for layer in r.card.layers for run in layer.algorithms)) or "-",
        )
    return table


def report(result: Result, console: Console, *, plan: bool) -> None:
    console.rule(result.name)
    if plan:
        console.print(result.card.plan_table())
    for line in result.card.summary():
        console.print(line, markup=False, highlight=False)
    console.print(f"quantized in {result.quantize_seconds:.1f} s; checkpoint and card in {result.out}/")
    console.print(figures_table(result))


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    console = make_console()
    try:
        return _demo(args, console)
    except QcoreError as exc:
        print(f"qcore demo: error: {exc}", file=sys.stderr)
        return 2


def _demo(args: argparse.Namespace, console: Console) -> int:
    paths = sorted(RECIPES_DIR.glob("minilm-*.yaml")) if args.all else [args.recipe]
    for path in paths:
        load_recipe(path)  # every recipe is checked before the slow part starts
    with console.status("loading all-MiniLM-L6-v2 (offline) and encoding the float reference"):
        loaded = load_minilm()
        float_emb = loaded.encode(SENTENCES)
    console.print(f"all-MiniLM-L6-v2 fp32: {format_bytes(tensor_bytes(loaded.model))} of parameters and buffers; "
                  f"{len(SENTENCES)} sentences over {len(TOPICS)} topics")
    results = []
    for path in paths:
        result = run_recipe(loaded, path, float_emb, args.out, args.repeats, console)
        report(result, console, plan=not args.all)
        results.append(result)
        console.print(agreement_table(result.name, export_compressed_tensors(loaded, path, result, console)))
    if args.all:
        console.print(comparison_table(results))
    failed = [f"{r.name}: {m.describe()}" for r in results for m in r.failed]
    checked = sum(m.passed is not None for r in results for m in r.card.quality.measurements)
    console.print(f"{checked - len(failed)} of {checked} targets met" + (":" if failed else "."))
    for line in failed:
        console.print(f"  {line}", markup=False)
    return 1 if args.check and failed else 0
