"""`qcore backends`: what loaded, what can run here, and (--explain) what the matcher would choose and why."""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table

from qcore.commands import make_console
from qcore.hardware import detect
from qcore.kernels import KernelRequest
from qcore.matcher import Matcher, Selection
from qcore.plugins import PluginManager, get_manager

DEFAULT_SHAPE = (1, 4096, 4096)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("backends", help="list backends; --explain SCHEME shows the matcher's choice")
    p.add_argument("--explain", metavar="SCHEME", help="show candidates, timings and rejections for a linear layer")
    p.add_argument("--shape", default=",".join(map(str, DEFAULT_SHAPE)), type=parse_shape,
                   help="M,K,N of the linear layer to explain (default %(default)s)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--backend", default="auto", help="pin a backend (default: auto)")
    p.add_argument("--strict", action="store_true", help="fail instead of falling back")
    p.add_argument("--no-measure", action="store_true", help="rank by declared priority instead of timing")
    p.set_defaults(func=run)


def parse_shape(text: str) -> tuple[int, int, int]:
    try:
        m, k, n = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--shape wants M,K,N (three integers), got {text!r}") from None
    if min(m, k, n) <= 0:
        raise argparse.ArgumentTypeError(f"--shape dimensions must be positive, got {text!r}")
    return m, k, n


def run(args: argparse.Namespace) -> int:
    console = make_console()
    manager = get_manager()
    if args.explain:
        scheme = manager.scheme(args.explain)
        request = KernelRequest("linear", args.device, scheme=scheme, shape=args.shape)
        with console.status(f"timing candidates for {scheme.name} at {args.shape} ..."):
            selection = Matcher(manager, measure=not args.no_measure).select(
                request, backend=args.backend, strict=args.strict
            )
        print_selection(console, selection)
        return 0
    print_backends(console, manager)
    return 0


def supported_schemes(manager: PluginManager, backend: str, devices: tuple[str, ...]) -> list[str]:
    """Schemes some linear kernel of `backend` says yes to, on any of its devices, for any shape."""
    hardware = detect()
    kernels = [k for k in manager.kernels().values() if k.backend == backend and k.op == "linear"]
    return [
        name
        for name, scheme in manager.schemes().items()
        if any(
            k.check(KernelRequest("linear", device, scheme=scheme), hardware).ok
            for k in kernels
            for device in devices or k.devices
        )
    ]


def print_backends(console: Console, manager: PluginManager) -> None:
    console.print(f"[bold]hardware[/]: {detect().describe()}  (fingerprint {detect().fingerprint})")
    table = Table(title="qcore backends", show_lines=True)
    for col in ("backend", "provided by", "status", "devices", "ops", "schemes (linear)"):
        table.add_column(col, overflow="fold")
    kernels = manager.kernels().values()
    for name, info in manager.backends().items():
        ops = sorted({k.op for k in kernels if k.backend == name})
        status = "[green]available[/]" if info.available else f"[red]unavailable[/]: {info.reason}"
        provider = info.provider.describe() if info.provider else "?"
        schemes = supported_schemes(manager, name, info.devices) if info.available else []
        table.add_row(name, provider, status, ", ".join(info.devices) or "-", ", ".join(ops),
                      ", ".join(schemes) or "-")
    for problem in manager.problems:
        if problem.hook is None:  # an entry point that could not be imported or registered: its own row
            table.add_row(problem.plugin, problem.provider.describe(), f"[red]failed to load[/]: {problem.error}",
                          "-", "-", "-")
    console.print(table)
    for problem in manager.problems:
        if problem.hook is not None:
            console.print(f"[red]problem[/]: {problem.describe()}")
    if manager.disabled:
        console.print(f"disabled by QCORE_DISABLE_PLUGINS: {', '.join(manager.disabled)}")


def print_selection(console: Console, selection: Selection) -> None:
    r = selection.request
    console.print(
        f"[bold]{r.op} {r.subject}[/] ({selection.request.scheme.describe() if r.scheme else ''}) "
        f"on {r.device}, M,K,N = {','.join(map(str, r.shape or ()))}"
    )
    console.print(f"chosen: [bold green]{selection.chosen.id}[/] — {selection.why()}")
    table = Table(title=f"candidates (ranked by {selection.ranking})")
    for col in ("", "kernel", "time (ms)", "vs chosen", "priority", "description"):
        table.add_column(col, overflow="fold")
    best = selection.chosen_candidate.seconds
    for i, c in enumerate(selection.ranked):
        t = "-" if c.seconds is None else f"{c.seconds * 1e3:.3f}" + (" (cached)" if c.cached else "")
        ratio = "-" if c.seconds is None or not best else f"{c.seconds / best:.2f}x"
        table.add_row("*" if i == 0 else "", c.kernel.id, t, ratio, str(c.kernel.priority), c.kernel.description)
    console.print(table)
    if selection.rejected:
        rej = Table(title="rejected")
        rej.add_column("kernel")
        rej.add_column("reason", overflow="fold")
        for c in selection.rejected:
            rej.add_row(c.kernel.id, c.support.reason)
        console.print(rej)
