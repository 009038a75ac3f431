"""`load(DIR)`: a compressed-tensors checkpoint (llm-compressor's, or qcore's export) as QuantLinear layers.

The float skeleton comes from a factory, or from ``config.json`` through
transformers. Each Linear that a config group targets (exact name, ``re:``
pattern, or the class name ``Linear``; an exact name wins over a pattern,
a pattern over a class, as in vLLM) and that ``ignore`` does not list becomes a
QuantLinear with the equivalent qcore scheme (see `args` for the code
conventions), its kernel chosen by the matcher on this machine. Everything
the format or an option says that qcore cannot represent is a FormatError
naming the checkpoint, the group or the layer.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import safetensors
import torch
from torch import nn

from qcore import hf, ops
from qcore.compressed_tensors.args import (
    FORMAT_NAME,
    MIXED_PRECISION,
    PACK_QUANTIZED,
    READABLE_FORMATS,
    FormatError,
    code_offset,
    spec_of,
    widened,
)
from qcore.compressed_tensors.packing import unpack_int32
from qcore.errors import QcoreError
from qcore.kernels import KernelRequest, QTensor
from qcore.matcher import Matcher
from qcore.nn.convert import swap
from qcore.nn.modules import QuantLinear
from qcore.plugins import get_manager
from qcore.recipe import Recipe, load_recipe
from qcore.spec import QuantScheme, QuantSpec
from qcore.state import LayerRecord, QuantState, attach

UNSUPPORTED_OPTIONS = ("kv_cache_scheme", "sparsity_config", "transform_config", "moe_sparsity_config")


def quantization_config(directory: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The compressed-tensors ``quantization_config`` of ``DIR/config.json``; None when it has none."""
    path = Path(directory) / hf.CONFIG_FILE
    if not path.is_file():
        return None
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise FormatError(f"{path}: not readable JSON ({exc})") from None
    qc = config.get("quantization_config") if isinstance(config, dict) else None
    return qc if isinstance(qc, dict) and qc.get("quant_method") == FORMAT_NAME else None


def load(directory: str | os.PathLike[str], model_or_factory: nn.Module | Callable[[], nn.Module] | None = None, *,
         matcher: Matcher | None = None) -> nn.Module:
    """Build the model of a compressed-tensors checkpoint with qcore layers (see the module docstring)."""
    where = Path(directory)
    config = json.loads((where / hf.CONFIG_FILE).read_text(encoding="utf-8"))
    groups = _groups(where, config["quantization_config"])
    tensors = _read_tensors(where)
    if model_or_factory is None:
        model = hf.model_from_config(config, str(where / hf.CONFIG_FILE))
    else:
        model = model_or_factory if isinstance(model_or_factory, nn.Module) else model_or_factory()
    if not isinstance(model, nn.Module):
        raise FormatError(f"{where}: the factory returned {type(model).__name__}, not a torch.nn.Module")
    matcher = matcher or Matcher(measure=False)
    ignore = list(config["quantization_config"].get("ignore") or ())
    built: dict[str, QuantLinear] = {}
    records: list[LayerRecord] = []
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear):
            continue
        group = None if any(_matches(name, module, t) for t in ignore) else _group_for(where, name, module, groups)
        if group is None:
            why = "listed in the checkpoint's ignore" if any(_matches(name, module, t) for t in ignore) \
                else "no config group targets it"
            records.append(_float_record(name, module, why))
            continue
        try:
            layer = _layer(name, module, group, tensors, matcher)
        except QcoreError as exc:
            raise FormatError(f"{where}: layer {name!r} ({group[0]}): {exc}") from None
        built[name] = layer
        records.append(LayerRecord(name=name, scheme=layer.scheme, rule=f"{FORMAT_NAME} {group[0]}",
                                   float_reason=None, in_features=module.in_features, out_features=module.out_features,
                                   float_bytes=_nbytes(module.weight, module.bias), quant_bytes=layer.storage_bytes(),
                                   weight_sqnr=None))
    _load_rest(where, model, tensors, {f"{name}.{p}" for name in built for p in ("weight", "bias")})
    model = swap(model, built)
    recipe = _recipe(where, records)
    attach(model, QuantState(recipe, tuple(records), None, matcher.hardware))
    return model


Group = tuple[str, dict[str, Any]]


def _groups(where: Path, qc: dict[str, Any]) -> list[Group]:
    if qc.get("quantization_status", "compressed") != "compressed":
        raise FormatError(f"{where}: quantization_status is {qc.get('quantization_status')!r}; qcore reads "
                          "compressed checkpoints (their weights stored quantized)")
    for key in UNSUPPORTED_OPTIONS:
        if qc.get(key):
            raise FormatError(f"{where}: {key} is set; qcore does not represent it")
    top = qc.get("format")
    if top not in (*READABLE_FORMATS, MIXED_PRECISION):
        raise FormatError(f"{where}: format {top!r} is not readable by qcore; it reads {', '.join(READABLE_FORMATS)}")
    groups: list[Group] = []
    for gname, body in (qc.get("config_groups") or {}).items():
        if not isinstance(body, dict):
            raise FormatError(f"{where}: config group {gname!r} names a preset ({body!r}); qcore reads groups "
                              "written out in full")
        fmt = body.get("format") or top
        if fmt not in READABLE_FORMATS:
            raise FormatError(f"{where}: config group {gname!r}: format {fmt!r} is not readable by qcore "
                              f"({', '.join(READABLE_FORMATS)})")
        if body.get("output_activations"):
            raise FormatError(f"{where}: config group {gname!r}: output activation quantization is not represented")
        if not body.get("weights"):
            raise FormatError(f"{where}: config group {gname!r} quantizes no weights; qcore reads weight quantization")
        groups.append((gname, {**body, "format": fmt}))
    if not groups:
        raise FormatError(f"{where}: quantization_config has no config_groups")
    return groups


def _matches(name: str, module: nn.Module, target: str) -> bool:
    if target.startswith("re:"):
        return re.match(target[3:], name) is not None
    return target in (name, type(module).__name__)


def _group_for(where: Path, name: str, module: nn.Module, groups: list[Group]) -> Group | None:
    """The group targeting `name`: exact names first, then patterns, then class names; two at one level is an error."""
    for level in (lambda t: t == name, lambda t: t.startswith("re:") and _matches(name, module, t),
                  lambda t: t == type(module).__name__):
        found = [g for g in groups if any(level(t) for t in g[1].get("targets") or ())]
        if len(found) > 1:
            raise FormatError(f"{where}: layer {name!r} is targeted by config groups "
                              f"{', '.join(g[0] for g in found)} alike")
        if found:
            return found[0]
    return None


def _read_tensors(where: Path) -> dict[str, torch.Tensor]:
    files = sorted(where.glob("*.safetensors"))
    if not files:
        raise FormatError(f"{where}: no *.safetensors file")
    tensors: dict[str, torch.Tensor] = {}
    for path in files:
        try:
            with safetensors.safe_open(str(path), framework="pt", device="cpu") as f:
                tensors.update({key: f.get_tensor(key) for key in f.keys()})
        except Exception as exc:  # safetensors raises its own error type for every malformed file
            raise FormatError(f"{path}: not a readable safetensors file ({exc})") from None
    return tensors


def _take(tensors: dict[str, torch.Tensor], key: str) -> torch.Tensor:
    if key not in tensors:
        raise FormatError(f"tensor {key!r} is missing")
    return tensors.pop(key)


def _layer(name: str, module: nn.Linear, group: Group, tensors: dict[str, torch.Tensor],
           matcher: Matcher) -> QuantLinear:
    body = group[1]
    wspec = spec_of(body["weights"], "weights")
    aspec = spec_of(body["input_activations"], "input_activations") if body.get("input_activations") else None
    n, k = module.out_features, module.in_features
    q = _weights(name, wspec, body, (n, k), tensors)
    act_scale = act_zero_point = None
    if aspec is not None and not aspec.dynamic:
        act_scale = _scale(_take(tensors, f"{name}.input_scale"), (), "input_scale")
        act_zero_point = torch.zeros((), dtype=torch.int32)
        if not aspec.symmetric:
            act_zero_point = _integer(_take(tensors, f"{name}.input_zero_point"), "input_zero_point").reshape(()) \
                + code_offset(aspec)
    scheme = _scheme(q.spec, aspec)
    bias = tensors.pop(f"{name}.bias", None)
    if (bias is None) != (module.bias is None):
        raise FormatError("bias presence differs between checkpoint and model")
    device = module.weight.device
    request = KernelRequest("linear", device.type, scheme=scheme, shape=(1, k, n))
    selection = matcher.select(request)
    return QuantLinear.from_packed(name, ops.pack_weight(q), scheme, selection,
                                   bias=None if bias is None else bias.to(device, torch.float32),
                                   act_scale=act_scale, act_zero_point=act_zero_point)


def _weights(name: str, spec: QuantSpec, body: dict[str, Any], shape: tuple[int, int],
             tensors: dict[str, torch.Tensor]) -> QTensor:
    """The layer's codes, scale and zero-point in qcore's canonical form and conventions."""
    n, k = shape
    bits = body["weights"]["num_bits"]
    qshape = {"tensor": (), "channel": (n,), "group": (n, k // (spec.group_size or 1))}[spec.granularity]
    if spec.granularity == "group" and k % (spec.group_size or 1):
        raise FormatError(f"group_size {spec.group_size} does not divide in_features {k}")
    scale = _scale(_take(tensors, f"{name}.weight_scale"), qshape, "weight_scale")
    zp_key = f"{name}.weight_zero_point"
    if body["format"] == PACK_QUANTIZED:
        stored = tuple(int(v) for v in _take(tensors, f"{name}.weight_shape").tolist())
        if stored != shape:
            raise FormatError(f"weight_shape {stored} differs from the model's Linear {shape}")
        codes = unpack_int32(_take(tensors, f"{name}.weight_packed"), bits, k)
        zp = None
        if not spec.symmetric:
            raw = _take(tensors, zp_key)
            zp = raw if spec.granularity == "tensor" else unpack_int32(raw, bits, n, dim=0)
    else:
        codes = _take(tensors, f"{name}.weight")
        zp = None if spec.symmetric else _take(tensors, zp_key)
        want = torch.float8_e4m3fn if spec.info.is_float else torch.int8
        if codes.dtype != want or tuple(codes.shape) != shape:
            raise FormatError(f"weight is {codes.dtype} {tuple(codes.shape)}; {spec.describe()} needs {want} {shape}")
    tensors.pop(zp_key, None)  # symmetric layers may carry an all-zero zero-point
    if spec.info.is_float:
        return QTensor(codes, scale, torch.zeros(qshape, dtype=torch.int32), spec)
    wide = codes.to(torch.int32)
    if spec.symmetric and int(wide.min()) < spec.qrange[0]:
        spec, zp = widened(spec), torch.zeros(qshape, dtype=torch.int32)
    offset = code_offset(spec)
    zero_point = torch.zeros(qshape, dtype=torch.int32) if spec.symmetric else \
        _integer(zp, "weight_zero_point").reshape(qshape) + offset
    return QTensor((wide + offset).to(torch.uint8 if offset else torch.int8), scale, zero_point, spec)


def _scale(t: torch.Tensor, shape: tuple[int, ...], what: str) -> torch.Tensor:
    if not t.is_floating_point() or t.numel() != max(1, _numel(shape)):
        raise FormatError(f"{what} is {t.dtype} {tuple(t.shape)}; expected floats of shape {shape}")
    scale = t.to(torch.float32).reshape(shape)
    if not torch.equal(scale.to(t.dtype), t.reshape(shape)):
        raise FormatError(f"{what} in {t.dtype} does not convert exactly to float32")
    return scale.contiguous()


def _integer(t: torch.Tensor | None, what: str) -> torch.Tensor:
    if t is None or t.is_floating_point():
        raise FormatError(f"{what} must be an integer tensor")
    return t.to(torch.int32)


def _numel(shape: tuple[int, ...]) -> int:
    out = 1
    for s in shape:
        out *= s
    return out


def _scheme(wspec: QuantSpec, aspec: QuantSpec | None) -> QuantScheme:
    """The registered scheme with these specs when there is one, else a scheme named after them."""
    for scheme in get_manager().schemes().values():
        if scheme.weights == wspec and scheme.input_activations == aspec:
            return scheme
    name = "ct-" + _spec_name(wspec) + ("-a-" + _spec_name(aspec) if aspec else "")
    return QuantScheme(name, wspec, aspec, f"read from a {FORMAT_NAME} checkpoint")


def _spec_name(spec: QuantSpec) -> str:
    gran = f"g{spec.group_size}" if spec.granularity == "group" else spec.granularity
    return "-".join([spec.dtype, gran] + (["asym"] if not spec.symmetric else []) + (["dyn"] if spec.dynamic else []))


def _nbytes(*tensors: torch.Tensor | None) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if t is not None)


def _float_record(name: str, module: nn.Linear, why: str) -> LayerRecord:
    size = _nbytes(module.weight, module.bias)
    return LayerRecord(name=name, scheme=None, rule=FORMAT_NAME, float_reason=why,
                       in_features=module.in_features, out_features=module.out_features, float_bytes=size,
                       quant_bytes=size, weight_sqnr=None)


def _tied(model: nn.Module) -> Iterator[tuple[str, str]]:
    """(alias, first name) of state-dict entries that share storage (tied weights)."""
    first: dict[tuple[int, tuple[int, ...]], str] = {}
    for key, t in model.state_dict(keep_vars=True).items():
        ident = (t.data_ptr(), tuple(t.shape))
        if t.numel() and ident in first:
            yield key, first[ident]
        first.setdefault(ident, key)


def _load_rest(where: Path, model: nn.Module, tensors: dict[str, torch.Tensor], replaced: set[str]) -> None:
    """Every remaining tensor into the float skeleton (but the `replaced` entries of quantized layers); tied
    entries may be stored once; nothing missing, nothing extra."""
    tied = dict(_tied(model))
    expected = {k: v for k, v in model.state_dict().items() if k not in replaced}
    for alias, source in tied.items():
        if alias not in tensors and source in tensors:
            tensors[alias] = tensors[source]
        elif source not in tensors and alias in tensors:
            tensors[source] = tensors[alias]
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    if missing or extra:
        parts = ([f"missing {', '.join(missing[:5])}" + (" ..." if len(missing) > 5 else "")] if missing else []) + \
                ([f"not in the model {', '.join(extra[:5])}" + (" ..." if len(extra) > 5 else "")] if extra else [])
        raise FormatError(f"{where}: the checkpoint's tensors do not fit the {type(model).__name__}: "
                          + "; ".join(parts))
    for key, target in expected.items():
        if tuple(tensors[key].shape) != tuple(target.shape):
            raise FormatError(f"{where}: tensor {key!r} has shape {tuple(tensors[key].shape)}, the model needs "
                              f"{tuple(target.shape)}")
    result = model.load_state_dict(tensors, strict=False)
    assert not result.unexpected_keys and set(result.missing_keys) <= replaced


def _recipe(where: Path, records: list[LayerRecord]) -> Recipe:
    """A recipe that says what the checkpoint did: each quantized layer's scheme, the float ones ignored."""
    quantized = [r for r in records if r.scheme is not None]
    if not quantized:
        raise FormatError(f"{where}: no Linear layer of the model is quantized by the checkpoint")
    registered = get_manager().schemes()
    custom = {r.scheme.name: r.scheme for r in quantized if r.scheme.name not in registered}  # type: ignore[union-attr]
    default = quantized[0].scheme
    assert default is not None
    return load_recipe({
        "qcore": 1,
        "scheme": default.name,
        "targets": ["Linear"],
        "ignore": [r.name for r in records if r.scheme is None],
        "overrides": [{"match": r.name, "scheme": r.scheme.name} for r in quantized  # type: ignore[union-attr]
                      if r.scheme != default],
        "schemes": {name: {"weights": s.weights.to_dict() if s.weights else None,
                           "input_activations": s.input_activations.to_dict() if s.input_activations else None,
                           "description": s.description} for name, s in custom.items()},
    })
