"""The conformance kit judges backends correctly: mutants fail on the right row, real backends pass.

A small correct torch backend below is the base of every mutant; each mutant
breaks exactly one rule of docs/numerics.md, and the kit must fail it on that
rule with a message naming it, while the untouched rows still pass. The oracle
is the installed cpu-reference plugin.
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

import pytest
import torch

import qcore
from qcore.commands import conformance as command
from qcore.kernels import YES, KernelImpl, KernelRequest, LinearWeights, PackedTensor, QTensor, Support, no
from qcore.plugins import PluginManager, set_manager
from qcore.layout import grouped
from qcore.qparams import check_finite, expand, qparams_from_range, reduce_minmax
from qcore.spec import QuantSpec
from qcore.testing import qcore_manager  # noqa: F401  (the fixture plugin authors get)
from qcore.testing.case import Case
from qcore.testing.runner import Conformance, Result

ROOT = Path(__file__).resolve().parents[1]
INT_DTYPES = ("int8", "uint8", "int4", "uint4")

# -- a small correct torch backend -------------------------------------------


def _codes(x: torch.Tensor, spec: QuantSpec, scale: torch.Tensor, zp: torch.Tensor,
           rnd: Callable[[torch.Tensor], torch.Tensor] = torch.round) -> torch.Tensor:
    xv = grouped(x, spec) if spec.granularity == "group" else x
    v = rnd(xv.double() / expand(scale.double(), spec, x.shape)) + expand(zp.double(), spec, x.shape)
    qmin, qmax = spec.qrange
    return v.clamp(qmin, qmax).reshape(x.shape).to(torch.int8 if spec.info.signed else torch.uint8)


def make_quantize(rnd: Callable[[torch.Tensor], torch.Tensor] = torch.round, *, check: bool = True,
                  zp_offset: int = 0, force_tensor: bool = False,
                  read: Callable[[torch.Tensor], torch.Tensor] = lambda x: x) -> Callable[..., QTensor]:
    def quantize(x: torch.Tensor, spec: QuantSpec, scale: torch.Tensor | None = None,
                 zero_point: torch.Tensor | None = None) -> QTensor:
        if check:
            check_finite(x, "input")
        x = read(x).float()
        if scale is None:
            qspec = QuantSpec(spec.dtype, symmetric=spec.symmetric) if force_tensor else spec
            scale, zero_point = qparams_from_range(*reduce_minmax(x, qspec), qspec)
            if not spec.symmetric:
                zero_point = zero_point + zp_offset
            codes = _codes(x, qspec, scale, zero_point, rnd)
            if force_tensor:  # one scale, copied into the per-channel shape the caller asked for
                shape = reduce_minmax(x, spec)[0].shape
                scale, zero_point = scale.expand(shape).contiguous(), zero_point.expand(shape).contiguous()
            return QTensor(codes, scale, zero_point, spec)
        zero_point = torch.zeros_like(scale, dtype=torch.int32) if zero_point is None else zero_point
        return QTensor(_codes(x, spec, scale, zero_point, rnd), scale, zero_point, spec)
    return quantize


def dequantize(q: QTensor) -> torch.Tensor:
    spec = q.spec
    c = grouped(q.codes, spec) if spec.granularity == "group" else q.codes
    v = (c.double() - expand(q.zero_point.double(), spec, q.shape)) * expand(q.scale.double(), spec, q.shape)
    return v.float().reshape(q.shape)


def make_pack(low: int = 0) -> tuple[Callable[[QTensor], PackedTensor], Callable[[PackedTensor], QTensor]]:
    """Pack/unpack with the first code in nibble `low` (0: canonical low nibble first, 1: swapped)."""
    high = 1 - low

    def pack(q: QTensor) -> PackedTensor:
        if q.spec.bits == 8:
            return PackedTensor(q.codes, tuple(q.shape), q.scale, q.zero_point, q.spec)
        f = torch.nn.functional.pad(q.codes.to(torch.int32) & 0xF, (0, q.shape[-1] % 2)).reshape(*q.shape[:-1], -1, 2)
        return PackedTensor((f[..., low] | (f[..., high] << 4)).to(torch.uint8), tuple(q.shape), q.scale,
                            q.zero_point, q.spec)

    def unpack(p: PackedTensor) -> QTensor:
        if p.spec.bits == 8:
            return QTensor(p.data, p.scale, p.zero_point, p.spec)
        d = p.data.to(torch.int32)
        nibbles = [d & 0xF, d >> 4]
        f = torch.stack([nibbles[low], nibbles[high]], dim=-1).reshape(*p.data.shape[:-1], -1)[..., : p.shape[-1]]
        if p.spec.info.signed:
            return QTensor(torch.where(f >= 8, f - 16, f).to(torch.int8), p.scale, p.zero_point, p.spec)
        return QTensor(f.to(torch.uint8), p.scale, p.zero_point, p.spec)

    return pack, unpack


def make_linear(accumulate: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
                ) -> tuple[Callable[[LinearWeights], object], Callable[[object, torch.Tensor], torch.Tensor]]:
    """Float64 linear; with `accumulate`, integer activations go through integer codes and it (int64 in/out)."""
    quantize = make_quantize()

    def prepare(w: LinearWeights) -> LinearWeights:
        return w

    def linear(w: LinearWeights, x: torch.Tensor) -> torch.Tensor:
        act, wq = w.scheme.input_activations, w.weight
        assert wq is not None
        if act is None:
            out = x.double() @ dequantize(wq).double().T
        else:
            qa = quantize(x, act) if act.dynamic else quantize(x, act, w.act_scale, w.act_zero_point)
            if accumulate is None:
                out = dequantize(qa).double() @ dequantize(wq).double().T
            else:
                a_int = qa.codes.long() - (qa.zero_point.long().unsqueeze(-1) if act.granularity == "token"
                                           else qa.zero_point.long())
                w_int = wq.codes.long() - wq.zero_point.long().unsqueeze(-1)
                a_scale = qa.scale.double().unsqueeze(-1) if act.granularity == "token" else qa.scale.double()
                out = accumulate(a_int, w_int).double() * a_scale * wq.scale.double()
        return (out + (0 if w.bias is None else w.bias.double())).float()

    return prepare, linear


def int_formats(request: KernelRequest, hardware: object) -> Support:
    specs = [request.spec] if request.spec is not None else [request.scheme.weights, request.scheme.input_activations]
    bad = [s.dtype for s in specs if s is not None and s.dtype not in INT_DTYPES]
    return no(f"{bad[0]} is not an integer format") if bad else YES


def backend(name: str, **replace: Callable[..., object]) -> types.SimpleNamespace:
    """A plugin object registering the torch backend as `name`, with some callables replaced."""
    pack, unpack = make_pack()
    prepare, linear = make_linear()
    fns = {"quantize": make_quantize(), "dequantize": dequantize, "pack_weight": pack, "unpack_weight": unpack,
           "linear": linear, "prepare": prepare} | replace
    kernels = [KernelImpl(name, op, op, fns[op], int_formats, prepare=fns["prepare"] if op == "linear" else None)
               for op in qcore.OPS]
    return types.SimpleNamespace(qcore_kernels=qcore.hookimpl(lambda: kernels))


# -- the mutants ----------------------------------------------------------------


def half_away_from_zero(v: torch.Tensor) -> torch.Tensor:
    return torch.sign(v) * torch.floor(v.abs() + 0.5)


def storage_order(x: torch.Tensor) -> torch.Tensor:
    """Reads x's memory as if it were contiguous: the bug of kernels that use data_ptr and ignore strides."""
    return x.as_strided(x.shape, torch.empty(x.shape).stride(), x.storage_offset())


def int16_saturating_pairs(a: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Sums products in pairs saturated to int16 (vpmaddubsw without VNNI), then exactly: fine on N(0,1)
    codes, wrong when two extreme products meet."""
    prod = torch.nn.functional.pad(a.unsqueeze(1) * w.unsqueeze(0), (0, a.shape[-1] % 2))
    return prod.reshape(*prod.shape[:-1], -1, 2).sum(-1).clamp(-(2**15), 2**15 - 1).sum(-1)


swap_pack, swap_unpack = make_pack(low=1)
_, int16_linear = make_linear(int16_saturating_pairs)

# name, replaced callables, cases to run, failing rule (prefix), text of the failure, a rule that still passes
MUTANTS: list[tuple[str, dict[str, object], Callable[[Case], bool], str, str, str]] = [
    ("round-half-away", {"quantize": make_quantize(half_away_from_zero)},
     lambda c: c.op == "quantize" and c.subject in ("int8 sym", "uint4 asym"), "ties", "codes of the ties vector",
     "reference"),
    ("zero-point-plus-one", {"quantize": make_quantize(zp_offset=1)},
     lambda c: c.op == "quantize" and c.rule == "reference", "reference", "zero_point", "reference"),
    ("int16-accumulator", {"linear": int16_linear},
     lambda c: c.op == "linear" and c.subject == "w8a8-asym-dynamic", "accumulation K=16", "exact int64 accumulation",
     "sqnr vs reference"),
    ("swapped-nibbles", {"pack_weight": swap_pack, "unpack_weight": swap_unpack},
     lambda c: c.op == "pack_weight", "canonical bytes", "packed bytes (low nibble first)",
     "canonical bytes"),
    ("per-tensor-scale", {"quantize": make_quantize(force_tensor=True)},
     lambda c: c.op == "quantize" and c.rule == "reference" and c.subject == "int8 sym", "reference",
     "scale: ", "reference"),
    ("nan-passthrough", {"quantize": make_quantize(check=False)},
     lambda c: c.op == "quantize" and c.rule in ("non-finite", "reference") and c.subject == "int8 asym",
     "non-finite", "nan in the input was not rejected with NonFiniteError", "reference"),
    ("ignores-strides", {"quantize": make_quantize(read=storage_order)},
     lambda c: c.op == "quantize" and c.rule in ("strides", "reference") and c.subject == "int4 sym",
     "strides", "transposed storage input vs contiguous", "reference"),
]


def run_suite(name: str, plugin: object, select: Callable[[Case], bool] | None = None) -> list[Result]:
    return Conformance(name, PluginManager({name: plugin}, entry_points=False), select=select).run_all()


def test_correct_torch_backend_passes_every_case() -> None:
    results = run_suite("good", backend("good"))
    assert {r.case.op for r in results} == set(qcore.OPS)
    failures = [f"{r.case.id}: {r.message}" for r in results if r.status != "pass"]
    assert not failures, "\n".join(failures[:10])


@pytest.mark.parametrize(("name", "replace", "select", "rule", "text", "passing"), MUTANTS, ids=[m[0] for m in MUTANTS])
def test_mutant_fails_on_the_right_row(name: str, replace: dict[str, object], select: Callable[[Case], bool],
                                       rule: str, text: str, passing: str) -> None:
    results = run_suite(name, backend(name, **replace), select)
    failed = [r for r in results if r.status == "fail"]
    on_rule = [r for r in failed if r.case.rule.startswith(rule)]
    assert on_rule, f"{name} was not caught by rule {rule!r}; failures: {[r.case.id for r in failed]}"
    assert all(text in r.message and f"rule '{r.case.rule}'" in r.message for r in on_rule), on_rule[0].message
    assert "first mismatch at index" in on_rule[0].message or "was not rejected" in on_rule[0].message
    assert "seed" in on_rule[0].message
    assert any(r.status == "pass" and r.case.rule.startswith(passing) for r in results), \
        f"{name}: no {passing!r} case passed, so the failures are not specific"


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
