"""``qcore card DIR``: print the quantization card of a directory written by ``qcore quantize``.

The card is rebuilt from ``card.json`` (validated, so a damaged or foreign
file is an error naming the field) and rendered as Markdown with rich;
``--json`` prints the JSON instead, for tools.
"""

from __future__ import annotations

import argparse
import json


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("card", help="print the quantization card of a saved directory",
                                   description="Print the quantization card of a directory written by qcore quantize.")
    parser.add_argument("directory", metavar="DIR", help="directory written by `qcore quantize`")
    parser.add_argument("--json", action="store_true", help="print card.json instead of the rendered Markdown")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rich.markdown import Markdown

    from qcore.card import load_card
    from qcore.commands import make_console

    card = load_card(args.directory)
    if args.json:
        print(json.dumps(card.to_dict(), indent=2))
    else:
        make_console().print(Markdown(card.to_markdown()))
    return 0
