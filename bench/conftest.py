"""Shared helpers for the benchmarks: each benchmark records what it measured in `extra_info`.

Convention read by bench/report.py: ``benchmark.group`` names the row group
(e.g. "M,K,N"), ``extra_info`` holds ``backend``, ``kernel``, ``scheme``,
``shape`` and ``baseline`` (True for the float reference of the group).
"""

from __future__ import annotations

from typing import Any

import pytest


def record(benchmark: Any, *, group: str, backend: str, kernel: str, scheme: str, shape: list[int],
           baseline: bool = False) -> None:
    benchmark.group = group
    benchmark.extra_info.update(
        {"backend": backend, "kernel": kernel, "scheme": scheme, "shape": shape, "baseline": baseline}
    )


@pytest.fixture
def bench_record():
    return record
