"""w8a16, w4a16 and w4a16-asym: packed int8/int4 weights dequantized in registers against float32 x.

Per output channel and group the kernel sums x · code in float32, then adds scale · (sum − zero-point ·
sum of x over the group) to the output; the activations are never rounded.
"""

from __future__ import annotations

import torch

from qcore.kernels import KernelRequest, LinearWeights, Support
from qcore.layout import check_groups
from qcore_cpu_native import packing
from qcore_cpu_native.claims import answer, weight_only
from qcore_cpu_native.isa import Isa, unavailable
from qcore_cpu_native.library import WeightOnlyLayer, library
from qcore_cpu_native.prepared import Prepared, pointer


def supports(isa: Isa, request: KernelRequest, hardware: object) -> Support:
    return answer(weight_only(request), unavailable(isa))


def prepare(isa: Isa, w: LinearWeights) -> Prepared:
    q = w.weight
    assert q is not None
    spec = q.spec
    codes = q.codes.detach().cpu()
    n, k = codes.shape
    check_groups(spec, (n, k))
    group = spec.group_size if spec.granularity == "group" else k
    assert group is not None
    groups = k // group
    bits = spec.bits
    bp = packing.int8_columns(codes) if bits == 8 else packing.int4_words(codes, spec.info.signed)
    scales = packing.per_group(q.scale.detach().cpu(), n, groups)
    zp = q.zero_point.detach().cpu()
    zeros = packing.per_group(zp, n, groups) if bool(zp.ne(0).any()) else None
    bias = None if w.bias is None else packing.per_channel(w.bias.detach().cpu(), n, torch.float32)
    lib = library()
    layer = WeightOnlyLayer(isa.code, bits, int(spec.info.signed), 0, n, k, group, bp.data_ptr(), scales.data_ptr(),
                            pointer(zeros), pointer(bias))
    tensors = tuple(t for t in (bp, scales, zeros, bias) if t is not None)
    return Prepared(f"weight-only-{isa.name}", lib.linear_weight_only, layer, tensors, n, k)  # type: ignore[union-attr]
