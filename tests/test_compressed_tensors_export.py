"""qcore.export to compressed-tensors, checked with the compressed-tensors package and with transformers.

Every exported weight must dequantize, through the package's own dequantizer,
to exactly (bit for bit) the weight qcore's kernels compute with; the config
must be what the package itself would dump; transformers must load the folder.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

import qcore
from interop_models import llama, logits, quant_layers, quantized_llama, tokens

ct = pytest.importorskip("compressed_tensors", reason="the compressed-tensors extra is not installed")
from compressed_tensors.entrypoints.convert.converters.ct_dequantizer import (  # noqa: E402
    CompressedTensorsDequantizer,
)
from compressed_tensors.quantization import QuantizationConfig  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

CUSTOM = {
    "w8-tensor-a8-static": {"weights": {"dtype": "int8", "granularity": "tensor"},
                            "input_activations": {"dtype": "int8", "granularity": "tensor"}},
    "w8-asym-channel": {"weights": {"dtype": "uint8", "granularity": "channel", "symmetric": False}},
    "w8-group64": {"weights": {"dtype": "int8", "granularity": "group", "group_size": 64}},
    "w4-channel-asym": {"weights": {"dtype": "uint4", "granularity": "channel", "symmetric": False}},
    "w4-tensor-asym": {"weights": {"dtype": "uint4", "granularity": "tensor", "symmetric": False}},
    "w8a8-asym-static": {"weights": {"dtype": "int8", "granularity": "channel"},
                         "input_activations": {"dtype": "uint8", "granularity": "tensor", "symmetric": False}},
    "fp8-static": {"weights": {"dtype": "fp8_e4m3", "granularity": "tensor"},
                   "input_activations": {"dtype": "fp8_e4m3", "granularity": "tensor"}},
    "fp8-weights": {"weights": {"dtype": "fp8_e4m3", "granularity": "channel"}},
}
SCHEMES = ["w8a8-dynamic", "w8a8", "w8a16", "w4a16", "w4a16-asym", "fp8", *CUSTOM]


def _dequantized(directory: Path) -> dict[str, torch.Tensor]:
    """Every tensor of the export with the quantized weights dequantized by compressed-tensors (float32)."""
    dequantizer = CompressedTensorsDequantizer(directory, dtype=torch.float32)
    return dequantizer.process(load_file(directory / "model.safetensors"))


def _config(directory: Path) -> dict:
    return json.loads((directory / "config.json").read_text())


@pytest.mark.parametrize("scheme", SCHEMES)
def test_every_weight_dequantizes_bit_identically_and_the_config_is_the_packages_own(scheme: str,
                                                                                    tmp_path: Path) -> None:
    model = quantized_llama(scheme, schemes={scheme: CUSTOM[scheme]} if scheme in CUSTOM else None)
    report = qcore.export(model, tmp_path)
    dense = _dequantized(tmp_path)
    layers = quant_layers(model)
    assert len(layers) == 14 and len(report.quantized) == 14
    for name, layer in layers.items():
        ours = layer.dequantized_weight()
        theirs = dense[f"{name}.weight"]
        assert theirs.dtype == torch.float32 and torch.equal(theirs, ours), name
        if layer.scheme.input_activations is not None and not layer.scheme.input_activations.dynamic:
            assert torch.equal(dense[f"{name}.input_scale"].reshape(()), layer.act_scale)
    assert torch.equal(dense["lm_head.weight"], model.lm_head.weight)
    config = _config(tmp_path)
    written = config["quantization_config"]
    parsed = QuantizationConfig.model_validate(written)
    assert json.loads(json.dumps(parsed.model_dump(), default=str)) == written
    assert written["quant_method"] == "compressed-tensors" and written["quantization_status"] == "compressed"
    assert written["ignore"] == ["lm_head"]
    assert config["model_type"] == "llama" and config["architectures"] == ["LlamaForCausalLM"]


def test_tensor_names_shapes_and_dtypes_follow_the_format(tmp_path: Path) -> None:
    overrides = [{"match": "re:.*mlp.*", "scheme": "w4a16-asym"},
                 {"match": "re:.*self_attn\\.o_proj", "scheme": "w8a16"},
                 {"match": "re:.*layers\\.1\\.self_attn\\.[qkv]_proj", "scheme": "w8a8"}]
    model = quantized_llama("w8a8-dynamic", overrides=overrides)
    report = qcore.export(model, tmp_path)
    tensors = load_file(tmp_path / "model.safetensors")
    groups = _config(tmp_path)["quantization_config"]
    assert groups["format"] == "mixed-precision" and len(groups["config_groups"]) == 4
    formats = {name: g["format"] for name, g in groups["config_groups"].items()}
    assert sorted(formats.values()) == ["int-quantized", "int-quantized", "pack-quantized", "pack-quantized"]
    by_layer = {layer.name: layer for layer in report.quantized}
    assert {n: len(g["targets"]) for n, g in groups["config_groups"].items()} == \
        {g: sum(1 for layer in report.quantized if layer.group == g) for g in formats}
    down = "model.layers.0.mlp.down_proj"  # uint4, groups of 128, out 128, in 256
    assert tensors[f"{down}.weight_packed"].dtype == torch.int32 and tensors[f"{down}.weight_packed"].shape == (128, 32)
    assert tensors[f"{down}.weight_scale"].shape == (128, 2)
    zero_point = tensors[f"{down}.weight_zero_point"]
    assert zero_point.dtype == torch.int32 and zero_point.shape == (16, 2)
    assert tensors[f"{down}.weight_shape"].tolist() == [128, 256]
    o = "model.layers.0.self_attn.o_proj"  # w8a16: 8-bit weight-only, packed 4 a word
    assert tensors[f"{o}.weight_packed"].shape == (128, 32) and tensors[f"{o}.weight_scale"].shape == (128, 1)
    assert f"{o}.weight_zero_point" not in tensors
    q = "model.layers.0.self_attn.q_proj"  # w8a8-dynamic: int8 [N, K], scale [N, 1], no input_scale
    assert tensors[f"{q}.weight"].dtype == torch.int8 and tensors[f"{q}.weight"].shape == (128, 128)
    assert tensors[f"{q}.weight_scale"].shape == (128, 1) and f"{q}.input_scale" not in tensors
    q1 = "model.layers.1.self_attn.q_proj"  # w8a8 static: per-tensor input_scale [1]
    assert tensors[f"{q1}.input_scale"].shape == (1,) and f"{q1}.input_zero_point" not in tensors
    assert not any(k.endswith(("weight_data", "act_scale", "act_zero_point")) for k in tensors)
    assert by_layer[down].serving.scheme == "WNA16" and by_layer[q].serving.scheme == "W8A8 int8"


def test_uint4_codes_and_zero_points_are_shifted_not_rerounded(tmp_path: Path) -> None:
    model = quantized_llama("w4a16-asym")
    qcore.export(model, tmp_path)
    tensors = load_file(tmp_path / "model.safetensors")
    name = "model.layers.0.mlp.up_proj"
    q = qcore.ops.unpack_weight(quant_layers(model)[name].packed_weight())
    words = tensors[f"{name}.weight_packed"].to(torch.int64) & 0xFFFFFFFF
    nibbles = torch.stack([(words >> (4 * i)) & 0xF for i in range(8)], dim=-1).reshape(q.codes.shape)
    assert torch.equal(nibbles, q.codes.to(torch.int64))  # stored field = (code - 8) + 8
    zp_words = tensors[f"{name}.weight_zero_point"].to(torch.int64) & 0xFFFFFFFF  # packed along the output rows
    zp = torch.stack([(zp_words >> (4 * i)) & 0xF for i in range(8)], dim=1).reshape(-1, zp_words.shape[1])
    assert torch.equal(zp, q.zero_point.to(torch.int64))


@pytest.mark.parametrize("scheme", ["w4a16", "w4a16-asym", "w8a16", "fp8-weights"])
@pytest.mark.filterwarnings("ignore:You passed `quantization_config`")
def test_transformers_loads_the_export_and_matches_qcore(scheme: str, tmp_path: Path) -> None:
    from transformers import CompressedTensorsConfig, LlamaForCausalLM

    schemes = {scheme: CUSTOM[scheme]} if scheme in CUSTOM else None
    ids = tokens(seed=7)
    reference = quantized_llama(scheme, backend="cpu-reference", schemes=schemes)  # the numerics contract, float64
    qcore.export(reference, tmp_path)
    loaded = LlamaForCausalLM.from_pretrained(tmp_path, quantization_config=CompressedTensorsConfig(dequantize=True),
                                              dtype=torch.float32).eval()
    assert all(type(m) is nn.Linear for m in loaded.modules() if isinstance(m, nn.Linear))
    for name, layer in quant_layers(reference).items():
        assert torch.equal(loaded.get_submodule(name).weight, layer.dequantized_weight()), name
    ours, theirs = logits(reference, ids), logits(loaded, ids)
    torch.testing.assert_close(theirs, ours, rtol=1e-4, atol=1e-4)


@pytest.mark.filterwarnings("ignore:You passed `quantization_config`")
def test_transformers_runs_static_int8_activations_like_qcore(tmp_path: Path) -> None:
    from transformers import CompressedTensorsConfig, LlamaForCausalLM

    ids = tokens(seed=0)
    reference = quantized_llama("w8a8", backend="cpu-reference")
    qcore.export(reference, tmp_path)
    loaded = LlamaForCausalLM.from_pretrained(tmp_path, quantization_config=CompressedTensorsConfig(dequantize=False),
                                              dtype=torch.float32).eval()
    ours, theirs = logits(reference, ids), logits(loaded, ids)
    assert (theirs - ours).abs().max() < 1e-2 * ours.abs().max()  # same static input_scale, same int8 grid


def test_a_plain_module_exports_with_the_quantization_config_alone(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 32, bias=False), nn.Linear(32, 8))
    qcore.quantize(model, {"qcore": 1, "scheme": "w8a16", "targets": ["Linear"], "ignore": ["3"]}, progress=False,
                   measure=False)
    report = qcore.export(model, tmp_path)
    assert set(_config(tmp_path)) == {"quantization_config"}
    assert [(layer.name, layer.group) for layer in report.layers] == [("0", "group_0"), ("2", "group_0"), ("3", None)]
    dense = _dequantized(tmp_path)
    assert torch.equal(dense["0.weight"], model[0].dequantized_weight())
    assert torch.equal(dense["0.bias"], model[0].bias) and "2.bias" not in dense
    assert report.layers[0].serving.scheme == "WNA16"  # 64 x 128
    assert report.layers[1].serving.scheme is None and "Marlin needs" in report.layers[1].serving.detail  # 32 x 64


@pytest.mark.parametrize(("scheme", "reason"), [
    ("ternary", "ternary codes"),
    ("binary", "binary codes"),
    ("e5m2", "e4m3 only"),
    ("per-input-channel", "output channels"),
    ("fp16", "plain cast"),
])
def test_what_the_format_cannot_express_is_an_error_naming_the_layer(scheme: str, reason: str,
                                                                     tmp_path: Path) -> None:
    custom = {"e5m2": {"weights": {"dtype": "fp8_e5m2", "granularity": "channel"}},
              "per-input-channel": {"weights": {"dtype": "int8", "granularity": "channel", "axis": 1}}}
    model = quantized_llama(scheme, schemes={scheme: custom[scheme]} if scheme in custom else None)
    out = tmp_path / "out"
    with pytest.raises(qcore.FormatError, match=reason) as err:
        qcore.export(model, out)
    assert "layer 'model.layers.0.self_attn.q_proj'" in str(err.value)
    assert not out.exists()


def test_an_input_transform_left_unfolded_is_an_error(tmp_path: Path) -> None:
    model = quantized_llama("w8a8-dynamic")
    layer = model.get_submodule("model.layers.1.mlp.down_proj")
    layer.input_scale = torch.ones(layer.in_features)
    (tmp_path / "model.safetensors").write_bytes(b"old")
    with pytest.raises(qcore.FormatError, match=r"layer 'model.layers.1.mlp.down_proj'.*input_scale"):
        qcore.export(model, tmp_path)
    assert (tmp_path / "model.safetensors").read_bytes() == b"old"


def test_an_unknown_format_lists_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(qcore.UnknownNameError, match="compressed-tensors"):
        qcore.export(quantized_llama("w8a16"), tmp_path, format="gguf")


def test_exporting_does_not_change_the_model(tmp_path: Path) -> None:
    model = quantized_llama("w4a16-asym")
    ids = tokens()
    before = logits(model, ids)
    qcore.export(model, tmp_path)
    assert torch.equal(logits(model, ids), before)


@pytest.mark.filterwarnings("ignore:You passed `quantization_config`")
def test_transformers_runs_a_mixed_precision_export_through_compressed_tensors(tmp_path: Path) -> None:
    """transformers' dequantize=True path decompresses every dense layer with the first group's scheme (so it
    fails on mixed-precision checkpoints, compressed-tensors' own included); its compressed path reads each group."""
    from transformers import CompressedTensorsConfig, LlamaForCausalLM

    ids = tokens(seed=2)
    reference = quantized_llama("w8a8-dynamic", backend="cpu-reference",
                                overrides=[{"match": "re:.*mlp.*", "scheme": "w4a16"}])
    qcore.export(reference, tmp_path)
    loaded = LlamaForCausalLM.from_pretrained(tmp_path, quantization_config=CompressedTensorsConfig(dequantize=False),
                                              dtype=torch.float32).eval()
    ours, theirs = logits(reference, ids).flatten(), logits(loaded, ids).flatten()
    assert torch.nn.functional.cosine_similarity(ours, theirs, dim=0) > 0.9999  # dynamic scales: amax/127 vs /127.5
    for name, layer in quant_layers(reference).items():
        assert torch.equal(loaded.get_submodule(name).weight, layer.dequantized_weight()), name
