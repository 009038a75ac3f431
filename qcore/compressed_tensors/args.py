"""qcore's specs as compressed-tensors QuantizationArgs and back, and how the format stores codes.

The format's integers are signed two's-complement b-bit grids with a signed
integer zero-point; qcore's unsigned types (uint4, uint8) are the same numbers
shifted by 2^(b-1). A qcore code c with zero-point z is stored as c - 2^(b-1)
with zero-point z - 2^(b-1): (c - z)·s is unchanged and nothing is re-rounded.
Reading goes the other way: an asymmetric b-bit layer becomes qcore's uint{b}.

A symmetric layer of the format may use the code -2^(b-1) (llm-compressor's
scale is amax/(2^(b-1) - 0.5), so -8 and -128 do occur); qcore's symmetric
specs stop at -(2^(b-1) - 1). Such a layer is read as uint{b} with the
zero-point 2^(b-1) everywhere: the same values, in a spec that holds them.

One compression format per scheme, chosen as compressed-tensors chooses it
(`compression_format`), because its dequantizer infers the format again from
the args and must find the tensors it expects.
"""

from __future__ import annotations

from typing import Any, Literal

from qcore.errors import QcoreError
from qcore.spec import QuantScheme, QuantSpec

FORMAT_NAME = "compressed-tensors"
INT_QUANTIZED = "int-quantized"
PACK_QUANTIZED = "pack-quantized"
FLOAT_QUANTIZED = "float-quantized"
NAIVE_QUANTIZED = "naive-quantized"
MIXED_PRECISION = "mixed-precision"
READABLE_FORMATS = (INT_QUANTIZED, PACK_QUANTIZED, FLOAT_QUANTIZED, NAIVE_QUANTIZED)

Role = Literal["weights", "input_activations"]

_TYPES: dict[str, tuple[str, int]] = {
    "int8": ("int", 8), "uint8": ("int", 8), "int4": ("int", 4), "uint4": ("int", 4), "fp8_e4m3": ("float", 8),
}
_INEXPRESSIBLE = {
    "ternary": "ternary codes {-1, 0, 1} have no compressed-tensors type (its 2-bit integers are the grid "
               "[-2, 1], and nothing would read them back as ternary)",
    "binary": "binary codes ±1 with a mean-|w| scale have no compressed-tensors type",
    "fp8_e5m2": "compressed-tensors' 8-bit float is e4m3 only",
    "fp16": "fp16 is a plain cast; compressed-tensors has no cast-only quantization (leave the layer float)",
    "bf16": "bf16 is a plain cast; compressed-tensors has no cast-only quantization (leave the layer float)",
}


class FormatError(QcoreError, ValueError):
    """What compressed-tensors cannot express (export) or qcore cannot represent (import); names layer and reason."""


def code_offset(spec: QuantSpec) -> int:
    """qcore code minus stored code: 2^(b-1) for unsigned integer types, 0 otherwise."""
    info = spec.info
    return 1 << (info.bits - 1) if info.kind == "int" and not info.signed else 0


def args_of(spec: QuantSpec, role: Role) -> dict[str, Any]:
    """The QuantizationArgs (as compressed-tensors dumps them) of one qcore spec; FormatError says why not."""
    if spec.dtype in _INEXPRESSIBLE:
        raise FormatError(_INEXPRESSIBLE[spec.dtype])
    kind, bits = _TYPES[spec.dtype]
    strategy = _strategy(spec, role)
    if role == "input_activations" and not spec.dynamic and strategy != "tensor":
        raise FormatError(f"static {spec.granularity} activation scales have no compressed-tensors form "
                          "(static activations are per tensor)")
    return {"num_bits": bits, "type": kind, "symmetric": spec.symmetric,
            "group_size": spec.group_size if strategy == "group" else None, "strategy": strategy,
            "dynamic": spec.dynamic}


def _strategy(spec: QuantSpec, role: Role) -> str:
    if spec.granularity == "channel":
        if role != "weights" or spec.axis not in (0, -2):
            raise FormatError(f"{spec.describe()}: compressed-tensors channels are output channels of a weight "
                              "(one scale per row)")
        return "channel"
    return spec.granularity


def compression_format(scheme: QuantScheme) -> str:
    """The compression format compressed-tensors infers for a Linear with this scheme (see the module docstring)."""
    weights, acts = scheme.weights, scheme.input_activations
    if weights is None:
        raise FormatError(f"scheme {scheme.name!r} leaves the weights float; compressed-tensors stores "
                          "activation-only quantization nowhere that vLLM or transformers read")
    is_int = weights.info.kind == "int"
    if acts is not None:
        return INT_QUANTIZED if is_int else FLOAT_QUANTIZED
    return PACK_QUANTIZED if is_int else NAIVE_QUANTIZED


def scheme_args(scheme: QuantScheme) -> dict[str, Any]:
    """One config group's body (without targets): weights, input_activations, output_activations, format."""
    fmt = compression_format(scheme)
    assert scheme.weights is not None
    acts = scheme.input_activations
    return {"weights": args_of(scheme.weights, "weights"),
            "input_activations": args_of(acts, "input_activations") if acts is not None else None,
            "output_activations": None, "format": fmt}


# -- reading ------------------------------------------------------------------


def spec_of(args: dict[str, Any], role: Role) -> QuantSpec:
    """The qcore spec of a QuantizationArgs mapping; FormatError for what qcore cannot represent.

    Asymmetric integers become unsigned (see the module docstring); the caller
    widens a symmetric weight spec when its codes reach -2^(b-1).
    """
    kind, bits = args.get("type", "int"), args.get("num_bits", 8)
    strategy = args.get("strategy") or ("group" if args.get("group_size") else "tensor")
    symmetric, dynamic = bool(args.get("symmetric", True)), args.get("dynamic", False)
    if dynamic not in (True, False):
        raise FormatError(f"dynamic={dynamic!r} (locally dynamic scales) has no qcore equivalent")
    for key, bad in (("actorder", ("group", "dynamic")), ("block_structure", None)):
        value = args.get(key)
        if value is not None and (bad is None or value in bad):
            raise FormatError(f"{key}={value!r} is not representable in qcore "
                              + ("(group-wise activation reordering needs g_idx)" if key == "actorder" else ""))
    if kind == "int" and bits in (4, 8):
        dtype = f"{'' if symmetric else 'u'}int{bits}"
    elif kind == "float" and bits == 8:
        if not symmetric:
            raise FormatError("asymmetric 8-bit floats are not representable in qcore")
        dtype = "fp8_e4m3"
    else:
        raise FormatError(f"{bits}-bit {kind} quantization is not representable in qcore "
                          "(it has 4- and 8-bit integers and fp8 e4m3)")
    if strategy not in ("tensor", "channel", "group", "token"):
        raise FormatError(f"strategy {strategy!r} is not representable in qcore (tensor, channel, group, token)")
    if role == "weights" and (dynamic or strategy == "token"):
        raise FormatError("dynamic weight quantization is not representable in qcore")
    return QuantSpec(dtype, strategy, axis=0, group_size=args.get("group_size") if strategy == "group" else None,
                     symmetric=symmetric, dynamic=bool(dynamic))


def widened(spec: QuantSpec) -> QuantSpec:
    """A symmetric integer spec as the unsigned asymmetric spec that also holds the code -2^(b-1)."""
    return QuantSpec(f"u{spec.dtype}", spec.granularity, spec.axis, spec.group_size, symmetric=False,
                     dynamic=spec.dynamic, observer=spec.observer)
