"""The conformance kit judges backends correctly: mutants fail on their own rule and no other, real backends pass.

The small correct torch backend of `conformance_backends` is the base of
every mutant; each mutant breaks exactly one rule of docs/numerics.md the way
a real kernel might, and the kit must fail it on that rule with a message
naming it, while every other case it runs passes. The oracle is the
installed cpu-reference plugin.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import types
from collections.abc import Callable
from pathlib import Path
from xml.etree import ElementTree as ET

import attrs
import pytest
import torch

import qcore
from conformance_backends import (
    PRECISION_DEFECTS,
    backend,
    flat_output,
    float64_quantize,
    half_away_from_zero,
    in_input_dtype,
    int16_saturating_pairs,
    make_linear,
    make_pack,
    make_quantize,
    none_means_compute,
    ragged_dequantize,
    ragged_quantize,
    storage_order,
    unchecked_weight_only,
    unfloored_quantize,
    vague_nonfinite,
)
from qcore.commands import conformance as command
from qcore.kernels import YES, KernelImpl, KernelRequest, Support, no
from qcore.plugins import PluginManager, set_manager
from qcore.testing import qcore_manager  # noqa: F401  (the fixture plugin authors get)
from qcore.testing.case import Case
from qcore.testing.runner import Conformance, Result

ROOT = Path(__file__).resolve().parents[1]
FEW_SPECS = ("int8 sym", "int8 asym", "uint4 asym", "int4 sym")


def linear_only(prepare: Callable[..., object], linear: Callable[..., object],
                supports: Callable[[KernelRequest, object], Support]) -> types.SimpleNamespace:
    """A plugin with one linear kernel."""
    kernel = KernelImpl("m", "linear", "linear", linear, supports, prepare=prepare)
    return types.SimpleNamespace(qcore_kernels=qcore.hookimpl(lambda: [kernel]))


def defect(name: str) -> types.SimpleNamespace:
    return backend("m", **PRECISION_DEFECTS[name])


def quantize_ops(case: Case) -> bool:
    return case.op in ("quantize", "dequantize") and case.subject in FEW_SPECS


def linear_ops(case: Case) -> bool:
    return case.op == "linear"


@attrs.frozen
class Mutant:
    """A backend broken in one way: the kit, run on the cases `select` keeps, fails it on `rule` only."""

    name: str
    plugin: Callable[[], object] = attrs.field(repr=False)
    select: Callable[[Case], bool] = attrs.field(repr=False)
    rule: str
    text: str
    subjects: tuple[str, ...] = ()
    """Subjects that must be among the failures (a rule that must catch weight-only schemes, say)."""


swap_pack, swap_unpack = make_pack(low=1)
WEIGHT_ONLY = ("w8a16", "w4a16", "w4a16-asym")

MUTANTS: list[Mutant] = [
    Mutant("round-half-away", lambda: backend("m", quantize=make_quantize(half_away_from_zero)),
           lambda c: c.op == "quantize" and c.subject in ("int8 sym", "uint4 asym"), "ties",
           "codes of the ties vector"),
    Mutant("zero-point-plus-one", lambda: backend("m", quantize=make_quantize(zp_offset=1)),
           lambda c: c.op == "quantize" and c.rule == "reference", "reference", "zero_point"),
    Mutant("int16-accumulator", lambda: backend("m", linear=make_linear(accumulate=int16_saturating_pairs)[1]),
           lambda c: c.op == "linear" and c.subject == "w8a8-asym-dynamic", "accumulation K=",
           "edge codes, activations ±1 vs the exact result"),
    Mutant("swapped-nibbles", lambda: backend("m", pack_weight=swap_pack, unpack_weight=swap_unpack),
           lambda c: c.op == "pack_weight", "canonical bytes", "packed bytes (low nibble first)"),
    Mutant("per-tensor-scale", lambda: backend("m", quantize=make_quantize(force_tensor=True)),
           lambda c: c.op == "quantize" and c.rule == "reference" and c.subject == "int8 sym", "reference",
           "scale: "),
    Mutant("nan-passthrough", lambda: backend("m", quantize=make_quantize(check=False)),
           lambda c: c.op == "quantize" and c.subject == "int8 asym", "non-finite",
           "nan in the input was not rejected with NonFiniteError; first mismatch at index (1, 2, 3)"),
    Mutant("ignores-strides", lambda: backend("m", quantize=make_quantize(read=storage_order)),
           lambda c: c.op == "quantize" and c.rule in ("strides", "reference") and c.subject == "int4 sym",
           "strides", "transposed storage input vs contiguous"),
    # rule 1: NaN/Inf into linear, weight-only included (the first edition of the guide's example kernel)
    Mutant("unchecked-linear-input", lambda: linear_only(*unchecked_weight_only()), linear_ops, "non-finite",
           "nan in the linear input was not rejected with NonFiniteError", ("w8a16",)),
    # rule 2: accumulation at large K, weight-only included
    Mutant("fp16-partial-sums", lambda: defect("partial sums kept in fp16 between K tiles of 128"), linear_ops,
           "accumulation K=", "vs the exact result (float32 accumulation", WEIGHT_ONLY),
    # rule 3: group sizes that do not divide the last axis
    Mutant("ragged-groups-quantize", lambda: backend("m", quantize=ragged_quantize), quantize_ops,
           "group does not divide", "was not rejected with ShapeError"),
    Mutant("ragged-groups-prepare", lambda: backend("m", prepare=make_linear(weight=ragged_dequantize)[0]),
           linear_ops, "group does not divide", "prepare of group_size 128 weights with in_features 192 was not "
           "rejected with ShapeError", ("w4a16", "w4a16-asym")),
    # rule 4: defects an SQNR threshold only grazes (52.7 / 54.3 / 70 dB against the reference's linear)
    Mutant("bf16-weight-cache", lambda: defect("dequantized weights cached in bf16"), linear_ops, "precision M=",
           "full-mantissa operands vs the exact result", WEIGHT_ONLY),
    Mutant("bf16-products", lambda: defect("each product rounded to bf16"), linear_ops, "precision M=",
           "full-mantissa operands vs the exact result", WEIGHT_ONLY),
    Mutant("tf32-operands", lambda: defect("operands rounded to tf32"), linear_ops, "precision M=",
           "full-mantissa operands vs the exact result", WEIGHT_ONLY),
    # rule 5: the rest of docs/numerics.md and the op signatures
    Mutant("static-qparams-recomputed", lambda: backend("m", linear=make_linear(calibrated=False)[1]), linear_ops,
           "precision M=", "full-mantissa operands vs the exact result", ("w8a8",)),
    Mutant("no-eps-floor", lambda: backend("m", quantize=unfloored_quantize), quantize_ops, "tiny range",
           "values around 1e-12: scale"),
    Mutant("float64-not-converted", lambda: backend("m", quantize=float64_quantize), quantize_ops, "input dtypes",
           "codes of a float64 input a quarter ulp off the ties vs of its float32 values"),
    Mutant("zero-point-none-recomputes", lambda: backend("m", quantize=none_means_compute), quantize_ops,
           "zero-point None", "with zero_point=None vs explicit zeros"),
    Mutant("nonfinite-message-without-index", lambda: backend("m", quantize=vague_nonfinite), quantize_ops,
           "non-finite", "does not name the first non-finite index (1, 2, 3)"),
    Mutant("half-input-half-gemm", lambda: backend("m", linear=make_linear(in_input_dtype, keep=(
           torch.float16, torch.bfloat16, torch.float32))[1]),
           linear_ops, "input dtypes", "input vs its float32 values", WEIGHT_ONLY),
    Mutant("flattens-leading-dims", lambda: backend("m", linear=flat_output(make_linear()[1])), linear_ops,
           "leading dims", "shape (6, 16), expected (2, 3, 16)"),
]


def run_suite(name: str, plugin: object, select: Callable[[Case], bool] | None = None) -> list[Result]:
    return Conformance(name, PluginManager({name: plugin}, entry_points=False), select=select).run_all()


def test_correct_torch_backend_passes_every_case() -> None:
    results = run_suite("good", backend("good"))
    assert {r.case.op for r in results} == set(qcore.OPS)
    failures = [f"{r.case.id}: {r.message}" for r in results if r.status == "fail"]
    assert not failures, "\n".join(failures[:10])
    declined = {r.case.subject.split()[0] for r in results if r.status == "unsupported"}
    assert declined == {"ternary", "binary", "fp8_e4m3", "fp8_e5m2", "fp16", "bf16", "fp8"}


@pytest.mark.parametrize("mutant", MUTANTS, ids=[m.name for m in MUTANTS])
def test_mutant_fails_on_its_own_rule_and_no_other(mutant: Mutant) -> None:
    results = run_suite("m", mutant.plugin(), mutant.select)
    failed = [r for r in results if r.status == "fail"]
    assert failed, f"{mutant.name} was not caught by rule {mutant.rule!r}"
    elsewhere = [f"{r.case.id}: {r.message}" for r in failed if not r.case.rule.startswith(mutant.rule)]
    assert not elsewhere, f"{mutant.name} also failed other rules:\n" + "\n".join(elsewhere[:5])
    for r in failed:
        assert mutant.text in r.message and f"rule '{r.case.rule}'" in r.message and "seed" in r.message, r.message
    assert {r.case.subject for r in failed} >= set(mutant.subjects), sorted({r.case.subject for r in failed})
    assert any(r.status == "pass" for r in results), f"{mutant.name}: nothing passed, so nothing shows it is specific"


def test_mutant_failure_rows_are_specific() -> None:
    """Swapped nibbles break int4/uint4 rows only: 8-bit codes are stored unchanged."""
    results = run_suite("swapped", backend("swapped", pack_weight=swap_pack, unpack_weight=swap_unpack),
                        lambda c: c.op in ("pack_weight", "unpack_weight"))
    rows = {(r.case.op, r.case.subject, r.status) for r in results}
    for op in ("pack_weight", "unpack_weight"):
        assert {(op, "int4 sym", "fail"), (op, "uint4 asym", "fail"), (op, "int8 sym", "pass")} <= rows
        assert (op, "int8 sym", "fail") not in rows and (op, "uint8 asym", "fail") not in rows


def test_declined_cases_are_unsupported_with_the_kernels_reason() -> None:
    def only_int8(request: KernelRequest, hardware: object) -> Support:
        return YES if request.spec.dtype == "int8" else no("this kernel only does int8")

    kernel = KernelImpl("picky", "q", "quantize", make_quantize(), only_int8)
    plugin = types.SimpleNamespace(qcore_kernels=qcore.hookimpl(lambda: [kernel]))
    results = run_suite("picky", plugin, lambda c: c.rule == "reference")
    assert {r.status for r in results if r.case.subject.startswith("int8")} == {"pass"}
    declined = [r for r in results if not r.case.subject.startswith("int8")]
    assert declined and {(r.status, r.message) for r in declined} == {("unsupported", "this kernel only does int8")}


def test_command_reports_matrix_in_markdown_json_and_junit(tmp_path: Path) -> None:
    previous = set_manager(PluginManager({"broken": backend("broken", quantize=make_quantize(check=False))},
                                         entry_points=False))
    try:
        rc = command.main(["broken", "--report", str(tmp_path), "--match", "quantize[int8 sym|tensor|"])
    finally:
        set_manager(previous)
    assert rc == 1
    report = json.loads((tmp_path / "conformance.json").read_text())
    failed = [r for r in report["results"] if r["status"] == "fail"]
    assert [r["rule"] for r in failed] == ["non-finite"] and report["ok"] is False
    assert "NonFiniteError" in failed[0]["message"] and isinstance(failed[0]["seed"], int)
    suite = ET.parse(tmp_path / "conformance.xml").getroot()
    assert suite.get("failures") == "1" and int(suite.get("tests")) == len(report["results"])
    assert "| **fail** |" in (tmp_path / "conformance.md").read_text()


def test_qcore_manager_fixture_sets_and_restores_the_process_manager(qcore_manager) -> None:  # noqa: F811
    before = qcore.get_manager()
    manager = qcore_manager(mine=backend("mine"))
    assert qcore.get_manager() is manager
    assert {k.backend for k in manager.kernels().values()} == {"mine"}
    assert before is not manager


@pytest.mark.parametrize("name", ["cpu-reference", "torch-fallback"])
def test_shipped_backends_pass_their_conformance(name: str, tmp_path: Path) -> None:
    rc = command.main([name, "--report", str(tmp_path)])
    results = json.loads((tmp_path / "conformance.json").read_text())["results"]
    failures = [f"{r['kernel']} {r['op']} [{r['subject']} | {r['granularity']}] {r['message']}"
                for r in results if r["status"] == "fail"]
    assert rc == 0 and not failures, "\n".join(failures)
    assert any(r["status"] == "pass" for r in results)


def test_example_plugin_installs_lists_pins_and_passes(tmp_path: Path) -> None:
    source = tmp_path / "src"
    shutil.copytree(ROOT / "docs" / "examples" / "qcore-example-backend", source)
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(source)], check=True)
    env = {**os.environ, "PYTHONPATH": str(target)}
    probe = (
        "import qcore; from qcore.kernels import KernelRequest\n"
        "m = qcore.get_manager(); assert 'example' in m.backends(), sorted(m.backends())\n"
        "r = KernelRequest('linear', 'cpu', scheme=qcore.PRESETS['w8a16'], shape=(4, 64, 8))\n"
        "print(qcore.Matcher(measure=False).select(r, backend='example').chosen.id)\n"
    )
    chosen = subprocess.run([sys.executable, "-c", probe], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert chosen.stdout.strip() == "example/linear-int8-weight-only", chosen.stderr
    kit = subprocess.run([sys.executable, "-m", "qcore.commands.conformance", "example"], env=env, cwd=tmp_path,
                         capture_output=True, text=True)
    assert kit.returncode == 0 and "0 failed" in kit.stdout, kit.stdout[-3000:] + kit.stderr[-3000:]
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    items = subprocess.run([sys.executable, "-m", "pytest", "-p", "qcore.testing", "--qcore-backend", "example", "-q",
                            "-p", "no:cacheprovider", "--rootdir", str(run_dir)], env=env, cwd=run_dir,
                           capture_output=True, text=True)
    assert items.returncode == 0 and " passed" in items.stdout, items.stdout[-3000:]


def test_a_backend_that_did_not_load_is_explained(tmp_path: Path) -> None:
    broken = types.ModuleType("broken_plugin")  # implements no hook: a problem at load
    manager = PluginManager({"broken": broken, "good": backend("good")}, entry_points=False)
    with pytest.raises(qcore.UnknownNameError, match=r"'broken' registers no kernels: plugin broken failed at load: "
                                                      r"PluginError: broken_plugin implements none of qcore's hooks"):
        Conformance("broken", manager)
    with pytest.raises(qcore.UnknownNameError, match=r"known: good\. .*pip install --target DIR.* on PYTHONPATH"):
        Conformance("missing", manager)


def test_the_guides_example_kernel_passes_the_kit() -> None:
    """docs/plugins.md section 3, run as written: it must obey the contract it teaches (NaN/Inf included)."""
    guide = (ROOT / "docs" / "plugins.md").read_text(encoding="utf-8")
    section = guide.split("## 3. A kernel", 1)[1].split("\n## ", 1)[0]
    source = section.split("```python\n", 1)[1].split("```", 1)[0]
    plugin = types.ModuleType("guide_example")
    exec(compile(source, "docs/plugins.md#3", "exec"), plugin.__dict__)
    results = run_suite("example", plugin, linear_ops)
    failures = [f"{r.case.id}: {r.message}" for r in results if r.status == "fail"]
    assert not failures, "\n".join(failures[:5])
    assert {r.case.rule for r in results if r.status == "pass"} >= {"non-finite", "precision M=1", "accumulation K=65536"}
