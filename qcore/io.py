"""Save and load quantized models as safetensors, with the scheme, kernel and recipe in the metadata.

One file, ``model.safetensors``, holds every tensor of the model (packed
weights, qparams, biases and all float parameters and buffers); its metadata
(JSON strings) holds what is needed to rebuild the QuantLinear layers on a
float skeleton and to explain them. No pickle anywhere. Writes are atomic: a
temporary file in the same directory, fsync, then ``os.replace``, so an
interrupted save leaves the previous checkpoint intact. A digest of the tensor
bytes catches corruption that the safetensors header cannot.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import math
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import safetensors
import safetensors.torch
import torch
from torch import nn

from qcore import hf
from qcore.compressed_tensors import reader as compressed_tensors
from qcore.errors import QcoreError
from qcore.files import atomic_write
from qcore.hardware import detect
from qcore.kernels import KernelRequest, PackedTensor
from qcore.layout import packed_shape, qparam_shape
from qcore.matcher import AUTO, Matcher, Plan, Selection
from qcore.algorithm import AlgorithmRun
from qcore.calibration import CalibrationInfo
from qcore.nn.convert import swap
from qcore.nn.modules import QuantLinear
from qcore.recipe import Recipe, load_recipe
from qcore.state import LayerRecord, QuantState, attach, state_of
from qcore.spec import QuantScheme

FILENAME = "model.safetensors"
FORMAT = "2"
REQUIRED_KEYS = ("qcore.format", "qcore.version", "qcore.layers", "qcore.recipe", "qcore.plan", "qcore.hardware",
                 "qcore.aliases", "qcore.digest")


class CheckpointError(QcoreError, ValueError):
    """A checkpoint that cannot be loaded into this model; the message names the file and the tensor or layer."""


def _version() -> str:
    try:
        return importlib.metadata.version("qcore")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


# -- save ------------------------------------------------------------------


def save(model: nn.Module, directory: str | os.PathLike[str]) -> Path:
    """Write `model` (quantized by qcore) to ``directory/model.safetensors`` atomically; returns the file's path."""
    state = state_of(model)
    path = Path(directory) / FILENAME
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors, aliases = _unique_tensors(model.state_dict())
    metadata = {
        "format": "pt",
        "qcore.format": FORMAT,
        "qcore.version": _version(),
        "qcore.layers": json.dumps([_layer_meta(r, state) for r in state.layers]),
        "qcore.recipe": json.dumps(state.recipe.to_dict()),
        "qcore.plan": json.dumps(_plan_meta(state.plan)),
        "qcore.calibration": json.dumps(attrs.asdict(state.calibration) if state.calibration else None),
        "qcore.hardware": json.dumps({"fingerprint": state.hardware.fingerprint,
                                      "description": state.hardware.describe()}),
        "qcore.aliases": json.dumps(aliases),
        "qcore.digest": _digest(tensors),
    }
    root = hf.root_of(model)
    if root is not None and root[0] == "":
        metadata["qcore.model_config"] = json.dumps(hf.config_of(model), default=str)
    atomic_write(path, safetensors.torch.save(tensors, metadata))
    return path


def _layer_meta(record: LayerRecord, state: QuantState) -> dict[str, Any]:
    data = attrs.asdict(record, recurse=False)
    data["scheme"] = record.scheme.to_dict() if record.scheme else None
    data["algorithms"] = [attrs.asdict(run) for run in record.algorithms]
    selection = state.selection(record.name)
    data["kernel"] = selection.chosen.id if selection else None
    data["request_shape"] = list(selection.request.shape) if selection and selection.request.shape else None
    if data["weight_sqnr"] is not None and math.isinf(data["weight_sqnr"]):
        data["weight_sqnr"] = "inf"
    return data


def _plan_meta(plan: Plan) -> list[dict[str, Any]]:
    out = []
    for layer in plan:
        sel = layer.selection
        out.append({
            "name": layer.name,
            "kernel": sel.chosen.id if sel else None,
            "why": sel.why() if sel else layer.note,
            "ranked": [c.kernel.id for c in sel.ranked] if sel else [],
            "rejected": {c.kernel.id: c.support.reason for c in sel.rejected} if sel else {},
        })
    return out


def _unique_tensors(state_dict: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Contiguous CPU tensors with no shared memory (safetensors forbids it); tied entries become aliases."""
    kept: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    first: dict[tuple[Any, ...], str] = {}
    storages: set[int] = set()
    for name, t in state_dict.items():
        key = (t.device, t.data_ptr(), t.dtype, tuple(t.shape), t.stride())
        if t.numel() and key in first:
            aliases[name] = first[key]
            continue
        first[key] = name
        storage = t.untyped_storage()
        shared = storage.data_ptr() in storages or storage.nbytes() != t.numel() * t.element_size()
        storages.add(storage.data_ptr())
        t = t.detach().to("cpu")
        kept[name] = t.clone(memory_format=torch.contiguous_format) if shared or not t.is_contiguous() else t
    return kept, aliases


def _digest(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name]
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        if t.numel():
            h.update(memoryview(t.contiguous().reshape(-1).view(torch.uint8).numpy()))
    return h.hexdigest()


# -- load ------------------------------------------------------------------


def read_metadata(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """The checkpoint's metadata with every JSON value parsed (what `qcore card DIR` shows)."""
    path = Path(directory) / FILENAME
    return _parse_metadata(path, _open(path)[0])


def load(directory: str | os.PathLike[str], model_or_factory: nn.Module | Callable[[], nn.Module] | None = None, *,
         matcher: Matcher | None = None) -> nn.Module:
    """Rebuild a quantized model from ``directory/model.safetensors`` onto a float skeleton.

    `model_or_factory` is the float model (same architecture, any weights) or
    a zero-argument callable that builds one; None for a model whose
    transformers config the checkpoint recorded. The recorded layers become
    QuantLinear with kernels planned on this machine (no measuring): the
    recorded kernel when it can run here, the matcher's choice otherwise. A
    backend the recipe pinned that is not available here is replaced, with a
    warning naming the layers and their new kernels (an error when the recipe
    is strict); the backends, schemes and algorithms a recipe names need not
    be installed to load what they made. A compressed-tensors checkpoint
    (``config.json`` with its ``quantization_config``) is read by
    `qcore.compressed_tensors.reader`.
    """
    if compressed_tensors.quantization_config(directory) is not None:
        return compressed_tensors.load(directory, model_or_factory, matcher=matcher)
    path = Path(directory) / FILENAME
    raw_meta, tensors = _open(path)
    meta = _parse_metadata(path, raw_meta)
    if _digest(tensors) != meta["qcore.digest"]:
        raise CheckpointError(f"{path}: tensor data does not match its recorded digest; the file is corrupt")
    tensors.update(_resolve_aliases(path, tensors, meta["qcore.aliases"]))
    try:
        recipe = load_recipe(meta["qcore.recipe"], recorded=True)
    except QcoreError as exc:
        raise CheckpointError(f"{path}: recorded recipe does not load: {exc}") from exc
    if model_or_factory is None:
        if "qcore.model_config" not in meta:
            raise CheckpointError(f"{path}: the model has no recorded transformers config; pass the float model or a "
                                  "factory that builds it")
        model = hf.model_from_config(meta["qcore.model_config"], str(path))
    else:
        model = model_or_factory if isinstance(model_or_factory, nn.Module) else model_or_factory()
    if not isinstance(model, nn.Module):
        raise CheckpointError(f"{path}: the factory returned {type(model).__name__}, not a torch.nn.Module")
    matcher = matcher or Matcher(measure=False)
    built: dict[str, QuantLinear] = {}
    records: list[LayerRecord] = []
    replanned: dict[str, list[str]] = {}
    for entry in meta["qcore.layers"]:
        if entry["kernel"] is not None:
            layer, missing = _rebuild(path, model, recipe, entry, tensors, matcher)
            built[layer.name] = layer
            if missing:
                replanned.setdefault(missing, []).append(f"{layer.name} -> {layer.kernel_id}")
        records.append(_record(entry))
    for backend, moved in replanned.items():
        warnings.warn(f"{path}: backend {backend!r}, pinned by the recorded recipe, is not available here; "
                      f"re-planned {len(moved)} layer(s): " + ", ".join(moved), stacklevel=2)
    model = swap(model, built)
    _load_rest(path, model, tensors)
    calibration = CalibrationInfo(**meta["qcore.calibration"]) if meta.get("qcore.calibration") else None
    attach(model, QuantState(recipe, tuple(records), calibration, detect()))
    return model


def _open(path: Path) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file (qcore.save writes {FILENAME})")
    try:
        with safetensors.safe_open(str(path), framework="pt", device="cpu") as f:
            return f.metadata() or {}, {key: f.get_tensor(key) for key in f.keys()}
    except Exception as exc:  # safetensors raises its own error type for every malformed file
        raise CheckpointError(f"{path}: not a readable safetensors file, truncated or corrupt ({exc})") from exc


def _parse_metadata(path: Path, raw: dict[str, str]) -> dict[str, Any]:
    missing = [k for k in REQUIRED_KEYS if k not in raw]
    if missing:
        raise CheckpointError(f"{path}: not a qcore checkpoint; metadata lacks {', '.join(missing)}")
    if raw["qcore.format"] != FORMAT:
        raise CheckpointError(f"{path}: checkpoint format {raw['qcore.format']!r}; this qcore reads {FORMAT!r}")
    parsed: dict[str, Any] = {}
    for key, value in raw.items():
        if not key.startswith("qcore.") or key in ("qcore.format", "qcore.version", "qcore.digest"):
            parsed[key] = value
            continue
        try:
            parsed[key] = json.loads(value)
        except ValueError as exc:
            raise CheckpointError(f"{path}: metadata {key} is not valid JSON ({exc})") from exc
    return parsed


def _resolve_aliases(path: Path, tensors: dict[str, torch.Tensor], aliases: dict[str, str]) -> dict[str, torch.Tensor]:
    out = {}
    for alias, target in aliases.items():
        if target not in tensors:
            raise CheckpointError(f"{path}: tensor {alias!r} is recorded as an alias of missing tensor {target!r}")
        out[alias] = tensors[target]
    return out


def _tensor(path: Path, tensors: dict[str, torch.Tensor], key: str, shape: tuple[int, ...],
            dtype: torch.dtype | None = None) -> torch.Tensor:
    if key not in tensors:
        raise CheckpointError(f"{path}: tensor {key!r} is missing")
    t = tensors[key]
    if tuple(t.shape) != shape:
        raise CheckpointError(f"{path}: tensor {key!r} has shape {tuple(t.shape)}, the model needs {shape}")
    if dtype is not None and t.dtype != dtype:
        raise CheckpointError(f"{path}: tensor {key!r} has dtype {t.dtype}, expected {dtype}")
    return t


def _rebuild(path: Path, model: nn.Module, recipe: Recipe, entry: dict[str, Any], tensors: dict[str, torch.Tensor],
             matcher: Matcher) -> tuple[QuantLinear, str | None]:
    """The QuantLinear of one recorded layer, and the pinned backend it could not use here (or None)."""
    name = entry["name"]
    try:
        module = model.get_submodule(name)
    except AttributeError:
        raise CheckpointError(
            f"{path}: layer {name!r} is recorded in the checkpoint but absent from the {type(model).__name__} skeleton"
        ) from None
    n, k = entry["out_features"], entry["in_features"]
    if not isinstance(module, nn.Linear) or (module.out_features, module.in_features) != (n, k):
        found = f"{type(module).__name__}" + (f"({module.in_features}, {module.out_features})"
                                               if isinstance(module, nn.Linear) else "")
        raise CheckpointError(f"{path}: layer {name!r} was Linear({k}, {n}); the skeleton has {found}")
    if (module.bias is not None) != (f"{name}.bias" in tensors):
        raise CheckpointError(f"{path}: layer {name!r}: bias presence differs between checkpoint and skeleton")
    scheme = QuantScheme.from_dict(entry["scheme"])
    device = module.weight.device

    def get(suffix: str, shape: tuple[int, ...], dtype: torch.dtype | None = None) -> torch.Tensor:
        return _tensor(path, tensors, f"{name}.{suffix}", shape, dtype).to(device)

    packed = float_weight = act_scale = act_zero_point = None
    if scheme.weights is not None:
        qshape = qparam_shape(scheme.weights, (n, k))
        packed = PackedTensor(get("weight_data", packed_shape(scheme.weights, (n, k))), (n, k),
                              get("weight_scale", qshape, torch.float32), get("weight_zero_point", qshape, torch.int32),
                              scheme.weights)
    else:
        float_weight = get("weight", (n, k), torch.float32)
    bias = get("bias", (n,), torch.float32) if module.bias is not None else None
    if scheme.needs_calibration:
        act_scale = tensors.get(f"{name}.act_scale")
        ashape = tuple(act_scale.shape) if act_scale is not None else ()
        act_scale = get("act_scale", ashape, torch.float32)
        act_zero_point = get("act_zero_point", ashape, torch.int32)
    transformed = f"{name}.input_scale" in tensors
    input_scale = get("input_scale", (k,), torch.float32) if transformed else None
    m = (entry.get("request_shape") or [1])[0]
    request = KernelRequest("linear", device.type, scheme=scheme, shape=(m, k, n))
    rule = recipe.resolve(name, module)
    pinned = rule.backend if rule is not None else AUTO
    info = matcher.manager.backends().get(pinned)
    missing = pinned if pinned != AUTO and (info is None or not info.available) else None
    if missing and recipe.strict:
        why = "is not installed" if info is None else f"is unavailable ({info.reason})"
        raise CheckpointError(f"{path}: layer {name!r}: the recipe pins backend {pinned!r}, which {why} here, "
                              "and is strict: nothing else may run it")
    try:
        selection = matcher.select(request, backend=AUTO if missing else pinned, strict=recipe.strict)
    except QcoreError as exc:
        raise CheckpointError(f"{path}: layer {name!r}: no kernel can run it here: {exc}") from exc
    try:
        layer = QuantLinear.from_packed(name, packed, scheme, _prefer(selection, entry["kernel"]), bias=bias,
                                        act_scale=act_scale, act_zero_point=act_zero_point,
                                        float_weight=float_weight, input_scale=input_scale)
    except QcoreError as exc:
        raise CheckpointError(f"{path}: layer {name!r}: {exc}") from exc
    return layer, missing


def _prefer(selection: Selection, kernel_id: str) -> Selection:
    """The selection with the recorded kernel first when it is among the candidates (same kernel, same bits)."""
    if selection.chosen.id == kernel_id:
        return selection
    for c in selection.ranked:
        if c.kernel.id == kernel_id:
            ranked = (c, *(o for o in selection.ranked if o is not c))
            return attrs.evolve(selection, chosen=c.kernel, ranked=ranked, ranking="recorded in the checkpoint")
    return selection


def _record(entry: dict[str, Any]) -> LayerRecord:
    sqnr = entry["weight_sqnr"]
    return LayerRecord(
        name=entry["name"],
        scheme=QuantScheme.from_dict(entry["scheme"]) if entry["scheme"] else None,
        rule=entry["rule"],
        float_reason=entry["float_reason"],
        in_features=entry["in_features"],
        out_features=entry["out_features"],
        float_bytes=entry["float_bytes"],
        quant_bytes=entry["quant_bytes"],
        weight_sqnr=math.inf if sqnr == "inf" else sqnr,
        algorithms=tuple(AlgorithmRun(**run) for run in entry.get("algorithms", ())),
        tokens=entry.get("tokens"),
    )


def _load_rest(path: Path, model: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    expected = model.state_dict()
    for key, target in expected.items():
        _tensor(path, tensors, key, tuple(target.shape), target.dtype)
    extra = sorted(set(tensors) - set(expected))
    if extra:
        raise CheckpointError(f"{path}: tensor(s) with no place in the {type(model).__name__} skeleton: "
                              + ", ".join(extra[:10]) + (" ..." if len(extra) > 10 else ""))
    model.load_state_dict(tensors, strict=True)
