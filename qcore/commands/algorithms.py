"""`qcore algorithms`: the quantization algorithms a recipe can name here, who provides them, their options."""

from __future__ import annotations

import argparse

from rich.table import Table

from qcore.commands import make_console
from qcore.options import option_help
from qcore.plugins import get_manager


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("algorithms", help="list the algorithms a recipe's `algorithms:` can name")
    p.set_defaults(func=run)


def run(_args: argparse.Namespace) -> int:
    console = make_console()
    manager = get_manager()
    table = Table(title="qcore algorithms (recipe: algorithms: [{NAME: {OPTION: VALUE}}])", show_lines=True)
    for col in ("algorithm", "provided by", "kind", "calibration", "options (default)", "what it does"):
        table.add_column(col, overflow="fold")
    for name, impl in sorted(manager.algorithms().items()):
        options = "\n".join(f"{o} ({default!r}): {text}" if text else f"{o} ({default!r})"
                            for o, _kind, default, text in option_help(impl.options))
        options += ("\n" if options else "") + "layers ([]): name patterns restricting it to some layers"
        table.add_row(name, impl.provider.describe() if impl.provider else "?", impl.kind,
                      "yes" if impl.needs_calibration else "no", options, impl.description)
    console.print(table)
    for problem in manager.problems:
        console.print(f"[red]{problem.describe()}[/]")
    return 0
