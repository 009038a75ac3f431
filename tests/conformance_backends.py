"""A small correct torch backend for testing the conformance kit, and defective variants of it.

`backend(name, **replace)` registers the correct backend under `name` with
some callables replaced; each defect below breaks one rule of
docs/numerics.md the way a real kernel might (a rounding mode, an int16
accumulator, fp16 partial sums, a missing input check, ragged groups). The
tests run the kit against them and check which rules fail.
"""

from __future__ import annotations

import types
from collections.abc import Callable

import torch

import qcore
from qcore.kernels import YES, KernelImpl, KernelRequest, LinearWeights, PackedTensor, QTensor, Support, linear_rows, no
from qcore.layout import grouped
from qcore.qparams import check_finite, expand, qparams_from_range, reduce_minmax
from qcore.spec import QuantSpec

INT_DTYPES = ("int8", "uint8", "int4", "uint4")
Matmul = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

# -- the correct backend -----------------------------------------------------------


def _codes(x: torch.Tensor, spec: QuantSpec, scale: torch.Tensor, zp: torch.Tensor,
           rnd: Callable[[torch.Tensor], torch.Tensor] = torch.round) -> torch.Tensor:
    xv = grouped(x, spec) if spec.granularity == "group" else x
    v = rnd(xv.double() / expand(scale.double(), spec, x.shape)) + expand(zp.double(), spec, x.shape)
    qmin, qmax = spec.qrange
    return v.clamp(qmin, qmax).reshape(x.shape).to(torch.int8 if spec.info.signed else torch.uint8)


def make_quantize(rnd: Callable[[torch.Tensor], torch.Tensor] = torch.round, *, check: bool = True,
                  zp_offset: int = 0, force_tensor: bool = False,
                  read: Callable[[torch.Tensor], torch.Tensor] = lambda x: x) -> Callable[..., QTensor]:
    def quantize(x: torch.Tensor, spec: QuantSpec, scale: torch.Tensor | None = None,
                 zero_point: torch.Tensor | None = None) -> QTensor:
        if check:
            check_finite(x, "input")
        x = read(x).float()
        if scale is None:
            qspec = QuantSpec(spec.dtype, symmetric=spec.symmetric) if force_tensor else spec
            scale, zero_point = qparams_from_range(*reduce_minmax(x, qspec), qspec)
            if not spec.symmetric:
                zero_point = zero_point + zp_offset
            codes = _codes(x, qspec, scale, zero_point, rnd)
            if force_tensor:  # one scale, copied into the per-channel shape the caller asked for
                shape = reduce_minmax(x, spec)[0].shape
                scale, zero_point = scale.expand(shape).contiguous(), zero_point.expand(shape).contiguous()
            return QTensor(codes, scale, zero_point, spec)
        zero_point = torch.zeros_like(scale, dtype=torch.int32) if zero_point is None else zero_point
        return QTensor(_codes(x, spec, scale, zero_point, rnd), scale, zero_point, spec)
    return quantize


def dequantize(q: QTensor) -> torch.Tensor:
    spec = q.spec
    c = grouped(q.codes, spec) if spec.granularity == "group" else q.codes
    v = (c.double() - expand(q.zero_point.double(), spec, q.shape)) * expand(q.scale.double(), spec, q.shape)
    return v.float().reshape(q.shape)


def make_pack(low: int = 0) -> tuple[Callable[[QTensor], PackedTensor], Callable[[PackedTensor], QTensor]]:
    """Pack/unpack with the first code in nibble `low` (0: canonical low nibble first, 1: swapped)."""
    high = 1 - low

    def pack(q: QTensor) -> PackedTensor:
        if q.spec.bits == 8:
            return PackedTensor(q.codes, tuple(q.shape), q.scale, q.zero_point, q.spec)
        f = torch.nn.functional.pad(q.codes.to(torch.int32) & 0xF, (0, q.shape[-1] % 2)).reshape(*q.shape[:-1], -1, 2)
        return PackedTensor((f[..., low] | (f[..., high] << 4)).to(torch.uint8), tuple(q.shape), q.scale,
                            q.zero_point, q.spec)

    def unpack(p: PackedTensor) -> QTensor:
        if p.spec.bits == 8:
            return QTensor(p.data, p.scale, p.zero_point, p.spec)
        d = p.data.to(torch.int32)
        nibbles = [d & 0xF, d >> 4]
        f = torch.stack([nibbles[low], nibbles[high]], dim=-1).reshape(*p.data.shape[:-1], -1)[..., : p.shape[-1]]
        if p.spec.info.signed:
            return QTensor(torch.where(f >= 8, f - 16, f).to(torch.int8), p.scale, p.zero_point, p.spec)
        return QTensor(f.to(torch.uint8), p.scale, p.zero_point, p.spec)

    return pack, unpack


def float64_matmul(a: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return a.double() @ w.double().T


def make_linear(matmul: Matmul = float64_matmul, *, accumulate: Matmul | None = None,
                weight: Callable[[QTensor], torch.Tensor] = dequantize, calibrated: bool = True,
                keep: tuple[torch.dtype, ...] = (torch.float32,),
                ) -> tuple[Callable[[LinearWeights], object], Callable[[object, torch.Tensor], torch.Tensor]]:
    """A linear kernel: `prepare` dequantizes the weight once (`weight`), `fn` checks its input with
    `qcore.kernels.linear_rows` (float dtypes in `keep` stay as they are), applies the activation spec (with
    the calibrated static qparams unless not `calibrated`) and multiplies with `matmul` (float A, float W).
    With `accumulate`, quantized activations go through integer codes and it (int64 in and out)."""
    quantize = make_quantize()

    def prepare(w: LinearWeights) -> tuple[LinearWeights, torch.Tensor]:
        assert w.weight is not None
        return w, weight(w.weight)

    def linear(prepared: tuple[LinearWeights, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        w, deq = prepared
        act, wq = w.scheme.input_activations, w.weight
        assert wq is not None
        rows = linear_rows(x, deq.shape[1], keep)
        if act is None:
            out = matmul(rows, deq)
        else:
            static = not act.dynamic and calibrated
            qa = quantize(rows, act, w.act_scale, w.act_zero_point) if static else quantize(rows, act)
            if accumulate is None:
                out = matmul(dequantize(qa), deq)
            else:
                a_int = qa.codes.long() - (qa.zero_point.long().unsqueeze(-1) if act.granularity == "token"
                                           else qa.zero_point.long())
                w_int = wq.codes.long() - wq.zero_point.long().unsqueeze(-1)
                a_scale = qa.scale.double().unsqueeze(-1) if act.granularity == "token" else qa.scale.double()
                out = accumulate(a_int, w_int).double() * a_scale * wq.scale.double()
        out = out.double() + (0 if w.bias is None else w.bias.double())
        return out.float().reshape(*x.shape[:-1], deq.shape[0])

    return prepare, linear


def int_formats(request: KernelRequest, hardware: object) -> Support:
    specs = [request.spec] if request.spec is not None else [request.scheme.weights, request.scheme.input_activations]
    bad = [s.dtype for s in specs if s is not None and s.dtype not in INT_DTYPES]
    return no(f"{bad[0]} is not an integer format") if bad else YES


def backend(name: str, accumulation: str = "float32", **replace: Callable[..., object]) -> types.SimpleNamespace:
    """A plugin object registering the torch backend as `name`, with some callables replaced."""
    pack, unpack = make_pack()
    prepare, linear = make_linear()
    fns = {"quantize": make_quantize(), "dequantize": dequantize, "pack_weight": pack, "unpack_weight": unpack,
           "linear": linear, "prepare": prepare, "supports": int_formats} | replace
    kernels = [KernelImpl(name, op, op, fns[op], fns["supports"], prepare=fns["prepare"] if op == "linear" else None,
                          accumulation=accumulation if op == "linear" else "float32")
               for op in qcore.OPS]
    return types.SimpleNamespace(qcore_kernels=qcore.hookimpl(lambda: kernels))


# -- defects ------------------------------------------------------------------------


def half_away_from_zero(v: torch.Tensor) -> torch.Tensor:
    return torch.sign(v) * torch.floor(v.abs() + 0.5)


def storage_order(x: torch.Tensor) -> torch.Tensor:
    """Reads x's memory as if it were contiguous: the bug of kernels that use data_ptr and ignore strides."""
    return x.as_strided(x.shape, torch.empty(x.shape).stride(), x.storage_offset())


def int16_saturating_pairs(a: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Sums products in pairs saturated to int16 (vpmaddubsw without VNNI), then exactly: fine on N(0,1)
    codes, wrong when two extreme products meet."""
    prod = torch.nn.functional.pad(a.unsqueeze(1) * w.unsqueeze(0), (0, a.shape[-1] % 2))
    return prod.reshape(*prod.shape[:-1], -1, 2).sum(-1).clamp(-(2**15), 2**15 - 1).sum(-1)


TILE_K = 128


def fp16_partial_sums(a: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """float32 sums within K tiles of 128; the running sum is kept in fp16 between tiles (a split-K or
    register-starved kernel): exact within one tile, 11 bits and ±65504 across them."""
    tiles = [float64_matmul(a[:, i:i + TILE_K], w[:, i:i + TILE_K]).float() for i in range(0, a.shape[1], TILE_K)]
    total = tiles[0] if tiles else a.new_zeros(a.shape[0], w.shape[0])
    for tile in tiles[1:]:
        total = total.half().float() + tile
    return total


def round_mantissa(t: torch.Tensor, bits: int) -> torch.Tensor:
    """`t` rounded to `bits` significant bits (half to even), float32 range kept: tf32 has 11, bf16 8."""
    mantissa, exponent = torch.frexp(t.double())
    return torch.ldexp(torch.round(torch.ldexp(mantissa, torch.tensor(bits))), exponent - bits)


def rounded_inputs(bits: int) -> Matmul:
    """Both operands rounded to `bits` significant bits, products and sums exact (tensor-core tf32 / bf16)."""
    return lambda a, w: float64_matmul(round_mantissa(a, bits), round_mantissa(w, bits))


def rounded_products(bits: int) -> Matmul:
    """Each product rounded to `bits` significant bits, then summed exactly."""
    return lambda a, w: round_mantissa(a.double().unsqueeze(1) * w.double().unsqueeze(0), bits).sum(-1)


def weights_rounded(bits: int) -> Callable[[QTensor], torch.Tensor]:
    """The dequantized weight cached with `bits` significant bits (an fp16 or bf16 weight cache)."""
    return lambda q: round_mantissa(dequantize(q), bits).float()


def scales_rounded(bits: int) -> Callable[[QTensor], torch.Tensor]:
    """Weight scales rounded to `bits` significant bits before dequantizing (tinygemm's bf16 scales)."""
    return lambda q: dequantize(QTensor(q.codes, round_mantissa(q.scale, bits).float(), q.zero_point, q.spec))


def ragged_quantize(x: torch.Tensor, spec: QuantSpec, scale: torch.Tensor | None = None,
                    zero_point: torch.Tensor | None = None) -> QTensor:
    """Pads a last axis the group size does not divide with zeros and quantizes it (a ragged last group)."""
    if spec.granularity != "group" or x.shape[-1] % spec.group_size == 0:
        return make_quantize()(x, spec, scale, zero_point)
    check_finite(x, "input")
    pad = -x.shape[-1] % spec.group_size
    if scale is None:
        q = make_quantize()(torch.nn.functional.pad(x.float(), (0, pad)), spec)
        return QTensor(q.codes[..., : x.shape[-1]], q.scale, q.zero_point, spec)
    zero_point = torch.zeros_like(scale, dtype=torch.int32) if zero_point is None else zero_point
    codes = _codes(torch.nn.functional.pad(x.float(), (0, pad)), spec, scale, zero_point)
    return QTensor(codes[..., : x.shape[-1]], scale, zero_point, spec)


def ragged_dequantize(q: QTensor) -> torch.Tensor:
    """Dequantizes with ceil(K / g) groups, the last one short, instead of refusing the shape."""
    spec = q.spec
    if spec.granularity != "group" or q.shape[-1] % spec.group_size == 0:
        return dequantize(q)
    pad = -q.shape[-1] % spec.group_size
    padded = QTensor(torch.nn.functional.pad(q.codes, (0, pad)), q.scale, q.zero_point, spec)
    return dequantize(padded)[..., : q.shape[-1]]


def unchecked_weight_only() -> tuple[Callable[[LinearWeights], object], Callable[[object, torch.Tensor], torch.Tensor],
                                     Callable[[KernelRequest, object], Support]]:
    """The first edition of docs/plugins.md's section-3 example: NaN in x comes out as NaN, not as an error."""
    def supports(request: KernelRequest, hardware: object) -> Support:
        w = request.scheme.weights
        if request.scheme.input_activations is not None:
            return Support(False, "weight-only: activations must stay float")
        if w is None or w.dtype != "int8" or not w.symmetric or w.granularity != "channel":
            return Support(False, "needs int8 symmetric per-channel weights")
        return Support(True)

    def prepare(weights: LinearWeights) -> tuple[torch.Tensor, torch.Tensor | None]:
        q = weights.weight
        deq = (q.codes.float() - q.zero_point.float()[:, None]) * q.scale[:, None]
        return deq, weights.bias

    def linear(prepared: tuple[torch.Tensor, torch.Tensor | None], x: torch.Tensor) -> torch.Tensor:
        weight, bias = prepared
        return torch.nn.functional.linear(x.float(), weight, bias)

    return prepare, linear, supports


def in_input_dtype(a: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Multiplies in the input's own dtype: half inputs get a half GEMM."""
    return a @ w.to(a.dtype).T


def flat_output(linear: Callable[[object, torch.Tensor], torch.Tensor]) -> Callable[[object, torch.Tensor], torch.Tensor]:
    """Returns (M, N) for an input (..., K): the leading dimensions are lost."""
    def flat(prepared: object, x: torch.Tensor) -> torch.Tensor:
        out = linear(prepared, x)
        return out.reshape(-1, out.shape[-1])
    return flat


def unfloored_quantize(x: torch.Tensor, spec: QuantSpec, scale: torch.Tensor | None = None,
                       zero_point: torch.Tensor | None = None) -> QTensor:
    """Symmetric scales amax / qmax without the float32-eps floor (tiny ranges give tiny scales)."""
    if scale is not None or not spec.symmetric:
        return make_quantize()(x, spec, scale, zero_point)
    check_finite(x, "input")
    lo, hi = reduce_minmax(x.float(), spec)
    amax = torch.maximum(lo.double().abs(), hi.double().abs())
    scale = torch.where(amax == 0, 1.0, amax / spec.qrange[1]).float()
    return make_quantize()(x, spec, scale, torch.zeros_like(scale, dtype=torch.int32))


def float64_quantize(x: torch.Tensor, spec: QuantSpec, scale: torch.Tensor | None = None,
                     zero_point: torch.Tensor | None = None) -> QTensor:
    """Divides a float64 input as it is, instead of converting it to float32 first."""
    if x.dtype != torch.float64 or scale is None:
        return make_quantize()(x, spec, scale, zero_point)
    zero_point = torch.zeros_like(scale, dtype=torch.int32) if zero_point is None else zero_point
    return QTensor(_codes(x, spec, scale, zero_point), scale, zero_point, spec)


def none_means_compute(x: torch.Tensor, spec: QuantSpec, scale: torch.Tensor | None = None,
                       zero_point: torch.Tensor | None = None) -> QTensor:
    """Takes zero_point=None as "compute the qparams from x", dropping the given scale."""
    return make_quantize()(x, spec, None if zero_point is None else scale, zero_point)


def vague_nonfinite(x: torch.Tensor, spec: QuantSpec, scale: torch.Tensor | None = None,
                    zero_point: torch.Tensor | None = None) -> QTensor:
    """Rejects NaN/Inf with a message that says neither how many nor where."""
    if not bool(torch.isfinite(x).all()):
        raise qcore.NonFiniteError("input is not finite")
    return make_quantize()(x, spec, scale, zero_point)


PRECISION_DEFECTS: dict[str, dict[str, Callable[..., object]]] = {
    "operands rounded to bf16": {"linear": make_linear(rounded_inputs(8))[1]},
    "activations rounded to bf16": {"linear": make_linear(lambda a, w: float64_matmul(round_mantissa(a, 8), w))[1]},
    "dequantized weights cached in bf16": {"prepare": make_linear(weight=weights_rounded(8))[0]},
    "weight scales rounded to bf16": {"prepare": make_linear(weight=scales_rounded(8))[0]},
    "each product rounded to bf16": {"linear": make_linear(rounded_products(8))[1]},
    "partial sums kept in fp16 between K tiles of 128": {"linear": make_linear(fp16_partial_sums)[1]},
    "operands rounded to tf32": {"linear": make_linear(rounded_inputs(11))[1]},
    "dequantized weights cached in fp16": {"prepare": make_linear(weight=weights_rounded(11))[0]},
    "each product rounded to fp16 precision": {"linear": make_linear(rounded_products(11))[1]},
}
"""Linear defects of a few bits each, as `backend` replacements: what an SQNR threshold only grazes."""
