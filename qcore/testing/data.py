"""The kit's fixed data: tolerances (YAML) and reference vectors (safetensors) from specs/conformance/.

They live in specs/conformance/ so that vendors can read and diff them;
`qcore/testing/conformance` links there, so the files ship inside the wheel
and an installed qcore finds them next to this module. ``QCORE_CONFORMANCE_DIR``
points the kit at another copy (a vendor's candidate vectors, say).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import attrs
import torch
import yaml
from safetensors.torch import load_file

from qcore.errors import QcoreError

PACKAGED = Path(__file__).resolve().parent / "conformance"


def spec_dir() -> Path:
    override = os.environ.get("QCORE_CONFORMANCE_DIR")
    path = Path(override) if override else PACKAGED
    if not (path / "tolerances.yaml").is_file():
        where = "QCORE_CONFORMANCE_DIR" if override else "the installed qcore package"
        raise QcoreError(f"conformance data not found in {path} ({where}); it needs tolerances.yaml and "
                         "vectors.safetensors as in specs/conformance/")
    return path


@attrs.frozen
class Tolerances:
    """The thresholds of docs/numerics.md, as the kit reads them from tolerances.yaml."""

    dequantize_sqnr_db: dict[str, float]
    linear_float_sqnr_db: dict[str, float]
    linear_reference_sqnr_db: float
    accumulation_rel: dict[str, float]
    accumulation_k: tuple[int, ...]

    @classmethod
    def from_yaml(cls, data: dict[str, Any]) -> Tolerances:
        return cls(
            dequantize_sqnr_db={str(k): float(v) for k, v in data["dequantize_sqnr_db"].items()},
            linear_float_sqnr_db={str(k): float(v) for k, v in data["linear_sqnr_db"]["float"].items()},
            linear_reference_sqnr_db=float(data["linear_sqnr_db"]["reference"]),
            accumulation_rel={str(k): float(v) for k, v in data["accumulation"]["rel"].items()},
            accumulation_k=tuple(int(k) for k in data["accumulation"]["k"]),
        )


@functools.cache
def tolerances() -> Tolerances:
    with open(spec_dir() / "tolerances.yaml", encoding="utf-8") as fh:
        return Tolerances.from_yaml(yaml.safe_load(fh))


@functools.cache
def vectors() -> dict[str, torch.Tensor]:
    """``ties``, ``huge`` and ``nonfinite`` (see specs/conformance/make_vectors.py)."""
    return load_file(str(spec_dir() / "vectors.safetensors"))
