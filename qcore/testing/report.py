"""The conformance report: a matrix of op x spec/scheme x granularity x device (pass / fail / unsupported),
printed as a rich table and written as Markdown, JSON and JUnit XML."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from xml.etree import ElementTree as ET

import attrs
from rich.console import Console
from rich.table import Table

from qcore.commands import make_console
from qcore.testing.runner import Result, Status

STYLE = {"pass": "green", "fail": "bold red", "unsupported": "yellow"}


@attrs.frozen
class Row:
    """One cell group of the matrix: every rule run for one kernel, op, subject, granularity and device."""

    kernel: str
    op: str
    subject: str
    granularity: str
    device: str
    results: tuple[Result, ...]

    @property
    def status(self) -> Status:
        statuses = {r.status for r in self.results}
        return "fail" if "fail" in statuses else "pass" if "pass" in statuses else "unsupported"

    @property
    def detail(self) -> str:
        """Failures in full; otherwise how many rules passed and why others were unsupported."""
        fails = [r.message for r in self.results if r.status == "fail"]
        if fails:
            return "; ".join(fails)
        passed = sum(r.status == "pass" for r in self.results)
        reasons = Counter(r.message for r in self.results if r.status == "unsupported")
        parts = [f"{passed} rule(s) passed"] if passed else []
        parts += [f"unsupported ({n} rule(s)): {reason}" for reason, n in reasons.items()]
        return "; ".join(parts)


@attrs.frozen
class Report:
    backend: str
    hardware: str
    results: tuple[Result, ...]

    @property
    def ok(self) -> bool:
        return not any(r.status == "fail" for r in self.results)

    @property
    def counts(self) -> Counter[str]:
        return Counter(r.status for r in self.results)

    def rows(self) -> list[Row]:
        groups: dict[tuple[str, ...], list[Result]] = {}
        for r in self.results:
            key = (r.kernel, r.case.op, r.case.subject, r.case.granularity, r.device)
            groups.setdefault(key, []).append(r)
        return [Row(*key, tuple(results)) for key, results in groups.items()]

    def summary(self) -> str:
        c = self.counts
        return (f"{self.backend}: {c['pass']} passed, {c['fail']} failed, {c['unsupported']} unsupported "
                f"({len(self.results)} cases)")

    def table(self) -> Table:
        table = Table(title=f"qcore conformance: {self.backend}", caption=self.summary())
        for column in ("kernel", "op", "spec / scheme", "granularity", "device", "status", "detail"):
            table.add_column(column, overflow="fold")
        for row in self.rows():
            status = f"[{STYLE[row.status]}]{row.status}[/]"
            table.add_row(row.kernel, row.op, row.subject, row.granularity, row.device, status, row.detail)
        return table

    def print(self, console: Console | None = None) -> None:
        (console or make_console()).print(self.table())

    def markdown(self) -> str:
        lines = [f"# qcore conformance: {self.backend}", "", f"Hardware: {self.hardware}", "", self.summary(), "",
                 "| kernel | op | spec / scheme | granularity | device | status | detail |",
                 "| --- | --- | --- | --- | --- | --- | --- |"]
        for row in self.rows():
            cells = (row.kernel, row.op, row.subject, row.granularity, row.device, f"**{row.status}**", row.detail)
            lines.append("| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |")
        return "\n".join(lines) + "\n"

    def to_json(self) -> dict[str, object]:
        return {
            "backend": self.backend,
            "hardware": self.hardware,
            "ok": self.ok,
            "counts": dict(self.counts),
            "results": [
                {"kernel": r.kernel, "op": r.case.op, "subject": r.case.subject, "granularity": r.case.granularity,
                 "rule": r.case.rule, "device": r.device, "status": r.status, "message": r.message,
                 "seed": r.case.seed, "seconds": round(r.seconds, 6)}
                for r in self.results
            ],
        }

    def junit(self) -> ET.ElementTree:
        c = self.counts
        suite = ET.Element("testsuite", name=f"qcore-conformance-{self.backend}", tests=str(len(self.results)),
                           failures=str(c["fail"]), skipped=str(c["unsupported"]), errors="0")
        for r in self.results:
            case = ET.SubElement(suite, "testcase", classname=f"{r.kernel}.{r.case.op}",
                                 name=f"{r.case.subject}|{r.case.granularity}|{r.case.rule}[{r.device}]",
                                 time=f"{r.seconds:.6f}")
            if r.status == "fail":
                ET.SubElement(case, "failure", message=r.message).text = r.message
            elif r.status == "unsupported":
                ET.SubElement(case, "skipped", message=r.message)
        return ET.ElementTree(suite)

    def write(self, directory: Path) -> Sequence[Path]:
        """conformance.md, conformance.json and conformance.xml (JUnit) in `directory`."""
        directory.mkdir(parents=True, exist_ok=True)
        md, js, xml = (directory / f"conformance.{ext}" for ext in ("md", "json", "xml"))
        md.write_text(self.markdown(), encoding="utf-8")
        js.write_text(json.dumps(self.to_json(), indent=1) + "\n", encoding="utf-8")
        self.junit().write(xml, encoding="utf-8", xml_declaration=True)
        return md, js, xml
