"""The capability matcher: filtering with reasons, measured ranking, pins, strict, the timing cache."""

from __future__ import annotations

import json
import time
from pathlib import Path
from types import SimpleNamespace

import attrs
import pytest

from qcore import autotune
from qcore.errors import NoKernelError, UnknownNameError
from qcore.hardware import detect
from qcore.hookspecs import hookimpl
from qcore.kernels import YES, KernelImpl, KernelRequest, no
from qcore.matcher import Matcher
from qcore.plugins import PluginManager
from qcore.spec import PRESETS

W8A8 = PRESETS["w8a8-dynamic"]
REQUEST = KernelRequest("linear", "cpu", scheme=W8A8, shape=(2, 8, 4))


def _linear(backend: str, name: str, delay: float = 0.0, priority: int = 0, supports=None, calls=None):
    def fn(prepared, x):
        if calls is not None:
            calls.append(name)
        if delay:
            time.sleep(delay)
        return x

    return KernelImpl(backend, name, "linear", fn=fn, prepare=lambda w: w,
                      supports=supports or (lambda r, h: YES), priority=priority)


def _manager(*kernels: KernelImpl) -> PluginManager:
    plugin = SimpleNamespace(qcore_kernels=hookimpl(lambda: list(kernels)))
    return PluginManager({"fake": plugin}, entry_points=False)


def _matcher(manager: PluginManager, tmp_path: Path, hardware=None, measure: bool = True) -> Matcher:
    hardware = hardware or detect()
    return Matcher(manager, hardware, measure=measure, cache=autotune.TimingCache(hardware, tmp_path),
                   quantize_weights=lambda scheme, w, x: None)


def test_picks_the_faster_of_two_kernels_even_against_priority(tmp_path: Path) -> None:
    manager = _manager(_linear("slow", "k", delay=0.003, priority=10), _linear("fast", "k", priority=0))
    selection = _matcher(manager, tmp_path).select(REQUEST)
    assert selection.chosen.id == "fast/k"
    assert [c.kernel.id for c in selection.ranked] == ["fast/k", "slow/k"]
    assert selection.ranked[0].seconds < selection.ranked[1].seconds
    assert "fastest measured" in selection.why()


def test_without_measuring_ranks_by_priority(tmp_path: Path) -> None:
    manager = _manager(_linear("slow", "k", delay=0.003, priority=10), _linear("fast", "k", priority=0))
    selection = _matcher(manager, tmp_path, measure=False).select(REQUEST)
    assert selection.chosen.id == "slow/k"
    assert all(c.seconds is None for c in selection.ranked)
    assert selection.ranking == "declared priority"


def test_rejections_carry_reasons(tmp_path: Path) -> None:
    manager = _manager(
        _linear("a", "ok"),
        _linear("b", "picky", supports=lambda r, h: no("needs M == 1")),
        _linear("c", "broken", supports=lambda r, h: 1 / 0),
        KernelImpl("d", "gpu", "linear", fn=lambda p, x: x, prepare=lambda w: w, supports=lambda r, h: YES,
                   devices=("cuda",)),
    )
    selection = _matcher(manager, tmp_path, measure=False).select(REQUEST)
    reasons = {c.kernel.id: c.support.reason for c in selection.rejected}
    assert reasons["b/picky"] == "needs M == 1"
    assert "ZeroDivisionError" in reasons["c/broken"]
    assert "cuda" in reasons["d/gpu"] and "cpu" in reasons["d/gpu"]
    assert "b/picky" in selection.explain() and "needs M == 1" in selection.explain()


def test_a_kernel_failing_while_timed_is_rejected_not_fatal(tmp_path: Path) -> None:
    def boom(p, x):
        raise RuntimeError("kernel exploded")

    bad = KernelImpl("bad", "k", "linear", fn=boom, prepare=lambda w: w, supports=lambda r, h: YES, priority=5)
    selection = _matcher(_manager(bad, _linear("good", "k")), tmp_path).select(REQUEST)
    assert selection.chosen.id == "good/k"
    assert "kernel exploded" in {c.kernel.id: c.support.reason for c in selection.rejected}["bad/k"]


def test_pin_is_honoured_over_a_faster_kernel(tmp_path: Path) -> None:
    manager = _manager(_linear("slow", "k", delay=0.002), _linear("fast", "k"))
    selection = _matcher(manager, tmp_path).select(REQUEST, backend="slow")
    assert selection.chosen.id == "slow/k"
    assert "pinned" in selection.why()


def test_pin_that_cannot_serve_falls_back_or_raises_when_strict(tmp_path: Path) -> None:
    manager = _manager(_linear("pinned", "k", supports=lambda r, h: no("int4 only")), _linear("other", "k"))
    matcher = _matcher(manager, tmp_path, measure=False)
    selection = matcher.select(REQUEST, backend="pinned")
    assert selection.chosen.id == "other/k"
    assert "int4 only" in selection.fallback_reason and selection.why().startswith("fallback")
    with pytest.raises(NoKernelError, match="pinned backend pinned cannot run.*int4 only.*strict"):
        matcher.select(REQUEST, backend="pinned", strict=True)


def test_strict_raises_when_only_the_slow_fallback_is_left(tmp_path: Path) -> None:
    manager = _manager(_linear("ref", "k", priority=-100), _linear("fast", "k", supports=lambda r, h: no("no AMX")))
    matcher = _matcher(manager, tmp_path, measure=False)
    assert matcher.select(REQUEST).chosen.id == "ref/k"
    with pytest.raises(NoKernelError, match="only the slow fallback ref/k.*no AMX"):
        matcher.select(REQUEST, strict=True)


def test_unknown_pin_lists_known_backends(tmp_path: Path) -> None:
    with pytest.raises(UnknownNameError, match="unknown backend 'nope'; known: a"):
        _matcher(_manager(_linear("a", "k")), tmp_path).select(REQUEST, backend="nope")


def test_no_candidate_is_an_error_listing_every_reason(tmp_path: Path) -> None:
    manager = _manager(_linear("a", "k", supports=lambda r, h: no("reason A")))
    with pytest.raises(NoKernelError, match="a/k: reason A"):
        _matcher(manager, tmp_path).select(REQUEST)


def test_unavailable_backend_is_rejected_with_its_reason(tmp_path: Path) -> None:
    from qcore.descriptors import BackendInfo

    plugin = SimpleNamespace(
        qcore_kernels=hookimpl(lambda: [_linear("gone", "k"), _linear("here", "k")]),
        qcore_hardware=hookimpl(lambda: [BackendInfo("gone", False, "no driver found")]),
    )
    matcher = _matcher(PluginManager({"p": plugin}, entry_points=False), tmp_path, measure=False)
    selection = matcher.select(REQUEST)
    assert selection.chosen.id == "here/k"
    assert "no driver found" in selection.rejected[0].support.reason


def test_timings_are_cached_and_reused(tmp_path: Path) -> None:
    calls: list[str] = []
    manager = _manager(_linear("a", "k", calls=calls), _linear("b", "k", calls=calls))
    _matcher(manager, tmp_path).select(REQUEST)
    measured = len(calls)
    assert measured > 0
    selection = _matcher(manager, tmp_path).select(REQUEST)
    assert len(calls) == measured, "a second matcher on the same hardware must not re-measure"
    assert all(c.cached for c in selection.ranked)


def test_cache_is_invalidated_when_the_fingerprint_changes(tmp_path: Path) -> None:
    calls: list[str] = []
    manager = _manager(_linear("a", "k", calls=calls), _linear("b", "k", calls=calls))
    _matcher(manager, tmp_path).select(REQUEST)
    measured = len(calls)
    other = attrs.evolve(detect(), cpu_model="Some Other CPU")
    assert other.fingerprint != detect().fingerprint
    selection = _matcher(manager, tmp_path, hardware=other).select(REQUEST)
    assert len(calls) > measured
    assert not any(c.cached for c in selection.ranked)


@pytest.mark.parametrize(("version", "fingerprint"), [(autotune.CACHE_VERSION, "elsewhere"),
                                                      (autotune.CACHE_VERSION - 1, None)])
def test_a_file_from_another_machine_or_version_is_not_trusted(tmp_path: Path, version: int,
                                                               fingerprint: str | None) -> None:
    hw = detect()
    cache = autotune.TimingCache(hw, tmp_path)
    cache.path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"version": version, "fingerprint": fingerprint or hw.fingerprint, "timings": {"x": 1.0}}
    cache.path.write_text(json.dumps(payload))
    assert autotune.TimingCache(hw, tmp_path).get("x") is None
    payload["version"], payload["fingerprint"] = autotune.CACHE_VERSION, hw.fingerprint
    cache.path.write_text(json.dumps(payload))
    assert autotune.TimingCache(hw, tmp_path).get("x") == 1.0


@pytest.mark.parametrize("garbage", ["{not json", "[]", '{"version": 1}', "\x00\x01"])
def test_corrupt_cache_is_survived_and_rewritten(tmp_path: Path, garbage: str) -> None:
    hw = detect()
    path = autotune.TimingCache(hw, tmp_path).path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(garbage)
    manager = _manager(_linear("a", "k"), _linear("b", "k"))
    selection = _matcher(manager, tmp_path).select(REQUEST)
    assert selection.chosen.backend in ("a", "b")
    data = json.loads(path.read_text())
    assert data["fingerprint"] == hw.fingerprint and len(data["timings"]) == 2


def test_backend_without_hardware_info_runs_where_its_kernels_do() -> None:
    gpu = KernelImpl("mixed", "gpu", "linear", fn=lambda p, x: x, prepare=lambda w: w, supports=lambda r, h: YES,
                     devices=("cuda",))
    info = _manager(_linear("mixed", "cpu"), gpu).backends()["mixed"]
    assert info.available and info.devices == ("cpu", "cuda")



def test_the_float_matmul_is_timed_once_and_cached_per_hardware_next_to_kernels(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("QCORE_CACHE_DIR", str(tmp_path))
    first, cached = Matcher().float_time((4, 64, 32), "cpu")
    assert first > 0 and not cached
    calls = []
    monkeypatch.setattr(autotune, "float_seconds", lambda *a: calls.append(a) or 1.0)
    again, cached = Matcher().float_time((4, 64, 32), "cpu")
    assert (again, cached, calls) == (first, True, [])
    stored = json.loads((tmp_path / f"autotune-{detect().fingerprint}.json").read_text())
    assert stored["timings"][autotune.float_key((4, 64, 32), "cpu")] == first
