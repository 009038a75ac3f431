"""Recipes: safe loading, validation that reports every problem with path and line, per-layer rules."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch

import qcore
from qcore.descriptors import BackendInfo
from qcore.plugins import PluginManager, set_manager
from qcore.recipe import Calibration, LayerRule, Recipe, RecipeError, RecipeProblem, load_recipe, matches
from qcore.spec import PRESETS, QuantSpec

RECIPES = Path(__file__).resolve().parents[1] / "specs" / "recipes"
LINEAR = torch.nn.Linear(4, 4)


class FakeBackends:
    @qcore.hookimpl
    def qcore_hardware(self):
        yield BackendInfo("torch-fallback", True, devices=("cpu",))
        yield BackendInfo("cpu-reference", True, devices=("cpu",))


@pytest.fixture(autouse=True)
def manager():
    """A manager with the built-in plugin and two known backends, whatever is installed."""
    fresh = PluginManager({"fake-backends": FakeBackends()}, entry_points=False)
    previous = set_manager(fresh)
    yield fresh
    set_manager(previous)


def write(tmp_path: Path, text: str, name: str = "recipe.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def problems_of(src) -> list[RecipeProblem]:
    with pytest.raises(RecipeError) as info:
        load_recipe(src)
    return info.value.problems


MALFORMED = [
    pytest.param(
        """
        qcore: 1
        scheme: w8a8-dynamic
        overrides:
          - match: "re:.*layer\\\\.0\\\\..*"
            scheme: w8a16
          - match: foo
            scheme: w9a8
        """,
        7, "overrides[1].scheme", "unknown scheme 'w9a8'; known: binary, fp16, fp8, none, ternary, w4a16",
        id="unknown-scheme",
    ),
    pytest.param(
        """
        qcore: 1
        scheme: w8a16
        overides: []
        """,
        3, "overides", "unknown key 'overides'; known: qcore, scheme, targets, ignore, overrides",
        id="unknown-key",
    ),
    pytest.param(
        """
        scheme: w8a16
        """,
        1, "qcore", "required version key missing; start the recipe with `qcore: 1`",
        id="missing-version",
    ),
    pytest.param(
        """
        qcore: 2
        scheme: w8a16
        """,
        1, "qcore", "unsupported recipe version 2; this qcore reads version 1",
        id="bad-version",
    ),
    pytest.param(
        """
        qcore: 1
        scheme: w8a16
        targets: Linear
        """,
        3, "targets", "expected a list, got str 'Linear'",
        id="targets-not-a-list",
    ),
    pytest.param(
        """
        qcore: 1
        scheme: w8a16
        ignore:
          - lm_head
          - "re:(unclosed"
        """,
        5, "ignore[1]", "bad regular expression 're:(unclosed': missing ), unterminated subpattern",
        id="bad-regex",
    ),
    pytest.param(
        """
        qcore: 1
        scheme: w8a16
        backend: tpu-magic
        """,
        3, "backend", "unknown backend 'tpu-magic'; known: auto, cpu-reference, torch-fallback",
        id="unknown-backend",
    ),
    pytest.param(
        """
        qcore: 1
        scheme: w8a16
        overrides:
          - match: x
            scheme: w8a16
            backend: cuda-dream
        """,
        6, "overrides[0].backend", "unknown backend 'cuda-dream'; known: auto, cpu-reference, torch-fallback",
        id="unknown-override-backend",
    ),
    pytest.param(
        """
        qcore: 1
        scheme: w8a8
        calibration: {samples: 64, observer: histogramm}
        """,
        3, "calibration.observer", "unknown observer 'histogramm'; known: histogram, minmax, moving_average, "
        "percentile; did you mean 'histogram'?",
        id="unknown-observer",
    ),
    pytest.param(
        """
        qcore: 1
        scheme: w8a8
        calibration:
          samples: 64
          observer: percentile
          percentile: 120
        """,
        3, "calibration", "observer 'percentile': percentile must be a number in (50, 100], got 120",
        id="bad-observer-option",
    ),
    pytest.param(
        """
        qcore: 1
        scheme: my-w6
        schemes:
          my-w6:
            weights: {dtype: int8, granularity: group}
        """,
        5, "schemes.my-w6.weights", "group granularity needs a positive group_size",
        id="custom-spec-error",
    ),
    pytest.param(
        """
        qcore: 1
        scheme: w8a16
        schemes:
          w8a8: {weights: {dtype: int8}}
        """,
        4, "schemes.w8a8", "custom scheme 'w8a8' differs from the registered scheme of that name",
        id="custom-shadows-preset",
    ),
    pytest.param(
        """
        qcore: 1
        scheme: w8a16
        strict: "yes"
        """,
        3, "strict", "expected a boolean (true/false), got str 'yes'",
        id="strict-type",
    ),
    pytest.param(
        """
        qcore: 1
        scheme: w8a16
        on_unsupported: skip
        """,
        3, "on_unsupported", "expected one of error, keep-float, got 'skip'",
        id="on-unsupported-choice",
    ),
    pytest.param(
        """
        qcore: 1
        scheme: w8a16
        overrides:
          - scheme: w4a16
        """,
        4, "overrides[0].match", "required (an exact layer name or re:REGEX)",
        id="override-without-match",
    ),
    pytest.param(
        """
        qcore: 1
        scheme: w8a16
        calibration: {samples: 0}
        """,
        3, "calibration.samples", "must be a positive integer, got 0",
        id="calibration-samples",
    ),
    pytest.param(
        """
        qcore: 1
        scheme: w8a16
        x: !!python/object/apply:os.system ["echo pwned"]
        """,
        3, "x", "tag '!!python/object/apply:os.system' is not allowed",
        id="python-tag",
    ),
    pytest.param(
        """
        qcore: 1
        scheme: w8a16
        targets: &loop [Linear, *loop]
        """,
        3, "targets[1]", "an alias refers to a node that contains it",
        id="recursive-alias",
    ),
    pytest.param(
        """
        - qcore: 1
        """,
        1, "", "a recipe is a mapping of keys",
        id="not-a-mapping",
    ),
]


@pytest.mark.parametrize(("text", "line", "path", "message"), MALFORMED)
def test_malformed_recipe_reports_path_line_and_message(tmp_path, text, line, path, message) -> None:
    file = write(tmp_path, text)
    problems = problems_of(file)
    found = [p for p in problems if p.path == path and message in p.message]
    assert found, f"no problem at {path!r} saying {message!r} in {problems}"
    assert found[0].line == line
    with pytest.raises(RecipeError) as info:
        load_recipe(file)
    location = f"{file}:{line}: " if line is not None else f"{file}: "
    assert f"{location}{path + ': ' if path else ''}{found[0].message}" in str(info.value)


def test_every_problem_is_reported_at_once(tmp_path) -> None:
    file = write(tmp_path, """
        qcore: 1
        scheme: w9a8
        targets: [Linear]
        ignore: ["re:["]
        overrides:
          - {match: a, scheme: nope}
        calibration: {observer: minmaxx}
        backend: nowhere
        """)
    problems = problems_of(file)
    assert [(p.path, p.line) for p in problems] == [
        ("scheme", 2), ("ignore[0]", 4), ("overrides[0].scheme", 6), ("calibration.observer", 7), ("backend", 8),
    ]
    text = str(RecipeError(problems, str(file)))
    assert text.startswith(f"invalid recipe {file} (5 problems):")
    assert all(f"{file}:{p.line}: {p.path}: " in text for p in problems)


def test_did_you_mean_for_keys_fields_and_names() -> None:
    messages = {p.path: p.message for p in problems_of({
        "qcore": 1, "sceme": "w8a16", "scheme": "w8a8-dynamc",
        "schemes": {"mine": {"weights": {"dtype": "int8", "granulrity": "channel"}}},
        "calibration": {"sampels": 3},
    })}
    assert messages["sceme"].endswith("did you mean 'scheme'?")
    assert messages["scheme"].endswith("did you mean 'w8a8-dynamic'?")
    assert messages["schemes.mine.weights.granulrity"].endswith("did you mean 'granularity'?")
    assert messages["calibration.sampels"].endswith("did you mean 'samples'?")


def test_a_broken_custom_scheme_is_reported_once_not_again_where_used() -> None:
    problems = problems_of({"qcore": 1, "scheme": "mine", "schemes": {"mine": {"weights": {"dtype": "int6"}}}})
    assert [(p.path, p.message.split(";")[0]) for p in problems] == [("schemes.mine.weights", "unknown dtype 'int6'")]


def test_safe_loading_never_constructs_python_objects(tmp_path) -> None:
    marker = tmp_path / "pwned"
    file = write(tmp_path, f"""
        qcore: 1
        scheme: !!python/object/apply:pathlib.Path.touch [!!python/object/apply:pathlib.Path ["{marker}"]]
        """)
    problems = problems_of(file)
    assert not marker.exists()
    assert any("is not allowed" in p.message and p.path == "scheme" for p in problems)


def test_yaml_syntax_error_has_its_line(tmp_path) -> None:
    file = write(tmp_path, "qcore: 1\nscheme: [w8a16\n")
    (problem,) = problems_of(file)
    assert problem.line is not None and "not valid YAML" in problem.message


def test_resolve_rules_and_matching() -> None:
    recipe = load_recipe({
        "qcore": 1,
        "scheme": "w8a8-dynamic",
        "ignore": ["re:.*pooler.*", "lm_head"],
        "overrides": [
            {"match": "re:.*layer\\.0\\..*", "scheme": "w8a16", "backend": "cpu-reference"},
            {"match": "re:.*layer\\.0\\.output\\.dense", "scheme": "w4a16"},
            {"match": "re:.*layer\\.1\\..*", "scheme": "none"},
            {"match": "re:.*pooler.*", "scheme": "w8a16"},
        ],
        "backend": "torch-fallback",
    })
    rule = recipe.resolve("enc.layer.0.attention.dense", LINEAR)
    assert rule == LayerRule("enc.layer.0.attention.dense", PRESETS["w8a16"], "cpu-reference",
                             "overrides[0] (re:.*layer\\.0\\..*)", rule.reason)
    assert "overrides[0]" in rule.reason and "w8a16" in rule.reason
    later = recipe.resolve("enc.layer.0.output.dense", LINEAR)
    assert later.scheme == PRESETS["w4a16"] and later.rule == "overrides[1] (re:.*layer\\.0\\.output\\.dense)"
    assert later.backend == "torch-fallback"
    keep = recipe.resolve("enc.layer.1.x", LINEAR)
    assert keep.scheme is None and "kept float" in keep.reason
    ignored = recipe.resolve("bert.pooler.dense", LINEAR)
    assert ignored.scheme is None and ignored.rule == "ignore[0] (re:.*pooler.*)" and "kept float" in ignored.reason
    assert recipe.resolve("lm_head", LINEAR).rule == "ignore[1] (lm_head)"
    assert recipe.resolve("x.lm_head", LINEAR).rule == "default"
    assert recipe.resolve("enc.layer.01.x", LINEAR).rule == "default"
    assert matches("re:layer\\.\\d", "layer.3") and not matches("re:layer\\.\\d", "enc.layer.3.q")
    default = recipe.resolve("enc.layer.2.x", LINEAR)
    assert default.scheme == PRESETS["w8a8-dynamic"] and default.rule == "default"
    assert recipe.resolve("enc.layer.2.act", torch.nn.ReLU()) is None


def test_targets_are_class_names() -> None:
    recipe = load_recipe({"qcore": 1, "scheme": "w8a16", "targets": ["Conv1d"]})
    assert recipe.resolve("a", LINEAR) is None
    assert recipe.resolve("a", torch.nn.Conv1d(1, 1, 1)).scheme == PRESETS["w8a16"]


def test_custom_inline_scheme(tmp_path) -> None:
    file = write(tmp_path, """
        qcore: 1
        scheme: w8a8-dynamic
        schemes:
          my-w6: {weights: {dtype: int8, granularity: channel}, input_activations: null, description: "six-ish"}
        overrides:
          - {match: head, scheme: my-w6}
        """)
    recipe = load_recipe(file)
    scheme = recipe.schemes["my-w6"]
    assert scheme.weights == QuantSpec("int8", "channel") and scheme.weight_only and scheme.description == "six-ish"
    assert recipe.resolve("head", LINEAR).scheme is scheme
    assert recipe.source == str(file)


def test_to_dict_round_trips(tmp_path) -> None:
    recipe = load_recipe(write(tmp_path, """
        qcore: 1
        scheme: none
        targets: [Linear, Conv1d]
        ignore: [lm_head]
        overrides:
          - {match: "re:.*q", scheme: mine, backend: cpu-reference}
        schemes:
          mine: {weights: {dtype: uint4, granularity: group, group_size: 32, symmetric: false}}
        calibration: {samples: 16, observer: histogram, bins: 512}
        backend: torch-fallback
        strict: true
        on_unsupported: keep-float
        """))
    again = load_recipe(recipe.to_dict())
    assert again == recipe and again.to_dict() == recipe.to_dict()
    assert again.calibration == Calibration(16, "histogram", {"bins": 512})
    assert again.scheme is None and again.strict and again.source is None


def test_unmatched_patterns_name_their_path() -> None:
    recipe = load_recipe({
        "qcore": 1, "scheme": "w8a16", "ignore": ["re:.*pooler.*", "a.b"],
        "overrides": [{"match": "re:foo", "scheme": "w4a16"}, {"match": "re:a\\..*", "scheme": "none"}],
    })
    assert recipe.unmatched_patterns(["a.b", "a.c"]) == [
        "ignore[0] 're:.*pooler.*' matches no layer",
        "overrides[0].match 're:foo' matches no layer",
    ]


def test_observer_for_prefers_the_recipe_calibration() -> None:
    spec = PRESETS["w8a8"].input_activations
    plain = load_recipe({"qcore": 1, "scheme": "w8a8"})
    assert plain.observer_for(spec) == ("minmax", {})
    tuned = load_recipe({"qcore": 1, "scheme": "w8a8", "calibration": {"observer": "percentile", "percentile": 99.9}})
    assert tuned.observer_for(spec) == ("percentile", {"percentile": 99.9})


def test_dict_and_text_and_recipe_inputs() -> None:
    from_dict = load_recipe({"qcore": 1, "scheme": "w8a16"})
    assert isinstance(from_dict, Recipe) and from_dict.scheme == PRESETS["w8a16"] and from_dict.targets == ("Linear",)
    assert load_recipe("qcore: 1\nscheme: w8a16\n") == from_dict
    assert load_recipe(from_dict) is from_dict
    (problem,) = problems_of({"qcore": 1, "scheme": "w8a16", "strict": 1})
    assert problem.line is None
    assert str(RecipeError([problem])).endswith("  strict: expected a boolean (true/false), got int 1")
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        load_recipe("missing.yaml")


@pytest.mark.parametrize("path", sorted(RECIPES.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_recipes_load(path: Path) -> None:
    recipe = load_recipe(path)
    assert recipe.scheme is not None and recipe.targets == ("Linear",)
    assert path.read_text().startswith("#"), "each recipe starts with a comment saying what it is for"


def test_the_expected_recipes_are_shipped() -> None:
    names = {p.name for p in RECIPES.glob("*.yaml")}
    assert {"minilm-w8a8-dynamic.yaml", "minilm-w8a16.yaml", "minilm-w4a16.yaml", "minilm-w8a8-static.yaml",
            "minilm-mixed.yaml"} <= names
    mixed = load_recipe(RECIPES / "minilm-mixed.yaml")
    block = "0.auto_model.encoder.layer.{}.{}"
    assert mixed.resolve(block.format(3, "attention.self.value"), LINEAR).scheme.name == "w8a16"
    assert mixed.resolve(block.format(3, "attention.self.query"), LINEAR).scheme.name == "w8a8-dynamic"
    assert mixed.resolve(block.format(0, "output.dense"), LINEAR).scheme.name == "w8a8-dynamic"
    static = load_recipe(RECIPES / "minilm-w8a8-static.yaml")
    assert static.calibration.samples == 64 and static.calibration.observer == "histogram"


def test_the_tuned_record_round_trips_and_is_checked() -> None:
    tuned = {"objective": "size", "constraint": {"metric": "mean cosine", "min": 0.995}, "predicted": 0.996,
             "measured": 0.9958, "hardware": "abc", "candidates": ["float", "w8a16"]}
    recipe = load_recipe({"qcore": 1, "scheme": "w8a16", "tuned": tuned})
    assert recipe.tuned == tuned and load_recipe(recipe.to_dict()) == recipe
    assert "tuned" not in load_recipe({"qcore": 1, "scheme": "w8a16"}).to_dict()
    with pytest.raises(RecipeError) as info:
        load_recipe("qcore: 1\nscheme: w8a16\ntuned:\n  objective: speed\n  constraint: {min: high, metrc: x}\n")
    text = str(info.value)
    assert "line 4: tuned.objective: expected one of size, latency, got 'speed'" in text
    assert "tuned.constraint.min: expected an integer or float, got str 'high'" in text
    assert "tuned.constraint.metrc: unknown key" in text
