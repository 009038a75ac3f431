"""One kernel: int8 weight-only linear (per-output-channel symmetric weights, float activations).

`prepare` dequantizes the weight once per layer exactly as the contract says,
``float32((q - zero_point) * scale)``; the forward pass checks its input with
qcore's public check and is one float32 matmul.
Importing this module is cheap and touches no device: qcore may import it
just to list backends.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

import qcore
from qcore import KernelImpl, KernelRequest, LinearWeights, Support
from qcore.kernels import linear_rows

BACKEND = "example"


def supports(request: KernelRequest, hardware: object) -> Support:
    """Yes for int8 symmetric per-channel (axis 0) weights with float activations; otherwise say why."""
    scheme = request.scheme
    assert scheme is not None  # linear requests always carry a scheme
    w = scheme.weights
    if scheme.input_activations is not None:
        return Support(False, "weight-only: activations must stay float")
    if w is None or w.dtype != "int8" or not w.symmetric:
        return Support(False, "needs int8 symmetric weights")
    if w.granularity != "channel" or w.axis not in (0, -2):
        return Support(False, f"needs per-output-channel weight scales, got {w.granularity}")
    return Support(True)


def prepare(weights: LinearWeights) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Dequantize once per layer: float32((q - zero_point) * scale), scale per output row."""
    q = weights.weight
    assert q is not None
    deq = (q.codes.to(torch.float32) - q.zero_point.to(torch.float32)[:, None]) * q.scale[:, None]
    bias = None if weights.bias is None else weights.bias.to(torch.float32)
    return deq, bias


def linear(prepared: tuple[torch.Tensor, torch.Tensor | None], x: torch.Tensor) -> torch.Tensor:
    """x (..., K) -> float32 (..., N). `linear_rows` is the contract's input check: (M, K) float32 rows, or
    ShapeError for another K and NonFiniteError (naming the first bad index) for NaN/Inf."""
    weight, bias = prepared
    rows = linear_rows(x, weight.shape[1])
    return torch.nn.functional.linear(rows, weight, bias).reshape(*x.shape[:-1], weight.shape[0])


@qcore.hookimpl
def qcore_kernels() -> Iterator[KernelImpl]:
    yield KernelImpl(BACKEND, "linear-int8-weight-only", "linear", fn=linear, prepare=prepare, supports=supports,
                     devices=("cpu", "cuda"), priority=1,
                     description="int8 per-channel weights dequantized once, float32 matmul")
