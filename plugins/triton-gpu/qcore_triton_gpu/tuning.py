"""Autotuning helpers shared by the kernels: shape buckets and config pruning.

Autotune keys use power-of-two buckets so that a new sequence length does not
trigger a new tuning run. On CPU tensors (the interpreter) only the first
config that fits is kept: benchmarking there is meaningless and slow.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import triton


def bucket(n: int, cap: int = 1 << 16) -> int:
    """Next power of two ≥ n, at most `cap`: the autotune key for a dimension."""
    return min(cap, 1 << max(0, n - 1).bit_length())


def pruner(tensor_arg: str, fits: Callable[[triton.Config, dict[str, Any]], bool] | None = None) -> dict[str, Any]:
    """`prune_configs_by` for @triton.autotune: drop configs that do not `fit`; one config when interpreting."""

    def prune(configs: list[triton.Config], named_args: dict[str, Any], **kwargs: Any) -> list[triton.Config]:
        args = {**named_args, **kwargs}
        kept = [c for c in configs if fits is None or fits(c, args)]
        if not args[tensor_arg].is_cuda:
            kept = kept[:1]
        return kept

    return {"early_config_prune": prune}
