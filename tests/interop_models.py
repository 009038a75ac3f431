"""Tiny models for the compressed-tensors and Hugging Face tests, built from configs in code (nothing downloaded)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

import qcore
from qcore.demo.models import tiny_llama

HIDDEN, INTERMEDIATE = 128, 256


def llama(seed: int = 0, **overrides: Any) -> nn.Module:
    """A two-layer Llama (hidden 128, intermediate 256, 4 heads, 2 KV heads, vocab 256), float32, eval mode."""
    return tiny_llama(hidden=HIDDEN, intermediate=INTERMEDIATE, vocab=256, heads=4, kv_heads=2, seed=seed,
                      max_position_embeddings=64, **overrides)


def tokens(seed: int = 1, batch: int = 2, length: int = 12) -> torch.Tensor:
    return torch.randint(0, 256, (batch, length), generator=torch.Generator().manual_seed(seed))


def quantized_llama(scheme: str, *, backend: str = "auto", overrides: list[dict[str, Any]] | None = None,
                    schemes: dict[str, Any] | None = None) -> nn.Module:
    """The tiny Llama quantized by qcore (lm_head float), calibrated on random tokens when the scheme needs it."""
    model = llama()
    recipe = {"qcore": 1, "scheme": scheme, "targets": ["Linear"], "ignore": ["lm_head"], "backend": backend,
              "overrides": overrides or [], "schemes": schemes or {}}
    return qcore.quantize(model, recipe, [tokens(seed=s) for s in range(3)], progress=False, measure=False)


def quant_layers(model: nn.Module) -> dict[str, qcore.QuantLinear]:
    return {name: m for name, m in model.named_modules() if isinstance(m, qcore.QuantLinear)}


def logits(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(ids).logits
