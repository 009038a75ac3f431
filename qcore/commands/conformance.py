"""``qcore conformance BACKEND``: run the conformance kit against one backend and report the matrix.

Exit code 0 when every case the backend accepts passes, 1 when any fails (or
nothing could be tested). ``--report DIR`` also writes the matrix as Markdown,
JSON and JUnit XML.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import track

from qcore.commands import make_console
from qcore.errors import QcoreError
from qcore.hardware import detect
from qcore.testing.report import Report
from qcore.testing.runner import Conformance


def register(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "conformance",
        help="test a backend against the numerics contract (cpu-reference is the oracle)",
        description=__doc__,
    )
    parser.add_argument("backend", help="backend name, as `qcore backends` lists it")
    parser.add_argument("--device", choices=("cpu", "cuda"), action="append",
                        help="only this device (repeatable); default: every device the backend claims that exists")
    parser.add_argument("--report", type=Path, metavar="DIR", help="write conformance.{md,json,xml} into DIR")
    parser.add_argument("--match", metavar="TEXT", help="only cases whose id contains TEXT, e.g. 'ties' or 'int4'")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace, console: Console | None = None) -> int:
    console = console or make_console()
    try:
        suite = Conformance(args.backend, devices=args.device,
                            select=(lambda case: args.match in case.id) if args.match else None)
        jobs = list(suite.jobs())
        if not jobs:
            console.print(f"[red]nothing to test: {args.backend} has no kernel on {', '.join(suite.devices)}"
                          + (f" matching {args.match!r}" if args.match else "") + "[/]")
            return 1
        results = [suite.run(job) for job in track(jobs, description=f"conformance {args.backend}",
                                                   console=console, transient=True)]
    except QcoreError as exc:
        console.print(f"[red]error:[/] {exc}")
        return 1
    report = Report(args.backend, detect().describe(), tuple(results))
    report.print(console)
    if args.report is not None:
        for path in report.write(args.report):
            console.print(f"wrote {path}")
    return 0 if report.ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m qcore.commands.conformance BACKEND ...``, the same as ``qcore conformance``."""
    parser = argparse.ArgumentParser(prog="qcore")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["conformance", *(sys.argv[1:] if argv is None else argv)])
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
