"""The tuned demo: `qcore tune` on all-MiniLM-L6-v2 for size and for latency, next to every uniform recipe.

The 277 built-in sentences are split three ways, none used twice: 64
(every k-th, `split_sentences`) calibrate and, 32 of them, score the
candidates; 64 of the other 213 verify each tuned answer end to end; the
last 149 are the test set every model below is measured on. One profile
(cost and sensitivity of every candidate on every layer) serves both
objectives: size under mean cosine 0.995, latency under 0.999. Then fp32,
each default candidate applied to every layer (quantized by `qcore.quantize`
with the same calibration) and the two tuned models are measured on the test
set: Linear storage saved, mean and worst cosine, top-1 neighbour agreement,
encode time against fp32 (taking turns). The table, the conditions and the
tuning costs go to bench/results/tune-minilm-cpu-<fingerprint>.md; recipes,
reports and pictures to build/demo/tune/.
"""

from __future__ import annotations

import argparse
import copy
import functools
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import attrs
import torch
from rich import box
from rich.table import Table
from torch import nn

from qcore import api
from qcore.card import build_card
from qcore.commands import make_console
from qcore.autotune import median_seconds
from qcore.demo.evaluate import top1_agreement
from qcore.demo.models import load_minilm
from qcore.demo.sentences import sample_sentences, split_sentences
from qcore.errors import QcoreError
from qcore.files import atomic_write
from qcore.matcher import Matcher
from qcore.metrics import cosine
from qcore.recipe import Recipe, load_recipe
from qcore.tuning import base_recipe, parse_candidates, profile, search
from qcore.tuning.choose import Constraint, TuneResult
from qcore.tuning.quality import OutputCosine
from qcore.tuning.report import conditions, headline, markdown_table, round_rows, write

CALIBRATION, SCORED, VERIFY = 64, 32, 64
RUNS = (("size", 0.995), ("latency", 0.999))
TARGETS = {"size": {"Linear saved": 0.80, "cos mean": 0.995, "top-1": 0.92}, "latency": {"speed-up": 1.0}}
TUNING_LIMIT_S = 300.0
OUT = Path("build") / "demo" / "tune"
RESULTS = Path("bench") / "results"


@attrs.frozen
class Row:
    """One model measured on the test sentences against fp32."""

    name: str
    saved: float
    cos_mean: float
    cos_worst: float
    top1: float
    top1_ties: float
    speedup: float
    float_ms: float
    quant_ms: float


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m qcore.demo.tune", description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument("--repeats", type=int, default=3, help="timed encodings of the test set per model (median)")
    parser.add_argument("--out", type=Path, default=OUT, help=f"recipes, reports, pictures ({OUT})")
    parser.add_argument("--results", type=Path, default=RESULTS, help=f"where the figures go ({RESULTS})")
    parser.add_argument("--check", action="store_true", help="exit 1 when a figure misses its target")
    return parser.parse_args(argv)


def measure(name: str, model: nn.Module, float_model: nn.Module, encode, test: list[str],  # type: ignore[no-untyped-def]
            float_emb: torch.Tensor, repeats: int) -> Row:
    emb = encode(test, model)
    cos = cosine(float_emb, emb)
    times = median_seconds({"float": lambda: encode(test, float_model), "quant": lambda: encode(test, model)},
                           repeats)
    saved = 0.0
    if model is not float_model:
        layers = build_card(model).layers  # every targeted Linear, float ones at their float bytes
        saved = 1 - sum(layer.quant_bytes for layer in layers) / sum(layer.float_bytes for layer in layers)
    return Row(name, saved, float(cos.mean()), float(cos.min()), top1_agreement(float_emb, emb),
               top1_agreement(float_emb, emb, tie_margin=0.01), times["float"] / times["quant"],
               times["float"] * 1e3, times["quant"] * 1e3)


def uniform_recipe(base: Recipe, candidate) -> Recipe:  # type: ignore[no-untyped-def]
    data = {**base.to_dict(), "scheme": candidate.scheme.name,
            "algorithms": [{a.name: a.options_dict()} for a in candidate.algorithms]}
    return load_recipe(data)


def verdicts(result: TuneResult, row: Row, seconds: float) -> list[str]:
    """Each target of the objective: the figure, the target, pass or FAIL (the float model itself is 1.0x)."""
    values = {"Linear saved": row.saved, "cos mean": row.cos_mean, "top-1": row.top1, "speed-up": row.speedup}
    out = []
    for name, least in TARGETS[result.objective].items():
        same = name == "speed-up" and result.model is None
        verdict = "pass (the float model itself)" if same else "pass" if values[name] >= least else "FAIL"
        out.append(f"{result.objective}: {name} {values[name]:.4g} (target ≥ {least:g}): {verdict}")
    verdict = "pass" if seconds <= TUNING_LIMIT_S else "FAIL"
    return out + [f"{result.objective}: tuning took {seconds:.0f} s (target ≤ {TUNING_LIMIT_S:g} s): {verdict}"]


def table(rows: Sequence[Row], test: int) -> Table:
    t = Table(title=f"all-MiniLM-L6-v2 on {test} test sentences (none used for tuning), against fp32",
              box=box.SIMPLE_HEAD)
    for column in ("model", "Linear saved", "cos mean", "cos worst", "top-1", "top-1 ties", "speed-up",
                   "fp32 / model ms"):
        t.add_column(column, justify="left" if column == "model" else "right")
    for r in rows:
        t.add_row(*_cells(r))
    return t


def _cells(r: Row) -> list[str]:
    return [r.name, f"{r.saved:.1%}", f"{r.cos_mean:.5f}", f"{r.cos_worst:.5f}", f"{r.top1:.1%}",
            f"{r.top1_ties:.1%}", f"{r.speedup:.2f}x", f"{r.float_ms:.0f} / {r.quant_ms:.0f}"]


def main(argv: Sequence[str] | None = None) -> int:
    """Exit 0, or 1 with --check when a target is missed; a qcore error is one line on stderr, exit 2."""
    try:
        return _demo(parse_args(argv), make_console())
    except QcoreError as exc:
        print(f"qcore tune demo: error: {exc}", file=sys.stderr)
    return 2


def _demo(args: argparse.Namespace, console) -> int:  # type: ignore[no-untyped-def]
    if args.threads:
        torch.set_num_threads(args.threads)
    load_start = os.getloadavg()
    with console.status("loading all-MiniLM-L6-v2 (offline)"):
        loaded = load_minilm()
    tune_set, rest = split_sentences(CALIBRATION)
    verify_set, test_set = split_sentences(VERIFY, rest)
    scored = sample_sentences(SCORED, tune_set)
    encode = loaded.encode
    data = functools.partial(encode, tune_set)
    base = base_recipe({"qcore": 1, "scheme": "none", "calibration": {"samples": CALIBRATION}})
    candidates = parse_candidates(None)
    matcher = Matcher()
    console.print(f"sentences: {len(tune_set)} calibrate ({len(scored)} of them score), {len(verify_set)} verify, "
                  f"{len(test_set)} test; torch threads {torch.get_num_threads()}; load {load_start[0]:.2f}")
    start = time.perf_counter()
    quality = OutputCosine(loaded.model, functools.partial(encode, scored),
                           f"{len(scored)} of the {len(tune_set)} calibration sentences")
    verify = OutputCosine(loaded.model, functools.partial(encode, verify_set),
                          f"the {len(verify_set)} verification sentences")
    made = profile(loaded.model, data, candidates=candidates, quality=quality, base=base, matcher=matcher,
                   objectives=tuple(o for o, _ in RUNS), show=True, log=console.print)
    profile_seconds = time.perf_counter() - start
    results: list[TuneResult] = []
    for objective, least in RUNS:
        console.rule(f"{objective}, mean cosine ≥ {least}")
        result = search(made, loaded.model, data, objective=objective, constraint=Constraint(least, quality.name),
                        verify=verify, matcher=matcher, show=True, log=console.print)
        console.print(headline(result))
        results.append(result)
        write(result, _mkdir(args.out / objective) / "recipe.yaml", args.out / objective)
    float_emb = encode(test_set)
    rows = [measure("fp32", loaded.model, loaded.model, encode, test_set, float_emb, args.repeats)]
    for candidate in candidates[1:]:
        with console.status(f"{candidate.name} on every layer: quantizing and measuring"):
            model = api.quantize(copy.deepcopy(loaded.model), uniform_recipe(base, candidate), data, progress=False,
                                 matcher=matcher)
            rows.append(measure(candidate.name, model, loaded.model, encode, test_set, float_emb, args.repeats))
    tuned_rows = []
    for result in results:
        model = result.model if result.model is not None else loaded.model
        name = f"tuned: {result.objective}" + (" (= fp32)" if result.model is None else "")
        row = measure(name, model, loaded.model, encode, test_set, float_emb, args.repeats)
        rows.append(row)
        tuned_rows.append((result, row))
    console.print(table(rows, len(test_set)))
    lines = [line for result, row in tuned_rows
             for line in verdicts(result, row, profile_seconds + result.search_seconds)]
    for line in lines:
        console.print(line, markup=False, highlight=False)
    failed = [line for line in lines if line.endswith("FAIL")]
    notes = [f"torch threads {torch.get_num_threads()}; load average (1, 5, 15 min) at the start "
             f"{' '.join(f'{x:.2f}' for x in load_start)}, at the end {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
             f"tuning time per objective = the shared profile ({profile_seconds:.0f} s with the float outputs: "
             f"{made.cost.describe()}) + that objective's search and verification"]
    path = _results(args.results, matcher, rows, tuned_rows, lines, notes, len(test_set))
    console.print(f"figures in {path}; recipes, reports, pictures in {args.out}/")
    return 1 if args.check and failed else 0


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _results(directory: Path, matcher: Matcher, rows: Sequence[Row], tuned: Sequence[tuple[TuneResult, Row]],
             verdict_lines: Sequence[str], notes: Sequence[str], test: int) -> Path:
    head = ["model", "Linear saved", "cos mean", "cos worst", "top-1", "top-1 ties", "speed-up", "fp32 / model ms"]
    out = ["# qcore tune: all-MiniLM-L6-v2, CPU", "",
           f"`make tune-demo` (`python -m qcore.demo.tune`). Every model is measured on {test} test sentences that "
           f"neither tuning nor verification used: of the built-in 277, {CALIBRATION} (every k-th) calibrate and "
           f"{SCORED} of those score the candidates, {VERIFY} of the rest verify each tuned answer, the others "
           "are the test set. Uniform rows: one default candidate on every Linear, quantized by qcore.quantize "
           "with the same calibration. Speed-up: encoding the test set, fp32 and the model taking turns (median).",
           "", *markdown_table((head, [_cells(r) for r in rows])), "",
           "Targets (issue 15):", "", *(f"- {line}" for line in verdict_lines), "", "Conditions:", "",
           *(f"- {line}" for line in notes)]
    for result, _ in tuned:
        out += ["", f"## {headline(result)}", "", *(f"- {line}" for line in conditions(result)), "",
                *markdown_table(round_rows(result))]
    out += ["", "Per layer: build/demo/tune/<objective>/report.md and fronts.png.", ""]
    directory.mkdir(parents=True, exist_ok=True)
    return atomic_write(directory / f"tune-minilm-cpu-{matcher.hardware.fingerprint}.md", "\n".join(out))


if __name__ == "__main__":
    sys.exit(main())
