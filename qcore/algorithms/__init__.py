"""Weight quantization algorithms beyond round-to-nearest.

Each returns an ordinary QTensor under the numerics contract, so any backend
dequantizes, packs and runs the result exactly as it would a min-max one.
"""

from qcore.algorithms.gptq import HessianAccumulator, gptq_quantize

__all__ = ["HessianAccumulator", "gptq_quantize"]
