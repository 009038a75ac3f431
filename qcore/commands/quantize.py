"""``qcore quantize RECIPE --model MODEL --out DIR``: quantize, save the checkpoint, write the card.

MODEL is ``minilm``, a sentence-transformers/transformers directory or a
factory ``package.module:function`` (see `qcore.demo.models`); it is named on
the command line, never in the recipe. Text models are calibrated (when the
recipe has static activations) and measured on the sentences of ``--calib``
(one per line) or on the built-in set; the card compares their outputs with
the float model's. The recipe is validated before the model is loaded, so a
bad recipe fails in a moment with its path and line (exit code 2, as every
qcore error). ``--format compressed-tensors`` writes the checkpoint as a
compressed-tensors folder (see ``qcore export``) instead of qcore's own file.
"""

from __future__ import annotations

import argparse
import functools
from pathlib import Path

from qcore.commands import make_console
from qcore.errors import QcoreError

EVAL_LIMIT = 512


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "quantize", help="quantize a model with a recipe; write checkpoint and card",
        description="Quantize MODEL with RECIPE, save the checkpoint and write the quantization card to DIR.")
    parser.add_argument("recipe", metavar="RECIPE", help="YAML recipe file")
    parser.add_argument("--model", required=True, metavar="MODEL",
                        help="'minilm', a sentence-transformers/transformers directory, or package.module:function")
    parser.add_argument("--out", required=True, metavar="DIR", help="directory for model.safetensors and the card")
    parser.add_argument("--calib", metavar="FILE",
                        help="text file, one sentence per line, for calibration and measurement (text models); "
                             "default: the built-in sentences")
    parser.add_argument("--format", default="qcore", choices=("qcore", "compressed-tensors"),
                        help="checkpoint format: qcore's own (default) or a compressed-tensors folder "
                             "(config.json + model.safetensors) for vLLM and transformers")
    parser.add_argument("--no-measure", dest="measure", action="store_false",
                        help="do not time candidate kernels; rank them by declared priority")
    parser.set_defaults(func=run)


def read_sentences(path: str) -> list[str]:
    """Non-blank lines of a UTF-8 text file; an unreadable or empty file is a QcoreError naming it."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise QcoreError(f"--calib {path}: cannot read it: {exc}") from None
    sentences = [line.strip() for line in lines if line.strip()]
    if not sentences:
        raise QcoreError(f"--calib {path}: no sentences (one per line expected)")
    return sentences


def run(args: argparse.Namespace) -> int:
    # deferred: the CLI imports every command module to build its parser, and `qcore --help` should not load torch
    from qcore import api, io
    from qcore.card import build_card
    from qcore.demo.models import load_model
    from qcore.demo.sentences import SENTENCES, sample_sentences
    from qcore.recipe import load_recipe

    console = make_console()
    recipe = load_recipe(args.recipe)
    sentences = read_sentences(args.calib) if args.calib else list(SENTENCES)
    eval_from = args.calib if args.calib else "the built-in set"
    with console.status(f"loading {args.model}"):
        loaded = load_model(args.model)
    calibration = None
    float_out = None
    eval_set = sample_sentences(EVAL_LIMIT, sentences)
    if loaded.encoder is not None:
        samples = sample_sentences(recipe.calibration.samples, sentences)
        calibration = functools.partial(loaded.encode, samples)  # called as fn(model), as qcore.quantize takes
        with console.status(f"float outputs on {len(eval_set)} sentences"):
            float_out = loaded.encode(eval_set)
    model = api.quantize(loaded.model, recipe, calibration, progress=True, measure=args.measure)
    quant_out = loaded.encode(eval_set) if float_out is not None else None
    out = Path(args.out)
    report = None
    if args.format == "compressed-tensors":
        from qcore.compressed_tensors.writer import export

        report = export(model, out)
        checkpoint = out / "model.safetensors"
    else:
        checkpoint = io.save(model, out)
    card = build_card(model, float_outputs=float_out, quant_outputs=quant_out, model_source=loaded.source,
                      eval_description=f"{len(eval_set)} sentences from {eval_from}" if float_out is not None else "")
    card_md, card_json = card.write(out)
    console.print(card.plan_table())
    console.rule("card")
    for line in card.summary():
        console.print(line, markup=False, highlight=False)
    if report is not None:
        from qcore.commands.export import print_report

        print_report(console, report)
    console.print(f"wrote {checkpoint}, {card_md}, {card_json}")
    return 0
