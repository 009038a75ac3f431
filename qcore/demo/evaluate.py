"""Embedding-level measures the demo reports: nearest-neighbour agreement (timing: `qcore.autotune.median_seconds`).

Both compare the quantized model with the float one on the same sentences:
cosine says how far each embedding moved, top-1 agreement whether retrieval
(each sentence's most similar other sentence) still gives the same answer.
"""

from __future__ import annotations

import torch


def similarities(embeddings: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of every row with every other row (float64); a row's similarity to itself is -inf."""
    x = torch.nn.functional.normalize(embeddings.detach().to(torch.float64), dim=-1)
    sim = x @ x.T
    return sim.fill_diagonal_(-torch.inf)


def top1_agreement(reference: torch.Tensor, candidate: torch.Tensor, *, tie_margin: float = 0.0) -> float:
    """Fraction of rows whose nearest other row is the same under both sets of embeddings.

    With `tie_margin`, a different pick still counts when the reference
    embeddings rate it within that much cosine of their own pick: a near-tie
    that any perturbation could flip, not a retrieval error.
    """
    if reference.shape != candidate.shape or len(reference) < 2:
        raise ValueError(f"top1_agreement: need two equal (N>=2, D) sets, got {tuple(reference.shape)} "
                         f"and {tuple(candidate.shape)}")
    ref_sim = similarities(reference)
    rows = torch.arange(len(reference))
    ref_pick, cand_pick = ref_sim.argmax(dim=-1), similarities(candidate).argmax(dim=-1)
    gap = ref_sim[rows, ref_pick] - ref_sim[rows, cand_pick]
    return float((gap <= tie_margin).double().mean())
