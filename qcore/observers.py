"""The built-in observers: min-max, moving average and histogram (MSE search or percentile).

An observer watches one tensor over the calibration batches and turns what it
saw into a range [lo, hi] per reduction set; `qparams()` passes that range to
`qcore.qparams.qparams_from_range`, so every observer yields contract qparams
and differs from the others only in the range it chooses. They come to the
rest of qcore through the ``qcore_observers`` hook (see `qcore.builtin`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import torch

from qcore.descriptors import ObserverImpl
from qcore.errors import QcoreError, ShapeError, SpecError
from qcore.layout import canonical_axis
from qcore.qparams import check_finite, qparams_from_range
from qcore.spec import QuantSpec


class ObserverError(QcoreError, RuntimeError):
    """An observer asked for qparams before it saw any data."""


class RangeObserver:
    """Range bookkeeping shared by every observer: one [lo, hi] per channel (a single row per tensor).

    Data is viewed as rows, one per reduction set: (1, N) per tensor, (C, N)
    per channel. Subclasses say how a batch's rows update the state
    (`_update`) and which range the state stands for (`_range`).
    """

    OPTIONS: ClassVar[dict[str, Any]] = {}

    def __init__(self, spec: QuantSpec, name: str) -> None:
        if spec.granularity not in ("tensor", "channel"):
            raise SpecError(
                f"observer {name!r}: granularity {spec.granularity!r} is not observable ahead of time; "
                "observers compute static per-tensor or per-channel qparams"
            )
        if spec.dtype == "binary":
            raise SpecError(
                f"observer {name!r}: binary scales are mean(|x|), not a range; quantize binary tensors directly"
            )
        self.spec = spec
        self.name = name
        self._lo: torch.Tensor | None = None
        self._hi: torch.Tensor | None = None

    def __repr__(self) -> str:
        return f"<{self.name} observer for {self.spec.describe()}>"

    def observe(self, x: torch.Tensor) -> None:
        """Fold one calibration batch into the state. NaN/Inf raise NonFiniteError."""
        x = x.detach().to(torch.float32)
        check_finite(x, f"{self.name} observer input")
        if x.numel() == 0:
            return
        rows = self._rows(x)
        if self._lo is not None and rows.shape[0] != self._lo.shape[0]:
            raise ShapeError(
                f"observer {self.name!r}: this batch has {rows.shape[0]} channels along axis {self.spec.axis}, "
                f"earlier batches had {self._lo.shape[0]}"
            )
        self._update(rows)

    def qparams(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(scale float32, zero_point int32) in the canonical shape: () per tensor, (C,) per channel."""
        if self._lo is None:
            raise ObserverError(
                f"observer {self.name!r} ({self.spec.describe()}): qparams() called before any observe(); "
                "run calibration data through it first"
            )
        lo, hi = self._range()
        if self.spec.granularity == "tensor":
            lo, hi = lo.reshape(()), hi.reshape(())
        return qparams_from_range(lo, hi, self.spec)

    def _rows(self, x: torch.Tensor) -> torch.Tensor:
        if self.spec.granularity == "tensor":
            return x.reshape(1, -1)
        axis = canonical_axis(self.spec, x.ndim)
        return x.movedim(axis, 0).reshape(x.shape[axis], -1)

    def _update(self, rows: torch.Tensor) -> None:
        lo, hi = rows.amin(dim=1), rows.amax(dim=1)
        if self._lo is None or self._hi is None:
            self._lo, self._hi = lo, hi
        else:
            self._lo, self._hi = torch.minimum(self._lo, lo), torch.maximum(self._hi, hi)

    def _range(self) -> tuple[torch.Tensor, torch.Tensor]:
        assert self._lo is not None and self._hi is not None
        return self._lo, self._hi


class MinMaxObserver(RangeObserver):
    """The smallest and largest value seen over all batches."""


class MovingAverageObserver(RangeObserver):
    """An exponential moving average of each batch's min and max, as torch.ao's MovingAverageMinMaxObserver.

    A single extreme batch moves the range by only `momentum` of its excess,
    so rare spikes weigh less than under plain min-max.
    """

    OPTIONS: ClassVar[dict[str, Any]] = {"momentum": 0.1}

    def __init__(self, spec: QuantSpec, name: str, momentum: float = 0.1) -> None:
        super().__init__(spec, name)
        if not isinstance(momentum, (int, float)) or isinstance(momentum, bool) or not 0 < momentum <= 1:
            raise ValueError(f"observer {name!r}: momentum must be a number in (0, 1], got {momentum!r}")
        self.momentum = float(momentum)

    def _update(self, rows: torch.Tensor) -> None:
        lo, hi = rows.amin(dim=1), rows.amax(dim=1)
        if self._lo is None or self._hi is None:
            self._lo, self._hi = lo, hi
        else:
            self._lo = self._lo + self.momentum * (lo - self._lo)
            self._hi = self._hi + self.momentum * (hi - self._hi)


class HistogramObserver(RangeObserver):
    """A histogram of everything seen, over the running min-max range, then a clipping range chosen from it.

    Mode ``mse`` picks the range whose quantization error over the histogram
    is smallest (rounding noise step²/12 inside, squared distance to the
    nearest level outside), as torch.ao's HistogramObserver does: a lone
    outlier no longer stretches the step for everything else. Mode
    ``percentile`` clips at the (100 - p)-th and p-th percentiles. When the
    range grows, the old counts are spread over the new bins assuming they
    were uniform within their old bins.
    """

    OPTIONS: ClassVar[dict[str, Any]] = {"bins": 2048, "mode": "mse", "percentile": 99.99}
    MODES: ClassVar[tuple[str, ...]] = ("mse", "percentile")
    SEARCH_STEPS: ClassVar[int] = 512
    GRID_STEPS: ClassVar[int] = 64
    ROW_CHUNK: ClassVar[int] = 64

    def __init__(self, spec: QuantSpec, name: str, bins: int = 2048, mode: str = "mse",
                 percentile: float = 99.99) -> None:
        super().__init__(spec, name)
        if not isinstance(bins, int) or isinstance(bins, bool) or bins < 8:
            raise ValueError(f"observer {name!r}: bins must be an integer >= 8, got {bins!r}")
        if mode not in self.MODES:
            raise ValueError(f"observer {name!r}: unknown mode {mode!r}; known: {', '.join(self.MODES)}")
        if not isinstance(percentile, (int, float)) or isinstance(percentile, bool) or not 50 < percentile <= 100:
            raise ValueError(f"observer {name!r}: percentile must be a number in (50, 100], got {percentile!r}")
        if mode == "mse" and spec.info.is_float and spec.info.scaled:
            raise SpecError(
                f"observer {name!r}: the MSE search models uniform integer steps, not {spec.dtype}; "
                "use minmax or percentile"
            )
        self.bins, self.mode, self.percentile = bins, mode, float(percentile)
        self._hist: torch.Tensor | None = None

    def _update(self, rows: torch.Tensor) -> None:
        old = (self._lo, self._hi, self._hist)
        super()._update(rows)
        assert self._lo is not None and self._hi is not None
        lo, hi = self._lo.double(), self._hi.double()
        hist = _histogram(rows.double(), lo, hi, self.bins)
        if old[2] is not None:
            hist += _rebin(old[2], old[0].double(), old[1].double(), lo, hi)
        self._hist = hist

    def _range(self) -> tuple[torch.Tensor, torch.Tensor]:
        assert self._lo is not None and self._hi is not None and self._hist is not None
        lo, hi = self._lo.double(), self._hi.double()
        if self.mode == "percentile":
            p = self.percentile / 100
            return _quantile(self._hist, lo, hi, 1 - p).float(), _quantile(self._hist, lo, hi, p).float()
        chunks = [
            self._search(h, a, b)
            for h, a, b in zip(self._hist.split(self.ROW_CHUNK), lo.split(self.ROW_CHUNK), hi.split(self.ROW_CHUNK))
        ]
        return torch.cat([c[0] for c in chunks]).float(), torch.cat([c[1] for c in chunks]).float()

    def _search(self, hist: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per row, the candidate range with the least modelled quantization error over its histogram."""
        left, right = lo.clamp(max=0.0)[:, None], hi.clamp(min=0.0)[:, None]
        if self.spec.symmetric:
            frac = torch.linspace(1.0, 0.0, self.SEARCH_STEPS + 1, dtype=torch.float64)[:-1]
            amax = torch.maximum(-left, right)
            a, b = torch.maximum(-amax * frac, left), torch.minimum(amax * frac, right)
        else:
            frac = torch.linspace(1.0, 0.0, self.GRID_STEPS + 1, dtype=torch.float64)[:-1]
            a, b = left * frac.repeat_interleave(len(frac)), right * frac.repeat(len(frac))
        scale, zp = qparams_from_range(a, b, self.spec)
        qmin, qmax = self.spec.qrange
        step, zp = scale.double(), zp.double()
        centers = lo[:, None] + ((hi - lo) / self.bins)[:, None] * (torch.arange(self.bins, dtype=torch.float64) + 0.5)
        err = _clip_error(hist, centers, (qmin - zp) * step, (qmax - zp) * step, step**2 / 12)
        best = torch.argmin(err, dim=1, keepdim=True)
        keep = hi <= lo
        return (torch.where(keep, lo, a.gather(1, best)[:, 0]), torch.where(keep, hi, b.gather(1, best)[:, 0]))


def _clip_error(hist: torch.Tensor, centers: torch.Tensor, low: torch.Tensor, high: torch.Tensor,
                noise: torch.Tensor) -> torch.Tensor:
    """Total squared error of each row's histogram (C, B) for each candidate (C, K) level range [low, high].

    Counts inside cost `noise` each (rounding); counts outside their squared
    distance to the nearest end. Prefix sums make it O(B + K) per row.
    """
    p0, p1, p2 = (torch.nn.functional.pad(torch.cumsum(hist * centers**k, dim=1), (1, 0)) for k in range(3))
    n_low = torch.searchsorted(centers, low.contiguous())
    n_high = torch.searchsorted(centers, high.contiguous(), right=True)

    def upto(p: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        return p.gather(1, n)

    def above(p: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        return p[:, -1:] - p.gather(1, n)

    below_err = upto(p2, n_low) - 2 * low * upto(p1, n_low) + low**2 * upto(p0, n_low)
    above_err = above(p2, n_high) - 2 * high * above(p1, n_high) + high**2 * above(p0, n_high)
    inside = upto(p0, n_high) - upto(p0, n_low)
    return below_err + above_err + noise * inside


def _histogram(rows: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, bins: int) -> torch.Tensor:
    """Counts of each row over `bins` equal bins of its own [lo, hi] (float64, shape (C, bins))."""
    width = ((hi - lo) / bins)[:, None]
    pos = (rows - lo[:, None]) / torch.where(width > 0, width, 1.0)
    idx = torch.clamp(pos.floor(), 0, bins - 1).long()
    flat = idx + bins * torch.arange(rows.shape[0])[:, None]
    return torch.bincount(flat.reshape(-1), minlength=rows.shape[0] * bins).reshape(-1, bins).double()


def _cdf_at(hist: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The piecewise-linear cumulative count of each row's histogram at the points x (C, P)."""
    bins = hist.shape[1]
    cum = torch.nn.functional.pad(torch.cumsum(hist, dim=1), (1, 0))
    width = ((hi - lo) / bins)[:, None]
    degenerate = torch.where(x >= lo[:, None], math.inf, -math.inf)
    pos = torch.where(width > 0, (x - lo[:, None]) / torch.where(width > 0, width, 1.0), degenerate)
    pos = torch.clamp(pos, 0, bins)
    i = torch.clamp(pos.floor().long(), max=bins - 1)
    below, above = cum.gather(1, i), cum.gather(1, i + 1)
    return below + (pos - i) * (above - below)


def _rebin(hist: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, new_lo: torch.Tensor,
           new_hi: torch.Tensor) -> torch.Tensor:
    """Spread a histogram over [lo, hi] onto the same number of bins over [new_lo, new_hi] ⊇ [lo, hi]."""
    bins = hist.shape[1]
    steps = torch.arange(bins + 1, dtype=torch.float64)
    edges = new_lo[:, None] + (new_hi - new_lo)[:, None] * steps / bins
    return torch.diff(_cdf_at(hist, lo, hi, edges), dim=1)


def _quantile(hist: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, q: float) -> torch.Tensor:
    """The value below which a fraction q of each row's counts lie (linear within a bin)."""
    bins = hist.shape[1]
    cum = torch.nn.functional.pad(torch.cumsum(hist, dim=1), (1, 0))
    target = (cum[:, -1] * q)[:, None]
    j = torch.clamp(torch.searchsorted(cum, target, right=False), 1, bins)
    below, above = cum.gather(1, j - 1), cum.gather(1, j)
    frac = torch.where(above > below, (target - below) / torch.where(above > below, above - below, 1.0), 0.0)
    value = lo[:, None] + (hi - lo)[:, None] * ((j - 1) + frac) / bins
    return torch.minimum(torch.maximum(value[:, 0], lo), hi)


def _factory(name: str, cls: type[RangeObserver], **fixed: Any) -> Callable[..., RangeObserver]:
    accepted = [option for option in cls.OPTIONS if option not in fixed]

    def factory(spec: QuantSpec, **options: Any) -> RangeObserver:
        unknown = sorted(set(options) - set(accepted))
        if unknown:
            raise TypeError(
                f"observer {name!r}: unknown option(s) {', '.join(map(repr, unknown))}; "
                f"accepted: {', '.join(accepted) or 'none'}"
            )
        return cls(spec, name, **fixed, **options)

    factory.__doc__ = f"A fresh {name!r} observer for one tensor; options: {', '.join(accepted) or 'none'}."
    return factory


def builtin_observers() -> Iterator[ObserverImpl]:
    """The observers qcore itself registers through the ``qcore_observers`` hook."""
    yield ObserverImpl("minmax", _factory("minmax", MinMaxObserver), "min and max over every batch")
    yield ObserverImpl(
        "moving_average",
        _factory("moving_average", MovingAverageObserver),
        "exponential moving average of each batch's min and max (momentum 0.1)",
    )
    yield ObserverImpl(
        "histogram",
        _factory("histogram", HistogramObserver),
        "histogram, then the clipping range with the least quantization error (mode mse) or percentiles",
    )
    yield ObserverImpl(
        "percentile",
        _factory("percentile", HistogramObserver, mode="percentile"),
        "histogram clipped at the (100 - p)-th and p-th percentiles (percentile 99.99)",
    )
