"""Hugging Face model folders as qcore models, end to end through the CLI: quantize, load without a factory,
export to compressed-tensors (and transformers loading the export), cards of exported folders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

import qcore
from interop_models import llama, logits, quant_layers, tokens
from qcore import cli

pytest.importorskip("transformers", reason="the hf extra is not installed")

W4A16 = "qcore: 1\nscheme: w4a16\ntargets: [Linear]\nignore: [lm_head]\n"


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("hf") / "tiny-llama"
    llama(seed=4).save_pretrained(path)
    return path


@pytest.fixture()
def recipe(tmp_path: Path) -> Path:
    path = tmp_path / "w4a16.yaml"
    path.write_text(W4A16)
    return path


def test_a_folder_loads_with_the_class_its_config_names(folder: Path) -> None:
    model = qcore.hf.load_folder(folder)
    assert type(model).__name__ == "LlamaForCausalLM" and not model.training
    with pytest.raises(qcore.QcoreError, match="not a Hugging Face model folder"):
        qcore.hf.load_folder(folder.parent)


def test_quantize_a_folder_then_load_it_without_a_factory(folder: Path, recipe: Path, tmp_path: Path) -> None:
    out = tmp_path / "q"
    assert cli.main(["quantize", str(recipe), "--model", str(folder), "--out", str(out), "--no-measure"]) == 0
    loaded = qcore.load(out)
    assert type(loaded).__name__ == "LlamaForCausalLM" and len(quant_layers(loaded)) == 14
    direct = qcore.quantize(folder, W4A16, progress=False, measure=False)  # the API takes the folder too
    for name, layer in quant_layers(direct).items():
        assert torch.equal(loaded.get_submodule(name).dequantized_weight(), layer.dequantized_weight())
    ids = tokens()
    assert (logits(loaded, ids) - logits(direct, ids)).abs().max() < 1e-2


@pytest.mark.filterwarnings("ignore:You passed `quantization_config`")
def test_qcore_export_prints_vllm_schemes_and_transformers_loads_the_folder(folder: Path, recipe: Path,
                                                                           tmp_path: Path, capsys) -> None:
    from transformers import AutoModelForCausalLM, CompressedTensorsConfig

    out, ct = tmp_path / "q", tmp_path / "ct"
    assert cli.main(["quantize", str(recipe), "--model", str(folder), "--out", str(out), "--no-measure"]) == 0
    capsys.readouterr()
    assert cli.main(["export", str(out), "--out", str(ct)]) == 0
    printed = capsys.readouterr().out
    assert "WNA16" in printed and "model.layers.1.mlp.down_proj" in printed and "float (ignore)" in printed
    assert "14 quantized Linear layers, 14 of them servable" in printed
    assert "generation_config.json" in printed  # copied from the folder the card names
    hf = AutoModelForCausalLM.from_pretrained(ct, quantization_config=CompressedTensorsConfig(dequantize=True),
                                              dtype=torch.float32)
    assert type(hf).__name__ == "LlamaForCausalLM"
    loaded = qcore.load(out)
    for name, layer in quant_layers(loaded).items():
        assert torch.equal(hf.get_submodule(name).weight, layer.dequantized_weight())


def test_quantize_straight_to_compressed_tensors_and_card_it(folder: Path, recipe: Path, tmp_path: Path,
                                                            capsys) -> None:
    out = tmp_path / "ct"
    args = ["quantize", str(recipe), "--model", str(folder), "--out", str(out), "--no-measure",
            "--format", "compressed-tensors"]
    assert cli.main(args) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["quantization_config"]["format"] == "pack-quantized"
    assert (out / "card.json").is_file()
    (out / "card.json").unlink()
    (out / "card.md").unlink()
    capsys.readouterr()
    assert cli.main(["card", str(out)]) == 0  # no card.json: the folder is loaded with qcore layers and described
    printed = capsys.readouterr().out
    assert "14 quantized" in printed and "lm_head" in printed


def test_a_plain_module_still_needs_its_factory(tmp_path: Path) -> None:
    model = qcore.quantize(nn.Sequential(nn.Linear(64, 64)), {"qcore": 1, "scheme": "w8a16"}, progress=False,
                           measure=False)
    qcore.save(model, tmp_path)
    with pytest.raises(qcore.CheckpointError, match="no recorded transformers config; pass the float model"):
        qcore.load(tmp_path)
    assert isinstance(qcore.load(tmp_path, lambda: nn.Sequential(nn.Linear(64, 64)))[0], qcore.QuantLinear)
