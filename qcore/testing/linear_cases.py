"""Cases for `linear`: quality (SQNR) against the float layer and against the oracle, exact expected values
(`exact_cases`: accumulation at extreme codes, full-mantissa precision), rejected inputs (`rejects`: NaN/Inf,
group sizes that do not divide), unaligned sizes, strides, determinism."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from qcore.kernels import LinearWeights, QTensor
from qcore.spec import PRESETS, QuantScheme, QuantSpec
from qcore.testing import data, exact_cases, rejects
from qcore.testing.case import Body, Case, Env
from qcore.testing.checks import at_least_db, equal
from qcore.testing.tensors import layouts

ASYM_ACT = QuantScheme(
    "w8a8-asym-dynamic",
    QuantSpec("int8", "channel", axis=0),
    QuantSpec("int8", "token", symmetric=False, dynamic=True),
    "int8 per-channel weights, asymmetric int8 per-token activations (codes reach -128)",
)
SCHEMES: tuple[QuantScheme, ...] = (*(PRESETS[n] for n in ("w8a8", "w8a8-dynamic", "w8a16", "w4a16", "w4a16-asym")),
                                    ASYM_ACT)
OTHER_SCHEMES: tuple[QuantScheme, ...] = tuple(s for s in PRESETS.values() if s not in SCHEMES)
"""The other presets (fp8, fp16, ternary, binary) run the rules that hold for every scheme: output vs the
reference, exact values (precision, input dtypes) and non-finite input."""
SHAPE = (16, 512, 64)
REJECT_SHAPE = (4, 128, 16)
LEADING_SHAPE = (6, 128, 16)
PRECISION_M = (1, 80)
"""A single row (GEMV paths) and more rows than split-K and small-M paths take."""
FLOAT_SHAPE = (16, 128, 64)
"""The float-quality thresholds of docs/numerics.md hold for the reference itself at this K (one int4
group of 128); at larger K the weight range grows and int8 weight-only falls below 43 dB even there."""


def _granularity(scheme: QuantScheme) -> str:
    w, a = scheme.weights, scheme.input_activations
    assert w is not None
    wg = f"group{w.group_size}" if w.granularity == "group" else w.granularity
    return f"w {wg}, a {a.granularity if a else 'float'}"


def _setup(env: Env, scheme: QuantScheme, shape: tuple[int, int, int]) -> tuple[LinearWeights, torch.Tensor, torch.Tensor]:
    """N(0,1) x, W, b; weights quantized by the oracle. Returns (weights, x, float x @ W.T + b in float64)."""
    m, k, n = shape
    gen = env.generator()
    x, w, b = torch.randn(m, k, generator=gen), torch.randn(n, k, generator=gen), torch.randn(n, generator=gen)
    return env.oracle.linear_weights(scheme, w, b, x), x, x.double() @ w.double().T + b.double()


def _sqnr_float(scheme: QuantScheme, threshold: float) -> Body:
    def body(env: Env) -> str:
        weights, x, exact = _setup(env, scheme, FLOAT_SHAPE)
        return f"{at_least_db('output vs float x @ W.T + b', exact, env.linear(weights, x), threshold):.2f} dB"
    return body


def _sqnr_reference(scheme: QuantScheme, shape: tuple[int, int, int]) -> Body:
    def body(env: Env) -> str:
        threshold = data.tolerances().linear_reference_sqnr_db
        weights, x, _ = _setup(env, scheme, shape)
        db = at_least_db("output vs reference linear", env.oracle.linear(weights, x), env.linear(weights, x), threshold)
        return f"{db:.2f} dB"
    return body


def _strides(scheme: QuantScheme) -> Body:
    def body(env: Env) -> None:
        weights, x, _ = _setup(env, scheme, SHAPE)
        want = env.linear(weights, x)
        for layout, view in layouts(x).items():
            equal(f"{layout} x vs contiguous x", want.cpu(), env.linear(weights, view))
        assert weights.weight is not None
        for layout, codes in layouts(weights.weight.codes).items():
            moved = LinearWeights(scheme, QTensor(codes, weights.weight.scale, weights.weight.zero_point,
                                                  weights.weight.spec), weights.bias, weights.act_scale,
                                  weights.act_zero_point)
            equal(f"{layout} weight codes vs contiguous", want.cpu(), env.linear(moved, x))
    return body


def _determinism(scheme: QuantScheme) -> Body:
    def body(env: Env) -> None:
        weights, x, _ = _setup(env, scheme, SHAPE)
        equal("second run vs first", env.linear(weights, x).cpu(), env.linear(weights, x))
    return body


def _unaligned(scheme: QuantScheme) -> tuple[tuple[int, int, int], ...]:
    w = scheme.weights
    assert w is not None
    if w.granularity == "group":
        assert w.group_size is not None
        return (17, w.group_size, 17), (3, 9 * w.group_size, 1025)
    return (17, 17, 17), (3, 1025, 17), (2, 5137, 5)


def _leading_dims(scheme: QuantScheme) -> Body:
    def body(env: Env) -> None:
        weights, x, _ = _setup(env, scheme, LEADING_SHAPE)
        m, k, n = LEADING_SHAPE
        want = env.linear(weights, x).cpu().reshape(2, m // 2, n)
        equal(f"(2, {m // 2}, {k}) input vs the ({m}, {k}) rows", want, env.linear(weights, x.reshape(2, m // 2, k)))
    return body


def _one_tile_k(scheme: QuantScheme) -> int:
    """One weight group, or 64 for per-channel weights: within a single K tile of any kernel (partial sums
    across tiles are the accumulation rule's business)."""
    w = scheme.weights
    assert w is not None
    return w.group_size if w.granularity == "group" and w.group_size else 64


def cases() -> Iterator[Case]:
    tol = data.tolerances()
    for scheme in (*SCHEMES, *OTHER_SCHEMES):
        g = _granularity(scheme)

        def case(rule: str, body: Body, shape: tuple[int, int, int] = SHAPE) -> Case:
            return Case("linear", scheme.name, g, rule, body, shape, scheme=scheme)

        yield case(f"sqnr vs reference >= {tol.linear_reference_sqnr_db:g} dB", _sqnr_reference(scheme, SHAPE))
        k = _one_tile_k(scheme)
        for m in PRECISION_M:
            yield case(f"precision M={m}", exact_cases.precision(scheme, (m, k, 16)), (m, k, 16))
        yield case("input dtypes", exact_cases.input_dtypes(scheme, (4, k, 16)), (4, k, 16))
        yield case("non-finite", rejects.nonfinite_linear(scheme, REJECT_SHAPE), REJECT_SHAPE)
        if scheme in OTHER_SCHEMES:
            continue

        threshold = tol.linear_float_sqnr_db.get(scheme.name)
        if threshold is not None:
            yield case(f"sqnr vs float >= {threshold:g} dB", _sqnr_float(scheme, threshold))
        for shape in _unaligned(scheme):
            yield case("unaligned " + "x".join(map(str, shape)), _sqnr_reference(scheme, shape), shape)
        w = scheme.weights
        assert w is not None
        for k in tol.accumulation_k:
            if w.granularity != "group" or k % (w.group_size or 1) == 0:
                yield case(f"accumulation K={k}", exact_cases.accumulation(scheme, k), (2, k, 3))
        if w.granularity == "group":
            ragged = (REJECT_SHAPE[0], rejects.ragged_last_axis(w), REJECT_SHAPE[2])
            yield case("group does not divide", rejects.ragged_prepare(scheme, ragged), ragged)
        yield case("strides", _strides(scheme))
        yield case("leading dims", _leading_dims(scheme), LEADING_SHAPE)
        yield case("determinism", _determinism(scheme))
