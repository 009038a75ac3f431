"""`qcore bench`: the float baseline, each backend's kernel and the matcher's own choice, as a table and JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from qcore import cli
from qcore.matcher import Matcher


def test_rows_for_baseline_each_backend_and_auto(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench.json"
    code = cli.main(["bench", "--shape", "2,128,64", "--scheme", "w8a16", "--backend", "torch-fallback",
                     "--backend", "triton-gpu", "--json", str(out)])
    assert code == 0
    rows = {(r["scheme"], r["backend"]): r for r in json.loads(out.read_text())}
    assert set(rows) == {("float", "torch"), ("w8a16", "torch-fallback"), ("w8a16", "triton-gpu"), ("w8a16", "auto")}
    baseline = rows["float", "torch"]
    assert baseline["shape"] == [2, 128, 64] and baseline["kernel"] == "torch.matmul float32" and baseline["speedup"] == 1
    ours = rows["w8a16", "torch-fallback"]
    assert ours["kernel"].startswith("torch-fallback/") and ours["seconds"] > 0
    assert ours["speedup"] == pytest.approx(baseline["seconds"] / ours["seconds"])
    assert rows["w8a16", "auto"]["kernel"] and "fastest measured" in rows["w8a16", "auto"]["note"]
    gpu = rows["w8a16", "triton-gpu"]
    assert gpu["kernel"] is None and gpu["seconds"] is None and "pinned backend triton-gpu cannot run" in gpu["note"]
    shown = capsys.readouterr().out
    assert "qcore bench on cpu" in shown and ours["kernel"] in shown and f"wrote {out}" in shown


@pytest.mark.parametrize(("argv", "message"), [
    (["--scheme", "w9a9"], "unknown scheme 'w9a9'"),
    (["--backend", "nope"], "unknown backend 'nope'; known: "),
    (["--shape", "1,2"], None),
])
def test_bad_arguments_are_named(argv: list[str], message: str | None, capsys: pytest.CaptureFixture[str]) -> None:
    if message is None:
        with pytest.raises(SystemExit) as exc:
            cli.main(["bench", *argv])
        assert exc.value.code == 2 and "--shape wants M,K,N" in capsys.readouterr().err
        return
    assert cli.main(["bench", *argv]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_without_a_device_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["bench", "--device", "cuda", "--backend", "torch-fallback"]) == 2
    assert "--device cuda: torch sees no CUDA device here" in capsys.readouterr().err


def test_a_kernel_that_fails_is_a_row_not_the_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = Matcher.time

    def flaky(self: Matcher, kernel, request, **kw):  # type: ignore[no-untyped-def]
        if kernel.backend == "cpu-reference":
            raise RuntimeError("device lost")
        return real(self, kernel, request, **kw)

    monkeypatch.setattr(Matcher, "time", flaky)
    out = tmp_path / "bench.json"
    assert cli.main(["bench", "--shape", "1,64,32", "--scheme", "w8a16", "--backend", "cpu-reference",
                     "--backend", "torch-fallback", "--json", str(out)]) == 0
    rows = {r["backend"]: r for r in json.loads(out.read_text()) if r["scheme"] == "w8a16"}
    assert rows["cpu-reference"]["seconds"] is None
    assert rows["cpu-reference"]["note"] == "failed while timing: RuntimeError: device lost"
    assert rows["torch-fallback"]["seconds"] > 0
