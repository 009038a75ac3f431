"""Which vLLM compressed-tensors scheme would serve a layer, or why none would.

The rules are those of vLLM's ``CompressedTensorsConfig._get_scheme_from_parts``
(vllm/model_executor/layers/quantization/compressed_tensors/compressed_tensors.py)
and of the Marlin kernels behind its WNA16 scheme (``marlin_utils``), in the
order vLLM applies them:

1. weight-only integer weights with channel or group scales in ``pack-quantized``
   form, 4 or 8 bits → WNA16; Marlin then needs symmetric weights or 4-bit
   zero-points (uint4), a group size of 32, 64 or 128 (or per channel), and
   out_features % 64 == 0, in_features % 128 == 0;
2. in ``int-quantized``/``float-quantized``/``naive-quantized`` form:
   fp8 weights (symmetric, per tensor or channel) with fp8 activations that are
   dynamic or static symmetric per tensor → FP8 (W8A8); fp8 weights otherwise
   → FP8 weight-only (W8A16, activations ignored); int8 symmetric weights per
   tensor or channel with int8 activations static per tensor or dynamic per
   token → W8A8 int8; int4 symmetric group/channel weights with int8 dynamic
   per-token activations → W4A8 int8.

vLLM's own checks of the GPU (fp8 needs compute capability 8.9 for W8A8, Marlin
8.0) happen where it runs and are not judged here.
"""

from __future__ import annotations

from typing import Any

import attrs

from qcore.compressed_tensors.args import FLOAT_QUANTIZED, INT_QUANTIZED, NAIVE_QUANTIZED, PACK_QUANTIZED

MARLIN_GROUP_SIZES = (32, 64, 128)
MARLIN_MIN_N, MARLIN_MIN_K = 64, 128
ACTIVATION_FORMATS = (NAIVE_QUANTIZED, INT_QUANTIZED, FLOAT_QUANTIZED)


@attrs.frozen
class Serving:
    """vLLM's scheme for one layer (None: none would serve it) and what decided it."""

    scheme: str | None
    detail: str

    def describe(self) -> str:
        return f"{self.scheme}: {self.detail}" if self.scheme else f"none: {self.detail}"


def serving(weights: dict[str, Any], acts: dict[str, Any] | None, fmt: str, shape: tuple[int, int]) -> Serving:
    """The vLLM scheme for a Linear of `shape` (out, in) stored in `fmt` with these QuantizationArgs."""
    w_float = weights["type"] == "float"
    w_strategy = weights["strategy"]
    if acts is None and w_strategy in ("channel", "group") and fmt == PACK_QUANTIZED \
            and weights["num_bits"] in (4, 8):
        return _marlin(weights, shape)
    if acts is None and not w_float:
        return Serving(None, "integer weight-only layers need 4- or 8-bit channel or group scales in pack-quantized "
                             "form (WNA16)")
    if fmt not in ACTIVATION_FORMATS:
        return Serving(None, f"format {fmt} with these args matches no vLLM scheme")
    per_tensor_or_channel = w_strategy in ("tensor", "channel")
    if w_float:
        if not (weights["symmetric"] and per_tensor_or_channel):
            return Serving(None, "vLLM's FP8 schemes take symmetric per-tensor, per-channel or block fp8 weights")
        if acts is not None and acts["type"] == "float" and (
                acts["dynamic"] or (acts["symmetric"] and acts["strategy"] == "tensor")):
            return Serving("FP8", f"CompressedTensorsW8A8Fp8, {w_strategy} weights, "
                                  f"{_act_text(acts)} activations")
        ignored = "" if acts is None else "; the activation quantization is ignored"
        return Serving("FP8", f"CompressedTensorsW8A16Fp8 (weight-only fp8, Marlin){ignored}")
    if acts["type"] == "float":
        return Serving(None, "integer weights with fp8 activations match no vLLM scheme")
    a_static_tensor = not acts["dynamic"] and acts["strategy"] == "tensor"
    a_dynamic_token = acts["dynamic"] and acts["strategy"] == "token"
    if weights["num_bits"] == acts["num_bits"] == 8:
        if not weights["symmetric"]:
            return Serving(None, "asymmetric int8 weights: vLLM's W8A8 int8 takes symmetric weights only")
        if not per_tensor_or_channel:
            return Serving(None, "vLLM's W8A8 int8 takes per-tensor or per-channel weight scales, not groups")
        if a_static_tensor or a_dynamic_token:
            return Serving("W8A8 int8", f"CompressedTensorsW8A8Int8, {w_strategy} weights, {_act_text(acts)} "
                                        "activations")
        return Serving(None, "vLLM's W8A8 int8 takes static per-tensor or dynamic per-token activations, "
                             f"not {_act_text(acts)}")
    if weights["num_bits"] == 4 and acts["num_bits"] == 8 and weights["symmetric"] \
            and w_strategy in ("group", "channel") and a_dynamic_token:
        return Serving("W4A8 int8", "CompressedTensorsW4A8Int, dynamic per-token activations")
    return Serving(None, f"{weights['num_bits']}-bit weights with {acts['num_bits']}-bit {_act_text(acts)} "
                         "activations match no vLLM scheme")


def _marlin(weights: dict[str, Any], shape: tuple[int, int]) -> Serving:
    bits, n, k = weights["num_bits"], shape[0], shape[1]
    group = weights["group_size"] if weights["strategy"] == "group" else -1
    if not weights["symmetric"] and bits != 4:
        return Serving(None, f"asymmetric {bits}-bit weights: Marlin (vLLM's WNA16 kernel) takes zero-points "
                             "only for 4-bit weights (uint4)")
    if group != -1 and group not in MARLIN_GROUP_SIZES:
        return Serving(None, f"group size {group}: Marlin takes groups of 32, 64 or 128, or per-channel scales")
    if n % MARLIN_MIN_N or k % MARLIN_MIN_K:
        return Serving(None, f"shape {n}x{k}: Marlin needs out_features % {MARLIN_MIN_N} == 0 and in_features "
                             f"% {MARLIN_MIN_K} == 0")
    kind = "symmetric" if weights["symmetric"] else "with zero-points"
    scales = "per channel" if group == -1 else f"groups of {group}"
    return Serving("WNA16", f"CompressedTensorsWNA16 (Marlin), {bits}-bit {kind}, {scales}")


def _act_text(acts: dict[str, Any]) -> str:
    return f"{'dynamic' if acts['dynamic'] else 'static'} per-{acts['strategy']}" + (
        "" if acts["symmetric"] else " asymmetric")
