"""A layer ready for the library, and the one per-call path every cpu-native kernel shares.

Per call: the contract's input layout (`linear_rows`: shape, float32, contiguous), an output tensor, one
ctypes call that releases the GIL and runs on torch's OpenMP threads. The library tests every input value
for NaN/Inf as it prepares the rows, so the separate scan is skipped; when it finds one the call returns
no result and `check_finite` raises the contract's error.
"""

from __future__ import annotations

import ctypes

import attrs
import torch

from qcore.kernels import linear_rows
from qcore_cpu_native.library import check


@attrs.frozen(eq=False)
class Prepared:
    """The C layer structure, the tensors it points into (kept alive here), and the entry to call."""

    name: str
    entry: ctypes._CFuncPtr
    layer: ctypes.Structure
    tensors: tuple[torch.Tensor, ...]
    n: int
    k: int
    address: int = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "address", ctypes.addressof(self.layer))


def run(p: Prepared, x: torch.Tensor) -> torch.Tensor:
    """y = linear(x) for (..., K) float x; a few microseconds of Python around the library call."""
    rows = linear_rows(x, p.k, check=False)
    y = torch.empty(rows.shape[0], p.n, dtype=torch.float32)
    status = p.entry(p.address, rows.data_ptr(), rows.shape[0], y.data_ptr(), torch.get_num_threads())
    if status:
        check(status, "linear", rows)
    return y if x.ndim == 2 else y.view(*x.shape[:-1], p.n)


def pointer(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()
