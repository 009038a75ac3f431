"""Cases for `linear` with exact expected values on constructed inputs, held to the declared accumulation.

The expected output is the contract's linear computed in float64 from the
oracle's quantized operands: ``A @ deq(Wq).T + b`` with A the dequantized
activation codes (or x itself for weight-only schemes). A kernel may differ
from it by ``rel * (|A| @ |deq(Wq)|.T + |b|)`` element by element, `rel` set by
the kernel's `KernelImpl.accumulation` (``accumulation.rel`` in
tolerances.yaml). Unlike an SQNR threshold this bound does not average a
defect away: a kernel that rounds products, activations, scales or partial
sums to 16 bits is off by far more than a float32 kernel may be.

- **accumulation**: every weight code on its range edge, activations ±1 and
  then at the largest power of two that keeps every partial sum finite in
  float32, K up to 65536: int16 sums saturate, fp16 partial sums or inputs
  overflow, int32 sums must be exact.
- **precision**: a few rows of full-mantissa operands (random weight scales,
  activations that quantize to known codes far from any tie, or N(0,1)
  float activations) at K of one or two groups: rounding any operand,
  product or scale to fp16/bf16/tf32 shows, while a float32 kernel's
  rounding does not.
"""

from __future__ import annotations

import math

import torch

from qcore.kernels import LinearWeights, QTensor
from qcore.layout import qparam_shape
from qcore.spec import QuantScheme, QuantSpec
from qcore.testing import data
from qcore.testing.case import Body, Env
from qcore.testing.checks import within
from qcore.testing.tensors import per_element

FMAX32 = torch.finfo(torch.float32).max


def contract_linear(env: Env, weights: LinearWeights, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(exact float64 output, |A| @ |deq(W)|.T + |b|) for `x` (M, K), from the oracle's quantized operands."""
    act = weights.scheme.input_activations
    assert weights.weight is not None
    if act is None:
        a = x.double()
    else:
        a = env.oracle.dequantize(env.oracle.quantize(x, act, weights.act_scale, weights.act_zero_point)).double()
    w = env.oracle.dequantize(weights.weight).double()
    bias = torch.zeros(w.shape[0], dtype=torch.float64) if weights.bias is None else weights.bias.double()
    return a @ w.T + bias, a.abs() @ w.abs().T + bias.abs()


def held_to_accumulation(env: Env, what: str, weights: LinearWeights, x: torch.Tensor) -> None:
    """The kernel's output on `x` is within its declared accumulation's bound of the exact result."""
    exact, size = contract_linear(env, weights, x)
    kind = env.kernel.accumulation
    rel = data.tolerances().accumulation_rel[kind]
    within(f"{what} vs the exact result ({kind} accumulation: bound {rel:.3g} x sum |products|)",
           exact, env.linear(weights, x), rel * size)


def _zero_code(spec: QuantSpec) -> int:
    """The code of 0.0 when the range is centred: 0 where qmin < 0, the midpoint of an unsigned range."""
    qmin, qmax = spec.qrange
    return 0 if qmin < 0 else (qmin + qmax + 1) // 2


def edge_weights(spec: QuantSpec, k: int) -> torch.Tensor:
    """(3, K) weights of values (qmin - z) / 2 and (qmax - z) / 2 only, z the centred zero code, in every channel
    and group: codes on both range edges, scale 1/2 and zero-point z exactly, so every product with ±1 and every
    partial sum up to K = 65536 is exact in float32 (whatever the order of summation)."""
    qmin, qmax = spec.qrange
    lo, hi = (qmin - _zero_code(spec)) / 2, (qmax - _zero_code(spec)) / 2
    i = torch.arange(k)
    return torch.stack([torch.where(i % 2 == 0, hi, lo), torch.where(i % 4 < 2, hi, lo), torch.where(i % 2 == 1, hi, lo)])


def edge_inputs(scheme: QuantScheme, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, W) whose codes sit on the range edges: ±127 (sym), -128 and 127 (asym activations), 0 and 15 (uint4).

    Quantized activations: x and W of ±1 (codes ±127, or -128 .. 127 minus a zero-point of 127: products of
    255 x 127, which int16 pair sums cannot hold). Weight-only: ±1 activations times `edge_weights`.
    """
    act, spec = scheme.input_activations, scheme.weights
    assert spec is not None
    alternating = 1.0 - 2.0 * (torch.arange(k) % 2).float()
    ones = torch.ones(k)
    if act is None:
        return torch.stack([ones, alternating]), edge_weights(spec, k)
    x = torch.stack([-ones, ones]) if not act.symmetric else torch.stack([ones, alternating])
    return x, torch.stack([ones, alternating, -ones])


def largest_magnitude(weight: QTensor, deq: torch.Tensor) -> float:
    """The largest power of two by which ±1 activations can be scaled so that every sum of |products| stays
    below a quarter of float32's largest value, with the weights dequantized or as codes (a kernel may apply
    the scales after summing code products)."""
    codes = (weight.codes.double() - per_element(weight.zero_point.double(), weight.spec, tuple(weight.shape)))
    widest = max(float(deq.double().abs().sum(-1).max()), float(codes.abs().sum(-1).max()))
    return math.ldexp(1.0, math.floor(math.log2(FMAX32 / 4 / widest)))


def accumulation(scheme: QuantScheme, k: int) -> Body:
    def body(env: Env) -> None:
        x, w = edge_inputs(scheme, k)
        assert scheme.weights is not None
        q = env.oracle.quantize(w, scheme.weights)
        for magnitude in (1.0, largest_magnitude(q, env.oracle.dequantize(q))):
            scaled = x * magnitude
            weights = env.oracle.linear_weights(scheme, w, None, scaled)
            held_to_accumulation(env, f"K={k}, edge codes, activations ±{magnitude:g}", weights, scaled)
    return body


def known_code_activations(spec: QuantSpec, m: int, k: int, gen: torch.Generator, *, exact: bool = False
                           ) -> torch.Tensor:
    """x = (c - z) * s: random codes c with both range edges in every row (and group), z the centred zero code,
    scales s in the spec's qparam shape: full-mantissa (`exact`: 2^-7, so x is exact in bf16 and fp16).
    x / scale lands within a few float32 ulps of an integer, far from any tie, so a kernel computing the
    quotient in float32 gets the contract's codes."""
    qmin, qmax = spec.qrange
    codes = torch.randint(qmin, qmax + 1, (m, k), generator=gen)
    sets = codes.view(m, -1, spec.group_size if spec.granularity == "group" else k)
    sets[..., 0], sets[..., 1] = qmin, qmax
    shape = qparam_shape(spec, (m, k))
    s = torch.full(shape, 2.0**-7) if exact else (1.0 + torch.rand(shape, generator=gen)) * 2.0**-7
    return ((codes - _zero_code(spec)).double() * per_element(s.double(), spec, (m, k))).float()


def activations(scheme: QuantScheme, m: int, k: int, gen: torch.Generator, *, exact: bool = False) -> torch.Tensor:
    """Known-code activations for integer activation specs, N(0,1) otherwise (float or float-format)."""
    act = scheme.input_activations
    if act is None or act.info.kind != "int" or act.dtype == "binary":
        x = torch.randn(m, k, generator=gen)
        return x.bfloat16().float() if exact else x
    return known_code_activations(act, m, k, gen, exact=exact)


def calibration(scheme: QuantScheme, x: torch.Tensor) -> torch.Tensor:
    """What static activation qparams are calibrated on: x / 2, so the codes of x saturate at the edges and a
    kernel that computes qparams from x instead of using the calibrated ones is off by far."""
    act = scheme.input_activations
    return x / 2 if act is not None and act.info.scaled and not act.dynamic else x


def precision(scheme: QuantScheme, shape: tuple[int, int, int]) -> Body:
    def body(env: Env) -> None:
        m, k, n = shape
        gen = env.generator()
        x = activations(scheme, m, k, gen)
        w, b = torch.randn(n, k, generator=gen), torch.randn(n, generator=gen)
        weights = env.oracle.linear_weights(scheme, w, b, calibration(scheme, x))
        held_to_accumulation(env, f"{m}x{k}x{n} full-mantissa operands", weights, x)
    return body


def input_dtypes(scheme: QuantScheme, shape: tuple[int, int, int]) -> Body:
    """float16 and bfloat16 inputs are read as their float32 values: the output for x.half() is the output for
    x.half().float(), within the declared accumulation's bound (so a kernel's own rounding cancels out)."""
    def body(env: Env) -> None:
        m, k, n = shape
        gen = env.generator()
        x = activations(scheme, m, k, gen, exact=True)
        w, b = torch.randn(n, k, generator=gen), torch.randn(n, generator=gen)
        kind = env.kernel.accumulation
        rel = data.tolerances().accumulation_rel[kind]
        for dtype in (torch.float16, torch.bfloat16):
            given = x.to(dtype)
            weights = env.oracle.linear_weights(scheme, w, b, calibration(scheme, given.float()))
            as_float = env.linear(weights, given.float()).cpu().double()
            _, size = contract_linear(env, weights, given.float())
            within(f"{str(dtype).removeprefix('torch.')} input vs its float32 values ({kind} accumulation: bound "
                   f"{rel:.3g} x sum |products|)", as_float, env.linear(weights, given), rel * size)
    return body
