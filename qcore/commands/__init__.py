"""Subcommands of the `qcore` CLI, one module each; each exposes `register(subparsers)`."""

from __future__ import annotations

import sys

from rich.console import Console


def make_console() -> Console:
    """A rich console; wide when output is not a terminal so tables stay readable in logs."""
    return Console(width=None if sys.stdout.isatty() else 160)
