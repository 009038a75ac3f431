"""QuantLinear: a Linear layer whose weights are stored quantized and run by one chosen kernel.

The canonical packed weight, its qparams, the bias, any static activation
qparams and any SmoothQuant input scale are buffers, so `state_dict` (and safetensors) hold exactly what the
kernel was prepared from. The kernel is bound once, at construction:
`forward` calls it directly, with no dispatch per call, and returns the
input's float dtype, as nn.Linear does. Moving the layer (`.to(device)`,
`.cuda()`) moves the buffers and binds the kernel the matcher picks on the new
device; casts (`.half()`, `.to(torch.bfloat16)`) leave the stored codes and
float32 qparams as they are, since rounding them would change the numerics.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import attrs
import torch
from torch import nn

from qcore import ops
from qcore.kernels import LinearWeights, PackedTensor
from qcore.matcher import Matcher, Selection
from qcore.spec import QuantScheme


def _linear_weights(scheme: QuantScheme, packed: PackedTensor | None, float_weight: torch.Tensor | None,
                    **qparams: torch.Tensor | None) -> LinearWeights:
    """LinearWeights from stored tensors: the packed weight unpacked where it lies (or the float weight)."""
    weight = ops.unpack_weight(packed) if packed is not None else None
    return LinearWeights(scheme=scheme, weight=weight, float_weight=None if weight is not None else float_weight,
                         **qparams)


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
        self._run = self._runner(selection, weights)

    def _runner(self, selection: Selection, weights: LinearWeights) -> Callable[[torch.Tensor], torch.Tensor]:
        kernel = selection.chosen
        assert kernel.prepare is not None
        run = functools.partial(kernel.fn, kernel.prepare(weights))
        return run if self.input_scale is None else _scaled_input(run, self.input_scale)

    def _weights(self) -> LinearWeights:
        return _linear_weights(self.scheme, self.packed_weight(), self._buffers.get("weight"), bias=self.bias,
                               act_scale=self.act_scale, act_zero_point=self.act_zero_point)

    def replan(self, matcher: Matcher | None = None, backend: str | None = None) -> Selection:
        """Choose and bind the kernel again for the device the buffers are on now.

        `backend` defaults to the layer's own pin (its recipe rule's); a pinned
        backend that cannot run there falls back, with the reason in the
        selection. The matcher measures candidates unless told otherwise
        (timings come from the per-hardware cache after the first layer of a
        shape). On any error the layer keeps its kernel.
        """
        device = next(self.buffers(recurse=False)).device
        request = attrs.evolve(self.selection.request, device=device.type)
        selection = (matcher or Matcher()).select(request, backend=backend or self.selection.backend)
        self._run = self._runner(selection, self._weights())
        self.selection = selection
        return selection

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> QuantLinear:
        """What `.to()`, `.cuda()`, `.half()` … do to the buffers: moves, never casts; a move re-plans.

        If re-planning fails (no kernel on the new device, say) the buffers go back where they were.
        """
        before = dict(self._buffers)
        for name, buf in before.items():
            if buf is not None:
                moved = fn(buf)
                self._buffers[name] = moved if moved.dtype == buf.dtype else buf.to(moved.device)
        if [b.device for b in self._buffers.values() if b is not None] != \
                [b.device for b in before.values() if b is not None]:
            try:
                self.replan()
            except BaseException:
                self._buffers.update(before)
                raise
        return self

    @classmethod
    def from_packed(cls, name: str, packed: PackedTensor | None, scheme: QuantScheme, selection: Selection, *,
                    bias: torch.Tensor | None = None, act_scale: torch.Tensor | None = None,
                    act_zero_point: torch.Tensor | None = None,
                    float_weight: torch.Tensor | None = None,
                    input_scale: torch.Tensor | None = None) -> QuantLinear:
        """Rebuild from stored tensors (what `qcore.io.load` reads), keeping the packed bytes as they are."""
        weights = _linear_weights(scheme, packed, float_weight, bias=bias, act_scale=act_scale,
                                  act_zero_point=act_zero_point)
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
        y = self._run(x)
        return y.to(x.dtype) if x.is_floating_point() and y.dtype != x.dtype else y

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"scheme={self.scheme.name}, kernel={self.kernel_id}")
