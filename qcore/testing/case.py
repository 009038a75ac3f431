"""One conformance case: a rule applied to one op for one spec or scheme on one shape.

A case knows the request to put to the kernel's ``supports`` (a declined case
is *unsupported*, with the kernel's reason) and a body that runs the kernel
through an `Env` and raises `Mismatch` when the rule is broken. Inputs come
from a torch generator seeded from the case id, so every run is the same and a
failure can be replayed from its seed.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable

import attrs
import torch

from qcore.kernels import KernelImpl, KernelRequest, LinearWeights, PackedTensor, QTensor
from qcore.spec import QuantScheme, QuantSpec
from qcore.testing.oracle import Oracle


def qtensor_to(q: QTensor, device: str) -> QTensor:
    return attrs.evolve(q, codes=q.codes.to(device), scale=q.scale.to(device), zero_point=q.zero_point.to(device))


def packed_to(p: PackedTensor, device: str) -> PackedTensor:
    return attrs.evolve(p, data=p.data.to(device), scale=p.scale.to(device), zero_point=p.zero_point.to(device))


def weights_to(w: LinearWeights, device: str) -> LinearWeights:
    def move(t: torch.Tensor | None) -> torch.Tensor | None:
        return None if t is None else t.to(device)

    return attrs.evolve(
        w,
        weight=None if w.weight is None else qtensor_to(w.weight, device),
        bias=move(w.bias),
        act_scale=move(w.act_scale),
        act_zero_point=move(w.act_zero_point),
        float_weight=move(w.float_weight),
    )


@attrs.frozen
class Env:
    """What a case body works with: the kernel under test, the oracle, the device and the seed."""

    kernel: KernelImpl
    oracle: Oracle
    device: str
    seed: int

    def generator(self) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed)

    def quantize(self, x: torch.Tensor, spec: QuantSpec, scale: torch.Tensor | None = None,
                 zero_point: torch.Tensor | None = None) -> QTensor:
        """The kernel under test on `self.device`; inputs are moved there, the result is checked to be a QTensor."""
        move = (lambda t: None if t is None else t.to(self.device))
        q = self.kernel.fn(x.to(self.device), spec, move(scale), move(zero_point))
        return _expect(q, QTensor)

    def prepare(self, weights: LinearWeights) -> object:
        """The linear kernel's `prepare`, the weights moved to `self.device` first."""
        assert self.kernel.prepare is not None
        return self.kernel.prepare(weights_to(weights, self.device))

    def run(self, prepared: object, x: torch.Tensor) -> torch.Tensor:
        """The linear kernel's `fn` on `x` moved to `self.device`; the result is checked to be a tensor."""
        return _expect(self.kernel.fn(prepared, x.to(self.device)), torch.Tensor)

    def linear(self, weights: LinearWeights, x: torch.Tensor) -> torch.Tensor:
        return self.run(self.prepare(weights), x)


def _expect(value: object, kind: type) -> object:
    from qcore.testing.checks import Mismatch

    if not isinstance(value, kind):
        raise Mismatch(f"returned {type(value).__name__}, expected {kind.__name__}")
    return value


Body = Callable[[Env], "str | None"]


@attrs.frozen
class Case:
    """`body(env)` raises Mismatch on a broken rule; it may return a note (e.g. ties one code off)."""

    op: str
    subject: str
    granularity: str
    rule: str
    body: Body = attrs.field(repr=False)
    shape: tuple[int, ...]
    spec: QuantSpec | None = None
    scheme: QuantScheme | None = None

    @property
    def id(self) -> str:
        return f"{self.op}[{self.subject}|{self.granularity}|{self.rule}]"

    @property
    def seed(self) -> int:
        return zlib.crc32(self.id.encode())

    def request(self, device: str) -> KernelRequest:
        return KernelRequest(self.op, device, scheme=self.scheme, spec=self.spec, shape=self.shape)
