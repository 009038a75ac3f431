"""`qcore quantize` end to end on a small text model made by a factory, `qcore card`, and the error paths."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest

from qcore import QuantLinear, cli, io
from qcore.card import load_card, validate
from qcore.demo.models import load_factory, load_minilm
from qcore.demo.sentences import SENTENCES
from qcore.metrics import cosine

FACTORY_MODULE = '''
"""A tiny byte-level text model with encode(): what `qcore quantize --model mod:factory` needs."""
import torch
from torch import nn


class TinyText(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.EmbeddingBag(256, 128, mode="mean")
        self.body = nn.Sequential(nn.Linear(128, 256), nn.GELU(), nn.Linear(256, 128))
        self.head = nn.Linear(128, 64)

    def forward(self, ids, offsets):
        return self.head(self.body(self.embed(ids, offsets)))

    def encode(self, sentences):
        data = [torch.tensor(list(s.encode()), dtype=torch.long) for s in sentences]
        offsets = torch.tensor([0] + [len(d) for d in data[:-1]]).cumsum(0)
        with torch.no_grad():
            return self(torch.cat(data), offsets)


def factory():
    return TinyText()


def not_a_model():
    return 42
'''

STATIC_RECIPE = """\
qcore: 1
scheme: w8a8
targets: [Linear]
ignore: [head]
calibration: {samples: 16, observer: histogram}
"""


@pytest.fixture()
def factory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A factory module on sys.path, under a name unique to this test (no stale import between tests)."""
    name = f"qcore_cli_factory_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(FACTORY_MODULE, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield f"{name}:factory"
    sys.modules.pop(name, None)


@pytest.fixture()
def recipe(tmp_path: Path) -> Path:
    path = tmp_path / "static.yaml"
    path.write_text(STATIC_RECIPE, encoding="utf-8")
    return path


def test_quantize_writes_checkpoint_and_card_then_card_prints_it(factory, recipe, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    assert cli.main(["quantize", str(recipe), "--model", factory, "--out", str(out), "--no-measure"]) == 0
    printed = capsys.readouterr().out
    assert {p.name for p in out.iterdir()} >= {"model.safetensors", "card.md", "card.json"}
    for column in ("layer", "scheme", "kernel", "why"):
        assert column in printed
    assert "quantized Linear storage" in printed and "whole model" in printed

    card = load_card(out)
    assert validate(json.loads((out / "card.json").read_text(encoding="utf-8"))) == []
    assert card.model_source == factory and card.recipe_source == str(recipe)
    assert [layer.name for layer in card.quantized_layers] == ["body.0", "body.2"]
    assert [layer.name for layer in card.float_layers] == ["head"]
    assert card.calibration is not None and card.calibration.samples == 16
    assert card.calibration.observer == "histogram"
    assert {layer.activations.observer for layer in card.quantized_layers} == {"histogram"}  # the recipe's, not the spec's
    assert card.quality.outputs > 16 and card.quality.output_cosine_mean > 0.99  # the built-in sentences

    # the recorded model source rebuilds the skeleton; the checkpoint then reproduces the measured quality
    reference = load_factory(card.model_source).model
    loaded = io.load(out, load_factory(card.model_source).model)
    cos = cosine(reference.encode(SENTENCES), loaded.encode(SENTENCES))
    assert float(cos.mean()) == pytest.approx(card.quality.output_cosine_mean, abs=1e-6)
    assert float(cos.min()) == pytest.approx(card.quality.output_cosine_worst, abs=1e-6)

    assert cli.main(["card", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "Quantization card" in shown and "body.0" in shown and "Left in float" in shown


def test_calib_file_sentences_are_used(factory, recipe, tmp_path, capsys) -> None:
    calib = tmp_path / "calib.txt"
    calib.write_text("first calibration sentence\n\nsecond one\nthird and last\n", encoding="utf-8")
    out = tmp_path / "out"
    code = cli.main(["quantize", str(recipe), "--model", factory, "--out", str(out), "--calib", str(calib),
                     "--no-measure"])
    assert code == 0, capsys.readouterr().err
    card = load_card(out)
    assert card.calibration.samples == 3
    assert card.quality.outputs == 3 and str(calib) in card.quality.eval_description


def test_bad_recipe_is_one_message_with_path_and_line(factory, tmp_path, capsys) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("qcore: 1\nscheme: w9a8\n", encoding="utf-8")
    code = cli.main(["quantize", str(bad), "--model", factory, "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2
    assert f"{bad}:2:" in err and "w9a8" in err
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("no/such/dir", "no such directory"),
        ("qcore_no_such_module_xyz:factory", "cannot import"),
        (":factory", "no such directory"),
    ],
)
def test_unknown_model_is_exit_code_2(model, expected, recipe, tmp_path, capsys) -> None:
    code = cli.main(["quantize", str(recipe), "--model", model, "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and expected in err and model in err and "Traceback" not in err


def test_factory_must_return_a_module(factory, recipe, tmp_path, capsys) -> None:
    code = cli.main(["quantize", str(recipe), "--model", factory.replace(":factory", ":not_a_model"),
                     "--out", str(tmp_path / "out")])
    assert code == 2 and "not a torch.nn.Module" in capsys.readouterr().err


def test_card_of_a_directory_without_one(tmp_path, capsys) -> None:
    assert cli.main(["card", str(tmp_path)]) == 2
    assert "no quantization card" in capsys.readouterr().err


@pytest.mark.filterwarnings("ignore:.*matches no layer")
def test_static_recipe_without_text_interface_says_calibration_is_needed(tmp_path, recipe, monkeypatch,
                                                                          capsys) -> None:
    (tmp_path / "qcore_cli_plain.py").write_text(textwrap.dedent("""
        from torch import nn

        def factory():
            return nn.Sequential(nn.Linear(128, 128))
    """), encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    code = cli.main(["quantize", str(recipe), "--model", "qcore_cli_plain:factory", "--out", str(tmp_path / "o")])
    sys.modules.pop("qcore_cli_plain", None)
    assert code == 2 and "calibration" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:You passed `quantization_config`")
def test_quantize_packaged_minilm(tmp_path, capsys) -> None:
    """The real model through the CLI: every Linear quantized, the card's quality measured on the built-in set;
    then `qcore export` to compressed-tensors, loaded by transformers."""
    recipe = Path(__file__).resolve().parents[1] / "specs" / "recipes" / "minilm-w8a16.yaml"
    out = tmp_path / "minilm"
    assert cli.main(["quantize", str(recipe), "--model", "minilm", "--out", str(out), "--no-measure"]) == 0
    card = load_card(out)
    assert card.model_source == "minilm" and len(card.quantized_layers) == 37 and not card.float_layers
    assert card.size.quantized_linear_reduction >= 0.73
    assert card.quality.outputs == len(SENTENCES) and card.quality.output_cosine_mean > 0.999
    # `qcore export` of the demo model writes a folder that transformers loads, weights exactly qcore's
    pytest.importorskip("compressed_tensors", reason="the compressed-tensors extra is not installed")
    import torch
    from transformers import AutoModel, AutoTokenizer, CompressedTensorsConfig

    capsys.readouterr()
    assert cli.main(["export", str(out), "--out", str(tmp_path / "ct")]) == 0
    assert "37 quantized Linear layers, 37 of them servable" in capsys.readouterr().out
    hf = AutoModel.from_pretrained(tmp_path / "ct", quantization_config=CompressedTensorsConfig(dequantize=True),
                                   dtype=torch.float32).eval()
    loaded = io.load(out, load_minilm().model)[0].auto_model
    for name, layer in loaded.named_modules():
        if isinstance(layer, QuantLinear):
            assert torch.equal(hf.get_submodule(name).weight, layer.dequantized_weight()), name
    batch = AutoTokenizer.from_pretrained(tmp_path / "ct")(list(SENTENCES[:8]), padding=True, return_tensors="pt")
    with torch.no_grad():
        ours, theirs = loaded(**batch).last_hidden_state, hf(**batch).last_hidden_state
    assert float(cosine(ours.flatten(), theirs.flatten())) > 0.9999
