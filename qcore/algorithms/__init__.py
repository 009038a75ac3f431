"""qcore's built-in quantization algorithms, registered through the ``qcore_algorithms`` hook like a plugin's.

Each module holds one algorithm: its math as plain functions, its options
class and its `AlgorithmImpl` (see `qcore.algorithm` for the contract).
`balance` holds what SmoothQuant and AWQ share: finding where a per-channel
scale can fold, and applying it.
"""

from __future__ import annotations

from collections.abc import Iterator

from qcore.algorithm import AlgorithmImpl


def builtin_algorithms() -> Iterator[AlgorithmImpl]:
    from qcore.algorithms import awq, bias_correction, gptq, smoothquant

    yield smoothquant.algorithm()
    yield awq.algorithm()
    yield gptq.algorithm()
    yield bias_correction.algorithm()
