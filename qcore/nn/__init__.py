"""Quantized modules: QuantLinear (inference) and FakeQuantLinear (quantization-aware training)."""

from qcore.nn.fake_quant import FakeQuantLinear, fake_quantize
from qcore.nn.modules import QuantLinear

__all__ = ["FakeQuantLinear", "QuantLinear", "fake_quantize"]
