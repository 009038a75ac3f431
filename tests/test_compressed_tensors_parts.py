"""The pieces of the compressed-tensors support: int32 packing against the package's, the vLLM scheme rules,
and that importing qcore imports neither transformers nor compressed-tensors."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from qcore.compressed_tensors.args import FormatError
from qcore.compressed_tensors.packing import pack_int32, unpack_int32
from qcore.compressed_tensors.vllm import serving

ct_helpers = pytest.importorskip("compressed_tensors.compressors.pack_quantized.helpers",
                                 reason="the compressed-tensors extra is not installed")


@given(rows=st.integers(1, 9), cols=st.integers(1, 70), bits=st.sampled_from([4, 8]), dim=st.sampled_from([0, 1]),
       seed=st.integers(0, 2**16))
def test_packing_is_the_packages_bit_for_bit(rows: int, cols: int, bits: int, dim: int, seed: int) -> None:
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    codes = torch.randint(lo, hi + 1, (rows, cols), generator=torch.Generator().manual_seed(seed), dtype=torch.int8)
    codes[0, 0], codes[-1, -1] = lo, hi  # the extremes are where sign handling breaks
    ours = pack_int32(codes, bits, dim=dim)
    theirs = ct_helpers.pack_to_int32(codes, bits, packed_dim=dim)
    assert ours.dtype == torch.int32 and torch.equal(ours, theirs)
    count = codes.shape[dim]
    assert torch.equal(unpack_int32(ours, bits, count, dim=dim), codes)
    assert torch.equal(ct_helpers.unpack_from_int32(ours, bits, codes.shape, packed_dim=dim), codes)


def test_unpacking_a_tensor_of_the_wrong_width_names_the_shapes() -> None:
    with pytest.raises(FormatError, match=r"cannot hold 17 4-bit codes.*3 words"):
        unpack_int32(torch.zeros(2, 2, dtype=torch.int32), 4, 17)
    with pytest.raises(FormatError, match="do not divide an int32 word"):
        pack_int32(torch.zeros(2, 2, dtype=torch.int8), 3)


def _args(bits: int = 8, kind: str = "int", strategy: str = "channel", symmetric: bool = True,
          dynamic: bool = False, group_size: int | None = None) -> dict:
    return {"num_bits": bits, "type": kind, "symmetric": symmetric, "group_size": group_size, "strategy": strategy,
            "dynamic": dynamic}


TOKEN = _args(strategy="token", dynamic=True)
STATIC = _args(strategy="tensor")


@pytest.mark.parametrize(("weights", "acts", "fmt", "shape", "scheme", "detail"), [
    (_args(), TOKEN, "int-quantized", (4096, 4096), "W8A8 int8", "dynamic per-token"),
    (_args(strategy="tensor"), STATIC, "int-quantized", (64, 64), "W8A8 int8", "static per-tensor"),
    (_args(), _args(strategy="tensor", symmetric=False), "int-quantized", (64, 64), "W8A8 int8", "asymmetric"),
    (_args(symmetric=False), TOKEN, "int-quantized", (64, 64), None, "asymmetric int8 weights"),
    (_args(strategy="group", group_size=128), TOKEN, "int-quantized", (64, 128), None, "not groups"),
    (_args(), _args(strategy="tensor", dynamic=True), "int-quantized", (64, 64), None, "dynamic per-tensor"),
    (_args(4, strategy="group", group_size=128), None, "pack-quantized", (4096, 4096), "WNA16", "4-bit symmetric"),
    (_args(4, strategy="group", group_size=128, symmetric=False), None, "pack-quantized", (64, 128), "WNA16",
     "zero-points"),
    (_args(8, symmetric=False), None, "pack-quantized", (64, 128), None, "zero-points only for 4-bit"),
    (_args(4, strategy="group", group_size=256), None, "pack-quantized", (64, 256), None, "group size 256"),
    (_args(4, strategy="group", group_size=32), None, "pack-quantized", (96, 128), None, "out_features % 64"),
    (_args(8), None, "pack-quantized", (64, 192), None, "in_features % 128"),
    (_args(8, strategy="tensor"), None, "pack-quantized", (64, 128), None, "channel or group"),
    (_args(kind="float"), _args(kind="float", strategy="token", dynamic=True), "float-quantized", (64, 64), "FP8",
     "W8A8Fp8"),
    (_args(kind="float", strategy="tensor"), _args(kind="float", strategy="tensor"), "float-quantized", (8, 8), "FP8",
     "static per-tensor"),
    (_args(kind="float"), None, "naive-quantized", (8, 8), "FP8", "weight-only"),
    (_args(kind="float", strategy="group", group_size=32), None, "naive-quantized", (8, 64), None, "fp8 weights"),
    (_args(4, strategy="group", group_size=64), TOKEN, "int-quantized", (64, 128), "W4A8 int8", "W4A8Int"),
    (_args(), _args(kind="float", strategy="token", dynamic=True), "int-quantized", (64, 64), None, "fp8 activations"),
])
def test_vllm_scheme_selection(weights: dict, acts: dict | None, fmt: str, shape: tuple[int, int],
                               scheme: str | None, detail: str) -> None:
    verdict = serving(weights, acts, fmt, shape)
    assert verdict.scheme == scheme
    assert detail in verdict.detail, verdict.describe()


def test_importing_qcore_imports_neither_transformers_nor_compressed_tensors() -> None:
    code = ("import sys, qcore, qcore.io, qcore.compressed_tensors.reader, qcore.compressed_tensors.writer; "
            "print(sorted(m for m in ('transformers', 'compressed_tensors') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
