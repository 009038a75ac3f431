"""The last steps of quantizing: each planned layer's record becomes a QuantLinear, then the model is swapped.

Nothing here modifies the model until `swap`, which runs only after every
layer has been built, so a failure leaves the model's modules in place.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence

import torch
from torch import nn

from qcore import metrics, ops
from qcore.algorithm import LayerWork
from qcore.errors import QcoreError
from qcore.nn.modules import QuantLinear
from qcore.state import LayerRecord


@contextlib.contextmanager
def in_layer(name: str) -> Iterator[None]:
    """Re-raise a qcore error with the layer's name in front, keeping its type."""
    try:
        yield
    except QcoreError as exc:
        raise type(exc)(f"layer {name!r}: {exc}") from exc


def _nbytes(*tensors: torch.Tensor | None) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if t is not None)


def build_layers(layers: Sequence[LayerWork]) -> tuple[dict[str, QuantLinear], tuple[LayerRecord, ...]]:
    """A QuantLinear for each planned layer (the model is not touched), and every layer's record.

    A weight an algorithm quantized already (`LayerWork.qweight`, e.g. GPTQ)
    is used as it is; the others are rounded to nearest by the contract's
    quantize op. An input scale left by a transform is applied by the layer.
    """
    built: dict[str, QuantLinear] = {}
    records = []
    for layer in layers:
        module = layer.module
        weight, bias = getattr(module, "weight", None), getattr(module, "bias", None)
        float_bytes = _nbytes(weight, bias)
        shape = dict(in_features=getattr(module, "in_features", 0), out_features=getattr(module, "out_features", 0))
        common = dict(name=layer.name, rule=layer.rule.rule, **shape, float_bytes=float_bytes,
                      algorithms=tuple(layer.runs), tokens=layer.tokens)
        if layer.selection is None:
            records.append(LayerRecord(scheme=None, float_reason=layer.float_reason, quant_bytes=float_bytes,
                                       weight_sqnr=None, **common))
            continue
        scheme = layer.scheme
        assert isinstance(module, nn.Linear)
        act_scale, act_zero_point = layer.act_qparams or (None, None)
        with in_layer(layer.name):
            float_weight = layer.weight
            weights = ops.linear_weights(scheme, float_weight, module.bias, act_scale=act_scale,
                                         act_zero_point=act_zero_point, qweight=layer.qweight)
            scale = None if layer.input_scale is None else layer.input_scale.to(float_weight.device)
            built[layer.name] = quant = QuantLinear(layer.name, weights, layer.selection, input_scale=scale)
            sqnr = metrics.sqnr(float_weight, quant.dequantized_weight()) if scheme.weights is not None else None
        records.append(LayerRecord(scheme=scheme, float_reason=None, quant_bytes=quant.storage_bytes(),
                                   weight_sqnr=sqnr, **common))
    return built, tuple(records)


def swap(model: nn.Module, replacements: Mapping[str, nn.Module]) -> nn.Module:
    """Put each replacement where its module was (every place a shared module appears); returns the model.

    A model that is itself a replaced layer is returned replaced.
    """
    if "" in replacements:
        return replacements[""]
    by_id = {id(model.get_submodule(name)): new for name, new in replacements.items()}
    for parent in list(model.modules()):
        for child_name, child in list(parent._modules.items()):
            if child is not None and id(child) in by_id:
                setattr(parent, child_name, by_id[id(child)])
    return model
