"""Fake quantization for quantization-aware training (QAT).

`fake_quantize` computes exactly ``dequantize(quantize(x))`` of the numerics
contract (docs/numerics.md) with differentiable-friendly torch ops, so a model
trained with `FakeQuantLinear` sees the very values its converted
`QuantLinear` will compute with. Gradients use the straight-through
estimator, as torch.ao's FakeQuantize: identity where the value falls inside
the representable range, zero where it was clamped.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from qcore.errors import NonFiniteError, QcoreError
from qcore.layout import grouped
from qcore.qparams import check_finite, expand, minmax_qparams, qparams_from_range, reduce_minmax
from qcore.spec import QuantScheme, QuantSpec


def qparams_of(x: torch.Tensor, spec: QuantSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """Min-max (scale, zero_point) of `x` for `spec`, the contract's dynamic qparams."""
    return minmax_qparams(x.detach().float(), spec)


def fake_quantize_with_mask(
    x: torch.Tensor, spec: QuantSpec, scale: torch.Tensor | None = None, zero_point: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(dequantize(quantize(x)), mask of the values not clamped); both shaped like `x`, no gradient."""
    x = x.detach().float()
    info = spec.info
    if not info.scaled:
        torch_dtype = getattr(torch, info.torch_dtype)
        return x.clamp(-info.fmax, info.fmax).to(torch_dtype).float(), x.abs() <= info.fmax
    if scale is None:
        scale, zero_point = qparams_of(x, spec)
    assert zero_point is not None
    view = grouped(x, spec) if spec.granularity == "group" else x
    s32 = expand(scale.to(x.device, torch.float32), spec, view.shape)
    s64 = s32.double()
    if spec.dtype == "binary":
        out = torch.where(view >= 0, s64, -s64).float()
        mask = torch.ones_like(view, dtype=torch.bool)
    elif info.is_float:
        v = (view.double() / s64).float()
        mask = v.abs() <= info.fmax
        code = v.clamp(-info.fmax, info.fmax).to(getattr(torch, info.torch_dtype))
        out = code.float() * s32
    else:
        qmin, qmax = spec.qrange
        z = expand(zero_point.to(x.device, torch.float64), spec, view.shape)
        r = torch.round(view.double() / s64) + z
        mask = (r >= qmin) & (r <= qmax)
        out = ((r.clamp(qmin, qmax) - z) * s64).float()
    return out.reshape(x.shape), mask.reshape(x.shape)


class _FakeQuant(torch.autograd.Function):
    """Straight-through estimator: the forward rounds, the backward passes gradients inside the range."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, spec: QuantSpec, scale: torch.Tensor | None,
                zero_point: torch.Tensor | None) -> torch.Tensor:
        out, mask = fake_quantize_with_mask(x, spec, scale, zero_point)
        ctx.save_for_backward(mask)
        return out.to(x.dtype)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None, None]:
        (mask,) = ctx.saved_tensors
        return grad * mask, None, None, None


def fake_quantize(x: torch.Tensor, spec: QuantSpec, scale: torch.Tensor | None = None,
                  zero_point: torch.Tensor | None = None) -> torch.Tensor:
    """Differentiable ``dequantize(quantize(x, spec, scale, zero_point))`` (qparams from `x` when scale is None)."""
    return _FakeQuant.apply(x, spec, scale, zero_point)


class FakeQuantLinear(nn.Linear):
    """An nn.Linear whose weights and input activations are fake-quantized per its scheme.

    It keeps the original float `weight`/`bias` Parameters (an optimizer built
    before or after `prepare_qat` trains the same tensors). Static activation
    specs track a running min/max of the inputs seen in training mode; those
    ranges become the activation qparams at `convert`.
    """

    def __init__(self, name: str, linear: nn.Linear, scheme: QuantScheme, backend: str = "auto") -> None:
        nn.Module.__init__(self)
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight, self.bias = linear.weight, linear.bias
        self.name, self.scheme, self.backend = name, scheme, backend
        self.tokens = 1
        act = scheme.input_activations
        if act is not None and scheme.needs_calibration and act.granularity != "tensor":
            raise QcoreError(f"layer {name!r}: QAT supports static activations per tensor only, not {act.describe()}")
        self.register_buffer("act_min", torch.tensor(float("inf")))
        self.register_buffer("act_max", torch.tensor(float("-inf")))

    @property
    def observed(self) -> bool:
        return bool(self.act_min <= self.act_max)

    def act_qparams(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The static activation (scale, zero_point) from the observed range; None for other schemes."""
        act = self.scheme.input_activations
        if act is None or not self.scheme.needs_calibration:
            return None
        if not self.observed:
            raise QcoreError(
                f"layer {self.name!r}: static activations of scheme {self.scheme.name!r} have no observed range; "
                "run the model in training mode on some data first"
            )
        return qparams_from_range(self.act_min, self.act_max, act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        try:
            check_finite(x, "input")
        except NonFiniteError as exc:
            raise NonFiniteError(f"layer {self.name!r}: {exc}") from None
        self.tokens = max(1, x.numel() // max(1, x.shape[-1]))
        act = self.scheme.input_activations
        if act is not None:
            if self.scheme.needs_calibration:
                if self.training:
                    lo, hi = reduce_minmax(x.detach().float(), act)
                    self.act_min.copy_(torch.minimum(self.act_min, lo))
                    self.act_max.copy_(torch.maximum(self.act_max, hi))
                scale, zero_point = self.act_qparams()  # type: ignore[misc]
                x = fake_quantize(x, act, scale, zero_point)
            else:
                x = fake_quantize(x, act)
        w = self.weight if self.scheme.weights is None else fake_quantize(self.weight, self.scheme.weights)
        return nn.functional.linear(x, w, self.bias)

    def to_float(self) -> nn.Linear:
        """A plain nn.Linear sharing this layer's Parameters (for layers left float at convert)."""
        linear = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None, device="meta")
        linear.weight, linear.bias = self.weight, self.bias
        return linear

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, scheme={self.scheme.name}"
