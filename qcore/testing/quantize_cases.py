"""Cases for `quantize` and `dequantize`: every integer dtype, symmetric and asymmetric, every granularity.

Computed qparams and codes are compared with the oracle (scale and
zero-point with atol 0, codes equal but for one code on exact ties); codes
from given qparams (ties, saturation) with the contract restated in
`tensors.contract_codes`.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from qcore.kernels import QTensor
from qcore.layout import qparam_shape
from qcore.spec import QuantSpec
from qcore.testing import data, rejects
from qcore.testing.case import Body, Case, Env, qtensor_to
from qcore.testing.checks import Mismatch, at_least_db, codes_equal, equal
from qcore.testing.tensors import contract_codes, cycled, exact_ties, format_midpoints, layouts, per_element, spread

INT_SPECS: tuple[tuple[str, bool], ...] = (
    ("int8", True), ("int8", False), ("uint8", False), ("int4", True), ("int4", False), ("uint4", False),
)
SCALED_SYMMETRIC = ("ternary", "binary", "fp8_e4m3", "fp8_e5m2")
CASTS = ("fp16", "bf16")
MAIN_SHAPE = (6, 6, 256)          # equal adjacent dims: a kernel that swaps axes 0 and 1 still gets caught
GIVEN_SHAPE = (2, 3, 512)
UNALIGNED = ((17, 3, 17), (2, 5, 1025), (3, 2, 5137))


def specs() -> Iterator[QuantSpec]:
    """Every dtype of the contract: each scaled one at every granularity, the plain casts per tensor."""
    for dtype, symmetric in (*INT_SPECS, *((d, True) for d in SCALED_SYMMETRIC)):
        yield QuantSpec(dtype, "tensor", symmetric=symmetric)
        for axis in (0, 1, 2, -1, -2, -3):
            yield QuantSpec(dtype, "channel", axis=axis, symmetric=symmetric)
        for g in (32, 64, 128, 256):
            yield QuantSpec(dtype, "group", group_size=g, symmetric=symmetric)
        yield QuantSpec(dtype, "token", symmetric=symmetric, dynamic=True)
    for dtype in CASTS:
        yield QuantSpec(dtype)


def subject(spec: QuantSpec) -> str:
    return f"{spec.dtype} {'sym' if spec.symmetric else 'asym'}"


def granularity(spec: QuantSpec) -> str:
    if spec.granularity == "channel":
        return f"channel(axis={spec.axis})"
    if spec.granularity == "group":
        return f"group{spec.group_size}"
    return spec.granularity


def _compare(what: str, expected: QTensor, got: QTensor, x: torch.Tensor) -> int:
    """Scale and zero-point bit-identical; integer codes equal but for one code on exact ties, float codes
    bit-identical. Returns how many codes were one off."""
    equal(f"{what}: scale", expected.scale, got.scale)
    equal(f"{what}: zero_point", expected.zero_point, got.zero_point)
    if expected.spec.info.is_float:
        equal(f"{what}: codes", expected.codes, got.codes)
        return 0
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
            if spec.dtype != "binary":  # binary codes are ±1: 0.0 becomes +1
                equal(f"{what}: (code - zero_point) * scale where x == 0",
                      torch.zeros(MAIN_SHAPE, dtype=torch.float64)[t == 0], deq[t == 0])
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


def _given_qparams(spec: QuantSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """Power-of-two scales (so (k + 0.5) * scale is exact) and in-range zero-points, one per set."""
    shape = qparam_shape(spec, GIVEN_SHAPE)
    i = torch.arange(max(1, torch.Size(shape).numel())).reshape(shape)
    scale = torch.exp2(-(i % 4).float())
    qmin, qmax = spec.qrange
    zp = torch.zeros(shape, dtype=torch.int32) if spec.symmetric else ((qmin + qmax) // 2 + i % 3 - 1).int()
    return scale, zp


def _given_input(spec: QuantSpec, values: str, scale: torch.Tensor) -> torch.Tensor:
    """ties: x / scale an exact tie, (k + 0.5) for k in [-130, 130] (integer formats) or the midpoints between
    neighbouring values (float formats); huge: finite values far outside any range."""
    if values == "huge":
        return cycled(data.vectors()["huge"], GIVEN_SHAPE).float()
    fill = cycled(format_midpoints(spec) if spec.info.is_float else data.vectors()["ties"], GIVEN_SHAPE)
    return (fill * per_element(scale.double(), spec, GIVEN_SHAPE) if spec.info.scaled else fill).float()


def _given(spec: QuantSpec, values: str) -> Body:
    """Codes for given power-of-two scales and zero-points, which come back unchanged."""
    def body(env: Env) -> None:
        scale, zp = _given_qparams(spec)
        x = _given_input(spec, values, scale)
        got = env.quantize(x, spec, scale, zp)
        codes = got.codes.detach().cpu()
        if spec.symmetric and spec.info.kind == "int" and bool((codes.to(torch.int32) < spec.qrange[0]).any()):
            idx = tuple(int(i) for i in torch.nonzero(codes.to(torch.int32) < spec.qrange[0])[0])
            raise Mismatch(f"restricted range {spec.qrange} produced a code below {spec.qrange[0]}", idx,
                           spec.qrange[0], codes[idx].item())
        equal(f"codes of the {values} vector with given scale and zero-point", contract_codes(x, spec, scale, zp),
              codes)
        if spec.info.scaled:
            equal("scale returned with given qparams", scale, got.scale)
            equal("zero_point returned with given qparams", zp, got.zero_point)
    return body


def _zero_point_none(spec: QuantSpec) -> Body:
    """A given scale with ``zero_point=None`` means zero-points of 0 (kernels.py), not qparams from x: the
    result equals the one for explicit zeros."""
    def body(env: Env) -> None:
        scale, _ = _given_qparams(spec)
        zeros = torch.zeros(scale.shape, dtype=torch.int32)
        x = spread(env.generator(), GIVEN_SHAPE)
        want, got = env.quantize(x, spec, scale, zeros), env.quantize(x, spec, scale, None)
        for field in ("codes", "scale", "zero_point"):
            equal(f"{field} with zero_point=None vs explicit zeros", getattr(want, field).cpu(), getattr(got, field))
    return body


def _input_dtypes(spec: QuantSpec) -> Body:
    """The input is converted to float32 first: a float64 input a quarter ulp off exact ties, and float16 and
    bfloat16 inputs, give the codes of their float32 values (the kernel's own, bit for bit)."""
    def body(env: Env) -> None:
        scale, zp = _given_qparams(spec)
        x = _given_input(spec, "ties", scale)
        ulp = torch.nextafter(x, torch.full_like(x, torch.inf)).double() - x.double()
        inputs = {"float64 input a quarter ulp off the ties": x.double() + torch.sign(x.double()) * ulp / 4,
                  "float16 input": x.clamp(-65504, 65504).half(), "bfloat16 input": x.bfloat16()}
        for what, given in inputs.items():
            want = env.quantize(given.float(), spec, scale, zp).codes.cpu()
            equal(f"codes of a {what} vs of its float32 values", want, env.quantize(given, spec, scale, zp).codes)
    return body


def _tiny_range(spec: QuantSpec) -> Body:
    """Ranges below float32 eps * qmax: the scale is floored at eps (then zero-points and codes follow)."""
    def body(env: Env) -> str | None:
        x = spread(env.generator(), MAIN_SHAPE) * 1e-12
        return _tie_note(_compare("values around 1e-12", env.oracle.quantize(x, spec), env.quantize(x, spec), x))
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
        yield case("quantize", "tiny range", _tiny_range(spec))
        yield case("quantize", "strides", _strides(spec))
        yield case("quantize", "determinism", _determinism(spec))
        yield case("quantize", "non-finite", rejects.nonfinite_quantize(spec, MAIN_SHAPE))
        if spec.granularity == "group":
            ragged = (2, 3, rejects.ragged_last_axis(spec))
            yield case("quantize", "group does not divide", rejects.ragged_quantize(spec, ragged), ragged)
        if spec.granularity != "token":
            yield case("quantize", "ties", _given(spec, "ties"), GIVEN_SHAPE)
            yield case("quantize", "saturation", _given(spec, "huge"), GIVEN_SHAPE)
            yield case("quantize", "input dtypes", _input_dtypes(spec), GIVEN_SHAPE)
            if spec.info.scaled:
                yield case("quantize", "zero-point None", _zero_point_none(spec), GIVEN_SHAPE)
        yield case("dequantize", "reference", _dequantize_reference(spec))
        yield case("dequantize", "strides", _dequantize_strides(spec))
        threshold = thresholds.get(f"{spec.dtype} {spec.granularity}")
        if threshold is not None and spec.symmetric:
            yield case("dequantize", f"sqnr >= {threshold:g} dB", _dequantize_sqnr(spec, threshold))
