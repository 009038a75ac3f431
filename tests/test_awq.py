"""AWQ: activation-aware scales searched on calibration inputs, folded where exact, on Llama and BERT."""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

import qcore
from qcore.algorithms import balance
from qcore.algorithms.awq import AwqOptions, search_scale
from qcore.algorithm import LayerWork
from qcore.demo.models import tiny_llama
from qcore.recipe import LayerRule
from qcore.spec import PRESETS


def _llama_with_outliers() -> nn.Module:
    """A tiny Llama whose norms amplify a few channels ~30x, as trained LLMs' do: what AWQ is for."""
    model = tiny_llama(layers=1, intermediate=256, vocab=128, heads=4, kv_heads=2)
    with torch.no_grad():
        for layer in model.model.layers:
            for norm in (layer.input_layernorm, layer.post_attention_layernorm):
                norm.weight[[5, 17, 90]] *= 30.0
    return model


def _tokens(seed: int, n: int = 4) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 128, (4, 16), generator=gen) for _ in range(n)]


def _recipe(*algorithms: dict) -> dict:
    return {"qcore": 1, "scheme": "w4a16", "ignore": ["lm_head"], "calibration": {"samples": 8},
            "algorithms": list(algorithms)}


def test_awq_on_a_llama_folds_into_norms_and_linears_and_beats_round_to_nearest(tmp_path) -> None:
    model = _llama_with_outliers()
    held_out = _tokens(9, 2)
    with torch.no_grad():
        want = [model(x).logits for x in held_out]
    rtn = qcore.quantize(copy.deepcopy(model), _recipe(), progress=False, measure=False)
    awq = qcore.quantize(copy.deepcopy(model), _recipe({"awq": {"clip": False, "grid": 10}}), _tokens(0),
                         progress=False, measure=False)

    def error(q: nn.Module) -> float:
        with torch.no_grad():
            return sum(float((q(x).logits - w).pow(2).mean()) for x, w in zip(held_out, want))

    assert error(awq) < 0.8 * error(rtn), (error(awq), error(rtn))
    attn, mlp = awq.model.layers[0].self_attn, awq.model.layers[0].mlp
    for layer in (attn.q_proj, attn.k_proj, attn.v_proj, mlp.gate_proj, mlp.up_proj, mlp.down_proj):
        assert layer.input_scale is None  # folded: nothing left to do at run time
    assert attn.o_proj.input_scale is not None  # grouped-query attention: v_proj is narrower than its input
    notes = {r.name: r.algorithms[0].note for r in qcore.state_of(awq).layers if r.algorithms}
    assert "folded into model.layers.0.input_layernorm" in notes["model.layers.0.self_attn.q_proj"]
    assert "folded into model.layers.0.mlp.up_proj" in notes["model.layers.0.mlp.down_proj"]
    qcore.save(awq, tmp_path)
    loaded = qcore.load(tmp_path, _llama_with_outliers)
    with torch.no_grad():
        assert torch.equal(loaded(held_out[0]).logits, awq(held_out[0]).logits)


def test_awq_on_bert_applies_the_scales_it_cannot_fold_itself() -> None:
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    model = BertModel(BertConfig(vocab_size=100, hidden_size=128, num_hidden_layers=1, num_attention_heads=2,
                                 intermediate_size=256, max_position_embeddings=32)).eval()
    data = [torch.randint(0, 100, (4, 12), generator=torch.Generator().manual_seed(i)) for i in range(2)]
    recipe = {"qcore": 1, "scheme": "w4a16", "ignore": ["re:.*pooler.*"], "algorithms": [{"awq": {"grid": 10}}]}
    quantized = qcore.quantize(model, recipe, data, progress=False, measure=False)
    layer = quantized.encoder.layer[0]
    assert layer.attention.output.dense.input_scale is None  # folded into value's rows
    assert layer.attention.self.query.input_scale is not None  # the LayerNorm output is a residual too
    runs = qcore.state_of(quantized).layer("encoder.layer.0.intermediate.dense").algorithms
    assert [r.algorithm for r in runs] == ["awq", "awq"] and "clipped" in runs[1].note


def _group(w: torch.Tensor) -> balance.Group:
    module = nn.Linear(w.shape[1], w.shape[0], bias=False)
    with torch.no_grad():
        module.weight.copy_(w)
    rule = LayerRule("l", PRESETS["w4a16"], "auto", "default", "")
    return balance.Group((LayerWork("l", module, rule),), None)


@given(st.integers(0, 2**16), st.booleans())
def test_the_search_never_does_worse_than_no_scaling(seed: int, duo: bool) -> None:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(64, 128, generator=gen) * torch.exp(torch.randn(128, generator=gen))
    w = torch.randn(16, 128, generator=gen)
    s, r, gain = search_scale(x, x.abs().mean(dim=0), _group(w), AwqOptions(grid=5, duo_scaling=duo))
    assert gain >= 0 and (r == -1) == bool(torch.equal(s, torch.ones(128)))
    assert bool((s > 0).all()) and s.shape == (128,)


@pytest.mark.slow
def test_awq_then_gptq_on_the_packaged_minilm() -> None:
    """The real all-MiniLM-L6-v2: the value projection's scale folds into it; quality holds on other sentences."""
    from qcore.demo.models import load_minilm
    from qcore.demo.sentences import SENTENCES, sample_sentences
    from qcore.metrics import cosine

    loaded = load_minilm()
    calibration, held_out = sample_sentences(16), SENTENCES[1::9]
    want = loaded.encode(held_out)
    recipe = {"qcore": 1, "scheme": "w4a16-asym", "calibration": {"samples": 16},
              "algorithms": [{"awq": {"clip": False, "grid": 10}}, {"gptq": {"act_order": True, "damp": 0.05}}]}
    model = qcore.quantize(copy.deepcopy(loaded.model), recipe, lambda m: loaded.encode(calibration, m),
                           progress=False, measure=False)
    state = qcore.state_of(model)
    (name,) = [r.name for r in state.layers if r.name.endswith("encoder.layer.0.attention.output.dense")]
    prefix = name.removesuffix("attention.output.dense")
    runs = state.layer(name).algorithms
    assert [r.algorithm for r in runs] == ["awq", "gptq"]
    assert f"folded into {prefix}attention.self.value" in runs[0].note
    assert float(cosine(want, loaded.encode(held_out, model)).mean()) > 0.97
