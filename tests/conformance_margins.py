"""Prints docs/numerics.md's margins table: for each defect of `conformance_backends.PRECISION_DEFECTS`, the
lowest SQNR against the reference's linear over the kit's SQNR cases, and the rules that catch it.

Run: ``.venv/bin/python tests/conformance_margins.py`` (about 10 s; CPU, seeded, deterministic).
"""

from __future__ import annotations

import re

from conformance_backends import PRECISION_DEFECTS, backend
from qcore.plugins import PluginManager
from qcore.testing.runner import Conformance, Result

SQNR = re.compile(r"(?:SQNR )?(-?[0-9.]+|inf) dB")


def lowest_sqnr(results: list[Result]) -> tuple[float, int, int]:
    """(lowest dB, failed, run) over the sqnr-vs-reference and unaligned cases."""
    rows = [r for r in results if r.case.rule.startswith(("sqnr vs reference", "unaligned")) and r.status != "unsupported"]
    values = [float(m.group(1)) for r in rows if (m := SQNR.search(r.message))]
    return min(values), sum(r.status == "fail" for r in rows), len(rows)


def main() -> None:
    print("| defect | lowest SQNR vs reference | caught by |\n| --- | --- | --- |")
    for name, replace in PRECISION_DEFECTS.items():
        results = Conformance("m", PluginManager({"m": backend("m", **replace)}, entry_points=False),
                              select=lambda c: c.op == "linear").run_all()
        db, failed, run = lowest_sqnr(results)
        rules = sorted({r.case.rule.split(" ")[0] for r in results if r.status == "fail"
                        and not r.case.rule.startswith(("sqnr", "unaligned"))})
        fails = f" (fails {failed} case{'s' * (failed != 1)} of {run})" if failed else ""
        print(f"| {name} | {db:.1f} dB{fails} | {', '.join(f'`{r}`' for r in rules)} |")


if __name__ == "__main__":
    main()
