"""Cases for `pack_weight` and `unpack_weight`: canonical bytes (low nibble first, two's complement, binary 1
for +1, zero padding) on odd sizes for 4-, 2- and 1-bit codes, byte-wide codes unchanged, and the round trip."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from qcore.kernels import KernelRequest, PackedTensor, QTensor
from qcore.spec import QuantSpec
from qcore.testing.case import Body, Case, Env, packed_to, qtensor_to
from qcore.testing.checks import Mismatch, equal
from qcore.testing.quantize_cases import granularity, subject

SPECS: tuple[QuantSpec, ...] = (
    QuantSpec("int4", "channel", axis=0), QuantSpec("int4", "channel", axis=0, symmetric=False),
    QuantSpec("uint4", "channel", axis=0, symmetric=False), QuantSpec("int8", "channel", axis=0),
    QuantSpec("uint8", "channel", axis=0, symmetric=False), QuantSpec("int4", "group", group_size=32),
    QuantSpec("uint4", "group", group_size=32, symmetric=False), QuantSpec("ternary", "channel", axis=0),
    QuantSpec("binary", "channel", axis=0), QuantSpec("fp8_e4m3", "channel", axis=0),
)
ODD_SHAPES = ((3, 7), (5, 33), (1, 1))
GROUP_SHAPES = ((3, 64), (1, 96))


def canonical_pack(codes: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    """docs/numerics.md "Storage packing", restated: 8 // bits fields a byte along the last axis, first lowest;
    two's complement fields, binary 1 for +1; byte-wide formats unchanged."""
    bits = spec.bits
    if not spec.info.sub_byte:
        return codes
    per = 8 // bits
    fields = (codes > 0).to(torch.int32) if spec.dtype == "binary" else codes.to(torch.int32) & ((1 << bits) - 1)
    fields = torch.nn.functional.pad(fields, (0, -codes.shape[-1] % per))
    fields = fields.reshape(*codes.shape[:-1], -1, per) << (torch.arange(per, dtype=torch.int32) * bits)
    return fields.sum(-1).to(torch.uint8)


def _codes(env: Env, spec: QuantSpec, shape: tuple[int, ...]) -> QTensor:
    return env.oracle.quantize(torch.randn(shape, generator=env.generator()) * 3, spec)


def _pack(spec: QuantSpec, shape: tuple[int, ...]) -> Body:
    def body(env: Env) -> None:
        q = _codes(env, spec, shape)
        p = env.kernel.fn(qtensor_to(q, env.device))
        if not isinstance(p, PackedTensor):
            raise Mismatch(f"returned {type(p).__name__}, expected PackedTensor")
        if tuple(p.shape) != shape:
            raise Mismatch(f"PackedTensor.shape is {tuple(p.shape)}, expected the codes' shape {shape}")
        order = {4: "low nibble first", 2: "first code in the lowest bits", 1: "first code in bit 0, 1 for +1"}
        equal(f"packed bytes ({order.get(spec.bits, 'stored unchanged')})", canonical_pack(q.codes, spec), p.data)
        equal("packed scale", q.scale, p.scale)
        equal("packed zero_point", q.zero_point, p.zero_point)
        unpack = env.oracle.kernel(KernelRequest("unpack_weight", "cpu", spec=spec, shape=shape))
        equal("codes after pack -> reference unpack", q.codes, unpack.fn(packed_to(p, "cpu")).codes)
    return body


def _unpack(spec: QuantSpec, shape: tuple[int, ...]) -> Body:
    def body(env: Env) -> None:
        q = _codes(env, spec, shape)
        p = PackedTensor(canonical_pack(q.codes, spec), shape, q.scale, q.zero_point, spec)
        got = env.kernel.fn(packed_to(p, env.device))
        if not isinstance(got, QTensor):
            raise Mismatch(f"returned {type(got).__name__}, expected QTensor")
        equal("codes unpacked from canonical bytes", q.codes, got.codes)
        equal("unpacked scale", q.scale, got.scale)
        equal("unpacked zero_point", q.zero_point, got.zero_point)
    return body


def cases() -> Iterator[Case]:
    for spec in SPECS:
        for shape in GROUP_SHAPES if spec.granularity == "group" else ODD_SHAPES:
            rule = "x".join(map(str, shape))
            s, g = subject(spec), granularity(spec)
            yield Case("pack_weight", s, g, f"canonical bytes {rule}", _pack(spec, shape), shape, spec=spec)
            yield Case("unpack_weight", s, g, f"canonical bytes {rule}", _unpack(spec, shape), shape, spec=spec)
