"""Inputs the contract says a kernel must refuse: NaN/±Inf (`NonFiniteError`) and group sizes that do not
divide the last axis (`ShapeError`), for `quantize` and for `linear` (its input, and its `prepare`).

A kernel that computes something anyway has broken the rule even if the
numbers look plausible: the caller could not tell a padded or NaN-laden
result from a real one.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs
import torch

from qcore.errors import NonFiniteError, ShapeError
from qcore.kernels import QTensor
from qcore.spec import QuantScheme, QuantSpec
from qcore.testing import data
from qcore.testing.case import Body, Env
from qcore.testing.checks import Mismatch
from qcore.testing.tensors import spread

NONFINITE_AT = (1, 2, 3)
"""Where the non-finite value is planted in a quantize input (a linear input uses its first two indices)."""


def rejected(what: str, error: type[Exception], call: Callable[[], object], index: tuple[int, ...],
             got: Callable[[object], object], names_index: bool = False) -> None:
    """`call()` raises `error` (whose message contains `index` when `names_index`); any other exception, or a
    result, is a Mismatch (`got` describes the result)."""
    try:
        result = call()
    except error as exc:
        if names_index and str(index) not in str(exc):
            raise Mismatch(f"{what}: the {error.__name__} message {str(exc)!r} does not name the first "
                           f"non-finite index {index}") from None
        return
    except Exception as exc:
        raise Mismatch(f"{what}: raised {type(exc).__name__}: {exc}, expected {error.__name__}") from None
    raise Mismatch(f"{what} was not rejected with {error.__name__}", index, error.__name__, got(result))


def _code_at(index: tuple[int, ...]) -> Callable[[object], object]:
    def describe(q: object) -> object:
        return f"code {q.codes.detach().cpu()[index].item()}" if isinstance(q, QTensor) else f"a {type(q).__name__}"
    return describe


def _output_row(row: int) -> Callable[[object], object]:
    def describe(out: object) -> object:
        if not isinstance(out, torch.Tensor):
            return f"a {type(out).__name__}"
        values = out.detach().cpu().reshape(-1, out.shape[-1])[row, :3].tolist() if out.ndim else out.item()
        return f"output row {row} starting {values}"
    return describe


def nonfinite_quantize(spec: QuantSpec, shape: tuple[int, ...]) -> Body:
    """NaN, +Inf and -Inf, each planted alone in otherwise finite data; the error names the index."""
    def body(env: Env) -> None:
        for value in data.vectors()["nonfinite"].tolist():
            x = spread(env.generator(), shape)
            x[NONFINITE_AT] = value
            rejected(f"{value} in the input", NonFiniteError, lambda: env.quantize(x, spec), NONFINITE_AT,
                     _code_at(NONFINITE_AT), names_index=True)
    return body


def nonfinite_linear(scheme: QuantScheme, shape: tuple[int, int, int]) -> Body:
    """NaN, +Inf and -Inf in x, each alone, weight-only schemes included; static qparams calibrated on finite x."""
    def body(env: Env) -> None:
        m, k, n = shape
        gen = env.generator()
        x, w = torch.randn(m, k, generator=gen), torch.randn(n, k, generator=gen)
        prepared = env.prepare(env.oracle.linear_weights(scheme, w, torch.randn(n, generator=gen), x))
        at = NONFINITE_AT[:2]
        for value in data.vectors()["nonfinite"].tolist():
            bad = x.clone()
            bad[at] = value
            rejected(f"{value} in the linear input", NonFiniteError, lambda: env.run(prepared, bad), at,
                     _output_row(at[0]), names_index=True)
    return body


def ragged_last_axis(spec: QuantSpec) -> int:
    """A last axis one and a half groups long: the group size does not divide it."""
    assert spec.group_size is not None
    return spec.group_size + max(1, spec.group_size // 2)


def ragged_quantize(spec: QuantSpec, shape: tuple[int, ...]) -> Body:
    """Computed qparams, and given ones in the (*S[:-1], ceil(S[-1] / g)) shape a ragged kernel would take."""
    def body(env: Env) -> None:
        x = spread(env.generator(), shape)
        at = tuple(n - 1 for n in shape)
        what = f"group_size {spec.group_size} with last axis {shape[-1]}"
        rejected(what, ShapeError, lambda: env.quantize(x, spec), at, _code_at(at))
        g = spec.group_size
        assert g is not None
        scale = torch.ones(*shape[:-1], -(-shape[-1] // g))
        zero_point = torch.zeros(scale.shape, dtype=torch.int32)
        rejected(f"{what}, given {tuple(scale.shape)} qparams", ShapeError,
                 lambda: env.quantize(x, spec, scale, zero_point), at, _code_at(at))
    return body


def ragged_prepare(scheme: QuantScheme, shape: tuple[int, int, int]) -> Body:
    """`prepare` of weights whose in_features the weight group size does not divide (qparams ceil(K / g) wide)."""
    def body(env: Env) -> None:
        _, k, n = shape
        spec = scheme.weights
        assert spec is not None and spec.group_size is not None
        g = spec.group_size
        gen = env.generator()
        x, w = torch.randn(shape[0], k, generator=gen), torch.randn(n, -(-k // g) * g, generator=gen)
        padded = env.oracle.linear_weights(scheme, w, None, x)
        assert padded.weight is not None
        q = padded.weight
        weights = attrs.evolve(padded, weight=QTensor(q.codes[:, :k].contiguous(), q.scale, q.zero_point, spec))
        rejected(f"prepare of group_size {g} weights with in_features {k}", ShapeError,
                 lambda: env.prepare(weights), (n - 1, k - 1), lambda p: f"prepared {type(p).__name__}")
    return body
