"""CUDA integer and fp8 GEMMs: `torch._int_mm` (w8a8) and `torch._scaled_mm` (fp8).

Both multiply the codes themselves and apply activation and weight scales to
the float32 result, so the quantization is the reference's exactly: `_int_mm`
accumulates int8×int8 in int32 (exact for K up to 65536 at ±127), `_scaled_mm`
accumulates fp8 products in float32. Rows are padded when the library needs
more (or aligned) rows than the call has.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs
import torch

from qcore.errors import ShapeError
from qcore.kernels import YES, KernelRequest, LinearWeights, Support, no
from qcore_torch_fallback.activations import ActivationQuant, as_rows, finish
from qcore_torch_fallback.claims import (
    divisible,
    first,
    min_capability,
    mkn,
    per_row_activations,
    per_row_int_weights,
    static_per_tensor,
)
from qcore_torch_fallback.linear_int8pack import column_scales

INT_MM = "torch._int_mm"
SCALED_MM = "torch._scaled_mm"
INT_MM_MIN_ROWS = 17
SCALED_MM_ROW_MULTIPLE = 16


@attrs.frozen(eq=False)
class CodesGemm:
    mm: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    weight_t: torch.Tensor
    col_scale: torch.Tensor
    act_dtype: torch.dtype
    bias: torch.Tensor | None
    act: ActivationQuant


def _pad_rows(c: torch.Tensor, rows: int) -> torch.Tensor:
    """`c` with zero rows appended up to `rows` (through a byte view: fp8 has no pad kernel everywhere)."""
    if c.shape[0] == rows:
        return c
    return torch.nn.functional.pad(c.view(torch.uint8), (0, 0, 0, rows - c.shape[0])).view(c.dtype)


def _int_mm(c: torch.Tensor, weight_t: torch.Tensor) -> torch.Tensor:
    m = c.shape[0]
    return torch._int_mm(_pad_rows(c, max(m, INT_MM_MIN_ROWS)), weight_t)[:m]


def _scaled_mm(c: torch.Tensor, weight_t: torch.Tensor) -> torch.Tensor:
    m = c.shape[0]
    one = torch.ones((), dtype=torch.float32, device=c.device)
    padded = _pad_rows(c, -(-max(m, 1) // SCALED_MM_ROW_MULTIPLE) * SCALED_MM_ROW_MULTIPLE)
    return torch._scaled_mm(padded, weight_t, scale_a=one, scale_b=one, out_dtype=torch.float32)[:m]


def supports_int_mm(request: KernelRequest, hardware: object) -> Support:
    assert request.scheme is not None
    a = request.scheme.input_activations
    dims = mkn(request)
    reason = first(
        min_capability(hardware, (7, 5), INT_MM),
        per_row_int_weights(request.scheme.weights, INT_MM),
        per_row_activations(a, INT_MM, kinds=("int",)),
        "asymmetric activations: codes minus zero-point do not fit int8" if a is not None and not a.symmetric else None,
        static_per_tensor(a),
        divisible(request, INT_MM, k=8, n=8),
        f"{INT_MM} needs M > 16 (got M={dims[0]})" if dims is not None and dims[0] < INT_MM_MIN_ROWS else None,
    )
    return no(reason) if reason else YES


def supports_scaled_mm(request: KernelRequest, hardware: object) -> Support:
    assert request.scheme is not None
    w, a = request.scheme.weights, request.scheme.input_activations
    reason = first(
        min_capability(hardware, (8, 9), f"{SCALED_MM} (fp8)"),
        f"{SCALED_MM} multiplies fp8 weights, not {w.dtype if w else 'float'}"
        if w is None or not w.dtype.startswith("fp8") else None,
        f"{w.describe()} weights: {SCALED_MM} applies one scale per output channel"
        if w is not None and (w.granularity == "group" or (w.granularity == "channel" and w.axis not in (0, -2)))
        else None,
        per_row_activations(a, SCALED_MM, kinds=("fp8_e4m3", "fp8_e5m2")),
        f"{SCALED_MM} has no e5m2 × e5m2 product"
        if w is not None and a is not None and w.dtype == a.dtype == "fp8_e5m2" else None,
        static_per_tensor(a),
        divisible(request, SCALED_MM, k=16, n=16),
    )
    return no(reason) if reason else YES


def _prepare(w: LinearWeights, mm: Callable[..., torch.Tensor], k_multiple: int, n_multiple: int) -> CodesGemm:
    q = w.weight
    assert q is not None
    codes = q.codes.to("cuda")
    n, k = codes.shape
    if k % k_multiple or n % n_multiple:
        raise ShapeError(f"CUDA GEMM needs K % {k_multiple} == 0 and N % {n_multiple} == 0, got K={k}, N={n}")
    a = w.scheme.input_activations
    assert a is not None
    act_dtype = torch.int8 if a.info.kind == "int" else getattr(torch, a.info.torch_dtype)
    bias = None if w.bias is None else w.bias.to("cuda", torch.float32)
    return CodesGemm(mm, codes.contiguous().t(), column_scales(q).to("cuda"), act_dtype, bias,
                     ActivationQuant.of(w, codes.device))


def prepare_int_mm(w: LinearWeights) -> CodesGemm:
    return _prepare(w, _int_mm, 8, 8)


def prepare_scaled_mm(w: LinearWeights) -> CodesGemm:
    return _prepare(w, _scaled_mm, 16, 16)


def run(p: CodesGemm, x: torch.Tensor) -> torch.Tensor:
    """y = (C @ Wq^T) * weight scales * activation scales (+ bias), C the activation codes."""
    c, r = p.act.codes(as_rows(x, p.weight_t.shape[0]), p.act_dtype)
    y = p.mm(c, p.weight_t).to(torch.float32) * p.col_scale
    if r is not None:
        y = y * r
    return finish(y, x, p.bias)
