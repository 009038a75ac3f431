"""Runs the conformance cases against every kernel of one backend, on the devices it claims and that exist.

Used by ``qcore conformance`` and by the pytest plugin, so both judge a
backend the same way. A case the kernel declines (``supports`` says no, or the
backend reports itself unavailable) is *unsupported* with that reason, never a
failure.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Literal

import attrs
import torch

from qcore.errors import UnknownNameError
from qcore.hardware import HardwareProfile, detect
from qcore.kernels import KernelImpl
from qcore.plugins import PluginManager, get_manager
from qcore.testing import linear_cases, pack_cases, quantize_cases
from qcore.testing.case import Case, Env
from qcore.testing.checks import Mismatch
from qcore.testing.oracle import REFERENCE, Oracle

Status = Literal["pass", "fail", "unsupported"]


@functools.cache
def all_cases() -> tuple[Case, ...]:
    return (*quantize_cases.cases(), *pack_cases.cases(), *linear_cases.cases())


@attrs.frozen
class Result:
    """The outcome of one case for one kernel on one device; `message` says why (or notes, on a pass)."""

    kernel: str
    case: Case
    device: str
    status: Status
    message: str = ""
    seconds: float = 0.0


def _why_missing(manager: PluginManager, backend: str) -> str:
    """Why `backend` has no kernels: its plugin failed to load (the error), or no plugin of that name is
    installed where this Python looks."""
    known = ", ".join(sorted({k.backend for k in manager.kernels().values()})) or "none"
    failed = [p.describe() for p in manager.problems if p.plugin == backend]
    if failed:
        return f"backend {backend!r} registers no kernels: {'; '.join(failed)} (known: {known})"
    return (f"backend {backend!r} registers no kernels; known: {known}. No qcore plugin of that name loaded: "
            "is its distribution installed for this Python (a `pip install --target DIR` is found only with DIR "
            "on PYTHONPATH)? `qcore backends` lists what loaded and what failed to")


def present_devices(requested: Sequence[str] | None = None) -> tuple[str, ...]:
    devices = ("cpu", "cuda") if torch.cuda.is_available() else ("cpu",)
    return tuple(d for d in devices if requested is None or d in requested)


@contextlib.contextmanager
def single_threaded() -> Iterator[None]:
    """Run a case on one intra-op thread: results must not depend on it, and on a shared or small
    machine waiting for a busy OpenMP worker costs milliseconds per op (ten times the whole case)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@attrs.frozen
class Job:
    """One (kernel, case, device) the suite will run."""

    kernel: KernelImpl
    case: Case
    device: str

    @property
    def id(self) -> str:
        return f"{self.kernel.id}::{self.case.id}[{self.device}]"


class Conformance:
    """The suite for one backend: `jobs()` lists what runs, `run(job)` judges one."""

    def __init__(self, backend: str, manager: PluginManager | None = None, *,
                 devices: Sequence[str] | None = None, reference: str = REFERENCE,
                 hardware: HardwareProfile | None = None, select: Callable[[Case], bool] | None = None) -> None:
        self.backend = backend
        self.select = select or (lambda _case: True)
        self.manager = manager or get_manager()
        self.kernels = [k for k in self.manager.kernels().values() if k.backend == backend]
        if not self.kernels:
            raise UnknownNameError(_why_missing(self.manager, backend))
        self.info = self.manager.backends().get(backend)
        self.devices = present_devices(devices)
        self.hardware = hardware or detect()
        self._reference = reference
        self._oracle: Oracle | None = None

    @property
    def oracle(self) -> Oracle:
        if self._oracle is None:
            self._oracle = Oracle(self.manager, self._reference)
        return self._oracle

    def jobs(self) -> Iterator[Job]:
        for kernel in sorted(self.kernels, key=lambda k: k.id):
            for device in (d for d in self.devices if d in kernel.devices):
                for case in all_cases():
                    if case.op == kernel.op and self.select(case):
                        yield Job(kernel, case, device)

    def decline(self, job: Job) -> str | None:
        """Why this job is unsupported, or None when the kernel accepts it."""
        if self.info is not None and not self.info.available:
            return f"backend unavailable: {self.info.reason}"
        support = job.kernel.check(job.case.request(job.device), self.hardware)
        return None if support.ok else support.reason or "declined without a reason"

    def run(self, job: Job) -> Result:
        start = time.perf_counter()
        reason = self.decline(job)
        if reason is not None:
            return Result(job.kernel.id, job.case, job.device, "unsupported", reason)
        status: Status = "fail"
        try:
            with single_threaded():
                note = job.case.body(Env(job.kernel, self.oracle, job.device, job.case.seed))
            status, message = "pass", note or ""
        except Mismatch as exc:
            message = f"rule '{job.case.rule}': {exc} (seed {job.case.seed})"
        except Exception as exc:  # the kernel under test may raise anything; that is its failure
            message = f"rule '{job.case.rule}': raised {type(exc).__name__}: {exc} (seed {job.case.seed})"
        return Result(job.kernel.id, job.case, job.device, status, message, time.perf_counter() - start)

    def run_all(self) -> list[Result]:
        return [self.run(job) for job in self.jobs()]
