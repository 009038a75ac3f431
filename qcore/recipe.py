"""YAML recipe → validated `Recipe` → one `LayerRule` per module.

A recipe is plain data: it is composed with PyYAML's SafeLoader (so every
value keeps its line) and built into dicts, lists and scalars by hand; any
tag beyond plain YAML data is refused, so a recipe can never name Python code.
Validation collects every problem, each with its path and line, and raises
them all at once in a `RecipeError` before any work starts.

Matching: a module is a target when its class ``__name__`` is in `targets`.
A pattern is an exact module name, or ``re:`` and a regular expression that
must match the whole name. The first matching `ignore` pattern keeps the layer
float; otherwise the last matching override decides (its `backend`, if set,
pins that layer); otherwise the default `scheme` applies.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import attrs
import torch
import yaml

from qcore.algorithm import LAYERS_OPTION
from qcore.errors import QcoreError, SpecError
from qcore.matcher import AUTO
from qcore.options import parse_options
from qcore.patterns import compiled, matches
from qcore.plugins import get_manager
from qcore.spec import PRESETS, QuantScheme, QuantSpec

VERSION = 1
NONE = "none"
ON_UNSUPPORTED = ("error", "keep-float")
TOP_KEYS = ("qcore", "scheme", "targets", "ignore", "overrides", "schemes", "calibration", "algorithms",
            "backend", "strict", "on_unsupported", "tuned")
TUNED_KEYS = ("objective", "constraint", "predicted", "measured", "measured_on", "hardware", "candidates")
"""``tuned:``, written by `qcore tune`: how the recipe was chosen. A record only; quantizing ignores it."""
OBJECTIVES = ("size", "latency")
OVERRIDE_KEYS = ("match", "scheme", "backend")
SCHEME_KEYS = ("weights", "input_activations", "description")
CALIBRATION_KEYS = ("samples", "observer")
SPEC_FIELDS: dict[str, tuple[type, ...]] = {
    "dtype": (str,), "granularity": (str,), "axis": (int,), "group_size": (int, type(None)),
    "symmetric": (bool,), "dynamic": (bool,), "observer": (str,),
}
MAX_NODES = 100_000
_SAFE_TAGS = frozenset(tag for tag in yaml.SafeLoader.yaml_constructors if tag is not None)
_TYPE_NAMES = {str: "a string", int: "an integer", bool: "a boolean (true/false)", list: "a list", dict: "a mapping",
               type(None): "null"}


@attrs.frozen
class RecipeProblem:
    """One thing wrong with a recipe: where (`path` like ``overrides[1].scheme``, `line`) and what."""

    path: str
    line: int | None
    message: str

    def describe(self, source: str | None = None) -> str:
        text = f"{self.path}: {self.message}" if self.path else self.message
        if source is not None:
            return f"{source}:{self.line}: {text}" if self.line is not None else f"{source}: {text}"
        return f"line {self.line}: {text}" if self.line is not None else text


class RecipeError(QcoreError, ValueError):
    """A recipe that cannot be used; `problems` lists every reason, each with its path and line."""

    def __init__(self, problems: list[RecipeProblem], source: str | None = None) -> None:
        self.problems = list(problems)
        self.source = source
        super().__init__(self.__str__())

    def __str__(self) -> str:
        count = len(self.problems)
        head = f"invalid recipe{' ' + self.source if self.source else ''} ({count} problem{'s' * (count != 1)}):"
        return "\n".join([head, *(f"  {p.describe(self.source)}" for p in self.problems)])


@attrs.frozen
class Override:
    """Layers whose name matches `match` get `scheme` (None: keep float), run by `backend` when set."""

    match: str
    scheme: QuantScheme | None
    backend: str | None = None


@attrs.frozen
class Calibration:
    """How much calibration data to run and which observer (with its options) computes static qparams.

    `samples` counts rows of the calibration batches (the batches themselves
    are the caller's); `observer` None means each spec's own `observer`.
    """

    samples: int = 128
    observer: str | None = None
    options: dict[str, Any] = attrs.field(factory=dict)


@attrs.frozen
class AlgorithmEntry:
    """One item of a recipe's ``algorithms`` list: the algorithm's name, its options, the layers it may touch.

    `options` is an instance of the algorithm's options class; in a recipe
    recorded in a checkpoint whose algorithm is not installed here, the plain
    options as recorded. `layers` (name patterns) restricts the algorithm to
    matching layers; empty means every layer it applies to.
    """

    name: str
    options: Any
    layers: tuple[str, ...] = ()

    def options_dict(self) -> dict[str, Any]:
        """The options as plain data (what the recipe, the card and the checkpoint record)."""
        data = attrs.asdict(self.options) if attrs.has(type(self.options)) else dict(self.options)
        return _plain(data) | ({LAYERS_OPTION: list(self.layers)} if self.layers else {})

    def selects(self, name: str) -> bool:
        return not self.layers or any(matches(p, name) for p in self.layers)


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


@attrs.frozen
class LayerRule:
    """What a recipe decides for one layer: its scheme (None: keep float), backend, and which rule said so."""

    name: str
    scheme: QuantScheme | None
    backend: str
    rule: str
    reason: str


@attrs.frozen
class Recipe:
    """A validated recipe. Build it with `load_recipe`; see the module docstring for the matching rules."""

    version: int = VERSION
    scheme: QuantScheme | None = None
    targets: tuple[str, ...] = ("Linear",)
    ignore: tuple[str, ...] = ()
    overrides: tuple[Override, ...] = ()
    schemes: dict[str, QuantScheme] = attrs.field(factory=dict)
    calibration: Calibration = attrs.field(factory=Calibration)
    algorithms: tuple[AlgorithmEntry, ...] = ()
    backend: str = AUTO
    strict: bool = False
    on_unsupported: str = "error"
    tuned: dict[str, Any] | None = None
    source: str | None = attrs.field(default=None, eq=False)

    def resolve(self, name: str, module: torch.nn.Module) -> LayerRule | None:
        """The rule for the module called `name`; None when its type is not a target."""
        if type(module).__name__ not in self.targets:
            return None
        for i, pattern in enumerate(self.ignore):
            if matches(pattern, name):
                return LayerRule(name, None, self.backend, f"ignore[{i}] ({pattern})",
                                 f"ignore[{i}] '{pattern}' matches: kept float")
        for i in reversed(range(len(self.overrides))):
            override = self.overrides[i]
            if matches(override.match, name):
                rule = f"overrides[{i}] ({override.match})"
                return LayerRule(name, override.scheme, override.backend or self.backend, rule,
                                 f"overrides[{i}] '{override.match}' matches: {_outcome(override.scheme)}")
        return LayerRule(name, self.scheme, self.backend, "default", f"default scheme: {_outcome(self.scheme)}")

    def unmatched_patterns(self, names: Iterable[str]) -> list[str]:
        """Every ignore/override pattern that matches none of `names`, with its path in the recipe."""
        names = list(names)
        located = [(f"ignore[{i}]", p) for i, p in enumerate(self.ignore)]
        located += [(f"overrides[{i}].match", o.match) for i, o in enumerate(self.overrides)]
        return [f"{path} '{pattern}' matches no layer" for path, pattern in located
                if not any(matches(pattern, n) for n in names)]

    def observer_for(self, spec: QuantSpec) -> tuple[str, dict[str, Any]]:
        """Observer name and options for a static spec: the recipe's calibration observer wins over the spec's."""
        if self.calibration.observer is not None:
            return self.calibration.observer, dict(self.calibration.options)
        return spec.observer, {}

    def schemes_used(self) -> dict[str, QuantScheme]:
        """Every scheme the recipe names (default and overrides), by name."""
        used = [self.scheme, *(o.scheme for o in self.overrides)]
        return {s.name: s for s in used if s is not None}

    def to_dict(self) -> dict[str, Any]:
        """Plain data that `load_recipe` turns back into an equal recipe (stored in checkpoint metadata).

        Schemes that are not qcore's presets are written out in ``schemes:``,
        so the recipe still loads where the plugin that registered them is
        missing.
        """
        calibration: dict[str, Any] = {"samples": self.calibration.samples}
        if self.calibration.observer is not None:
            calibration["observer"] = self.calibration.observer
            calibration.update(self.calibration.options)
        overrides = []
        for o in self.overrides:
            entry = {"match": o.match, "scheme": _scheme_name(o.scheme)}
            overrides.append(entry | ({"backend": o.backend} if o.backend else {}))
        return {
            "qcore": self.version,
            "scheme": _scheme_name(self.scheme),
            "targets": list(self.targets),
            "ignore": list(self.ignore),
            "overrides": overrides,
            "schemes": {name: _without_name(s.to_dict())
                        for name, s in {**self.schemes_used(), **self.schemes}.items() if PRESETS.get(name) != s},
            "calibration": calibration,
            "algorithms": [{a.name: a.options_dict()} for a in self.algorithms],
            "backend": self.backend,
            "strict": self.strict,
            "on_unsupported": self.on_unsupported,
        } | ({"tuned": self.tuned} if self.tuned is not None else {})


def _without_name(scheme: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in scheme.items() if key != "name"}


def _scheme_name(scheme: QuantScheme | None) -> str:
    return NONE if scheme is None else scheme.name


def _outcome(scheme: QuantScheme | None) -> str:
    return f"{scheme.name} ({scheme.describe()})" if scheme is not None else "none, kept float"


def load_recipe(src: Recipe | str | os.PathLike[str] | dict[str, Any], *, recorded: bool = False) -> Recipe:
    """A validated Recipe from a Recipe, a YAML file path, YAML text, or a dict of the same shape.

    A str is a path when it names an existing file or ends in .yaml/.yml;
    otherwise it is YAML text. Raises RecipeError listing every problem.
    `recorded` reads a recipe a checkpoint recorded: the backends and
    algorithms it names need not be installed here (they ran elsewhere),
    and its ``schemes:`` define the schemes it used even where a plugin
    registers another one of that name.
    """
    if isinstance(src, Recipe):
        return src
    if isinstance(src, dict):
        return _Validator({}, None, recorded).recipe(src)
    text, source = _read(src)
    validator = _Validator({}, source, recorded)
    data = _parse(text, validator)
    return validator.recipe(data)


def _read(src: str | os.PathLike[str]) -> tuple[str, str | None]:
    if not isinstance(src, (str, os.PathLike)):
        raise TypeError(f"load_recipe: expected a Recipe, a path, YAML text or a dict, got {type(src).__name__}")
    path = Path(src)
    one_line = isinstance(src, str) and "\n" not in src
    if isinstance(src, os.PathLike) or one_line and (path.suffix in (".yaml", ".yml") or _is_file(path)):
        if not path.is_file():
            raise FileNotFoundError(f"recipe file not found: {path}")
        return path.read_text(encoding="utf-8"), str(path)
    return str(src), None


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:
        return False


def _parse(text: str, validator: _Validator) -> Any:
    """Plain data from YAML text; refused tags become problems of `validator`, syntax errors raise at once."""
    source = validator.source
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        if node is None:
            raise RecipeError([RecipeProblem("", None, "empty recipe; it needs at least `qcore: 1` and `scheme:`")],
                              source)
        return _Composer(validator.lines, validator.problems).plain(node, "")
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise RecipeError([RecipeProblem("", line, f"not valid YAML: {exc}")], source) from None


def _show_tag(tag: str) -> str:
    return tag.replace("tag:yaml.org,2002:", "!!")


@attrs.define
class _Composer:
    """YAML nodes → plain data, recording each path's line; refuses tags that are not plain data."""

    lines: dict[str, int]
    problems: list[RecipeProblem]
    constructor: yaml.constructor.SafeConstructor = attrs.field(factory=yaml.constructor.SafeConstructor)
    open_nodes: set[int] = attrs.field(factory=set)
    budget: int = MAX_NODES

    def plain(self, node: yaml.Node, path: str) -> Any:
        line = node.start_mark.line + 1
        self.lines.setdefault(path, line)
        self.budget -= 1
        refusal = None
        if node.tag not in _SAFE_TAGS:
            refusal = (f"tag {_show_tag(node.tag)!r} is not allowed: "
                       "a recipe is plain YAML data and never names Python code")
        elif id(node) in self.open_nodes:
            refusal = "an alias refers to a node that contains it; recipes cannot be recursive"
        elif self.budget < 0:
            if self.budget < -1:
                return None
            refusal = f"more than {MAX_NODES} values (aliases expanded); this is not a recipe"
        if refusal is not None:
            self.problems.append(RecipeProblem(path, line, refusal))
            return None
        if isinstance(node, yaml.ScalarNode):
            try:
                return self.constructor.construct_object(node)
            except ValueError as exc:
                message = f"cannot read {node.value!r} as {_show_tag(node.tag)}: {exc}"
                self.problems.append(RecipeProblem(path, line, message))
                return None
        self.open_nodes.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                return self._mapping(node, path)
            return [self.plain(item, f"{path}[{i}]") for i, item in enumerate(node.value)]
        finally:
            self.open_nodes.discard(id(node))

    def _mapping(self, node: yaml.MappingNode, path: str) -> dict[Any, Any]:
        self.constructor.flatten_mapping(node)
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag not in _SAFE_TAGS:
                self.problems.append(RecipeProblem(path, line, "mapping keys must be plain names"))
                continue
            key = self.constructor.construct_object(key_node)
            key_path = f"{path}.{key}" if path else str(key)
            if key in out:
                self.problems.append(RecipeProblem(key_path, line, "duplicate key; each key may appear once"))
                continue
            self.lines[key_path] = line
            out[key] = self.plain(value_node, key_path)
        return out


def _close(word: Any, choices: Iterable[str]) -> str | None:
    close = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=0.6)
    return close[0] if close else None


def _unknown(what: str, value: Any, known: Iterable[str]) -> str:
    """``unknown scheme 'w9a8'; known: a, b; did you mean 'w8a8'?``"""
    known = list(known)
    close = _close(value, known)
    hint = f"; did you mean {close!r}?" if close else ""
    return f"unknown {what} {str(value)!r}; known: {', '.join(known) or 'none'}{hint}"


def _parent(path: str) -> str:
    cut = max(path.rfind("."), path.rfind("["))
    return path[:cut] if cut > 0 else ""


class _Validator:
    """Checks plain recipe data, collecting every problem before building the Recipe."""

    def __init__(self, lines: dict[str, int], source: str | None, recorded: bool = False) -> None:
        self.lines = lines
        self.source = source
        self.recorded = recorded
        self.problems: list[RecipeProblem] = []
        self.broken: set[str] = set()
        self.manager = get_manager()

    def add(self, path: str, message: str) -> None:
        """Record a problem at `path`, unless one is already there (a value that failed to read, say)."""
        if any(problem.path == path for problem in self.problems):
            return
        where = path
        while where not in self.lines and where:
            where = _parent(where)
        self.problems.append(RecipeProblem(path, self.lines.get(where), message))

    def recipe(self, data: Any) -> Recipe:
        if not isinstance(data, dict):
            self.add("", f"a recipe is a mapping of keys ({', '.join(TOP_KEYS)}), got {_describe(data)}")
            raise RecipeError(self.problems, self.source)
        self._keys(data, "", TOP_KEYS)
        self._version(data)
        custom = self._custom_schemes(data.get("schemes", {}))
        known = {**self.manager.schemes(), **custom}
        if "scheme" not in data:
            self.add("scheme", f"required: the default scheme for every target, or {NONE!r} to keep float")
        default = self._scheme_ref(data.get("scheme", NONE), "scheme", known)
        recipe = Recipe(
            version=VERSION,
            scheme=default,
            targets=self._names(data.get("targets", ["Linear"]), "targets", patterns=False),
            ignore=self._names(data.get("ignore", []), "ignore", patterns=True),
            overrides=self._overrides(data.get("overrides", []), known),
            schemes=custom,
            calibration=self._calibration(data.get("calibration", {})),
            algorithms=self._algorithms(data.get("algorithms", [])),
            backend=self._backend(data.get("backend", AUTO), "backend") or AUTO,
            strict=self._typed(data.get("strict", False), "strict", (bool,), False),
            on_unsupported=self._choice(data.get("on_unsupported", "error"), "on_unsupported", ON_UNSUPPORTED),
            tuned=self._tuned(data["tuned"]) if "tuned" in data else None,
            source=self.source,
        )
        if self.problems:
            raise RecipeError(sorted(self.problems, key=lambda p: p.line or 0), self.source)
        return recipe

    def _keys(self, data: dict[Any, Any], path: str, known: tuple[str, ...]) -> None:
        for key in data:
            if key not in known:
                key_path = f"{path}.{key}" if path else str(key)
                self.add(key_path, _unknown("key", key, known))

    def _version(self, data: dict[str, Any]) -> None:
        if "qcore" not in data:
            self.add("qcore", f"required version key missing; start the recipe with `qcore: {VERSION}`")
        elif data["qcore"] != VERSION or isinstance(data["qcore"], bool):
            self.add("qcore", f"unsupported recipe version {data['qcore']!r}; this qcore reads version {VERSION}")

    def _typed(self, value: Any, path: str, types: tuple[type, ...], fallback: Any) -> Any:
        if isinstance(value, bool) and bool not in types or not isinstance(value, types):
            expected = " or ".join(_TYPE_NAMES.get(t, t.__name__) for t in types)
            self.add(path, f"expected {expected}, got {_describe(value)}")
            return fallback
        return value

    def _choice(self, value: Any, path: str, choices: tuple[str, ...]) -> str:
        if value not in choices:
            self.add(path, f"expected one of {', '.join(choices)}, got {value!r}")
            return choices[0]
        return value

    def _names(self, value: Any, path: str, *, patterns: bool) -> tuple[str, ...]:
        items = self._typed(value, path, (list,), [])
        good = []
        for i, item in enumerate(items):
            item_path = f"{path}[{i}]"
            if not isinstance(item, str) or not item:
                self.add(item_path, f"expected a non-empty string, got {_describe(item)}")
            elif not patterns or self._pattern(item, item_path):
                good.append(item)
        return tuple(good)

    def _pattern(self, pattern: str, path: str) -> bool:
        try:
            compiled(pattern)
        except re.error as exc:
            self.add(path, f"bad regular expression {pattern!r}: {exc}")
            return False
        return True

    def _scheme_ref(self, value: Any, path: str, known: dict[str, QuantScheme]) -> QuantScheme | None:
        if value is None or value == NONE:
            return None
        if not isinstance(value, str):
            self.add(path, f"expected a scheme name (or {NONE!r}), got {_describe(value)}")
            return None
        if value in self.broken:
            return None
        if value not in known:
            self.add(path, _unknown("scheme", value, sorted([*known, NONE])))
            return None
        return known[value]

    def _backend(self, value: Any, path: str) -> str | None:
        if not isinstance(value, str):
            self.add(path, f"expected a backend name (or {AUTO!r}), got {_describe(value)}")
            return None
        backends = self.manager.backends()
        if value != AUTO and value not in backends and not self.recorded:
            self.add(path, _unknown("backend", value, [AUTO, *sorted(backends)]))
            return None
        return value

    def _custom_schemes(self, value: Any) -> dict[str, QuantScheme]:
        table = self._typed(value, "schemes", (dict,), {})
        registered = self.manager.schemes()
        out = {}
        for name, body in table.items():
            path = f"schemes.{name}"
            if not isinstance(name, str):
                self.add(path, f"scheme names are strings, got {_describe(name)}")
                continue
            if name == NONE:
                self.add(path, f"custom scheme name {name!r} means keep float; choose another name")
                continue
            scheme = self._custom_scheme(name, body, path)
            if scheme is None:
                self.broken.add(name)
            elif name in registered and registered[name] != scheme and not self.recorded:
                self.add(path, f"custom scheme {name!r} differs from the registered scheme of that name "
                               f"({registered[name].describe()}); choose another name")
                self.broken.add(name)
            else:
                out[name] = scheme
        return out

    def _custom_scheme(self, name: str, body: Any, path: str) -> QuantScheme | None:
        body = self._typed(body, path, (dict,), None)
        if body is None:
            return None
        self._keys(body, path, SCHEME_KEYS)
        specs = {key: self._spec(body.get(key), f"{path}.{key}") for key in ("weights", "input_activations")}
        description = self._typed(body.get("description", ""), f"{path}.description", (str,), "")
        if any(spec is False for spec in specs.values()):
            return None
        try:
            return QuantScheme(name, specs["weights"], specs["input_activations"], description)
        except SpecError as exc:
            self.add(path, str(exc))
            return None

    def _spec(self, value: Any, path: str) -> QuantSpec | None | bool:
        """The QuantSpec, None for a float tensor, or False after reporting a problem."""
        if value is None:
            return None
        fields = self._typed(value, path, (dict,), None)
        if fields is None:
            return False
        ok = True
        for key, item in fields.items():
            if key not in SPEC_FIELDS:
                self.add(f"{path}.{key}", _unknown("QuantSpec field", key, SPEC_FIELDS))
                ok = False
            elif self._typed(item, f"{path}.{key}", SPEC_FIELDS[key], _INVALID) is _INVALID:
                ok = False
        if ok and "observer" in fields:
            ok = self._observer(fields["observer"], f"{path}.observer")
        if not ok:
            return False
        if "dtype" not in fields:
            self.add(path, "a QuantSpec needs a dtype (e.g. int8)")
            return False
        try:
            return QuantSpec(**fields)
        except SpecError as exc:
            self.add(path, str(exc))
            return False

    def _observer(self, name: str, path: str) -> bool:
        observers = self.manager.observers()
        if name not in observers:
            self.add(path, _unknown("observer", name, sorted(observers)))
            return False
        return True

    def _overrides(self, value: Any, known: dict[str, QuantScheme]) -> tuple[Override, ...]:
        out = []
        for i, body in enumerate(self._typed(value, "overrides", (list,), [])):
            path = f"overrides[{i}]"
            body = self._typed(body, path, (dict,), None)
            if body is None:
                continue
            self._keys(body, path, OVERRIDE_KEYS)
            for key in ("match", "scheme"):
                if key not in body:
                    hint = "an exact layer name or re:REGEX" if key == "match" else f"a scheme name, or {NONE!r}"
                    self.add(f"{path}.{key}", f"required ({hint})")
            match = self._typed(body.get("match", ""), f"{path}.match", (str,), "")
            scheme = self._scheme_ref(body.get("scheme"), f"{path}.scheme", known)
            backend = self._backend(body["backend"], f"{path}.backend") if "backend" in body else None
            if match and self._pattern(match, f"{path}.match"):
                out.append(Override(match, scheme, backend))
        return tuple(out)

    def _calibration(self, value: Any) -> Calibration:
        body = self._typed(value, "calibration", (dict,), {})
        samples = self._typed(body.get("samples", 128), "calibration.samples", (int,), 128)
        if samples <= 0:
            self.add("calibration.samples", f"must be a positive integer, got {samples}")
        options = {key: item for key, item in body.items() if key not in CALIBRATION_KEYS}
        for key in [key for key in options if _close(key, CALIBRATION_KEYS)]:
            self.add(f"calibration.{key}", _unknown("key", key, CALIBRATION_KEYS))
            del options[key]
        observer = self._typed(body.get("observer"), "calibration.observer", (str, type(None)), None)
        if observer is None:
            for key in options:
                self.add(f"calibration.{key}", "observer options need `observer:` to say which observer they are for")
        elif self._observer(observer, "calibration.observer"):
            self._observer_options(observer, options)
        return Calibration(samples, observer, options)

    def _algorithms(self, value: Any) -> tuple[AlgorithmEntry, ...]:
        """``algorithms: [{name: {options}}, ...]``: each item one algorithm, checked against its option schema."""
        known = self.manager.algorithms()
        out = []
        for i, item in enumerate(self._typed(value, "algorithms", (list,), [])):
            path = f"algorithms[{i}]"
            if not isinstance(item, dict) or len(item) != 1:
                self.add(path, "each algorithm is a mapping of one name to its options, e.g. "
                               f"{{gptq: {{damp: 0.01}}}}; got {_describe(item)}")
                continue
            ((name, body),) = item.items()
            path = f"{path}.{name}"
            body = self._typed(body, path, (dict,), None)
            if body is None:
                continue
            layers = self._names(body.get(LAYERS_OPTION, []), f"{path}.{LAYERS_OPTION}", patterns=True)
            options = {k: v for k, v in body.items() if k != LAYERS_OPTION}
            if name not in known:
                if self.recorded:
                    out.append(AlgorithmEntry(str(name), options, layers))
                else:
                    self.add(path, _unknown("algorithm", name, sorted(known)) + " (installed algorithms)")
                continue
            parsed, problems = parse_options(known[name].options, options, also_known=(LAYERS_OPTION,))
            for key, message in problems:
                self.add(f"{path}.{key}" if key else path, message)
            if parsed is not None:
                out.append(AlgorithmEntry(name, parsed, layers))
        kinds = [known[a.name].kind if a.name in known else None for a in out]
        for i, kind in enumerate(kinds):
            later = [out[j].name for j in range(i + 1, len(out)) if kinds[j] in ("transform", "quantize")]
            if kind == "correct" and later:
                self.add(f"algorithms[{i}]", f"{out[i].name} corrects final weights, so it must come after "
                                             f"{', '.join(later)}, which change them")
        return tuple(out)

    def _tuned(self, value: Any) -> dict[str, Any] | None:
        """The record `qcore tune` writes: its objective and constraint are checked, the rest kept as data."""
        body = self._typed(value, "tuned", (dict,), None)
        if body is None:
            return None
        self._keys(body, "tuned", TUNED_KEYS)
        if "objective" in body:
            self._choice(body["objective"], "tuned.objective", OBJECTIVES)
        constraint = self._typed(body.get("constraint", {}), "tuned.constraint", (dict,), {})
        self._keys(constraint, "tuned.constraint", ("metric", "min"))
        self._typed(constraint.get("metric", ""), "tuned.constraint.metric", (str,), "")
        self._typed(constraint.get("min", 0.0), "tuned.constraint.min", (int, float), 0.0)
        return body

    def _observer_options(self, name: str, options: dict[str, Any]) -> None:
        """Options are checked by building one throwaway observer, so plugin observers are checked too."""
        try:
            self.manager.observer(name).factory(QuantSpec("int8"), **options)
        except (TypeError, ValueError) as exc:
            self.add("calibration", str(exc))


_INVALID = object()


def _describe(value: Any) -> str:
    kind = {dict: "a mapping", list: "a list", type(None): "null"}.get(type(value))
    return kind or f"{type(value).__name__} {value!r}"
