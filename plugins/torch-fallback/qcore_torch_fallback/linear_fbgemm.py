"""fbgemm-qdq: `quantized::linear_with_input_q_dq_qweight_dq_output_fp32` (x86 engine), float32 out.

The op quantizes its input with a scale and zero-point we pass; feeding it the
already fake-quantized activations makes its codes ours exactly (the quotient
is within one float32 ulp of an integer). It takes one activation scale per
call, so per-token scales are exact only one row at a time (claimed at M == 1).
On AVX2 without VNNI fbgemm multiplies u8×s8 pairs with vpmaddubsw, whose int16
sum saturates on full-range codes: exact only on VNNI/AMX machines.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import Any

import attrs
import torch

from qcore.kernels import YES, KernelRequest, LinearWeights, Support, no
from qcore_torch_fallback.activations import ActivationQuant, as_rows, finish
from qcore_torch_fallback.codes import dequantize
from qcore_torch_fallback.claims import first, mkn, per_row_activations, per_row_int_weights, static_per_tensor

OP = "quantized::linear_with_input_q_dq_qweight_dq_output_fp32"
ENGINE = "x86"
SATURATES = (
    "fbgemm on a CPU without VNNI/AMX sums u8×s8 pairs in int16 (vpmaddubsw), which saturates on "
    "full-range codes (all-127 inputs give 522240 for 66064384); exact only with VNNI or AMX"
)


@attrs.frozen(eq=False)
class FbgemmPacked:
    packed: Any
    k: int
    n: int
    u8_offset: int
    bias: torch.Tensor | None
    act: ActivationQuant


@contextlib.contextmanager
def _engine(name: str) -> Iterator[None]:
    previous = torch.backends.quantized.engine
    torch.backends.quantized.engine = name
    try:
        yield
    finally:
        torch.backends.quantized.engine = previous


def supports(request: KernelRequest, hardware: Any) -> Support:
    assert request.scheme is not None
    a = request.scheme.input_activations
    dims = mkn(request)
    reason = first(
        per_row_int_weights(request.scheme.weights, OP),
        per_row_activations(a, OP, kinds=("int",)),
        static_per_tensor(a),
        None if ENGINE in torch.backends.quantized.supported_engines else f"torch has no {ENGINE} quantized engine",
        None if hardware.has("vnni") or hardware.has("amx") else SATURATES,
        "per-token activation scales: the op takes one scale per call, exact only at M == 1"
        if a is not None and a.granularity == "token" and (dims is None or dims[0] != 1) else None,
    )
    return no(reason) if reason else YES


def prepare(w: LinearWeights) -> FbgemmPacked:
    q = w.weight
    spec = w.scheme.input_activations
    assert q is not None and spec is not None
    codes = q.codes.to(torch.int8).cpu()
    with warnings.catch_warnings(), _engine(ENGINE):
        warnings.simplefilter("ignore", UserWarning)
        if q.scale.ndim:
            zeros = torch.zeros(codes.shape[0], dtype=torch.int64)
            qw = torch._make_per_channel_quantized_tensor(codes, q.scale.to(torch.float64).cpu(), zeros, 0)
        else:
            qw = torch._make_per_tensor_quantized_tensor(codes, float(q.scale), 0)
        packed = torch.ops.quantized.linear_prepack(qw, None)
    offset = 128 if spec.info.signed else 0
    bias = None if w.bias is None else w.bias.to(torch.float32)
    return FbgemmPacked(packed, codes.shape[1], codes.shape[0], offset, bias, ActivationQuant.of(w, codes.device))


def run(p: FbgemmPacked, x: torch.Tensor) -> torch.Tensor:
    q = p.act.quantize(as_rows(x, p.k))
    a = dequantize(q)
    mm = torch.ops.quantized.linear_with_input_q_dq_qweight_dq_output_fp32
    if q.scale.ndim == 0:
        y = mm(a, float(q.scale), int(q.zero_point) + p.u8_offset, p.packed)
    else:
        scales, zps = q.scale.tolist(), q.zero_point.tolist()
        rows = [mm(a[i : i + 1], scales[i], zps[i] + p.u8_offset, p.packed) for i in range(a.shape[0])]
        y = torch.cat(rows) if rows else a.new_zeros(0, p.n)
    return finish(y, x, p.bias)
