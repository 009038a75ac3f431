"""``qcore card DIR``: print the quantization card of a directory written by ``qcore quantize``.

The card is rebuilt from ``card.json`` (validated, so a damaged or foreign
file is an error naming the field) and rendered as Markdown with rich;
``--json`` prints the JSON instead, for tools. A compressed-tensors folder
without a card (made by llm-compressor, say) is loaded with qcore layers and
described as qcore would run it.
"""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from qcore.card import Card


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("card", help="print the quantization card of a saved directory",
                                   description="Print the quantization card of a directory written by qcore quantize.")
    parser.add_argument("directory", metavar="DIR", help="directory written by `qcore quantize`")
    parser.add_argument("--json", action="store_true", help="print card.json instead of the rendered Markdown")
    parser.add_argument("--model", metavar="MODEL", help="for a compressed-tensors folder without card.json whose "
                        "config names no transformers architecture: the float model's source")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rich.markdown import Markdown

    from qcore.card import load_card
    from qcore.commands import make_console

    card = _card(args.directory, args.model)
    if args.json:
        print(json.dumps(card.to_dict(), indent=2))
    else:
        make_console().print(Markdown(card.to_markdown()))
    return 0


def _card(directory: str, source: str | None) -> Card:
    from pathlib import Path

    from qcore.card import CARD_JSON, build_card, load_card
    from qcore.compressed_tensors.reader import quantization_config

    if (Path(directory) / CARD_JSON).is_file() or quantization_config(directory) is None:
        return load_card(directory)
    from qcore import io
    from qcore.demo.models import load_model

    model = io.load(directory, load_model(source).model if source else None)
    return build_card(model, model_source=source or directory)
