"""Cases for `quantize` and `dequantize`: every integer dtype, symmetric and asymmetric, every granularity.

Computed qparams and codes are compared with the oracle (scale and
zero-point with atol 0, codes equal but for one code on exact ties); codes
from given qparams (ties, saturation) with the contract restated in
`tensors.contract_codes`.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from qcore.errors import NonFiniteError
from qcore.kernels import QTensor
from qcore.spec import QuantSpec
from qcore.testing import data
from qcore.testing.case import Body, Case, Env, qtensor_to
from qcore.testing.checks import Mismatch, at_least_db, codes_equal, equal
from qcore.layout import qparam_shape
from qcore.testing.tensors import contract_codes, cycled, exact_ties, layouts, per_element, spread

INT_SPECS: tuple[tuple[str, bool], ...] = (
    ("int8", True), ("int8", False), ("uint8", False), ("int4", True), ("int4", False), ("uint4", False),
)
MAIN_SHAPE = (6, 6, 256)          # equal adjacent dims: a kernel that swaps axes 0 and 1 still gets caught
GIVEN_SHAPE = (2, 3, 512)
UNALIGNED = ((17, 3, 17), (2, 5, 1025), (3, 2, 5137))


def specs() -> Iterator[QuantSpec]:
    for dtype, symmetric in INT_SPECS:
        yield QuantSpec(dtype, "tensor", symmetric=symmetric)
        for axis in (0, 1, 2, -1, -2, -3):
            yield QuantSpec(dtype, "channel", axis=axis, symmetric=symmetric)
        for g in (32, 64, 128, 256):
            yield QuantSpec(dtype, "group", group_size=g, symmetric=symmetric)
        yield QuantSpec(dtype, "token", symmetric=symmetric, dynamic=True)


def subject(spec: QuantSpec) -> str:
    return f"{spec.dtype} {'sym' if spec.symmetric else 'asym'}"


def granularity(spec: QuantSpec) -> str:
    if spec.granularity == "channel":
        return f"channel(axis={spec.axis})"
    if spec.granularity == "group":
        return f"group{spec.group_size}"
    return spec.granularity


def _compare(what: str, expected: QTensor, got: QTensor, x: torch.Tensor) -> int:
    equal(f"{what}: scale", expected.scale, got.scale)
    equal(f"{what}: zero_point", expected.zero_point, got.zero_point)
    return codes_equal(f"{what}: codes", expected.codes, got.codes, exact_ties(x, expected.spec, expected.scale))


def _tie_note(n: int) -> str | None:
    return f"{n} code(s) one off on exact ties" if n else None


def _reference(spec: QuantSpec, shape: tuple[int, ...]) -> Body:
    def body(env: Env) -> str | None:
        x = spread(env.generator(), shape)
        return _tie_note(_compare(f"N(0,1) data {shape}", env.oracle.quantize(x, spec), env.quantize(x, spec), x))
    return body


def _zero_range(spec: QuantSpec) -> Body:
    def body(env: Env) -> str | None:
        x = spread(env.generator(), MAIN_SHAPE)
        if spec.granularity == "channel":
            x.select(spec.axis, 0).zero_()
            x.select(spec.axis, 1).fill_(0.75)
        elif spec.granularity in ("group", "token"):
            width = spec.group_size or MAIN_SHAPE[-1]
            x[0, 0, :width] = 0.0
            x[0, 1, :width] = -0.375
        inputs = [("all-zero tensor", torch.zeros(MAIN_SHAPE)), ("constant tensor", torch.full(MAIN_SHAPE, 0.5)),
                  ("zero and constant sets", x)]
        ties = 0
        for what, t in inputs:
            got = env.quantize(t, spec)
            scale = got.scale.detach().cpu()
            if not bool((torch.isfinite(scale) & (scale > 0)).all()):
                raise Mismatch(f"{what}: scales must be finite and positive, got {scale.flatten()[:8].tolist()}")
            ties += _compare(what, env.oracle.quantize(t, spec), got, t)
            deq = (got.codes.cpu().double() - per_element(got.zero_point.cpu().double(), spec, MAIN_SHAPE)) * \
                per_element(scale.double(), spec, MAIN_SHAPE)
            equal(f"{what}: (code - zero_point) * scale where x == 0", torch.zeros(MAIN_SHAPE, dtype=torch.float64)[t == 0],
                  deq[t == 0])
        return _tie_note(ties)
    return body


def _strides(spec: QuantSpec) -> Body:
    def body(env: Env) -> None:
        x = spread(env.generator(), MAIN_SHAPE)
        want = env.quantize(x, spec)
        for layout, view in layouts(x).items():
            got = env.quantize(view, spec)
            equal(f"{layout} input vs contiguous: scale", want.scale.cpu(), got.scale)
            equal(f"{layout} input vs contiguous: zero_point", want.zero_point.cpu(), got.zero_point)
            equal(f"{layout} input vs contiguous: codes", want.codes.cpu(), got.codes)
    return body


def _determinism(spec: QuantSpec) -> Body:
    def body(env: Env) -> None:
        x = spread(env.generator(), MAIN_SHAPE)
        first, second = env.quantize(x, spec), env.quantize(x, spec)
        for field in ("scale", "zero_point", "codes"):
            equal(f"second run vs first: {field}", getattr(first, field).cpu(), getattr(second, field))
    return body


def _nonfinite(spec: QuantSpec) -> Body:
    def body(env: Env) -> None:
        for value in data.vectors()["nonfinite"].tolist():
            x = spread(env.generator(), MAIN_SHAPE)
            x[1, 2, 3] = value
            try:
                q = env.quantize(x, spec)
            except NonFiniteError:
                continue
            except Exception as exc:
                raise Mismatch(f"{value} in the input: raised {type(exc).__name__}: {exc}, expected NonFiniteError")
            codes = q.codes.detach().cpu()
            raise Mismatch(f"{value} in the input was not rejected with NonFiniteError", (1, 2, 3), "NonFiniteError",
                           f"code {codes[1, 2, 3].item()}")
    return body


def _given_qparams(spec: QuantSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """Power-of-two scales (so (k + 0.5) * scale is exact) and in-range zero-points, one per set."""
    shape = qparam_shape(spec, GIVEN_SHAPE)
    i = torch.arange(max(1, torch.Size(shape).numel())).reshape(shape)
    scale = torch.exp2(-(i % 4).float())
    qmin, qmax = spec.qrange
    zp = torch.zeros(shape, dtype=torch.int32) if spec.symmetric else ((qmin + qmax) // 2 + i % 3 - 1).int()
    return scale, zp


def _given(spec: QuantSpec, values: str) -> Body:
    """ties: x = (k + 0.5) * scale, k in [-130, 130]; saturation: huge finite values."""
    def body(env: Env) -> None:
        scale, zp = _given_qparams(spec)
        fill = cycled(data.vectors()[values], GIVEN_SHAPE)
        x = (fill * per_element(scale.double(), spec, GIVEN_SHAPE) if values == "ties" else fill).float()
        got = env.quantize(x, spec, scale, zp)
        codes = got.codes.detach().cpu()
        if spec.symmetric and bool((codes.to(torch.int32) < spec.qrange[0]).any()):
            idx = tuple(int(i) for i in torch.nonzero(codes.to(torch.int32) < spec.qrange[0])[0])
            raise Mismatch(f"restricted range {spec.qrange} produced a code below {spec.qrange[0]}", idx,
                           spec.qrange[0], codes[idx].item())
        expected = contract_codes(x, spec, scale, zp).to(codes.dtype)
        equal(f"codes of the {values} vector with given scale and zero-point", expected, codes)
    return body


def _dequantize_reference(spec: QuantSpec) -> Body:
    def body(env: Env) -> None:
        q = env.oracle.quantize(spread(env.generator(), MAIN_SHAPE), spec)
        equal("dequantized values", env.oracle.dequantize(q), env.kernel.fn(qtensor_to(q, env.device)))
    return body


def _dequantize_sqnr(spec: QuantSpec, threshold: float) -> Body:
    def body(env: Env) -> str:
        x = torch.randn(MAIN_SHAPE, generator=env.generator())
        out = env.kernel.fn(qtensor_to(env.oracle.quantize(x, spec), env.device))
        return f"{at_least_db('dequantized N(0,1) vs float', x, out, threshold):.2f} dB"
    return body


def _dequantize_strides(spec: QuantSpec) -> Body:
    def body(env: Env) -> None:
        q = qtensor_to(env.oracle.quantize(spread(env.generator(), MAIN_SHAPE), spec), env.device)
        want = env.kernel.fn(q)
        for layout, codes in layouts(q.codes).items():
            equal(f"{layout} codes vs contiguous", want.cpu(), env.kernel.fn(QTensor(codes, q.scale, q.zero_point, spec)))
    return body


def cases() -> Iterator[Case]:
    thresholds = data.tolerances().dequantize_sqnr_db
    for spec in specs():
        s, g = subject(spec), granularity(spec)

        def case(op: str, rule: str, body: Body, shape: tuple[int, ...] = MAIN_SHAPE) -> Case:
            return Case(op, s, g, rule, body, shape, spec=spec)

        yield case("quantize", "reference", _reference(spec, MAIN_SHAPE))
        for shape in UNALIGNED if spec.granularity != "group" else ((17, 1, spec.group_size), (5, 3, 5 * spec.group_size)):
            yield case("quantize", "unaligned " + "x".join(map(str, shape)), _reference(spec, shape), shape)
        yield case("quantize", "zero-range", _zero_range(spec))
        yield case("quantize", "strides", _strides(spec))
        yield case("quantize", "determinism", _determinism(spec))
        yield case("quantize", "non-finite", _nonfinite(spec))
        if spec.granularity != "token":
            yield case("quantize", "ties", _given(spec, "ties"), GIVEN_SHAPE)
            yield case("quantize", "saturation", _given(spec, "huge"), GIVEN_SHAPE)
        yield case("dequantize", "reference", _dequantize_reference(spec))
        yield case("dequantize", "strides", _dequantize_strides(spec))
        threshold = thresholds.get(f"{spec.dtype} {spec.granularity}")
        if threshold is not None and spec.symmetric:
            yield case("dequantize", f"sqnr >= {threshold:g} dB", _dequantize_sqnr(spec, threshold))
