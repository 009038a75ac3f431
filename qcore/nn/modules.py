"""QuantLinear: a Linear layer whose weights are stored quantized and run by one chosen kernel.

The canonical packed weight, its qparams, the bias, any static activation
qparams and any SmoothQuant input scale are buffers, so `state_dict` (and safetensors) hold exactly what the
kernel was prepared from. The kernel is bound once, at construction:
`forward` calls it directly, with no dispatch per call. A QuantLinear runs on
the device it was built for; to move it, quantize (or load) again there.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from torch import nn

from qcore import ops
from qcore.kernels import LinearWeights, PackedTensor
from qcore.matcher import Selection
from qcore.spec import QuantScheme


def _scaled_input(run: Callable[[torch.Tensor], torch.Tensor], scale: torch.Tensor
                  ) -> Callable[[torch.Tensor], torch.Tensor]:
    """`run(x * scale)`: SmoothQuant's per-channel input scaling (1 / s), before the kernel quantizes x."""
    return lambda x: run(x * scale)


class QuantLinear(nn.Module):
    """Replaces an nn.Linear: quantized weight buffers plus the kernel the matcher chose for this layer."""

    def __init__(self, name: str, weights: LinearWeights, selection: Selection,
                 packed: PackedTensor | None = None, input_scale: torch.Tensor | None = None) -> None:
        super().__init__()
        self.name = name
        self.scheme: QuantScheme = weights.scheme
        self.selection = selection
        self.in_features, self.out_features = weights.in_features, weights.out_features
        if weights.weight is not None:
            packed = packed if packed is not None else ops.pack_weight(weights.weight)
            self.register_buffer("weight_data", packed.data)
            self.register_buffer("weight_scale", packed.scale)
            self.register_buffer("weight_zero_point", packed.zero_point)
        else:
            self.register_buffer("weight", weights.float_weight)
        self.register_buffer("bias", weights.bias)
        self.register_buffer("act_scale", weights.act_scale)
        self.register_buffer("act_zero_point", weights.act_zero_point)
        self.register_buffer("input_scale", input_scale)
        kernel = selection.chosen
        assert kernel.prepare is not None
        run = functools.partial(kernel.fn, kernel.prepare(weights))
        self._run = run if input_scale is None else _scaled_input(run, input_scale)

    @classmethod
    def from_packed(cls, name: str, packed: PackedTensor | None, scheme: QuantScheme, selection: Selection, *,
                    bias: torch.Tensor | None = None, act_scale: torch.Tensor | None = None,
                    act_zero_point: torch.Tensor | None = None,
                    float_weight: torch.Tensor | None = None,
                    input_scale: torch.Tensor | None = None) -> QuantLinear:
        """Rebuild from stored tensors (what `qcore.io.load` reads), keeping the packed bytes as they are."""
        weights = LinearWeights(
            scheme=scheme,
            weight=ops.unpack_weight(packed) if packed is not None else None,
            bias=bias,
            act_scale=act_scale,
            act_zero_point=act_zero_point,
            float_weight=float_weight,
        )
        return cls(name, weights, selection, packed, input_scale)

    @property
    def kernel_id(self) -> str:
        return self.selection.chosen.id

    def packed_weight(self) -> PackedTensor | None:
        """The stored weight in canonical form; None when the scheme leaves weights float."""
        if self.scheme.weights is None:
            return None
        return PackedTensor(self.weight_data, (self.out_features, self.in_features), self.weight_scale,
                            self.weight_zero_point, self.scheme.weights)

    def dequantized_weight(self) -> torch.Tensor:
        """The (N, K) float32 weight the kernel computes with."""
        packed = self.packed_weight()
        return self.weight.float() if packed is None else ops.dequantize(ops.unpack_weight(packed))

    def storage_bytes(self) -> int:
        """Bytes of the packed weight, its qparams, the bias and the activation qparams."""
        return sum(t.numel() * t.element_size() for t in self.buffers(recurse=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"scheme={self.scheme.name}, kernel={self.kernel_id}")
