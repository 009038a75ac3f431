"""Kernel descriptors and the tensors that cross the kernel boundary.

Every backend implements the same ops with the same signatures, on torch
tensors of the device the kernel claims:

=============  ===============================================================
op             callable signature
=============  ===============================================================
quantize       ``fn(x, spec, scale=None, zero_point=None) -> QTensor``
               qparams computed from ``x`` (min-max over the granularity) when
               ``scale`` is None. A given ``scale`` (float32) and
               ``zero_point`` (int32) have the canonical qparam shape below;
               ``zero_point=None`` means zeros (symmetric specs pass None).
               The result holds the given qparams. ``x`` may be any float
               dtype and layout; it is read as float32.
dequantize     ``fn(q: QTensor) -> Tensor`` (float32, the shape of the codes)
pack_weight    ``fn(q: QTensor) -> PackedTensor`` (canonical storage, see below)
unpack_weight  ``fn(p: PackedTensor) -> QTensor``
linear         ``prepare(w: LinearWeights) -> Any`` once per layer, then
               ``fn(prepared, x) -> Tensor`` per call: ``x`` float (..., K),
               any float dtype and strides, result float32 (..., N); the
               activation spec is applied inside.
=============  ===============================================================

Canonical qparam shapes (what ``QTensor.scale``/``zero_point`` hold) for ``x``
of shape S: tensor ``()``; channel ``(S[axis],)``; token ``S[:-1]``; group
``(*S[:-1], S[-1] // group_size)``. Scales are float32, zero-points int32.
`qcore.layout` computes them (`qparam_shape`) and checks given ones
(`given_qparams`).

The contract's input checks are public, so every kernel words its errors the
same way: `linear_rows` (below) for a linear kernel's input, and for tensor ops
`qcore.qparams.check_finite` (NaN/±Inf: `NonFiniteError` with the count and the
first index) and `qcore.layout.check_groups` (a group size that does not
divide the last axis: `ShapeError`). `qcore conformance` holds every kernel to
them (docs/numerics.md lists its rules).

Canonical packing: codes narrower than a byte are packed along the last axis,
``8 // bits`` codes a byte, the first code in the lowest bits (int4: low nibble
first); a signed code is stored as its two's complement field (binary: bit 1 is
+1, bit 0 is -1); a last axis that does not fill the final byte is padded with 0.
Other formats are stored unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import math

import attrs
import torch

from qcore.errors import ShapeError, SpecError
from qcore.qparams import check_finite
from qcore.spec import QuantScheme, QuantSpec

OPS: tuple[str, ...] = ("quantize", "dequantize", "pack_weight", "unpack_weight", "linear")
ACCUMULATION_PROMISES: dict[str, str] = {
    "int32": "integer codes multiplied and summed exactly in int32 (no int16 step may saturate, K up to 65536); "
             "only the float32 rescale by the scales rounds",
    "float32": "float32 operands (activations, dequantized weights, scales at full precision), products and sums "
               "in float32 or wider, in any order",
    "tfloat32": "operands rounded to 11 significant bits (TF32 tensor cores), products and sums in float32",
    "bfloat16": "operands or the output rounded to bfloat16 (8 significant bits), sums in float32",
}
"""What a linear kernel's `KernelImpl.accumulation` promises: how it multiplies and sums. The conformance
kit holds each output element to ``rel * sum |products|`` of the exact result, `rel` per value in
specs/conformance/tolerances.yaml (docs/numerics.md, "Accumulation")."""
ACCUMULATIONS: tuple[str, ...] = tuple(ACCUMULATION_PROMISES)


@attrs.frozen(eq=False)
class QTensor:
    """Integer (or low-precision float) codes plus the qparams that give them meaning.

    `codes` has the shape of the original tensor, dtype int8 for signed integer
    formats, uint8 for unsigned ones, the torch float dtype for float formats.
    """

    codes: torch.Tensor
    scale: torch.Tensor
    zero_point: torch.Tensor
    spec: QuantSpec

    @property
    def shape(self) -> torch.Size:
        return self.codes.shape


@attrs.frozen(eq=False)
class PackedTensor:
    """Codes in canonical storage form (see module docstring) with their qparams."""

    data: torch.Tensor
    shape: tuple[int, ...]
    scale: torch.Tensor
    zero_point: torch.Tensor
    spec: QuantSpec


def linear_rows(x: torch.Tensor, k: int, keep: tuple[torch.dtype, ...] = (torch.float32,), *,
                check: bool = True) -> torch.Tensor:
    """`x` (..., K) as the contiguous (M, K) matrix a linear kernel computes on, checked as the contract says.

    The public input check of linear kernels: call it first in ``fn`` and give
    the result the leading dimensions back (``out.reshape(*x.shape[:-1], N)``).
    Float dtypes in `keep` stay as they are (a kernel that widens half inputs
    itself reads them exactly); anything else becomes float32. ShapeError when
    the last axis is not K, NonFiniteError on NaN/Inf naming how many and the
    first index (not during CUDA graph capture, see `check_finite`).
    `check=False` is for a kernel that tests every value for NaN/Inf in its
    own pass over the rows and, when it finds one, returns no result but
    raises through `check_finite(rows, "linear input")`: the separate scan
    costs as much as quantizing the rows. Autograd
    history is kept: detach first where a kernel cannot take it.
    """
    if x.ndim == 0 or x.shape[-1] != k:
        raise ShapeError(f"linear expects input of shape (..., {k}), got {tuple(x.shape)}")
    rows = x.reshape(math.prod(x.shape[:-1]), k)
    rows = (rows if rows.dtype in keep else rows.to(torch.float32)).contiguous()
    if check:
        check_finite(rows, "linear input")
    return rows


@attrs.frozen(eq=False)
class LinearWeights:
    """Everything a linear kernel's `prepare` needs for one layer.

    `weight` is the (N, K) weight quantized with `scheme.weights` (None when
    the scheme leaves weights float: then `float_weight` is set), its qparams
    in the canonical shapes (per-channel ``(N,)``, group ``(N, K // g)``).
    `act_scale` (float32) and `act_zero_point` (int32, or None for zeros) are
    the calibrated qparams of a static activation spec, in its canonical shape
    for an input of shape (M, K): ``()`` per tensor, ``(K,)`` per channel along
    the last axis; None for dynamic and weight-only schemes. They must be used
    as given, never recomputed from the input. `bias` is float (N,) or None.
    """

    scheme: QuantScheme
    weight: QTensor | None
    bias: torch.Tensor | None = None
    act_scale: torch.Tensor | None = None
    act_zero_point: torch.Tensor | None = None
    float_weight: torch.Tensor | None = None

    @property
    def out_features(self) -> int:
        w = self.weight.codes if self.weight is not None else self.float_weight
        assert w is not None
        return w.shape[0]

    @property
    def in_features(self) -> int:
        w = self.weight.codes if self.weight is not None else self.float_weight
        assert w is not None
        return w.shape[1]


@attrs.frozen
class KernelRequest:
    """What the matcher asks a kernel: can you run `op` for this scheme/spec, shape and device?

    For `linear`, `scheme` is set and `shape` is (M, K, N). For the tensor ops,
    `spec` is set and `shape` is the tensor's shape (or None: any shape).
    """

    op: str
    device: str = "cpu"
    scheme: QuantScheme | None = None
    spec: QuantSpec | None = None
    shape: tuple[int, ...] | None = None

    def __attrs_post_init__(self) -> None:
        if self.op not in OPS:
            raise SpecError(f"unknown op {self.op!r}; known: {', '.join(OPS)}")
        if self.op == "linear" and self.scheme is None:
            raise SpecError("a linear request needs a scheme")
        if self.op != "linear" and self.spec is None:
            raise SpecError(f"a {self.op} request needs a spec")

    @property
    def subject(self) -> str:
        """The scheme name, or the spec described, for messages."""
        if self.scheme is not None:
            return self.scheme.name
        assert self.spec is not None
        return self.spec.describe()


@attrs.frozen
class Support:
    """A kernel's answer to a request: ok, or not with the reason why."""

    ok: bool
    reason: str = ""

    def __bool__(self) -> bool:
        return self.ok


YES = Support(True)


def no(reason: str) -> Support:
    return Support(False, reason)


@attrs.frozen
class Provider:
    """Which plugin (and distribution) provided a descriptor."""

    plugin: str
    distribution: str | None = None
    version: str | None = None

    def describe(self) -> str:
        if self.distribution is None:
            return self.plugin
        return f"{self.plugin} ({self.distribution} {self.version})"


def _check_op(_inst: Any, _attr: Any, value: str) -> None:
    if value not in OPS:
        raise SpecError(f"unknown op {value!r}; known: {', '.join(OPS)}")


def _check_nonempty(_inst: Any, attr: attrs.Attribute, value: str) -> None:
    if not value or not isinstance(value, str) or "/" in value:
        raise SpecError(f"KernelImpl.{attr.name} must be a non-empty string without '/', got {value!r}")


@attrs.frozen
class KernelImpl:
    """One implementation of one op by one backend.

    `supports(request, hardware)` answers whether this kernel can run a request
    on this machine and, if not, why; it must be cheap and never raise.
    `hardware` is the `qcore.hardware.HardwareProfile` the matcher detected:
    ``arch``, ``cpu_model``, ``isa`` (a frozenset of CPU features such as
    ``"avx2"``, ``"vnni"``, ``"amx"``; test with ``hardware.has("vnni")``),
    ``cores``, ``torch_version``, ``os`` and ``cuda``, a tuple of
    `CudaDevice` (``index``, ``name``, ``capability`` as (major, minor),
    ``sm`` such as 90, ``memory_bytes``), empty without a GPU.
    `priority` ranks candidates when nothing may be measured (higher first).
    `prepare` is required for `linear` kernels and absent otherwise.
    `accumulation` declares how a linear kernel multiplies and sums, one of
    `ACCUMULATION_PROMISES`: "int32" (integer sums, exact), "float32" (the
    default), "tfloat32" (operands rounded to TF32), "bfloat16" (operands or
    output rounded to bfloat16). It selects the tolerance the conformance kit
    holds the kernel to against the exact result, element by element
    (``accumulation.rel`` in specs/conformance/tolerances.yaml): declare what
    the kernel really does, not what it would like to be judged by.
    """

    backend: str = attrs.field(validator=_check_nonempty)
    name: str = attrs.field(validator=_check_nonempty)
    op: str = attrs.field(validator=_check_op)
    fn: Callable[..., Any]
    supports: Callable[[KernelRequest, Any], Support]
    devices: tuple[str, ...] = ("cpu",)
    priority: int = 0
    prepare: Callable[[LinearWeights], Any] | None = None
    description: str = ""
    accumulation: str = attrs.field(default="float32", validator=attrs.validators.in_(ACCUMULATIONS))
    provider: Provider | None = None

    def __attrs_post_init__(self) -> None:
        if (self.op == "linear") != (self.prepare is not None):
            raise SpecError(f"kernel {self.id}: `prepare` is required for linear kernels and only for them")

    @property
    def id(self) -> str:
        """Unique name across every plugin: ``backend/name``."""
        return f"{self.backend}/{self.name}"

    def check(self, request: KernelRequest, hardware: Any) -> Support:
        """`supports`, plus the checks every kernel shares (op, device), never raising."""
        if request.op != self.op:
            return no(f"implements {self.op}, not {request.op}")
        if request.device not in self.devices:
            return no(f"runs on {', '.join(self.devices)}, not {request.device}")
        try:
            return self.supports(request, hardware)
        except Exception as exc:  # a plugin bug must not break matching
            return no(f"supports() raised {type(exc).__name__}: {exc}")
