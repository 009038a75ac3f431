"""Comparisons that fail with a message a vendor can act on: the rule, the first bad index, expected and got.

Every check raises `Mismatch`; the runner turns it into a failed row of the
matrix and pytest into a failed test.
"""

from __future__ import annotations

import math

import torch

from qcore.metrics import sqnr


class Mismatch(AssertionError):
    """A conformance rule was broken. `index` is the first mismatching index, when there is one."""

    def __init__(self, what: str, index: tuple[int, ...] | None = None, expected: object = None,
                 got: object = None) -> None:
        self.what, self.index, self.expected, self.got = what, index, expected, got
        where = f"; first mismatch at index {index}: expected {expected}, got {got}" if index is not None else ""
        super().__init__(what + where)


def _first(mask: torch.Tensor) -> tuple[int, ...]:
    return tuple(int(i) for i in torch.nonzero(mask)[0].tolist()) if mask.ndim else ()


def _item(t: torch.Tensor, index: tuple[int, ...]) -> object:
    return t[index].item() if t.ndim else t.item()


def same_layout(what: str, expected: torch.Tensor, got: object) -> torch.Tensor:
    """`got` is a tensor of the expected shape and dtype; returned on the CPU."""
    if not isinstance(got, torch.Tensor):
        raise Mismatch(f"{what}: expected a tensor, got {type(got).__name__}")
    if tuple(got.shape) != tuple(expected.shape):
        raise Mismatch(f"{what}: shape {tuple(got.shape)}, expected {tuple(expected.shape)}")
    if got.dtype != expected.dtype:
        raise Mismatch(f"{what}: dtype {got.dtype}, expected {expected.dtype}")
    return got.detach().cpu()


def equal(what: str, expected: torch.Tensor, got: object) -> None:
    """Bit-identical (NaN equal to NaN): shapes, dtypes and every value."""
    got_t = same_layout(what, expected, got)
    exp = expected.detach().cpu()
    if exp.is_floating_point():
        bad = (exp.view(_int_of(exp.dtype)) != got_t.view(_int_of(exp.dtype))) if exp.numel() else exp.bool()
    else:
        bad = exp != got_t
    if bool(bad.any()):
        idx = _first(bad)
        raise Mismatch(f"{what}: {int(bad.sum())} of {bad.numel()} values differ", idx, _item(exp, idx),
                       _item(got_t, idx))


def _int_of(dtype: torch.dtype) -> torch.dtype:
    """The integer dtype of the same width, to compare float bit patterns (fp8 included)."""
    return {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[dtype.itemsize]


def codes_equal(what: str, expected: torch.Tensor, got: object, ties: torch.Tensor) -> int:
    """Codes equal, except one code off where `ties` (x/scale an exact .5) is set; returns how many such."""
    got_t = same_layout(what, expected, got)
    diff = (got_t.to(torch.int32) - expected.cpu().to(torch.int32)).abs()
    bad = (diff > 1) | ((diff == 1) & ~ties.cpu())
    if bool(bad.any()):
        idx = _first(bad)
        raise Mismatch(f"{what}: {int(bad.sum())} of {bad.numel()} codes differ (not an exact tie)", idx,
                       _item(expected, idx), _item(got_t, idx))
    return int((diff == 1).sum())


def at_least_db(what: str, ref: torch.Tensor, out: torch.Tensor, threshold: float) -> float:
    """SQNR of `out` against `ref` is at least `threshold` dB (and `out` is finite)."""
    out_cpu = same_layout(what, ref.to(torch.float32), out)
    if not bool(torch.isfinite(out_cpu).all()):
        idx = _first(~torch.isfinite(out_cpu))
        raise Mismatch(f"{what}: non-finite output", idx, _item(ref, idx), _item(out_cpu, idx))
    db = sqnr(ref, out_cpu)
    if db < threshold:
        err = (ref.double() - out_cpu.double()).abs()
        idx = tuple(int(i) for i in torch.unravel_index(torch.argmax(err), err.shape))
        raise Mismatch(f"{what}: SQNR {db:.2f} dB < {threshold:.2f} dB (largest error at {idx})", idx,
                       _item(ref, idx), _item(out_cpu, idx))
    return db


def within(what: str, exact: torch.Tensor, got: object, bound: torch.Tensor) -> None:
    """|got - exact| <= bound element-wise (exact and bound in float64)."""
    got_t = same_layout(what, exact.to(torch.float32), got).double()
    err = (got_t - exact).abs()
    bad = ~(err <= bound)
    if bool(bad.any()):
        idx = _first(bad)
        worst = float((err / bound.clamp(min=math.ulp(0.0))).max())
        raise Mismatch(f"{what}: {int(bad.sum())} of {bad.numel()} outputs outside the bound "
                       f"(worst error {worst:.3g}x the bound)", idx, _item(exact, idx), _item(got_t, idx))
