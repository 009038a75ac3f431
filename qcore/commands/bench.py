"""`qcore bench`: every backend's kernel for a linear layer, timed against the float matmul on this machine.

For each shape and scheme the float baseline (float32 `x @ W.T` on CPU,
float16 on CUDA, where served models run) is timed first, then each backend
pinned in turn, then the matcher's own choice (`auto`). Times come from the
matcher's timer and its per-hardware cache, so a kernel is measured once and
`qcore backends --explain` shows the same numbers. Rows say why a backend
cannot run a scheme instead of leaving it out. The pytest-benchmark suites in
bench/ are the reproducible record; this is the quick look from the command line.
"""

from __future__ import annotations

import argparse
import functools
import json
from pathlib import Path
from typing import Any

import attrs
import torch
from rich.progress import Progress
from rich.table import Table

from qcore import autotune
from qcore.commands import make_console
from qcore.commands.backends import DEFAULT_SHAPE, parse_shape
from qcore.errors import NoKernelError, QcoreError, UnknownNameError
from qcore.files import atomic_write
from qcore.hardware import detect
from qcore.kernels import KernelRequest
from qcore.matcher import AUTO, Matcher
from qcore.plugins import get_manager

DEFAULT_SCHEMES = ("w8a8-dynamic", "w8a16", "w4a16")


@attrs.frozen
class Row:
    """One measurement: a backend's kernel (or the float baseline) on one shape and scheme."""

    shape: tuple[int, int, int]
    scheme: str
    backend: str
    kernel: str | None
    seconds: float | None
    speedup: float | None
    note: str = ""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("bench", help="time every backend's linear kernel against the float matmul")
    p.add_argument("--scheme", action="append", dest="schemes", metavar="SCHEME",
                   help=f"scheme to time (repeatable; default {', '.join(DEFAULT_SCHEMES)})")
    p.add_argument("--shape", action="append", dest="shapes", type=parse_shape, metavar="M,K,N",
                   help=f"linear shape (repeatable; default {','.join(map(str, DEFAULT_SHAPE))})")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--backend", action="append", dest="backends", metavar="NAME",
                   help="backend to time (repeatable; default every backend available on the device)")
    p.add_argument("--json", type=Path, metavar="FILE", help="also write the rows as JSON (atomically)")
    p.set_defaults(func=run)


def measure(request: KernelRequest, backend: str, baseline: float, matcher: Matcher) -> Row:
    """The row of `backend` (or AUTO) for a linear `request`: its chosen kernel timed, or why it has none here."""
    assert request.scheme is not None and request.shape is not None
    row = functools.partial(Row, request.shape, request.scheme.name, backend)
    try:
        selection = matcher.select(request, backend=backend)
    except NoKernelError as exc:
        return row(None, None, None, str(exc))
    if selection.fallback_reason:
        return row(None, None, None, selection.fallback_reason)
    try:
        seconds, _ = matcher.time(selection.chosen, request)
    except Exception as exc:  # noqa: BLE001 - one failing kernel is a row, not the end of the run
        return row(selection.chosen.id, None, None, f"failed while timing: {type(exc).__name__}: {exc}")
    return row(selection.chosen.id, seconds, baseline / seconds, selection.why() if backend == AUTO else "")


def run(args: argparse.Namespace) -> int:
    console = make_console()
    manager = get_manager()
    schemes = args.schemes or list(DEFAULT_SCHEMES)
    for name in schemes:
        manager.scheme(name)  # unknown names fail now, listing the known ones
    shapes = args.shapes or [DEFAULT_SHAPE]
    backends = args.backends or [n for n, i in manager.backends().items() if i.available and args.device in i.devices]
    for name in backends:
        if name not in manager.backends():
            raise UnknownNameError(f"unknown backend {name!r}; known: {', '.join(sorted(manager.backends()))}")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise QcoreError("--device cuda: torch sees no CUDA device here")
    matcher = Matcher(manager)
    dtype = str(autotune.activation_dtype(args.device)).removeprefix("torch.")
    rows: list[Row] = []
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("timing", total=len(shapes) * (1 + len(schemes) * (len(backends) + 1)))
        for shape in shapes:
            progress.update(task, description=f"float matmul at {shape}")
            baseline = autotune.float_seconds(shape, args.device)
            rows.append(Row(shape, "float", "torch", f"torch.matmul {dtype}", baseline, 1.0))
            progress.advance(task)
            for scheme in schemes:
                for backend in [*backends, AUTO]:
                    progress.update(task, description=f"{scheme} on {backend} at {shape}")
                    request = KernelRequest("linear", args.device, scheme=manager.scheme(scheme), shape=shape)
                    rows.append(measure(request, backend, baseline, matcher))
                    progress.advance(task)
    console.print(table(rows, f"qcore bench on {args.device}: {detect().describe()}"))
    if args.json:
        atomic_write(args.json, json.dumps([as_dict(r) for r in rows], indent=2) + "\n")
        console.print(f"wrote {args.json}")
    return 0


def table(rows: list[Row], title: str) -> Table:
    t = Table(title=title)
    for col in ("M,K,N", "scheme", "backend", "kernel", "ms", "vs float", "note"):
        t.add_column(col, overflow="fold")
    for r in rows:
        t.add_row(",".join(map(str, r.shape)), r.scheme, r.backend, r.kernel or "-",
                  "-" if r.seconds is None else f"{r.seconds * 1e3:.3f}",
                  "-" if r.speedup is None else f"{r.speedup:.2f}x", r.note)
    return t


def as_dict(row: Row) -> dict[str, Any]:
    data = attrs.asdict(row)
    data["shape"] = list(row.shape)
    return data
