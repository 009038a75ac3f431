"""Quality measures used by tests, the conformance kit and the quantization card."""

from __future__ import annotations

import math

import torch


def sqnr(ref: torch.Tensor, out: torch.Tensor) -> float:
    """20·log10(‖ref‖ / ‖ref − out‖) in dB, computed in float64; inf when identical."""
    ref64 = ref.detach().to(torch.float64).reshape(-1).cpu()
    err = float(torch.linalg.vector_norm(ref64 - out.detach().to(torch.float64).reshape(-1).cpu()))
    signal = float(torch.linalg.vector_norm(ref64))
    if err == 0.0:
        return math.inf
    if signal == 0.0:
        return -math.inf
    return 20.0 * math.log10(signal / err)


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise cosine similarity of two (..., D) tensors, in float64."""
    return torch.nn.functional.cosine_similarity(a.detach().to(torch.float64), b.detach().to(torch.float64), dim=-1)
