"""``qcore tune --model MODEL --objective size|latency --min-cosine X --out recipe.yaml``: a per-layer recipe.

MODEL is a text model source as for ``qcore quantize`` (``minilm``, a
directory, a factory with ``encode``). Its sentences (``--calib``, one per
line, or the built-in set) are split: ``--samples`` of them, spread over the
set, calibrate and score the candidates (the same sentences ``qcore quantize``
calibrates on with the tuned recipe, so it rebuilds the same model), and
``--score-samples`` of those score each candidate on each layer; the rest
verify the answer end to end. The recipe goes to ``--out``; ``--report DIR``
adds report.md, report.json and fronts.png.
"""

from __future__ import annotations

import argparse
import functools
import os
from pathlib import Path
from typing import Any

from qcore.commands import make_console
from qcore.errors import QcoreError

DEFAULT_SAMPLES = 64
DEFAULT_SCORE_SAMPLES = 32


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "tune", help="choose a scheme per layer: the smallest or fastest model within a quality budget",
        description="Choose per layer among candidate schemes the smallest (size) or fastest (latency) model "
                    "whose outputs keep a mean cosine of at least --min-cosine against the float model.")
    parser.add_argument("--model", required=True, metavar="MODEL",
                        help="'minilm', a sentence-transformers/transformers directory, or package.module:function")
    parser.add_argument("--objective", default="size", choices=("size", "latency"))
    parser.add_argument("--min-cosine", type=float, required=True, metavar="X",
                        help="least mean cosine of the outputs against the float model (e.g. 0.995)")
    parser.add_argument("--candidates", metavar="LIST|FILE",
                        help="comma-separated SCHEME[+ALGORITHM...] (e.g. float,w8a16,w4a16+gptq), or a YAML "
                             "file listing recipe fragments; default: qcore.tuning.DEFAULT_CANDIDATES (float, "
                             "8-bit weights, SmoothQuant int8, 4-bit GPTQ groups)")
    parser.add_argument("--out", required=True, type=Path, metavar="RECIPE", help="where the tuned recipe goes")
    parser.add_argument("--report", type=Path, metavar="DIR", help="also write report.md, report.json, fronts.png")
    parser.add_argument("--calib", metavar="FILE", help="sentences, one per line (default: the built-in set)")
    parser.add_argument("--samples", type=int, default=DEFAULT_SAMPLES,
                        help=f"sentences that calibrate and score (default {DEFAULT_SAMPLES}); the rest verify")
    parser.add_argument("--score-samples", type=int, default=DEFAULT_SCORE_SAMPLES, metavar="N",
                        help=f"of those, how many score each candidate on each layer (default {DEFAULT_SCORE_SAMPLES})")
    parser.add_argument("--threads", type=int, metavar="N",
                        help="torch threads (default: torch's choice; 1 is faster on a CPU other work shares)")
    parser.add_argument("--recipe", metavar="BASE",
                        help="recipe giving targets, ignore and backend (no scheme, overrides or algorithms)")
    parser.set_defaults(func=run)


def read_candidates(text: str) -> list[Any]:
    """A YAML file's list of candidates, or the comma-separated short forms."""
    import yaml

    path = Path(text)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise QcoreError(f"--candidates {text}: cannot read it: {exc}") from None
        if not isinstance(data, list):
            raise QcoreError(f"--candidates {text}: expected a YAML list of candidates, got {type(data).__name__}")
        return data
    return [part.strip() for part in text.split(",") if part.strip()]


def run(args: argparse.Namespace) -> int:
    import torch

    from qcore.commands.quantize import read_sentences
    from qcore.demo.models import load_model
    from qcore.demo.sentences import SENTENCES, sample_sentences, split_sentences
    from qcore.matcher import Matcher
    from qcore.recipe import load_recipe
    from qcore.tuning import base_recipe, parse_candidates, profile, search
    from qcore.tuning.quality import OutputCosine
    from qcore.tuning.report import conditions, headline, layer_rows, rich_table, round_rows, total_rows, write
    from qcore.tuning.choose import Constraint

    console = make_console()
    for flag, value in (("--samples", args.samples), ("--score-samples", args.score_samples),
                        ("--threads", args.threads or 1)):
        if value < 1:
            raise QcoreError(f"{flag} must be at least 1, got {value}")
    if args.threads:
        torch.set_num_threads(args.threads)
    candidates = parse_candidates(read_candidates(args.candidates) if args.candidates else None)
    base = base_recipe(args.recipe)
    base = load_recipe({**base.to_dict(), "calibration": {**base.to_dict()["calibration"], "samples": args.samples}})
    sentences = read_sentences(args.calib) if args.calib else list(SENTENCES)
    tune_set, held_out = split_sentences(args.samples, sentences)
    if not held_out:
        raise QcoreError(f"--samples {args.samples} leaves none of the {len(sentences)} sentences to verify on")
    load = os.getloadavg()
    with console.status(f"loading {args.model}"):
        loaded = load_model(args.model)
    if loaded.encoder is None:
        raise QcoreError(f"model {args.model!r} is not a text model (no encode); qcore tune needs one here "
                         "(from Python, qcore.tune takes any model and data)")
    data = functools.partial(loaded.encode, tune_set)
    matcher = Matcher()
    with console.status("float outputs"):
        scored = sample_sentences(args.score_samples, tune_set)
        quality = OutputCosine(loaded.model, functools.partial(loaded.encode, scored),
                               f"{len(scored)} of the {len(tune_set)} calibration sentences")
        verify = OutputCosine(loaded.model, functools.partial(loaded.encode, held_out),
                              f"the {len(held_out)} held-out sentences")
    made = profile(loaded.model, data, candidates=candidates, quality=quality, base=base, matcher=matcher,
                   objectives=(args.objective,), show=True, log=console.print)
    result = search(made, loaded.model, data, objective=args.objective,
                    constraint=Constraint(args.min_cosine, quality.name), verify=verify, matcher=matcher,
                    show=True, log=console.print)
    extra = [f"torch threads: {torch.get_num_threads()}", f"load average (1, 5, 15 min) at the start {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, "
             f"at the end {' '.join(f'{x:.2f}' for x in os.getloadavg())}"]
    console.print(rich_table(total_rows(result), "totals (Linear layers)"))
    console.print(rich_table(round_rows(result), "verification"))
    if args.report:
        console.print(rich_table(layer_rows(result), "layers"))
    console.print(headline(result))
    for line in [*conditions(result), *extra]:
        console.print(line, markup=False, highlight=False)
    written, notes = write(result, args.out, args.report, extra)
    for note in notes:
        console.print(note)
    console.print("wrote " + ", ".join(map(str, written)))
    return 0
