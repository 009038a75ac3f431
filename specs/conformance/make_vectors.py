"""Writes vectors.safetensors, the fixed inputs of the conformance kit (run once; the output is committed).

The kit computes expected codes itself from the contract (round half to even,
clamp); these files only pin the inputs that must be exact:

- ``ties``: k + 0.5 for k in [-130, 130], in float64 (exact), to be multiplied
  by a power-of-two scale so that x / scale is an exact tie;
- ``huge``: finite values far outside any code range, both signs, up to
  float32's largest;
- ``nonfinite``: NaN, +Inf and -Inf, each planted alone in a finite tensor.

Run: ``python specs/conformance/make_vectors.py``
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file


def vectors() -> dict[str, torch.Tensor]:
    k = torch.arange(-130, 131, dtype=torch.float64)
    big = torch.finfo(torch.float32).max
    return {
        "ties": k + 0.5,
        "huge": torch.tensor([big, -big, 1e30, -1e30, 1e10, -1e10, 65504.0, -65504.0, 1e4, -1e4], dtype=torch.float32),
        "nonfinite": torch.tensor([float("nan"), float("inf"), float("-inf")], dtype=torch.float32),
    }


if __name__ == "__main__":
    save_file(vectors(), str(Path(__file__).with_name("vectors.safetensors")), metadata={"version": "1"})
