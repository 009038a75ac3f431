"""`export(model, DIR)`: a qcore-quantized model as a compressed-tensors checkpoint.

``DIR/config.json`` holds the model's transformers config (when it has one)
and a ``quantization_config``; ``DIR/model.safetensors`` every tensor under the
names the format gives them. One config group per distinct scheme, its
targets the exact layer names (so every reader, the package's dequantizer
included, finds each layer's own group); float Linear layers are listed in
``ignore``. A layer the format cannot express stops the export with the layer
and the reason, before anything is written; both files are written atomically.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import attrs
import safetensors.torch
import torch
from torch import nn

from qcore import hf, ops
from qcore.compressed_tensors.args import (
    FORMAT_NAME,
    MIXED_PRECISION,
    PACK_QUANTIZED,
    FormatError,
    code_offset,
    scheme_args,
)
from qcore.compressed_tensors.packing import pack_int32
from qcore.compressed_tensors.vllm import Serving, serving
from qcore.errors import UnknownNameError
from qcore.files import atomic_write
from qcore.nn.modules import QuantLinear

WEIGHTS_FILE = "model.safetensors"
FORMATS = (FORMAT_NAME,)


@attrs.frozen
class ExportedLayer:
    """One Linear of the export: its config group and format (None: float, in ``ignore``) and vLLM's verdict."""

    name: str
    shape: tuple[int, int]
    scheme: str | None = None
    group: str | None = None
    format: str | None = None
    serving: Serving | None = None


@attrs.frozen
class ExportReport:
    """What `export` wrote: the folder, the top-level format and each Linear layer."""

    directory: Path
    format: str
    layers: tuple[ExportedLayer, ...]
    tokenizer_files: tuple[str, ...] = ()

    @property
    def quantized(self) -> tuple[ExportedLayer, ...]:
        return tuple(layer for layer in self.layers if layer.group is not None)


def export(model: nn.Module, directory: str | os.PathLike[str], *, format: str = FORMAT_NAME) -> ExportReport:
    """Write `model` (quantized by qcore, or loaded by `qcore.load`) to `directory` in `format`.

    For a model holding a transformers model (itself, or wrapped as by
    sentence-transformers) the folder is that transformers model's, loadable by
    ``from_pretrained``; its tokenizer files are copied when it was loaded from
    a local folder. FormatError names the first layer the format cannot express.
    """
    if format not in FORMATS:
        raise UnknownNameError(f"unknown export format {format!r}; known: {', '.join(FORMATS)}")
    found = hf.root_of(model)
    prefix, root = found if found is not None else ("", model)
    _check_outside(model, prefix)
    layers, groups, tensors = _collect(root)
    formats = {g["format"] for g in groups.values()}
    top = formats.pop() if len(formats) == 1 else MIXED_PRECISION
    config = hf.config_of(root) if found is not None else {}
    config["quantization_config"] = {
        "config_groups": groups,
        "quant_method": FORMAT_NAME,
        "kv_cache_scheme": None,
        "format": top,
        "quantization_status": "compressed",
        "global_compression_ratio": None,
        "ignore": sorted(layer.name for layer in layers if layer.group is None),
        "moe_sparsity_config": None,
    }
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / WEIGHTS_FILE, safetensors.torch.save(tensors, {"format": "pt"}))
    atomic_write(out / hf.CONFIG_FILE, json.dumps(config, indent=2, sort_keys=True, default=str) + "\n")
    copied = hf.copy_tokenizer(hf.source_folder(root), out) if found is not None else []
    return ExportReport(out, top, layers, tuple(copied))


def _check_outside(model: nn.Module, prefix: str) -> None:
    """Quantized layers outside the transformers model would be lost: an error naming them."""
    if not prefix:
        return
    outside = [n for n, m in model.named_modules() if isinstance(m, QuantLinear) and not n.startswith(prefix + ".")]
    if outside:
        raise FormatError(f"layer {outside[0]!r} is quantized but lies outside the transformers model "
                          f"{prefix!r} that the export writes")


def _collect(root: nn.Module) -> tuple[tuple[ExportedLayer, ...], dict[str, dict[str, Any]], dict[str, torch.Tensor]]:
    """Every Linear's record, the config groups, and the tensors to write (everything else copied as it is)."""
    layers: list[ExportedLayer] = []
    groups: dict[str, dict[str, Any]] = {}
    group_of: dict[str, str] = {}
    replaced: dict[str, torch.Tensor] = {}
    owned: set[str] = set()
    for name, module in root.named_modules():
        if isinstance(module, QuantLinear):
            shape = (module.out_features, module.in_features)
            body = _group_body(name, module)
            key = json.dumps(body, sort_keys=True)
            if key not in group_of:
                group_of[key] = f"group_{len(groups)}"
                groups[group_of[key]] = {"targets": [], **body}
            group = group_of[key]
            groups[group]["targets"].append(name)
            layers.append(ExportedLayer(name, shape, module.scheme.name, group, body["format"],
                                        serving(body["weights"], body["input_activations"], body["format"], shape)))
            owned |= {f"{name}.{b}" for b in module._buffers}
            replaced |= {f"{name}.{k}": v for k, v in layer_tensors(name, module, body).items()}
        elif isinstance(module, nn.Linear):
            layers.append(ExportedLayer(name, (module.out_features, module.in_features)))
    tensors = {k: v for k, v in root.state_dict().items() if k not in owned} | replaced
    return tuple(layers), groups, _storable(tensors)


def _group_body(name: str, layer: QuantLinear) -> dict[str, Any]:
    if layer.input_scale is not None:
        raise FormatError(f"layer {name!r}: it scales its input per channel before the kernel (input_scale, e.g. "
                          "SmoothQuant not folded into the preceding op); compressed-tensors has no such transform")
    try:
        return scheme_args(layer.scheme)
    except FormatError as exc:
        raise FormatError(f"layer {name!r} (scheme {layer.scheme.name}): {exc}") from None


def layer_tensors(name: str, layer: QuantLinear, body: dict[str, Any]) -> dict[str, torch.Tensor]:
    """One layer's tensors under the format's names (without the layer prefix), codes shifted, never re-rounded."""
    packed = layer.packed_weight()
    assert packed is not None
    q = ops.unpack_weight(packed)
    spec, n, k = q.spec, layer.out_features, layer.in_features
    offset = code_offset(spec)
    codes = q.codes if spec.info.is_float else (q.codes.to(torch.int16) - offset).to(torch.int8)
    scale_shape = {"tensor": (1,), "channel": (n, 1), "group": (n, k // (spec.group_size or 1))}[spec.granularity]
    out = {"weight_scale": q.scale.reshape(scale_shape).to(torch.float32)}
    zp = None if spec.symmetric else (q.zero_point.reshape(scale_shape) - offset).to(torch.int8)
    if body["format"] == PACK_QUANTIZED:
        bits = body["weights"]["num_bits"]
        out["weight_packed"] = pack_int32(codes, bits)
        out["weight_shape"] = torch.tensor([n, k], dtype=torch.int64)
        if zp is not None:
            out["weight_zero_point"] = zp if spec.granularity == "tensor" else pack_int32(zp, bits, dim=0)
    else:
        out["weight"] = codes
        if zp is not None:
            out["weight_zero_point"] = zp
    acts = layer.scheme.input_activations
    if acts is not None and not acts.dynamic:
        if layer.act_scale is None:
            raise FormatError(f"layer {name!r}: static activations without calibrated qparams")
        out["input_scale"] = layer.act_scale.reshape(1).to(torch.float32)
        if not acts.symmetric:
            assert layer.act_zero_point is not None
            out["input_zero_point"] = (layer.act_zero_point.reshape(1) - code_offset(acts)).to(torch.int8)
    if layer.bias is not None:
        out["bias"] = layer.bias
    return out


def _storable(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Contiguous CPU tensors sharing no memory (safetensors refuses shared storage; tied weights are copied)."""
    seen: set[int] = set()
    out = {}
    for name, t in tensors.items():
        t = t.detach().to("cpu")
        ptr = t.untyped_storage().data_ptr() if t.numel() else None
        whole = t.is_contiguous() and t.untyped_storage().nbytes() == t.numel() * t.element_size()
        out[name] = t if ptr not in seen and whole else t.clone(memory_format=torch.contiguous_format)
        if ptr is not None:
            seen.add(ptr)
    return out
