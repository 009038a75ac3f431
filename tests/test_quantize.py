"""qcore.api.quantize / plan on toy models, Hugging Face BERT and sentence-transformers (all built in code)."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch import nn

from qcore import api, metrics, ops
from qcore.errors import NoKernelError, NonFiniteError, QcoreError
from qcore.kernels import linear_rows
from qcore.nn import QuantLinear
from qcore.state import STATE_ATTR
from qcore.qparams import check_finite
from qcore.recipe import RecipeError


def mlp(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, 96), nn.ReLU(), nn.Linear(96, 32), nn.ReLU(), nn.Linear(32, 8))


def recipe(scheme: str = "w8a8-dynamic", **extra: object) -> dict:
    return {"qcore": 1, "scheme": scheme, **extra}


def linears(model: nn.Module) -> list[str]:
    return [name for name, m in model.named_modules() if type(m) is nn.Linear]


def test_quantize_replaces_every_linear_and_keeps_quality() -> None:
    model = mlp()
    x = torch.randn(16, 64)
    ref = model(x).detach()
    float_weights = {name: m.weight.detach().clone() for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    out_model = api.quantize(model, recipe(), progress=False, measure=False)
    assert out_model is model
    assert linears(model) == []
    assert metrics.sqnr(ref, model(x)) > 30
    state = api.state_of(model)
    assert [r.name for r in state.layers] == ["0", "2", "4"]
    for record in state.layers:
        layer = model.get_submodule(record.name)
        assert isinstance(layer, QuantLinear)
        assert state.kernel(record.name) == layer.kernel_id and record.scheme is layer.scheme
        assert record.float_reason is None
        assert record.quant_bytes == layer.storage_bytes() < record.float_bytes
        assert record.weight_sqnr == pytest.approx(metrics.sqnr(float_weights[record.name], layer.dequantized_weight()))
        assert record.weight_sqnr > 38
        assert "w8a8-dynamic" in repr(layer) and layer.kernel_id in repr(layer)
    assert state.calibration is None


def test_quantlinear_calls_its_kernel_without_dispatch(monkeypatch: pytest.MonkeyPatch) -> None:
    model = api.quantize(mlp(), recipe("w8a16"), progress=False, measure=False)
    x = torch.randn(3, 64)
    expected = model(x)
    layer = model[0]
    assert layer._run.func is layer.selection.chosen.fn

    def no_dispatch(*_a: object, **_k: object) -> None:
        raise AssertionError("dispatch at call time")

    monkeypatch.setattr(ops, "kernel_for", no_dispatch)
    monkeypatch.setattr(api.Matcher, "select", no_dispatch)
    assert torch.equal(model(x), expected)
    assert {"0.weight_data", "0.weight_scale", "0.weight_zero_point", "0.bias"} <= set(model.state_dict())


@pytest.mark.parametrize("cast", ["half", "bfloat16", "to-dtype"])
def test_casts_keep_codes_and_qparams_and_outputs_follow_the_input(cast: str) -> None:
    model = api.quantize(mlp(), recipe("w8a8-dynamic"), progress=False, measure=False)
    x = torch.randn(5, 64)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    kernels = [m.kernel_id for m in model.modules() if isinstance(m, QuantLinear)]
    expected = model(x)
    dtype = torch.bfloat16 if cast == "bfloat16" else torch.float16
    model = {"half": model.half, "bfloat16": model.bfloat16, "to-dtype": lambda: model.to(dtype)}[cast]()
    after = model.state_dict()
    assert all(after[k].dtype == v.dtype and torch.equal(after[k], v) for k, v in before.items())
    assert [m.kernel_id for m in model.modules() if isinstance(m, QuantLinear)] == kernels
    out = model(x.to(dtype))
    assert out.dtype == dtype and metrics.sqnr(expected, out.float()) > 30
    assert model(x).dtype == torch.float32


def test_replan_binds_another_kernel_and_a_same_device_move_keeps_it() -> None:
    model = api.quantize(mlp(), recipe("w8a16"), progress=False, measure=False)
    x = torch.randn(4, 64)
    expected = model(x)
    layer = model[0]
    kernel = layer.kernel_id
    model.to("cpu")
    assert layer.kernel_id == kernel
    selection = layer.replan(backend="cpu-reference")
    assert layer.kernel_id == selection.chosen.id == "cpu-reference/linear" != kernel
    assert layer._run.func is selection.chosen.fn
    assert metrics.sqnr(expected, model(x)) > 45  # the contract holds backends to 50 dB a layer
    state = api.state_of(model)  # what save and the card record follows the layers
    assert state.kernel("0") == "cpu-reference/linear" and state.plan["0"].selection is selection
    assert state.kernel("2") == model[2].kernel_id


def test_a_move_that_cannot_be_planned_leaves_the_layer_as_it_was() -> None:
    model = api.quantize(mlp(), recipe("w8a16"), progress=False, measure=False)
    x = torch.randn(4, 64)
    expected = model(x)
    kernels = [m.kernel_id for m in model.modules() if isinstance(m, QuantLinear)]
    with pytest.raises(QcoreError):
        model.to("meta")
    assert all(b.device.type == "cpu" for b in model.buffers())
    assert [m.kernel_id for m in model.modules() if isinstance(m, QuantLinear)] == kernels
    assert torch.equal(model(x), expected)


def test_static_scheme_needs_calibration_and_names_layers() -> None:
    model = mlp()
    with pytest.raises(QcoreError, match=r"calibration_data.*0 \(w8a8\), 2 \(w8a8\), 4 \(w8a8\)"):
        api.quantize(model, recipe("w8a8"), progress=False, measure=False)
    assert len(linears(model)) == 3


def test_nonfinite_weight_names_layer_and_modifies_nothing() -> None:
    model = mlp()
    with torch.no_grad():
        model[2].weight[3, 5] = float("nan")
    with pytest.raises(NonFiniteError, match=r"layer '2'.*nothing was modified"):
        api.quantize(model, recipe(), progress=False, measure=False)
    assert len(linears(model)) == 3 and not hasattr(model, STATE_ATTR)


def test_nonfinite_calibration_activation_names_layer() -> None:
    model = mlp()
    with torch.no_grad():
        model[0].bias[0] = float("inf")  # the first layer's output, hence layer '2''s input, is non-finite
    model[0].bias.requires_grad_(False)
    with pytest.raises(NonFiniteError, match="layer '2'"):
        api.quantize(model, recipe("w8a8", ignore=["0"]), [torch.randn(4, 64)], progress=False, measure=False)
    assert len(linears(model)) == 3


def test_calibration_is_limited_to_samples_and_recorded() -> None:
    model = mlp()
    seen: list[int] = []
    model.register_forward_pre_hook(lambda _m, args: seen.append(args[0].shape[0]))
    batches = [torch.randn(4, 64) for _ in range(10)]
    api.quantize(model, recipe("w8a8", calibration={"samples": 10}), batches, progress=False, measure=False)
    assert seen == [4, 4, 2]
    info = api.state_of(model).calibration
    assert (info.samples, info.batches, info.observer) == (10, 3, "minmax")
    layer = model[0]
    # the static activation scale is the min-max of exactly the rows that ran
    rows = torch.cat(batches)[:10]
    assert torch.equal(layer.act_scale, ops.quantize(rows, layer.scheme.input_activations).scale)


def test_callable_calibration_is_stopped_after_enough_samples() -> None:
    model = mlp()
    batches = [torch.randn(4, 64) for _ in range(10)]
    calls: list[int] = []

    def run(m: nn.Module) -> None:
        for b in batches:
            calls.append(1)
            m(b)

    api.quantize(model, recipe("w8a8", calibration={"samples": 8}), run, progress=False, measure=False)
    info = api.state_of(model).calibration
    assert (info.samples, info.batches) == (8, 2)
    assert len(calls) == 3  # the third pass is stopped at its first layer


def test_plan_uses_calibration_tokens_else_one_and_modifies_nothing() -> None:
    model = mlp()
    plan = api.plan(model, recipe(), measure=False)
    assert linears(model) == ["0", "2", "4"]
    assert [lp.selection.request.shape for lp in plan] == [(1, 64, 96), (1, 96, 32), (1, 32, 8)]
    assert all(name in plan.explain() for name in ("0:", "2:", "4:"))
    api.quantize(model, recipe(), [torch.randn(2, 5, 64)], progress=False, measure=False)
    shapes = [lp.selection.request.shape for lp in api.state_of(model).plan]
    assert shapes == [(10, 64, 96), (10, 96, 32), (10, 32, 8)]


def test_unsupported_layer_errors_or_stays_float() -> None:
    model = mlp()
    with pytest.raises(NoKernelError, match=r"layer '0'.*group_size 128 does not divide in_features 64"):
        api.quantize(model, recipe("w4a16"), progress=False, measure=False)
    assert len(linears(model)) == 3
    api.quantize(model, recipe("w4a16", on_unsupported="keep-float"), progress=False, measure=False)
    state = api.state_of(model)
    assert linears(model) == ["0", "2", "4"]
    assert all(state.kernel(r.name) is None and "does not divide" in r.float_reason for r in state.layers)
    assert all(r.quant_bytes == r.float_bytes and r.weight_sqnr is None for r in state.layers)


def test_unmatched_pattern_warns_or_fails_when_strict() -> None:
    with pytest.warns(UserWarning, match="no_such_layer"):
        api.quantize(mlp(), recipe(ignore=["no_such_layer"]), progress=False, measure=False)
    model = mlp()
    with pytest.raises(RecipeError, match="no_such_layer"):
        api.quantize(model, recipe(ignore=["no_such_layer"], strict=True), progress=False, measure=False)
    assert len(linears(model)) == 3


def tiny_bert():  # type: ignore[no-untyped-def]
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=32)
    return BertModel(config).eval()


def test_hugging_face_bert_with_dict_batches_and_ignore() -> None:
    model = tiny_bert()
    batches = [{"input_ids": torch.randint(0, 100, (4, 12)), "attention_mask": torch.ones(4, 12, dtype=torch.long)}
               for _ in range(3)]
    ref = model(**batches[0]).last_hidden_state.detach()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        api.quantize(model, recipe("w8a8", ignore=["re:.*pooler.*"], calibration={"samples": 8}), batches,
                     progress=False, measure=False)
    assert linears(model) == ["pooler.dense"]
    state = api.state_of(model)
    assert state.layer("pooler.dense").float_reason and state.kernel("pooler.dense") is None
    assert sum(state.kernel(r.name) is not None for r in state.layers) == 12
    assert (state.calibration.samples, state.calibration.batches) == (8, 2)
    out = model(**batches[0]).last_hidden_state
    assert metrics.cosine(ref, out).min() > 0.99


def test_sentence_transformers_with_callable(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    from transformers import BertTokenizerFast

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *"the a cat dog sat on mat quick brown fox".split()]
    (tmp_path / "vocab.txt").write_text("\n".join(words))
    BertTokenizerFast(vocab_file=str(tmp_path / "vocab.txt")).save_pretrained(tmp_path)
    bert = tiny_bert()
    bert.save_pretrained(tmp_path)
    st = SentenceTransformer(modules=[Transformer(str(tmp_path)), Pooling(32)], device="cpu")
    sentences = ["the cat sat on the mat", "a quick brown fox", "the dog sat", "a cat"] * 4
    ref = st.encode(sentences, convert_to_tensor=True)
    api.quantize(st, recipe("w8a8", calibration={"samples": 8}),
                 lambda m: m.encode(sentences, batch_size=4), progress=False, measure=False)
    assert sum(isinstance(m, QuantLinear) for m in st.modules()) == 13
    info = api.state_of(st).calibration
    assert info.samples == 8 and info.batches == 2
    out = st.encode(sentences, convert_to_tensor=True)
    assert metrics.cosine(ref, out).min() > 0.99
    assert not any(math.isnan(r.weight_sqnr) for r in api.state_of(st).layers if r.weight_sqnr is not None)


@pytest.mark.parametrize(("dtype", "bad"), [
    *((dtype, bad) for dtype in (torch.float32, torch.float16, torch.bfloat16)
      for bad in (float("nan"), float("inf"), float("-inf"))),
    (torch.float8_e4m3fn, float("nan")),  # e4m3fn has no infinity
], ids=str)
def test_check_finite_finds_every_kind_in_every_float_dtype(dtype: torch.dtype, bad: float) -> None:
    x = torch.ones(3, 5)
    check_finite(x.to(dtype), "clean")
    x[1, 3] = bad
    with pytest.raises(NonFiniteError, match=r"x has 1 non-finite value\(s\); first at index \(1, 3\)"):
        check_finite(x.to(dtype), "x")


def test_linear_rows_shapes_keeps_chosen_dtypes_and_checks() -> None:
    x = torch.randn(2, 3, 8).half()
    assert linear_rows(x, 8).dtype == torch.float32
    kept = linear_rows(x, 8, keep=(torch.float16,))
    assert kept.dtype == torch.float16 and kept.shape == (6, 8) and kept.is_contiguous()
    assert linear_rows(torch.zeros(4, 0), 0).shape == (4, 0)
    with pytest.raises(QcoreError, match=r"linear expects input of shape \(\.\.\., 8\), got \(2, 7\)"):
        linear_rows(torch.zeros(2, 7), 8)
    x[1, 2, 5] = float("inf")
    with pytest.raises(NonFiniteError, match=r"linear input has 1 non-finite value\(s\); first at index \(5, 5\)"):
        linear_rows(x, 8)
