"""triton-gpu's kernels through the conformance kit's exact-value and rejected-input rules, under the Triton
interpreter (no GPU here).

The kernels are CUDA-only, so `qcore conformance triton-gpu` finds nothing to
run on this machine. Here each kernel is registered for "cpu" with its own
`supports` asked as if for "cuda" on a fake sm_90 device, and the kernel
modules are imported with TRITON_INTERPRET=1 as in test_triton_gpu.py. The
interpreter is slow, so only the rules that check values exactly or check
refusals run (K up to 4096): the SQNR rules and K = 65536 are covered by
test_triton_gpu.py's own comparisons with the reference. A group size that
does not divide K is declined in `supports`, with the reason, before any
kernel could see it.
"""

from __future__ import annotations

import types
from collections.abc import Iterator

import attrs
import pytest

import qcore
from qcore.kernels import KernelImpl, KernelRequest, Support
from qcore.plugins import PluginManager
from qcore.testing.case import Case
from qcore.testing.runner import Conformance
from qcore_triton_gpu import plugin
from test_triton_gpu import _kernel_modules, gpu_hardware

RULES = ("non-finite", "group does not divide", "precision M=", "input dtypes", "leading dims", "accumulation K=16",
         "accumulation K=4096", "tiny range", "zero-point None")


def on_cpu(kernel: KernelImpl) -> KernelImpl:
    """`kernel` for CPU tensors: its `supports` answers as it would for CUDA on an sm_90 device."""
    gpu = gpu_hardware((9, 0))

    def supports(request: KernelRequest, hardware: object) -> Support:
        return kernel.supports(attrs.evolve(request, device="cuda"), gpu)

    return attrs.evolve(kernel, devices=("cpu",), supports=supports)


QUANTIZE_SUBJECTS = ("int8 sym", "int8 asym", "uint4 asym", "ternary sym", "binary sym", "fp8_e4m3 sym")
"""One elementwise kernel serves every dtype; these cover its modes (fp8 is withheld, so declined)."""


def selected(case: Case) -> bool:
    if case.op in ("quantize", "dequantize") and case.subject not in QUANTIZE_SUBJECTS:
        return False
    return any(case.rule == rule or (rule.endswith("=") and case.rule.startswith(rule)) for rule in RULES) \
        and not case.rule.startswith("accumulation K=65536")


@pytest.fixture(scope="module")
def interpreted() -> Iterator[None]:
    with _kernel_modules(interpret=True):
        yield


def test_triton_kernels_pass_the_exact_and_refusal_rules_under_the_interpreter(interpreted: None) -> None:
    kernels = [on_cpu(k) for k in plugin.qcore_kernels()]
    cpu_plugin = types.SimpleNamespace(qcore_kernels=qcore.hookimpl(lambda: kernels))
    manager = PluginManager({"triton-gpu": cpu_plugin}, entry_points=False)
    results = Conformance("triton-gpu", manager, select=selected).run_all()
    failures = [f"{r.kernel} {r.case.id}: {r.message}" for r in results if r.status == "fail"]
    assert not failures, "\n".join(failures[:10])
    passed = {(r.kernel, r.case.rule.split(" K=")[0].split(" M=")[0]) for r in results if r.status == "pass"}
    for kernel in ("linear-w8a8", "linear-weight-only"):
        for rule in ("non-finite", "precision", "input dtypes", "leading dims", "accumulation"):
            assert (f"triton-gpu/{kernel}", rule) in passed, (kernel, rule)
    for rule in ("non-finite", "tiny range", "zero-point None", "input dtypes"):
        assert ("triton-gpu/quantize", rule) in passed, rule
    ragged = [r for r in results if r.case.rule == "group does not divide"
              and r.kernel in ("triton-gpu/quantize", "triton-gpu/linear-weight-only")]
    assert ragged and {r.status for r in ragged} == {"unsupported"}
    assert all("does not divide" in r.message for r in ragged if not r.case.subject.startswith("fp8"))  # fp8: withheld
