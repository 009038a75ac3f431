"""Turn a pytest-benchmark JSON into a table of speed-ups against the baseline of each group.

Usage: python bench/report.py --json FILE [--baseline LABEL] [--out PATH] [--targets cpu|gpu|none]

Speed-up = baseline min / min (higher is faster): on a shared machine the minimum
of many rounds is the least noisy estimate of what a kernel costs, and two
backends that chose the same kernel must come out alike. The Markdown table is
printed and written to --out (default bench/results/linear-<device>-<fingerprint>.md).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent


def load(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    data = json.loads(path.read_text())
    rows = []
    for b in data.get("benchmarks", []):
        info = b.get("extra_info") or {}
        if "backend" not in info:
            continue
        rows.append({**info, "group": b.get("group") or "", "time": b["stats"]["min"]})
    return data.get("machine_info", {}), rows


def speedups(rows: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, tuple[float, str, float]]]:
    """(group, scheme) → backend → (speed-up vs the group's baseline, kernel, min seconds)."""
    base = {r["group"]: r["time"] for r in rows if r.get("baseline")}
    table: dict[tuple[str, str], dict[str, tuple[float, str, float]]] = defaultdict(dict)
    for r in rows:
        if r.get("baseline") or r["group"] not in base:
            continue
        table[(r["group"], r["scheme"])][r["backend"]] = (base[r["group"]] / r["time"], r["kernel"], r["time"])
    return table


def check_targets(table: dict, kind: str) -> list[str]:
    lines = []
    auto_rows = [(key, cells) for key, cells in table.items() if "auto" in cells]
    for key, cells in auto_rows:
        singles = [v for b, v in cells.items() if b != "auto"]
        if singles:
            best = max(singles)
            ratio = best[0] / cells["auto"][0]
            same = best[1] == cells["auto"][1]
            verdict = "PASS" if ratio <= 1.1 or same else "FAIL"
            note = f"; both ran {best[1]}, so the gap is run-to-run noise" if same and ratio > 1.1 else ""
            lines.append(f"{verdict} auto within 1.1x of the best backend at {key[0]} {key[1]}: "
                         f"best/auto = {ratio:.2f}{note}")
    wanted = {"cpu": [("1,4096,4096", "w8a8-dynamic", 6.0), ("1,4096,4096", "w4a16", 6.0)],
              "gpu": [("1,4096,4096", "w4a16", 2.5), ("4096,4096,4096", "w8a8-dynamic", 1.5)]}.get(kind, [])
    for group, scheme, target in wanted:
        cells = table.get((group, scheme), {})
        best = max(cells.values(), default=None)
        if best is None:
            lines.append(f"MISSING {scheme} at {group}: no measurement")
        else:
            lines.append(f"{'PASS' if best[0] >= target else 'FAIL'} {scheme} at {group}: {best[0]:.2f}x "
                         f"({best[1]}), target ≥ {target}x")
    return lines


def render(table: dict, machine: dict[str, Any], baseline: str, title: str, targets: list[str]) -> str:
    backends = sorted({b for cells in table.values() for b in cells}, key=lambda b: (b == "auto", b))
    out = [f"# {title}", "", f"Speed-up against {baseline} measured in the same run (higher is faster; "
           "minimum times over the rounds). Each cell: speed-up, then the kernel the matcher chose for that "
           "backend.", ""]
    cpu = machine.get("cpu", {})
    out.append(f"Machine: {cpu.get('brand_raw', machine.get('processor', '?'))}, "
               f"{machine.get('cpu', {}).get('count', '?')} logical cores, Python {machine.get('python_version', '?')}")
    load = machine.get("loadavg")
    if load:
        out.append(f"Load average (1, 5, 15 min) at the start: {' '.join(load['start'])}; at the end: "
                   f"{' '.join(load['end'])} (other processes on the same cores make every figure noisier).")
    out += ["", "| M,K,N | scheme | " + " | ".join(backends) + " |", "|---|---|" + "---|" * len(backends)]
    for (group, scheme), cells in sorted(table.items(), key=lambda kv: ([int(v) for v in kv[0][0].split(",")]
                                                                        if kv[0][0][0].isdigit() else [0], kv[0][1])):
        row = [f"{cells[b][0]:.2f}x `{cells[b][1]}`" if b in cells else "—" for b in backends]
        out.append(f"| {group} | {scheme} | " + " | ".join(row) + " |")
    if targets:
        out += ["", "## Targets", ""] + [f"- {t}" for t in targets]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", type=Path, required=True)
    p.add_argument("--baseline", default="fp32 F.linear")
    p.add_argument("--out", type=Path)
    p.add_argument("--title", default="qcore linear benchmark")
    p.add_argument("--targets", choices=("cpu", "gpu", "none"), default="cpu")
    args = p.parse_args(argv)
    machine, rows = load(args.json)
    if not rows:
        print(f"{args.json}: no qcore benchmarks found", file=sys.stderr)
        return 1
    table = speedups(rows)
    targets = check_targets(table, args.targets)
    text = render(table, machine, args.baseline, args.title, targets)
    out = args.out
    if out is None:
        from qcore.hardware import detect

        out = ROOT / "results" / f"linear-cpu-{detect().fingerprint}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text)
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
