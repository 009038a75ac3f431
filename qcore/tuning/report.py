"""What `qcore tune` reports: per layer the choice and why it was affordable, totals against float and every
uniform candidate, the verification rounds, what tuning cost; as a terminal table, Markdown and JSON.

Every time is the per-layer kernel time the matcher measured on this
hardware (fingerprint in the header), summed over the targeted layers: the
linear layers' share of a forward pass, not the end-to-end time.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs

from qcore.card import format_bytes
from qcore.files import atomic_write
from qcore.tuning.emit import to_yaml
from qcore.tuning.choose import Point, TuneResult, front, uniform

Rows = tuple[list[str], list[list[str]]]


def _loss(loss: float | None) -> str:
    return "not scored" if loss is None else f"{loss:.2e}"


def _quality(value: float | None) -> str:
    return "-" if value is None else f"{value:.5f}"


def layer_rows(result: TuneResult) -> Rows:
    """Per layer: the chosen candidate, its kernel, time, bytes and sensitivity; every candidate's sensitivity."""
    names = [c.name for c in result.profile.candidates]
    head = ["layer", "chosen", "kernel", "ms", "bytes", "loss", *(f"loss {n}" for n in names[1:])]
    rows = []
    for layer, name in zip(result.profile.layers, result.choice):
        o = layer.option(name)
        assert o is not None
        others = [_loss(x.loss) if (x := layer.option(n)) is not None else "n/a" for n in names[1:]]
        rows.append([layer.name, name, o.kernel, f"{o.seconds * 1e3:.3f}", format_bytes(o.bytes), _loss(o.loss),
                     *others])
    return head, rows


def points(result: TuneResult) -> list[Point]:
    """The tuned choice, then every candidate applied to every layer (float where it cannot run)."""
    return [result.point, *(uniform(result.profile, c) for c in result.profile.candidates)]


def total_rows(result: TuneResult) -> Rows:
    float_point = uniform(result.profile, next(c for c in result.profile.candidates if c.is_float))
    head = ["model", "Linear bytes", "saved", "Σ layer ms", "vs float", "predicted", "measured"]
    rows = []
    for p in points(result):
        measured = _quality(result.measured) if p.label == "tuned" else ""
        rows.append([p.label, format_bytes(p.bytes), f"{1 - p.bytes / float_point.bytes:.1%}",
                     f"{p.seconds * 1e3:.3f}", f"{float_point.seconds / p.seconds:.2f}x", _quality(p.predicted),
                     measured])
    return head, rows


def round_rows(result: TuneResult) -> Rows:
    head = ["round", "required (predicted)", "predicted", "measured", "held"]
    rows = [[str(i + 1), _quality(r.required), _quality(r.predicted), _quality(r.measured),
             "yes" if r.measured >= result.constraint.min_quality else "no"] for i, r in enumerate(result.rounds)]
    return head, rows


def headline(result: TuneResult) -> str:
    p = result.point
    float_point = uniform(result.profile, next(c for c in result.profile.candidates if c.is_float))
    return (f"{result.objective} under {result.constraint.describe()}: Linear storage "
            f"{1 - p.bytes / float_point.bytes:.1%} smaller, Σ layer time {float_point.seconds / p.seconds:.2f}x "
            f"float's; {result.profile.quality} predicted {result.predicted:.5f}, measured {result.measured:.5f} "
            f"on {result.verified_on} after {len(result.rounds)} round{'s' * (len(result.rounds) != 1)}")


def conditions(result: TuneResult) -> list[str]:
    """Where and how the figures were measured (hardware, kernels present, data, what tuning cost)."""
    profile = result.profile
    timed = []
    if result.end_to_end is not None:
        float_s, tuned_s = result.end_to_end
        timed.append(f"end to end on {result.verified_on}: float {float_s * 1e3:.0f} ms, the quantized answer "
                     f"{tuned_s * 1e3:.0f} ms ({float_s / tuned_s:.2f}x)" + (f"; {result.note}" if result.note else ""))
    return [
        f"hardware: {profile.hardware.describe()} (fingerprint {profile.hardware.fingerprint}); "
        f"{profile.threads} torch thread{'s' * (profile.threads != 1)} while profiling (timings cached earlier "
        "may have been taken with others: the cache is keyed by hardware, not threads)",
        f"linear kernels present when timed: {', '.join(profile.kernels)}",
        f"candidates: {', '.join(c.name for c in profile.candidates)}",
        f"sensitivity: {profile.quality} on {profile.data}; verification on {result.verified_on}",
        f"tuning took {result.seconds:.0f} s: profile {profile.cost.describe()}; search and verification "
        f"{result.search_seconds:.1f} s",
        *timed,
    ]


def markdown_table(rows: Rows) -> list[str]:
    head, body = rows
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return out + ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in body]


def markdown(result: TuneResult, extra: Sequence[str] = ()) -> str:
    out = [f"# qcore tune: {result.objective}, {result.constraint.describe()}", "", headline(result) + ".", ""]
    out += [f"- {line}" for line in [*conditions(result), *extra]]
    out += ["", "Times are the matcher's per-layer kernel times on each layer's shape, summed: the Linear layers' "
            "share of a forward pass.", "", "## Totals", "", *markdown_table(total_rows(result)),
            "", "## Verification rounds", "", *markdown_table(round_rows(result)),
            "", "## Layers", "", *markdown_table(layer_rows(result)),
            "", "## Recipe", "", "```yaml", to_yaml(result.recipe, "").rstrip(), "```", ""]
    return "\n".join(out)


def as_dict(result: TuneResult) -> dict[str, Any]:
    profile = result.profile
    return {
        "objective": result.objective,
        "constraint": attrs.asdict(result.constraint),
        "hardware": {"fingerprint": profile.hardware.fingerprint, "description": profile.hardware.describe()},
        "kernels": list(profile.kernels),
        "candidates": [c.fragment() for c in profile.candidates],
        "quality": {"metric": profile.quality, "reference": profile.reference, "sensitivity_data": profile.data,
                    "verified_on": result.verified_on},
        "rounds": [attrs.asdict(r) for r in result.rounds],
        "totals": [attrs.asdict(p) for p in points(result)],
        "layers": [{"name": layer.name, "shape": list(layer.shape), "chosen": name,
                    "options": [attrs.asdict(o) for o in layer.options],
                    "unavailable": [list(u) for u in layer.unavailable]}
                   for layer, name in zip(profile.layers, result.choice)],
        "fronts": {objective: [attrs.asdict(p) for p in front(profile, objective)] for objective in ("size", "latency")},
        "cost": {**attrs.asdict(profile.cost), "search_seconds": result.search_seconds, "seconds": result.seconds},
        "recipe": result.recipe.to_dict(),
    }


def rich_table(rows: Rows, title: str) -> Any:
    from rich import box
    from rich.table import Table

    head, body = rows
    table = Table(title=title, box=box.SIMPLE_HEAD)
    for column in head:
        table.add_column(column, overflow="fold")
    for row in body:
        table.add_row(*row)
    return table


def write(result: TuneResult, recipe_path: Path, report_dir: Path | None = None, extra: Sequence[str] = ()
          ) -> tuple[list[Path], list[str]]:
    """The recipe at `recipe_path`; report.md, report.json and fronts.png in `report_dir`, each written
    atomically. Returns the paths written and notes (the picture is left out, saying why, without matplotlib)."""
    from qcore.tuning.plot import PlotUnavailable, plot_fronts

    header = [f"Tuned by qcore tune: {headline(result)}.", *conditions(result)[:1]]
    written = [atomic_write(recipe_path, to_yaml(result.recipe, "\n".join(header)))]
    if report_dir is None:
        return written, []
    report_dir.mkdir(parents=True, exist_ok=True)
    written.append(atomic_write(report_dir / "report.md", markdown(result, extra)))
    written.append(atomic_write(report_dir / "report.json", json.dumps(as_dict(result), indent=1) + "\n"))
    try:
        written.append(plot_fronts(result, report_dir / "fronts.png"))
    except PlotUnavailable as exc:
        return written, [str(exc)]
    return written, []
