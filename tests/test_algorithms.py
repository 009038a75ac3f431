"""The algorithm contract: plugins register algorithms, recipes name them, one pipeline runs and records them."""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Literal

import attrs
import pytest
import torch
from torch import nn

import qcore
from qcore import AlgorithmContext, AlgorithmImpl, Collector, LayerWork
from qcore.algorithms.awq import InputSample
from qcore.card import build_card
from qcore.algorithms.gptq import HessianAccumulator
from qcore.errors import PluginConflictError, PluginError, QcoreError
from qcore.io import CheckpointError
from qcore.kernels import YES, Support, no
from qcore.options import parse_options
from qcore.plugins import PluginManager, set_manager
from qcore.qparams import qparams_from_range
from qcore.spec import QuantScheme, QuantSpec

ROOT = Path(__file__).resolve().parents[1]


def mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 16))


def batches(n: int = 4, rows: int = 8) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return [torch.randn(rows, 32, generator=gen) for _ in range(n)]


@pytest.fixture
def with_plugins():  # type: ignore[no-untyped-def]
    """Install extra plugin objects next to the entry points for one test (the process-wide manager)."""
    previous = set_manager(None)

    def install(**plugins: object) -> PluginManager:
        manager = PluginManager(plugins)
        set_manager(manager)
        return manager

    yield install
    set_manager(previous)


# -- a small plugin algorithm used below ---------------------------------------------------------------


class RowCount(Collector):
    def __init__(self) -> None:
        self.samples = 0
        self.sum = torch.zeros(())

    def observe(self, x: torch.Tensor) -> None:
        self.samples += x.reshape(-1, x.shape[-1]).shape[0]
        self.sum = self.sum + x.float().sum()

    def rescaled(self, m: torch.Tensor) -> RowCount:
        return self


@attrs.frozen
class HalveOptions:
    factor: float = attrs.field(default=0.5, validator=attrs.validators.gt(0.0))
    mode: Literal["columns", "all"] = "columns"


def _applies(_options: HalveOptions, layer: LayerWork) -> Support:
    return YES if layer.scheme.weights is not None else no("weights stay float")


def _halve_run(ctx: AlgorithmContext) -> None:
    for layer in ctx.layers:
        ctx.edit(layer.module, "weight", layer.weight * ctx.options.factor)
        ctx.note(layer, f"{ctx.stats(layer).samples} rows")


def halve(*, run=_halve_run, name: str = "halve") -> AlgorithmImpl:  # type: ignore[no-untyped-def]
    return AlgorithmImpl(name, HalveOptions, applies=_applies, run=run, kind="transform",
                         collector=lambda _o, _l: RowCount(), description="test: scales weights")


class Plugin:
    def __init__(self, *impls: AlgorithmImpl, schemes: tuple[QuantScheme, ...] = ()) -> None:
        self.impls, self.schemes = impls, schemes

    @qcore.hookimpl
    def qcore_algorithms(self):  # type: ignore[no-untyped-def]
        yield from self.impls

    @qcore.hookimpl
    def qcore_schemes(self):  # type: ignore[no-untyped-def]
        yield from self.schemes


def recipe(scheme: str = "w8a16", **extra: object) -> dict:
    return {"qcore": 1, "scheme": scheme, "calibration": {"samples": 16}, **extra}


# -- tests ----------------------------------------------------------------------------------------------


def test_a_plugin_algorithm_runs_on_its_layers_and_is_recorded(with_plugins, tmp_path) -> None:
    with_plugins(mine=Plugin(halve()))
    model = mlp()
    before = model[2].weight.detach().clone()
    r = recipe(algorithms=[{"halve": {"factor": 0.25, "layers": ["2"]}}])
    quantized = qcore.quantize(model, r, batches(), progress=False, measure=False)
    state = qcore.state_of(quantized)
    (run,) = state.layer("2").algorithms
    assert (run.algorithm, run.options, run.note) == ("halve", {"factor": 0.25, "mode": "columns", "layers": ["2"]},
                                                      "16 rows")
    assert state.layer("0").algorithms == ()
    torch.testing.assert_close(quantized[2].dequantized_weight(), before * 0.25, atol=1e-2, rtol=0)
    assert "halve" in state.calibration.observer
    card = build_card(quantized)
    assert card.layers[1].algorithms_text() == "halve(factor=0.25, mode=columns, layers=['2']): 16 rows"
    assert "halve(factor=0.25" in card.to_markdown()
    qcore.save(quantized, tmp_path)
    loaded = qcore.state_of(qcore.load(tmp_path, mlp))
    assert loaded.layer("2").algorithms == state.layer("2").algorithms


def test_a_name_provided_twice_is_a_conflict_naming_both(with_plugins) -> None:
    manager = with_plugins(one=Plugin(halve()), two=Plugin(halve()))
    with pytest.raises(PluginConflictError, match=r"AlgorithmImpl 'halve' is provided by (one|two) and by (one|two)"):
        manager.algorithms()


def test_an_unknown_algorithm_lists_the_installed_ones() -> None:
    with pytest.raises(qcore.RecipeError) as info:
        qcore.load_recipe("qcore: 1\nscheme: w4a16\nalgorithms:\n  - gtpq: {}\n")
    assert ("line 4: algorithms[0].gtpq: unknown algorithm 'gtpq'; known: awq, bias-correction, gptq, smoothquant; "
            "did you mean 'gptq'? (installed algorithms)") in str(info.value)


@pytest.mark.parametrize(("body", "message"), [
    ("algorithms: gptq", "algorithms: expected a list, got str 'gptq'"),
    ("algorithms: [gptq]", "algorithms[0]: each algorithm is a mapping of one name to its options"),
    ("algorithms: [{gptq: {}, awq: {}}]", "algorithms[0]: each algorithm is a mapping of one name to its options"),
    ("algorithms: [{gptq: {layers: [7]}}]", "algorithms[0].gptq.layers[0]: expected a non-empty string, got int 7"),
    ("algorithms: [{awq: {mappings: [{producer: ln, consumers: q}]}}]",
     "algorithms[0].awq.mappings: item 0: consumers: expected a list of a string, got str 'q'"),
])
def test_malformed_algorithm_entries_are_reported_with_path_and_line(body: str, message: str) -> None:
    with pytest.raises(qcore.RecipeError) as info:
        qcore.load_recipe(f"qcore: 1\nscheme: w4a16\n{body}\n")
    assert f"line 3: {message}" in str(info.value)


def test_a_failing_plugin_algorithm_names_itself_and_leaves_the_model_as_it_was(with_plugins) -> None:
    def run(ctx: AlgorithmContext) -> None:
        _halve_run(ctx)
        raise RuntimeError("out of ideas")

    with_plugins(mine=Plugin(halve(run=run)))
    model = mlp()
    weights = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(PluginError, match=r"algorithm halve \(mine\) failed in run: RuntimeError: out of ideas"):
        qcore.quantize(model, recipe(algorithms=[{"halve": {}}]), batches(), progress=False, measure=False)
    assert all(torch.equal(a, b) for a, b in zip(weights, model.parameters()))
    assert isinstance(model[0], nn.Linear) and not hasattr(model, "_qcore_state")


def test_prepare_qat_refuses_algorithms_that_cannot_run_in_qat() -> None:
    model = mlp()
    with pytest.raises(QcoreError, match=r"algorithms\[0\] gptq cannot run in quantization-aware training"):
        qcore.prepare_qat(model, recipe("w4a16", algorithms=[{"gptq": {}}]))
    assert isinstance(model[0], nn.Linear)


def test_a_targets_entry_matching_no_module_type_is_an_error_naming_the_types() -> None:
    model = mlp()
    with pytest.raises(qcore.RecipeError, match=r"targets\[0\]: 'Conv7d' is no module type of Sequential; "
                                                r"its types: Linear, ReLU, Sequential"):
        qcore.quantize(model, recipe(targets=["Conv7d"]), progress=False, measure=False)


def test_a_checkpoint_loads_where_its_pinned_backend_is_missing(tmp_path, monkeypatch, with_plugins) -> None:
    model = qcore.quantize(mlp(), recipe(backend="torch-fallback"), progress=False, measure=False)
    x = batches()[0]
    qcore.save(model, tmp_path / "loose")
    qcore.save(qcore.quantize(mlp(), recipe(backend="torch-fallback", strict=True), progress=False, measure=False),
               tmp_path / "strict")
    monkeypatch.setenv("QCORE_DISABLE_PLUGINS", "torch-fallback")
    with_plugins()
    with pytest.warns(UserWarning, match=r"backend 'torch-fallback', pinned by the recorded recipe, is not "
                                         r"available here; re-planned 2 layer\(s\): 0 -> (?!torch-fallback)\S+, "
                                         r"2 -> (?!torch-fallback)\S+$"):
        loaded = qcore.load(tmp_path / "loose", mlp)
    torch.testing.assert_close(loaded(x), model(x), rtol=1e-2, atol=1e-2)  # same codes, another kernel
    with pytest.raises(CheckpointError, match=r"layer '0': the recipe pins backend 'torch-fallback', which is not "
                                              r"installed here, and is strict"):
        qcore.load(tmp_path / "strict", mlp)


def test_a_checkpoint_of_a_plugin_scheme_loads_without_the_plugin(tmp_path, with_plugins) -> None:
    scheme = QuantScheme("w8g16", QuantSpec("int8", "group", group_size=16), None, "int8 weights in groups of 16")
    with_plugins(schemes=Plugin(schemes=(scheme,)))
    model = qcore.quantize(mlp(), recipe("w8g16"), progress=False, measure=False)
    qcore.save(model, tmp_path)
    with_plugins()
    assert "w8g16" not in qcore.get_manager().schemes()
    loaded = qcore.load(tmp_path, mlp)
    x = batches()[0]
    assert torch.equal(loaded(x), model(x)) and loaded[0].scheme == scheme
    assert qcore.state_of(loaded).recipe.scheme == scheme


def test_static_observers_see_the_inputs_a_transform_left() -> None:
    """Both layers scale their own inputs (nothing before them can absorb 1/s): the float model must stay
    exact while later passes run, so the second layer's observer sees the first layer's true outputs."""
    model = mlp()
    model[1] = nn.GELU()  # not positively homogeneous like ReLU: no scale folds through it
    data = batches()
    with torch.no_grad():
        hidden = [model[1](model[0](x)) for x in data[:2]]  # calibration.samples 16: two batches of 8
    quantized = qcore.quantize(copy.deepcopy(model), recipe("w8a8", algorithms=[{"smoothquant": {}}]), data,
                               progress=False, measure=False)
    for layer, inputs in ((quantized[0], data[:2]), (quantized[2], hidden)):
        assert layer.input_scale is not None
        seen = torch.cat([x * layer.input_scale for x in inputs])
        scale, zero_point = qparams_from_range(seen.min(), seen.max(), QuantSpec("int8"))
        torch.testing.assert_close(layer.act_scale, scale, rtol=1e-6, atol=0)
        assert torch.equal(layer.act_zero_point, zero_point)


def test_a_one_shot_generator_feeds_the_pass_the_probes_and_the_second_pass() -> None:
    data = batches()
    want = qcore.quantize(mlp(), recipe("w8a8", algorithms=[{"smoothquant": {}}]), data, progress=False,
                          measure=False)
    got = qcore.quantize(mlp(), recipe("w8a8", algorithms=[{"smoothquant": {}}]), iter(data), progress=False,
                         measure=False)
    x = data[0]
    assert torch.equal(got(x), want(x))


def test_collectors_rescale_exactly_as_collecting_on_scaled_inputs() -> None:
    gen = torch.Generator().manual_seed(0)
    xs = [torch.randn(10, 6, generator=gen) for _ in range(3)]
    m = torch.rand(6, generator=gen) * 3 - 1.5
    for make in (lambda: HessianAccumulator(6), lambda: InputSample(6, max_rows=12)):
        plain, direct = make(), make()
        for x in xs:
            plain.observe(x)
            direct.observe(x * m)
        scaled = plain.rescaled(m)
        for field in ("hessian", "mean_abs", "rows"):
            if hasattr(direct, field):
                torch.testing.assert_close(getattr(scaled, field), getattr(direct, field), rtol=1e-6, atol=1e-6)
        assert scaled.samples == direct.samples == 30


def test_the_reservoir_keeps_a_fixed_number_of_rows_deterministically() -> None:
    a, b = InputSample(4, max_rows=5), InputSample(4, max_rows=5)
    for i in range(6):
        x = torch.full((3, 4), float(i))
        a.observe(x)
        b.observe(x)
    assert a.rows.shape == (5, 4) and torch.equal(a.rows, b.rows) and a.samples == 18
    assert len(set(a.rows[:, 0].tolist())) > 1  # later batches got in


@attrs.frozen
class Nested:
    name: str
    sizes: tuple[int, ...] = ()


@attrs.frozen
class Schema:
    mode: Literal["fast", "exact"] = "fast"
    limit: int | None = None
    ratio: float = attrs.field(default=0.5, validator=attrs.validators.le(1.0))
    items: tuple[Nested, ...] = ()


@pytest.mark.parametrize(("data", "problems"), [
    ({"mode": "exact", "limit": None, "ratio": 1, "items": [{"name": "a", "sizes": [1, 2]}]}, []),
    ({"mode": "slow"}, [("mode", "expected one of 'fast', 'exact', got str 'slow'")]),
    ({"limit": True}, [("limit", "expected an integer or null, got bool True")]),
    ({"ratio": 2.0}, [("ratio", "'ratio' must be <= 1.0: 2.0")]),
    ({"items": [{"sizes": [1]}]}, [("items", "item 0: name: required")]),
    ({"item": []}, [("item", "unknown option 'item'; known: mode, limit, ratio, items, layers; "
                             "did you mean 'items'?")]),
])
def test_options_are_checked_against_their_typed_schema(data: dict, problems: list) -> None:
    parsed, found = parse_options(Schema, data, also_known=("layers",))
    assert found == problems
    if not problems:
        assert parsed == Schema("exact", None, 1.0, (Nested("a", (1, 2)),))


def test_algorithm_descriptors_are_checked_on_construction() -> None:
    with pytest.raises(qcore.SpecError, match="must be an attrs class"):
        AlgorithmImpl("x", dict, applies=_applies, run=_halve_run, kind="transform")
    with pytest.raises(qcore.SpecError, match="'layers' is the option every algorithm takes"):
        AlgorithmImpl("x", attrs.make_class("O", {"layers": attrs.field(default=())}), applies=_applies,
                      run=_halve_run, kind="transform")
    with pytest.raises(ValueError, match="kind"):
        AlgorithmImpl("x", HalveOptions, applies=_applies, run=_halve_run, kind="rewrite")


def test_the_example_algorithm_plugin_installs_lists_runs_and_is_on_the_card(tmp_path: Path) -> None:
    """docs/examples/qcore-example-algorithm, installed like a third party's, touching no core module."""
    source = tmp_path / "src"
    shutil.copytree(ROOT / "docs" / "examples" / "qcore-example-algorithm", source)
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(source)], check=True)
    env = {"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin", "QCORE_CACHE_DIR": str(tmp_path / "cache")}
    listed = subprocess.run([sys.executable, "-m", "qcore.cli", "algorithms"], env=env, capture_output=True,
                            text=True)
    assert listed.returncode == 0 and "mse-clip" in listed.stdout and "qcore-example-algorithm" in listed.stdout, \
        listed.stdout + listed.stderr
    script = (
        "import torch, qcore\n"
        "from qcore.card import build_card\n"
        "torch.manual_seed(0)\n"
        "model = torch.nn.Sequential(torch.nn.Linear(128, 32))\n"
        "w = model[0].weight.detach().clone(); w[0, 0] = 1.0\n"
        "with torch.no_grad(): model[0].weight.copy_(w)\n"
        "recipe = {'qcore': 1, 'scheme': 'w4a16', 'algorithms': [{'mse-clip': {'grid': 20}}]}\n"
        "clipped = qcore.quantize(model, recipe, progress=False, measure=False)\n"
        "card = build_card(clipped)\n"
        "print(card.layers[0].algorithms_text())\n"
        "err = (clipped[0].dequantized_weight() - w).pow(2).mean().item()\n"
        "rtn = qcore.ops.dequantize(qcore.ops.quantize(w, qcore.PRESETS['w4a16'].weights))\n"
        "print(err < (rtn - w).pow(2).mean().item())\n"
    )
    ran = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    text, better = ran.stdout.strip().splitlines()
    assert re.fullmatch(r"mse-clip\(grid=20, max_shrink=0\.3\): kept \d+\.\d% of the range on average", text), text
    assert better == "True"
