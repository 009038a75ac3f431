"""int4pack: tinygemm-style int4 kernels (`aten._weight_int4pack_mm[_for_cpu]`) for w4a16 schemes.

Their dequantization is `(u - 8) * scale + zero` with u in [0, 15] and bf16
scales, zeros and activations. Symmetric int4 codes q map to u = q + 8 with
zero 0; asymmetric uint4 codes keep u = q with zero = (8 - zp) * scale.
bf16 keeps 8 significant bits, which alone costs the output ~50 dB against the
reference, so the float32 scales and zeros are split into bf16 high and low
parts (two calls sharing the packed weight) and activations into two bf16 rows
(`bf16_pair`): what remains is the op's bf16 rounding of its output.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs
import torch

from qcore.errors import ShapeError
from qcore.kernels import YES, KernelRequest, LinearWeights, QTensor, Support, no
from qcore.layout import check_groups
from qcore.spec import QuantSpec
from qcore_torch_fallback.activations import as_rows, bf16_pair, finish, fold_pair
from qcore_torch_fallback.claims import divisible, first, min_capability

GROUP_SIZES = (32, 64, 128, 256)
CPU_OP = "_weight_int4pack_mm_for_cpu"
CUDA_OP = "_weight_int4pack_mm"


@attrs.frozen(eq=False)
class Int4Packed:
    mm: Callable[..., torch.Tensor]
    packed: torch.Tensor
    scale_zeros_hi: torch.Tensor
    scale_zeros_lo: torch.Tensor
    group_size: int
    k: int
    bias: torch.Tensor | None


def weight_issue(w: QuantSpec | None, op: str) -> str | None:
    if w is None or w.dtype not in ("int4", "uint4"):
        return f"{op} multiplies int4/uint4 weights, not {w.dtype if w else 'float'}"
    if w.granularity != "group" or w.group_size not in GROUP_SIZES:
        return f"{op} needs group granularity with group_size in {GROUP_SIZES}, not {w.describe()}"
    return None


def activation_issue(request: KernelRequest, op: str) -> str | None:
    assert request.scheme is not None
    a = request.scheme.input_activations
    if a is not None:
        return f"{op} takes float activations; {a.describe()} activations would not be applied"
    return None


def shifted_codes(q: QTensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(u in [0, 15] as int32 (N, K), float32 (N, G, 2) scale and zero) with (u - 8) * scale + zero = deq(q)."""
    scale = q.scale.to(torch.float32)
    if q.spec.symmetric:
        u, zero = q.codes.to(torch.int32) + 8, torch.zeros_like(scale)
    else:
        u, zero = q.codes.to(torch.int32), (8 - q.zero_point.to(torch.float64)) * scale.to(torch.float64)
    return u, torch.stack([scale.to(torch.float64), zero.to(torch.float64)], dim=-1)


def split_scale_zeros(sz: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """tinygemm's (G, N, 2) bf16 layout, as a high part and the bf16 of what it missed."""
    hi = sz.to(torch.bfloat16)
    lo = (sz - hi.to(torch.float64)).to(torch.bfloat16)
    return hi.transpose(0, 1).contiguous(), lo.transpose(0, 1).contiguous()


def _checked(w: LinearWeights, n_multiple: int, k_multiple: int, op: str) -> QTensor:
    q = w.weight
    assert q is not None and q.spec.group_size is not None
    check_groups(q.spec, tuple(q.codes.shape))
    n, k = q.codes.shape
    if n % n_multiple or k % k_multiple:
        raise ShapeError(f"{op} needs N % {n_multiple} == 0 and K % {k_multiple} == 0, got N={n}, K={k}")
    return q


def _packed(w: LinearWeights, mm: Callable[..., torch.Tensor], packed: torch.Tensor, sz: torch.Tensor) -> Int4Packed:
    assert w.weight is not None and w.weight.spec.group_size is not None
    hi, lo = split_scale_zeros(sz.to(packed.device))
    bias = None if w.bias is None else w.bias.to(packed.device, torch.float32)
    return Int4Packed(mm, packed, hi, lo, w.weight.spec.group_size, w.weight.codes.shape[1], bias)


def run(p: Int4Packed, x: torch.Tensor) -> torch.Tensor:
    pair = bf16_pair(as_rows(x, p.k))
    y = fold_pair(p.mm(pair, p.packed, p.group_size, p.scale_zeros_hi))
    y = y + p.mm(pair[: y.shape[0]], p.packed, p.group_size, p.scale_zeros_lo).to(torch.float32)
    return finish(y, x, p.bias)


def supports_cpu(request: KernelRequest, hardware: object) -> Support:
    assert request.scheme is not None
    reason = first(
        weight_issue(request.scheme.weights, CPU_OP),
        activation_issue(request, CPU_OP),
        divisible(request, CPU_OP, n=16),
    )
    return no(reason) if reason else YES


def prepare_cpu(w: LinearWeights) -> Int4Packed:
    u, sz = shifted_codes(_checked(w, 16, 1, CPU_OP))
    packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(u.contiguous(), 2)
    return _packed(w, torch.ops.aten._weight_int4pack_mm_for_cpu, packed, sz)


def inner_k_tiles(k: int) -> int:
    """Largest tinygemm inner-K tiling (8, 4 or 2) that divides K in units of 16."""
    return next(t for t in (8, 4, 2) if k % (t * 16) == 0)


def supports_cuda(request: KernelRequest, hardware: object) -> Support:
    assert request.scheme is not None
    reason = first(
        min_capability(hardware, (8, 0), CUDA_OP),
        weight_issue(request.scheme.weights, CUDA_OP),
        activation_issue(request, CUDA_OP),
        divisible(request, CUDA_OP, k=32, n=8),
    )
    return no(reason) if reason else YES


def prepare_cuda(w: LinearWeights) -> Int4Packed:
    u, sz = shifted_codes(_checked(w, 8, 32, CUDA_OP))
    u = u.to("cuda")
    pairs = (u[:, ::2] << 4 | u[:, 1::2]).to(torch.uint8).contiguous()
    packed = torch.ops.aten._convert_weight_to_int4pack(pairs, inner_k_tiles(u.shape[1]))
    return _packed(w, torch.ops.aten._weight_int4pack_mm, packed, sz)
