"""What a linear kernel does to its input: row layout, finiteness, and the activation spec.

`ActivationQuant` is built once in `prepare` (static qparams resolved there) so
that the per-call work is only the quantization the scheme itself demands.
"""

from __future__ import annotations

import attrs
import torch

from qcore.errors import ShapeError, SpecError
from qcore.kernels import LinearWeights, QTensor, linear_rows
from qcore.qparams import expand, qparams_from_range, reduce_minmax
from qcore.spec import QuantSpec
from qcore_torch_fallback.codes import dequantize, quantize


def as_rows(x: torch.Tensor, k: int) -> torch.Tensor:
    """`x` (..., K) as a finite, contiguous float32 (M, K) matrix (elementwise ops keep a view's strides)."""
    return linear_rows(x, k)


def finish(y: torch.Tensor, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """Add the bias and give `y` (M, N) the leading shape of `x`."""
    if bias is not None:
        y = y + bias
    return y.reshape(*x.shape[:-1], y.shape[-1])


def bf16_pair(rows: torch.Tensor) -> torch.Tensor:
    """(2M, K) bf16: the rounded rows, then their rounding errors; the two sum to x within 2^-16 relative.

    Kernels that only take bf16 activations multiply both halves and add them
    (`fold_pair`), so float activations keep 16 significant bits, not 8.
    """
    hi = rows.to(torch.bfloat16)
    return torch.cat([hi, (rows - hi.to(torch.float32)).to(torch.bfloat16)])


def fold_pair(y: torch.Tensor) -> torch.Tensor:
    """Sum the two halves of a product of `bf16_pair` rows, in float32."""
    y = y.to(torch.float32)
    m = y.shape[0] // 2
    return y[:m] + y[m:]


@attrs.frozen(eq=False)
class ActivationQuant:
    """The scheme's activation spec with its static qparams, if any (None spec: float activations)."""

    spec: QuantSpec | None
    scale: torch.Tensor | None = None
    zero_point: torch.Tensor | None = None

    @classmethod
    def of(cls, w: LinearWeights, device: torch.device) -> ActivationQuant:
        spec = w.scheme.input_activations
        if spec is None or spec.dynamic or not spec.info.scaled:
            return cls(spec)
        if w.act_scale is None:
            raise SpecError(
                f"scheme {w.scheme.name!r}: static activations ({spec.describe()}) need calibrated act_scale"
            )
        if spec.granularity != "tensor":
            raise ShapeError(f"static activation qparams must be per tensor, not {spec.granularity}")
        zp = w.act_zero_point if w.act_zero_point is not None else torch.zeros((), dtype=torch.int32)
        return cls(spec, w.act_scale.to(device, torch.float32).reshape(()), zp.to(device, torch.int32).reshape(()))

    def _float_codes(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(q, scale, zero_point) for finite (M, K) rows: q the codes held in float32.

        The qparams are the contract's exactly (`qcore.qparams`, float64 on the
        reduced tensors); the codes come from a float32 quotient, so they can be
        one code off the reference only where that quotient lands on a tie the
        exact one misses. Linear kernels are held to SQNR against the reference,
        not to codes, and the float64 `quantize` op costs more than the GEMM. The
        activations are large, so after the quotient everything works in place.
        """
        spec = self.spec
        assert spec is not None
        scale, zero_point = self.scale, self.zero_point
        if scale is None:
            scale, zero_point = qparams_from_range(*reduce_minmax(rows, spec), spec)
        q = rows / expand(scale, spec, rows.shape)
        if spec.info.is_float:
            return q.clamp_(-spec.info.fmax, spec.info.fmax), scale, zero_point
        q.round_()
        if not spec.symmetric:
            q.add_(expand(zero_point, spec, rows.shape))
        return q.clamp_(*spec.qrange), scale, zero_point

    def _exact_path(self) -> bool:
        """Group-wise and cast-only specs go through the `quantize` op itself."""
        assert self.spec is not None
        return self.spec.granularity == "group" or not self.spec.info.scaled

    def quantize(self, rows: torch.Tensor) -> QTensor:
        assert self.spec is not None
        if self._exact_path():
            return quantize(rows, self.spec, self.scale, self.zero_point)
        q, scale, zero_point = self._float_codes(rows)
        return QTensor(q.to(getattr(torch, self.spec.info.torch_dtype)), scale, zero_point, self.spec)

    def fake_quant(self, rows: torch.Tensor) -> torch.Tensor:
        """A = dequantize(quantize(x)): what the reference multiplies."""
        if self.spec is None:
            return rows
        if self._exact_path():
            return dequantize(self.quantize(rows))
        q, scale, zero_point = self._float_codes(rows)
        if self.spec.info.is_float:
            q = q.to(getattr(torch, self.spec.info.torch_dtype)).to(torch.float32)
        elif not self.spec.symmetric:
            q.sub_(expand(zero_point, self.spec, rows.shape))
        return q.mul_(expand(scale, self.spec, rows.shape))

    def codes(self, rows: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(C, r) with A = C * r exactly: C the zero-point-free codes in `dtype`, r the (M, 1) or () scale."""
        assert self.spec is not None
        if not self.spec.info.scaled:
            return self.quantize(rows).codes.to(dtype), None
        if self.spec.granularity == "group":
            raise ShapeError("group-wise activation scales cannot be applied after the GEMM")
        q, scale, zero_point = self._float_codes(rows)
        if self.spec.info.is_float:
            q = q.to(getattr(torch, self.spec.info.torch_dtype))
        elif not self.spec.symmetric:
            q.sub_(expand(zero_point, self.spec, rows.shape))
        return q.to(dtype), expand(scale, self.spec, rows.shape)
