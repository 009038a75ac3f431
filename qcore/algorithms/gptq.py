"""GPTQ (Frantar et al. 2022, arXiv:2210.17323) as a pure function on one (N, K) weight.

GPTQ quantizes a weight column by column and feeds each column's rounding
error, weighted by the inverse Hessian of the layer's reconstruction loss,
into the columns not yet quantized, so the *output* error ||X W^T - X Q^T||
is smaller than round-to-nearest's. The codes and qparams still follow the
numerics contract (docs/numerics.md): only which integer each weight rounds
to, and the group ranges seen when a group's qparams are computed, differ.
"""

from __future__ import annotations

import attrs
import torch

from qcore.algorithm import AlgorithmContext, AlgorithmImpl, Collector, LayerWork
from qcore.errors import QcoreError, ShapeError, SpecError
from qcore.kernels import YES, QTensor, Support, no
from qcore.layout import canonical_axis
from qcore.qparams import check_finite, minmax_qparams, qparams_from_range
from qcore.spec import QuantSpec


class HessianAccumulator(Collector):
    """H = 2/n · Σ xᵀx over the inputs of one Linear, as the reference GPTQ defines it.

    The sum and the row count are kept apart (float64), so partial sums from
    several processes add up exactly as one would have collected them, and
    the relative damping in `gptq_quantize` means the same for any amount of
    data.
    """

    def __init__(self, in_features: int) -> None:
        if in_features <= 0:
            raise ShapeError(f"in_features must be positive, got {in_features}")
        self.sum = torch.zeros(in_features, in_features, dtype=torch.float64)
        self.samples = 0

    def observe(self, x: torch.Tensor) -> None:
        """Add activations x (..., K); every leading dimension counts as rows."""
        k = self.sum.shape[0]
        if x.ndim == 0 or x.shape[-1] != k:
            raise ShapeError(f"activations of shape {tuple(x.shape)} do not end in in_features={k}")
        check_finite(x, "GPTQ calibration activations")
        rows = x.detach().reshape(-1, k).to(device="cpu", dtype=torch.float64)
        self.sum += rows.T @ rows
        self.samples += rows.shape[0]

    def rescaled(self, m: torch.Tensor) -> HessianAccumulator:
        """The Hessian of x·m: diag(m) H diag(m)."""
        m64 = m.detach().to(device="cpu", dtype=torch.float64)
        out = HessianAccumulator(self.sum.shape[0])
        out.sum = self.sum * m64[:, None] * m64[None, :]
        out.samples = self.samples
        return out

    @property
    def hessian(self) -> torch.Tensor:
        """(K, K) float64, 2/n Σ xᵀx (zeros before any sample); a fresh tensor, so callers may modify it."""
        return self.sum * (2.0 / self.samples) if self.samples else torch.zeros_like(self.sum)


def gptq_quantize(
    weight: torch.Tensor,
    hessian: torch.Tensor,
    spec: QuantSpec,
    *,
    damp: float = 0.01,
    block_size: int = 128,
    act_order: bool = False,
) -> QTensor:
    """Quantize an (N, K) weight with GPTQ (lazy batch updates); float64 on CPU.

    - `hessian`: (K, K), e.g. `HessianAccumulator.hessian`. Columns whose diagonal
      is 0 never saw a non-zero input: their weights are zeroed (they cannot
      affect the output) and their diagonal set to 1, as the reference does.
    - `damp`: `damp * mean(diag H)` is added to the diagonal so the Cholesky
      factorisation succeeds on rank-deficient Hessians.
    - `block_size`: columns per lazy batch; rounded up to a multiple of the group
      size so a group's qparams are computed from fully error-updated weights.
      It changes speed (and float rounding), not the algorithm.
    - `act_order`: quantize columns in order of decreasing Hessian diagonal (the
      inputs with the most energy first, while most columns are still free to
      absorb their error). Group qparams are then fixed up front from the
      original weights ("static groups"), so the groups stay the contiguous
      ones of the numerics contract and every backend runs the result.

    Channel qparams (axis 0) come from the original rows; without act-order,
    group qparams come from the min/max of the group's current weights when
    its first column is reached.
    """
    if weight.ndim != 2:
        raise ShapeError(f"GPTQ quantizes an (N, K) weight, got shape {tuple(weight.shape)}")
    support = supports(spec)
    if not support:
        raise SpecError(support.reason)
    n, k = weight.shape
    if tuple(hessian.shape) != (k, k):
        raise ShapeError(
            f"hessian of shape {tuple(hessian.shape)} does not match weight (N={n}, K={k}): need ({k}, {k})"
        )
    g = spec.group_size if spec.granularity == "group" else None
    if g is not None and k % g:
        raise ShapeError(f"group_size {g} does not divide in_features {k} (weight shape {tuple(weight.shape)})")
    if not damp >= 0:
        raise ValueError(f"damp must be >= 0, got {damp!r}")
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size!r}")
    check_finite(weight, "GPTQ weight")
    check_finite(hessian, "GPTQ hessian")

    w32 = weight.detach().to(device="cpu", dtype=torch.float32)  # the contract's input conversion
    w = w32.to(torch.float64)
    h = hessian.detach().to(device="cpu", dtype=torch.float64).clone()
    qmin, qmax = spec.qrange

    static = g is None or act_order
    if static:
        scale, zero_point = minmax_qparams(w32, spec)
        step = block_size
    else:
        scale = torch.empty(n, k // g, dtype=torch.float32)
        zero_point = torch.empty(n, k // g, dtype=torch.int32)
        step = -(-block_size // g) * g

    dead = torch.diagonal(h) == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    order = torch.argsort(torch.diagonal(h), descending=True, stable=True) if act_order else torch.arange(k)
    w, h = w[:, order], h[order][:, order]
    group_of = order // g if g is not None else None
    h.diagonal().add_(damp * float(torch.diagonal(h).mean()))
    hinv = _upper_cholesky_of_inverse(h)

    codes = torch.empty(n, k, dtype=torch.int64)
    for i1 in range(0, k, step):
        i2 = min(i1 + step, k)
        block = w[:, i1:i2].clone()
        errors = torch.zeros_like(block)
        hinv_block = hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            col = i1 + i
            if g is None:
                s, z = scale, zero_point
            elif static:
                assert group_of is not None
                s, z = scale[:, group_of[col]], zero_point[:, group_of[col]]
            else:
                if col % g == 0:
                    lo, hi = block[:, i : i + g].amin(dim=1), block[:, i : i + g].amax(dim=1)
                    scale[:, col // g], zero_point[:, col // g] = qparams_from_range(lo, hi, spec)
                s, z = scale[:, col // g], zero_point[:, col // g]
            s64, z64 = s.to(torch.float64), z.to(torch.int64)
            q = torch.clamp(torch.round(block[:, i] / s64).to(torch.int64) + z64, qmin, qmax)
            codes[:, col] = q
            # What every backend will dequantize to (float32, one rounding).
            deq = ((q - z64).to(torch.float64) * s64).to(torch.float32).to(torch.float64)
            err = (block[:, i] - deq) / hinv_block[i, i]
            block[:, i:] -= err.unsqueeze(1) * hinv_block[i, i:].unsqueeze(0)
            errors[:, i] = err
        w[:, i2:] -= errors @ hinv[i1:i2, i2:]

    codes = codes[:, torch.argsort(order)]
    return QTensor(codes.to(getattr(torch, spec.info.torch_dtype)), scale, zero_point, spec)


def supports(spec: QuantSpec | None) -> Support:
    """Whether GPTQ can quantize weights of `spec`: the one answer, used by the recipe's layers and the function."""
    if spec is None:
        return no("the scheme leaves weights in float")
    if spec.info.kind != "int" or spec.dtype in ("binary", "ternary") or spec.granularity not in ("channel", "group"):
        return no(f"GPTQ quantizes integer channel/group weights (int8, uint8, int4, uint4), not {spec.describe()}")
    if spec.granularity == "channel" and canonical_axis(spec, 2) != 0:
        return no(f"GPTQ needs per-output-channel scales (axis 0 of the (N, K) weight), got {spec.describe()}")
    return YES


def _upper_cholesky_of_inverse(h: torch.Tensor) -> torch.Tensor:
    """Upper Cholesky factor of H⁻¹: its rows give each column's error-feedback weights."""
    lower, info = torch.linalg.cholesky_ex(h)
    if int(info) == 0:
        upper, info = torch.linalg.cholesky_ex(torch.cholesky_inverse(lower), upper=True)
    if int(info) != 0:
        raise QcoreError("GPTQ: the damped Hessian is not positive definite; increase damp (e.g. 0.1)")
    return upper


@attrs.frozen
class GptqOptions:
    damp: float = attrs.field(default=0.01, validator=[attrs.validators.ge(0.0), attrs.validators.lt(1.0)],
                              metadata={"help": "fraction of the mean Hessian diagonal added to it"})
    block_size: int = attrs.field(default=128, validator=attrs.validators.gt(0),
                                  metadata={"help": "columns per lazy-update block (speed, not the result)"})
    act_order: bool = attrs.field(default=False, metadata={
        "help": "columns by decreasing Hessian diagonal, group qparams fixed from the original weights"})


def _applies(_options: GptqOptions, layer: LayerWork) -> Support:
    return supports(layer.scheme.weights)


def _collector(_options: GptqOptions, layer: LayerWork) -> HessianAccumulator:
    return HessianAccumulator(layer.in_features)


def _run(ctx: AlgorithmContext) -> None:
    options: GptqOptions = ctx.options
    with ctx.progress("quantizing", len(ctx.layers)) as advance:
        for layer in ctx.layers:
            spec = layer.scheme.weights
            assert spec is not None
            stats = ctx.stats(layer)
            layer.qweight = gptq_quantize(layer.weight, stats.hessian, spec, damp=options.damp,
                                          block_size=options.block_size, act_order=options.act_order)
            ctx.note(layer, f"{stats.samples} calibration rows")
            advance(1)


def algorithm() -> AlgorithmImpl:
    return AlgorithmImpl(
        "gptq", GptqOptions, applies=_applies, run=_run, kind="quantize", collector=_collector,
        description="GPTQ (Frantar et al. 2022): error-feedback rounding of integer channel/group weights, "
                    "driven by each layer's input Hessian")
