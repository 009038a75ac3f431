"""Shared helpers for the benchmarks: each benchmark records what it measured in `extra_info`.

Convention read by bench/report.py: ``benchmark.group`` names the row group
(e.g. "M,K,N"), ``extra_info`` holds ``backend``, ``kernel``, ``scheme``,
``shape`` and ``baseline`` (True for the float reference of the group).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

LOAD_AT_START = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else None


def pytest_benchmark_update_machine_info(config: Any, machine_info: dict[str, Any]) -> None:
    """Other processes share small machines: the load average at the start and the end goes with the figures."""
    if LOAD_AT_START is not None:
        machine_info["loadavg"] = {"start": LOAD_AT_START, "end": Path("/proc/loadavg").read_text().split()[:3]}


def record(benchmark: Any, *, group: str, backend: str, kernel: str, scheme: str, shape: list[int],
           baseline: bool = False) -> None:
    benchmark.group = group
    benchmark.extra_info.update(
        {"backend": backend, "kernel": kernel, "scheme": scheme, "shape": shape, "baseline": baseline}
    )


@pytest.fixture
def bench_record():
    return record
