"""qcore.load of compressed-tensors checkpoints that the compressed-tensors package compressed itself.

The package computes the qparams (its `calculate_qparams`, llm-compressor's
rule: scale amax/(2^(b-1) - 0.5), so -8 and -128 codes occur), quantizes,
packs and writes; qcore must build QuantLinear layers whose dequantized weights
are exactly the package's own dequantization, run them with the matcher's
kernels, and describe them in a card. What qcore cannot represent is an error.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import qcore
from qcore.card import build_card
from interop_models import llama, logits, quant_layers, tokens

pytest.importorskip("compressed_tensors", reason="the compressed-tensors extra is not installed")
from compressed_tensors.compressors import ModelCompressor  # noqa: E402
from compressed_tensors.entrypoints.convert.converters.ct_dequantizer import (  # noqa: E402
    CompressedTensorsDequantizer,
)
from compressed_tensors.quantization import (  # noqa: E402
    QuantizationConfig,
    QuantizationStatus,
    apply_quantization_config,
)
from compressed_tensors.quantization.utils import calculate_qparams  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

W4_G32 = {"num_bits": 4, "type": "int", "symmetric": True, "strategy": "group", "group_size": 32}
W4_ASYM_G64 = {"num_bits": 4, "type": "int", "symmetric": False, "strategy": "group", "group_size": 64}
W8_CHANNEL = {"num_bits": 8, "type": "int", "symmetric": True, "strategy": "channel"}
A8_TOKEN = {"num_bits": 8, "type": "int", "symmetric": True, "strategy": "token", "dynamic": True}
FP8_CHANNEL = {"num_bits": 8, "type": "float", "symmetric": True, "strategy": "channel"}
FP8_TOKEN = {"num_bits": 8, "type": "float", "symmetric": True, "strategy": "token", "dynamic": True}


def compress(directory: Path, groups: dict[str, dict[str, Any]], *, dtype: torch.dtype = torch.float32) -> nn.Module:
    """The tiny Llama quantized and compressed by compressed-tensors alone, saved as transformers saves it."""
    model = llama(seed=3).to(dtype)
    config = QuantizationConfig.model_validate({"config_groups": groups, "ignore": ["lm_head"]})
    apply_quantization_config(model, config)
    for _, module in model.named_modules():
        scheme = getattr(module, "quantization_scheme", None)
        if scheme is None:
            continue
        w = module.weight.data
        rows = {"channel": w, "tensor": w.reshape(1, -1)}.get(scheme.weights.strategy)
        if rows is None:
            rows = w.reshape(w.shape[0], -1, scheme.weights.group_size)
        scale, zero_point = calculate_qparams(rows.amin(-1), rows.amax(-1), scheme.weights)
        module.weight_scale.data.copy_(scale.reshape(module.weight_scale.shape))
        if hasattr(module, "weight_zero_point"):
            module.weight_zero_point.data.copy_(zero_point.reshape(module.weight_zero_point.shape))
        module.quantization_status = QuantizationStatus.FROZEN
    compressor = ModelCompressor.from_pretrained_model(model)
    compressor.compress_model(model)
    model.save_pretrained(directory)
    compressor.update_config(directory)
    return model


def package_dequantized(directory: Path, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    # The dequantizer matches a "Linear" target by tensor names alone, so the embedding's "weight" must be ignored.
    dequantizer = CompressedTensorsDequantizer(directory, ignore=["model.embed_tokens"], dtype=dtype)
    return dequantizer.process(load_file(directory / "model.safetensors"))


@pytest.mark.parametrize(("groups", "scheme_names"), [
    ({"group_0": {"targets": ["Linear"], "weights": W4_G32}}, {"ct-uint4-g32-asym", "ct-int4-g32"}),
    ({"group_0": {"targets": ["Linear"], "weights": W4_ASYM_G64}}, {"ct-uint4-g64-asym"}),
    ({"group_0": {"targets": ["Linear"], "weights": W8_CHANNEL, "input_activations": A8_TOKEN}},
     {"w8a8-dynamic", "ct-uint8-channel-asym-a-int8-token-dyn"}),
    ({"group_0": {"targets": ["Linear"], "weights": FP8_CHANNEL, "input_activations": FP8_TOKEN}}, {"fp8"}),
    ({"attn": {"targets": ["re:.*self_attn.*"], "weights": W8_CHANNEL},
      "mlp": {"targets": ["re:.*mlp.*"], "weights": W4_G32}}, None),
])
def test_a_checkpoint_compressed_by_compressed_tensors_loads_into_qcore_layers(
        groups: dict, scheme_names: set[str] | None, tmp_path: Path) -> None:
    compress(tmp_path, groups)
    model = qcore.load(tmp_path)  # no factory: the architecture comes from config.json
    layers = quant_layers(model)
    assert len(layers) == 14 and isinstance(model.lm_head, nn.Linear)
    dense = package_dequantized(tmp_path)
    for name, layer in layers.items():
        assert torch.equal(layer.dequantized_weight(), dense[f"{name}.weight"]), name
    if scheme_names is not None:
        assert {layer.scheme.name for layer in layers.values()} <= scheme_names
    state = qcore.state_of(model)
    assert [r.name for r in state.layers if r.scheme is None] == ["lm_head"]
    card = build_card(model)
    assert len(card.quantized_layers) == 14 and all(layer.kernel for layer in card.quantized_layers)


def test_symmetric_codes_at_minus_8_are_read_as_uint4_with_zero_point_8(tmp_path: Path) -> None:
    compress(tmp_path, {"group_0": {"targets": ["Linear"], "weights": W4_G32}})
    layers = quant_layers(qcore.load(tmp_path))
    widened = [layer for layer in layers.values() if layer.scheme.weights.dtype == "uint4"]
    assert widened, "llm-compressor's scale amax/7.5 puts some weights at -8"
    q = qcore.ops.unpack_weight(widened[0].packed_weight())
    assert int(q.codes.min()) == 0 and bool((q.zero_point == 8).all())


@pytest.mark.filterwarnings("ignore:You passed `quantization_config`")
def test_weight_only_import_runs_like_transformers_on_it(tmp_path: Path) -> None:
    from transformers import CompressedTensorsConfig, LlamaForCausalLM

    compress(tmp_path, {"group_0": {"targets": ["Linear"], "weights": W4_ASYM_G64}})
    ids = tokens(seed=5)
    recipe_free = qcore.load(tmp_path)
    loaded = LlamaForCausalLM.from_pretrained(tmp_path, quantization_config=CompressedTensorsConfig(dequantize=True),
                                              dtype=torch.float32).eval()
    ours, theirs = logits(recipe_free, ids), logits(loaded, ids)
    assert (ours - theirs).abs().max() < 2e-2 * theirs.abs().max()  # kernels' accumulation differs, not the weights


def test_bf16_scales_dequantize_like_the_package_in_bf16(tmp_path: Path) -> None:
    compress(tmp_path, {"group_0": {"targets": ["Linear"], "weights": W4_G32}}, dtype=torch.bfloat16)
    layers = quant_layers(qcore.load(tmp_path))
    dense = package_dequantized(tmp_path, dtype=torch.bfloat16)
    for name, layer in layers.items():
        assert torch.equal(layer.dequantized_weight().to(torch.bfloat16), dense[f"{name}.weight"]), name


def test_a_factory_gives_the_skeleton_of_a_config_without_architecture(tmp_path: Path) -> None:
    compress(tmp_path, {"group_0": {"targets": ["Linear"], "weights": W8_CHANNEL}})
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({"quantization_config": config["quantization_config"]}))
    with pytest.raises(qcore.QcoreError, match="no model_type; pass a factory"):
        qcore.load(tmp_path)
    assert len(quant_layers(qcore.load(tmp_path, lambda: llama(seed=9)))) == 14


def _edit(directory: Path, change: Any) -> None:
    config = json.loads((directory / "config.json").read_text())
    change(config["quantization_config"])
    (directory / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize(("change", "message"), [
    (lambda qc: qc.update(format="nvfp4-pack-quantized"), "format 'nvfp4-pack-quantized' is not readable"),
    (lambda qc: qc["config_groups"]["group_0"].update(format="marlin-24"), "format 'marlin-24' is not readable"),
    (lambda qc: qc.update(kv_cache_scheme={"num_bits": 8, "type": "float"}), "kv_cache_scheme is set"),
    (lambda qc: qc.update(quantization_status="frozen"), "quantization_status is 'frozen'"),
    (lambda qc: qc["config_groups"]["group_0"]["weights"].update(actorder="group"), "actorder='group'"),
    (lambda qc: qc["config_groups"]["group_0"]["weights"].update(num_bits=3), "3-bit int quantization"),
    (lambda qc: qc["config_groups"]["group_0"]["weights"].update(strategy="block", block_structure=[128, 128],
                                                                 group_size=None), "block_structure"),
    (lambda qc: qc["config_groups"]["group_0"].update(output_activations=A8_TOKEN), "output activation"),
    (lambda qc: qc["config_groups"].update(group_1={"targets": ["Linear"], "weights": W8_CHANNEL}), "alike"),
])
def test_what_qcore_cannot_represent_is_a_clear_error(change: Any, message: str, tmp_path: Path) -> None:
    compress(tmp_path, {"group_0": {"targets": ["Linear"], "weights": W4_G32}})
    _edit(tmp_path, change)
    with pytest.raises(qcore.FormatError, match=message):
        qcore.load(tmp_path)


def test_a_missing_tensor_names_the_layer(tmp_path: Path) -> None:
    compress(tmp_path, {"group_0": {"targets": ["Linear"], "weights": W8_CHANNEL}})
    tensors = load_file(tmp_path / "model.safetensors")
    del tensors["model.layers.1.mlp.up_proj.weight_scale"]
    from safetensors.torch import save_file

    save_file(tensors, tmp_path / "model.safetensors", {"format": "pt"})
    with pytest.raises(qcore.FormatError, match=r"layer 'model.layers.1.mlp.up_proj'.*weight_scale' is missing"):
        qcore.load(tmp_path)


def test_round_trip_qcore_export_then_load_keeps_schemes_and_bits(tmp_path: Path) -> None:
    from interop_models import quantized_llama

    model = quantized_llama("w8a8-dynamic", overrides=[{"match": "re:.*mlp.*", "scheme": "w4a16-asym"}])
    qcore.export(model, tmp_path)
    again = qcore.load(tmp_path)
    for name, layer in quant_layers(model).items():
        other = again.get_submodule(name)
        assert other.scheme == layer.scheme and torch.equal(other.dequantized_weight(), layer.dequantized_weight())
    ids = tokens()
    ours, before = logits(again, ids), logits(model, ids)
    assert (ours - before).abs().max() < 2e-2 * before.abs().max()  # same weights; the kernels chosen may differ
