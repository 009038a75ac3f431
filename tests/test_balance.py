"""Where a per-channel scale folds: found from the model's dataflow, verified numerically, applied exactly."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from qcore.algorithms import balance
from qcore.calibration import CalibrationSource
from qcore.demo.models import tiny_llama
from qcore.errors import QcoreError


def _flow(model: nn.Module, batches: list, mappings=()) -> balance.Dataflow:  # type: ignore[no-untyped-def]
    source = CalibrationSource(batches, 64)
    source.run(model, {})
    probe = lambda hooks: source.probe(model, hooks)  # noqa: E731
    return balance.named(model, probe, mappings) if mappings else balance.discover(model, probe)


def _llama_batches(vocab: int = 512) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return [torch.randint(0, vocab, (4, 16), generator=gen)]


def _tiny_bert() -> nn.Module:
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    return BertModel(BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                intermediate_size=64, max_position_embeddings=32)).eval()


def _folds(flow: balance.Dataflow, layer: int) -> set[tuple[str, tuple[str, ...]]]:
    prefix = f"model.layers.{layer}."
    return {(f.producer.removeprefix(prefix), tuple(c.removeprefix(prefix) for c in f.consumers))
            for f in flow.folds if f.producer.startswith(prefix)}


@pytest.mark.parametrize("kv_heads", [4, 2])
def test_llama_folds_are_found_from_the_dataflow(kv_heads: int) -> None:
    model = tiny_llama(heads=4, kv_heads=kv_heads)
    flow = _flow(model, _llama_batches())
    expected = {
        ("input_layernorm", ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")),
        ("post_attention_layernorm", ("mlp.gate_proj", "mlp.up_proj")),
        ("mlp.up_proj", ("mlp.down_proj",)),
    }
    if kv_heads == 4:  # with grouped-query attention v_proj is narrower than o_proj's input: no fold
        expected.add(("self_attn.v_proj", ("self_attn.o_proj",)))
    for layer in (0, 1):
        assert _folds(flow, layer) == expected
    assert all(not f.producer.startswith("lm_head") for f in flow.folds)


def test_bert_post_norm_residuals_are_rejected_and_value_folds_into_the_output_projection() -> None:
    model = _tiny_bert()
    flow = _flow(model, [torch.randint(0, 100, (4, 12), generator=torch.Generator().manual_seed(0))])
    folds = {(f.producer, f.consumers) for f in flow.folds}
    assert folds == {(f"encoder.layer.{i}.attention.self.value", (f"encoder.layer.{i}.attention.output.dense",))
                     for i in (0, 1)}
    rejected = {r.producer: r.reason for r in flow.rejected}
    assert "changes the model's outputs" in rejected["embeddings.LayerNorm"]
    assert "changes the model's outputs" in rejected["encoder.layer.0.attention.output.LayerNorm"]
    assert "encoder.layer.0.intermediate.dense" in rejected  # GELU between it and output.dense


def test_applying_scales_on_the_found_folds_leaves_the_float_model_unchanged() -> None:
    from qcore.algorithm import AlgorithmContext, ModelEdits
    from qcore.algorithms.smoothquant import algorithm
    from qcore.recipe import AlgorithmEntry

    model = tiny_llama(heads=4, kv_heads=4)
    batch = _llama_batches()[0]
    want = model(batch).logits.detach()
    flow = _flow(model, [batch])
    edits = ModelEdits()
    impl = algorithm()
    ctx = AlgorithmContext(impl, AlgorithmEntry("smoothquant", impl.options()), model, (), {}, {}, edits, None)
    gen = torch.Generator().manual_seed(3)
    for fold in flow.folds:
        width = model.get_submodule(fold.consumers[0]).in_features
        group = balance.Group((), fold.producer, fold.consumers)
        balance.apply_scale(ctx, group, torch.rand(width, generator=gen) * 4 + 0.25)
    got = model(batch).logits.detach()
    assert not torch.equal(model.model.layers[0].input_layernorm.weight, tiny_llama(heads=4, kv_heads=4)
                           .model.layers[0].input_layernorm.weight)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    edits.rollback()
    assert torch.equal(model(batch).logits, want)


def test_explicit_mappings_are_resolved_per_block_and_verified() -> None:
    model = tiny_llama(heads=4, kv_heads=2)
    spec = balance.MappingSpec("re:.*post_attention_layernorm", ("re:.*gate_proj", "re:.*up_proj"))
    flow = _flow(model, _llama_batches(), (spec,))
    assert {(f.producer, f.consumers) for f in flow.folds} == {
        (f"model.layers.{i}.post_attention_layernorm", (f"model.layers.{i}.mlp.gate_proj",
                                                        f"model.layers.{i}.mlp.up_proj")) for i in (0, 1)}
    bad = balance.MappingSpec("re:.*gate_proj", ("re:.*down_proj",))  # SiLU lies between
    with pytest.raises(QcoreError, match=re.escape("mapping model.layers.0.mlp.gate_proj -> "
                                                   "model.layers.0.mlp.down_proj: not exact")):
        _flow(model, _llama_batches(), (bad,))
    with pytest.raises(QcoreError, match=r"mappings\[0\]: producer 'nothing' matches no module"):
        _flow(model, _llama_batches(), (balance.MappingSpec("nothing", ("x",)),))


def test_a_scale_folds_through_relu_but_not_through_gelu() -> None:
    """ReLU(x·d) = ReLU(x)·d for d > 0: the check finds the fold exact; GELU's is refused."""
    torch.manual_seed(0)
    data = [torch.randn(8, 16)]
    relu = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 8))
    assert {(f.producer, f.consumers) for f in _flow(relu, data).folds} == {("0", ("2",))}
    gelu = nn.Sequential(nn.Linear(16, 32), nn.GELU(), nn.Linear(32, 8))
    flow = _flow(gelu, data)
    assert not flow.folds and [r.producer for r in flow.rejected] == ["0"]

