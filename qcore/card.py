"""The quantization card: what was done to a model, where it runs, what it cost and what it saved.

A card is built from `qcore.state_of(model)` right after quantizing (it
needs the model, because the whole-model byte count includes every tensor the
recipe did not touch) and written next to the checkpoint as ``card.md`` (for
people) and ``card.json`` (for tools; `load_card` reads it back, validated).

``card.json`` follows `qcore.card_schema` (its fields are documented there);
`load_card` refuses a file that does not.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
from collections.abc import Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import torch
from torch import nn

from qcore.algorithm import AlgorithmRun
from qcore.card_schema import CARD_FIELDS, CARD_FORMAT, validate
from qcore.errors import QcoreError
from qcore.files import atomic_write
from qcore.metrics import cosine
from qcore.spec import QuantScheme, QuantSpec
from qcore.state import LayerRecord, QuantState, state_of

CARD_JSON = "card.json"
CARD_MD = "card.md"


class CardError(QcoreError, ValueError):
    """A card file that is missing or does not match `CARD_FIELDS`; the message names the file and field."""


# -- the card as data -----------------------------------------------------------


def _finite_or_none(value: float | None) -> float | None:
    """JSON has no infinity: an exact (infinite-SQNR) or unmeasured value is stored as null."""
    return value if value is not None and math.isfinite(value) else None


@attrs.frozen
class TensorQuant:
    """How one tensor of a layer is quantized, spelled out (bits and signedness included)."""

    dtype: str
    bits: int
    signed: bool
    granularity: str
    axis: int | None
    group_size: int | None
    symmetric: bool
    dynamic: bool
    observer: str | None

    @classmethod
    def from_spec(cls, spec: QuantSpec, observer: str | None = None) -> TensorQuant:
        """`observer`: the one that calibrated this tensor (static activations only; weights need none)."""
        return cls(
            dtype=spec.dtype,
            bits=spec.bits,
            signed=spec.info.signed,
            granularity=spec.granularity,
            axis=spec.axis if spec.granularity == "channel" else None,
            group_size=spec.group_size,
            symmetric=spec.symmetric,
            dynamic=spec.dynamic,
            observer=observer if not spec.dynamic and spec.info.scaled else None,
        )

    def describe(self) -> str:
        """E.g. ``int4 (4-bit signed) group128 sym static``."""
        where = {"group": f"group{self.group_size}", "channel": f"channel(axis {self.axis})"}.get(
            self.granularity, self.granularity)
        sign = "signed" if self.signed else "unsigned"
        parts = [f"{self.dtype} ({self.bits}-bit {sign})", where, "sym" if self.symmetric else "asym",
                 "dynamic" if self.dynamic else "static"]
        if self.observer:
            parts.append(f"observer {self.observer}")
        return " ".join(parts)


@attrs.frozen
class CardLayer:
    """One targeted layer: how it was quantized and by which kernel, or why it stayed float."""

    name: str
    rule: str
    in_features: int
    out_features: int
    scheme: str | None
    weights: TensorQuant | None
    activations: TensorQuant | None
    kernel: str | None
    why: str
    float_reason: str | None
    float_bytes: int
    quant_bytes: int
    weight_sqnr_db: float | None
    algorithms: tuple[AlgorithmRun, ...] = ()

    @property
    def quantized(self) -> bool:
        return self.scheme is not None

    def algorithms_text(self) -> str:
        """E.g. ``smoothquant(alpha=0.5): folded into ...; gptq(damp=0.01)``, or ``—`` when none ran."""
        return "; ".join(run.describe() for run in self.algorithms) or "—"


@attrs.frozen
class Calibration:
    samples: int
    batches: int
    observer: str


@attrs.frozen
class Size:
    """Parameter bytes before and after: the quantized Linear layers alone, and the whole model."""

    quantized_linear_float_bytes: int
    quantized_linear_bytes: int
    model_float_bytes: int
    model_quant_bytes: int

    @property
    def quantized_linear_reduction(self) -> float:
        return _saved(self.quantized_linear_float_bytes, self.quantized_linear_bytes)

    @property
    def model_reduction(self) -> float:
        return _saved(self.model_float_bytes, self.model_quant_bytes)


def _saved(before: int, after: int) -> float:
    """Fraction of `before` saved (0 when there was nothing to save)."""
    return 1.0 - after / before if before else 0.0


@attrs.frozen
class Measurement:
    """A measured figure, optionally with the minimum it must reach (``passed`` is None without one).

    `unit` ``"%"`` means `value` and `minimum` are fractions (0.95) shown as percentages (95.0%).
    """

    name: str
    value: float
    unit: str = ""
    minimum: float | None = None

    @property
    def passed(self) -> bool | None:
        return None if self.minimum is None else self.value >= self.minimum

    def _format(self, value: float) -> str:
        if self.unit == "%":
            return f"{value:.1%}"
        return f"{value:.2f}{self.unit}" if self.unit == "x" else f"{value:.5g}{self.unit}"

    @property
    def value_text(self) -> str:
        return self._format(self.value)

    @property
    def target_text(self) -> str:
        return "" if self.minimum is None else f"≥ {self._format(self.minimum)}"

    def describe(self) -> str:
        text = f"{self.name}: {self.value_text}"
        if self.minimum is not None:
            text += f" (target {self.target_text}: {'pass' if self.passed else 'FAIL'})"
        return text


@attrs.frozen
class Quality:
    """Measured quality: worst per-layer weight SQNR, model-output cosine against the float model."""

    weight_sqnr_worst_db: float | None = None
    weight_sqnr_worst_layer: str | None = None
    outputs: int = 0
    output_cosine_mean: float | None = None
    output_cosine_worst: float | None = None
    eval_description: str = ""
    measurements: tuple[Measurement, ...] = ()


@attrs.frozen
class Card:
    """Everything `card.md` and `card.json` say; build it with `build_card`, read it with `load_card`."""

    qcore_version: str
    created: str
    model_source: str
    model_type: str
    recipe_name: str
    recipe_source: str | None
    recipe_scheme: str
    recipe_body: Mapping[str, Any]
    hardware_description: str
    hardware_fingerprint: str
    hardware_profile: Mapping[str, Any]
    calibration: Calibration | None
    layers: tuple[CardLayer, ...]
    size: Size
    quality: Quality

    @property
    def quantized_layers(self) -> tuple[CardLayer, ...]:
        return tuple(layer for layer in self.layers if layer.quantized)

    @property
    def float_layers(self) -> tuple[CardLayer, ...]:
        return tuple(layer for layer in self.layers if not layer.quantized)

    @property
    def tuned(self) -> str | None:
        """How `qcore tune` chose the recipe (its recipe's ``tuned`` record), in words; None when not tuned."""
        tuned = self.recipe_body.get("tuned")
        if not isinstance(tuned, Mapping):
            return None
        constraint = tuned.get("constraint") or {}
        text = (f"tuned by qcore tune for {tuned.get('objective', '?')} under {constraint.get('metric', 'quality')} "
                f"≥ {constraint.get('min', '?')}")
        quality = [f"{key} {tuned[key]:.5f}" for key in ("predicted", "measured")
                   if isinstance(tuned.get(key), (int, float))]
        if quality:
            text += " (" + ", ".join(quality) + (f" on {tuned['measured_on']}" if tuned.get("measured_on") else "")
            text += ")"
        return text + (f" on hardware {tuned['hardware']}" if tuned.get("hardware") else "")

    def with_measurements(self, measurements: Iterable[Measurement]) -> Card:
        """This card with extra measured figures (speed-up, retrieval agreement, ...) and their targets."""
        return attrs.evolve(self, quality=attrs.evolve(self.quality, measurements=tuple(measurements)))

    # -- JSON ------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The ``card.json`` object (see the module docstring); plain JSON types only."""
        size = attrs.asdict(self.size)
        size["quantized_linear_reduction"] = self.size.quantized_linear_reduction
        size["model_reduction"] = self.size.model_reduction
        quality = attrs.asdict(self.quality, filter=lambda a, _v: a.name != "measurements")
        quality["measurements"] = [{**attrs.asdict(m), "passed": m.passed} for m in self.quality.measurements]
        return {
            "qcore_card": CARD_FORMAT,
            "qcore_version": self.qcore_version,
            "created": self.created,
            "model": {"source": self.model_source, "type": self.model_type},
            "recipe": {"name": self.recipe_name, "source": self.recipe_source, "scheme": self.recipe_scheme,
                       "body": _jsonable(self.recipe_body)},
            "hardware": {"description": self.hardware_description, "fingerprint": self.hardware_fingerprint,
                         "profile": _jsonable(self.hardware_profile)},
            "calibration": attrs.asdict(self.calibration) if self.calibration else None,
            "layers": [_jsonable(attrs.asdict(layer)) for layer in self.layers],
            "size": size,
            "quality": quality,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, where: str = "card") -> Card:
        """Rebuild a card from `to_dict` output; raises CardError naming each field that does not fit."""
        problems = validate(data, CARD_FIELDS, where)
        if not problems and data["qcore_card"] != CARD_FORMAT:
            problems = [f"{where}.qcore_card: format {data['qcore_card']} is not supported (expected {CARD_FORMAT})"]
        if problems:
            raise CardError("invalid quantization card:\n  " + "\n  ".join(problems))
        return cls(
            qcore_version=data["qcore_version"],
            created=data["created"],
            model_source=data["model"]["source"],
            model_type=data["model"]["type"],
            recipe_name=data["recipe"]["name"],
            recipe_source=data["recipe"]["source"],
            recipe_scheme=data["recipe"]["scheme"],
            recipe_body=data["recipe"]["body"],
            hardware_description=data["hardware"]["description"],
            hardware_fingerprint=data["hardware"]["fingerprint"],
            hardware_profile=data["hardware"]["profile"],
            calibration=Calibration(**data["calibration"]) if data["calibration"] else None,
            layers=tuple(_layer_from_dict(layer) for layer in data["layers"]),
            size=_fields_of(Size, data["size"]),
            quality=Quality(
                **{k: v for k, v in data["quality"].items() if k != "measurements"},
                measurements=tuple(_fields_of(Measurement, m) for m in data["quality"]["measurements"]),
            ),
        )

    # -- Markdown ----------------------------------------------------------------

    def to_markdown(self) -> str:
        """``card.md``: the same facts as the JSON, for people (layer names shortened by their common prefix)."""
        s = self.size
        prefix = _common_prefix([layer.name for layer in self.layers])

        def short(name: str) -> str:
            return name.removeprefix(prefix)

        out = [
            f"# Quantization card: {self.recipe_name}",
            "",
            f"- Model: `{self.model_source}` ({self.model_type})",
            f"- Recipe: {self.recipe_name} (default scheme `{self.recipe_scheme}`)"
            + (f", from `{self.recipe_source}`" if self.recipe_source else ""),
            *([f"- Recipe {self.tuned}"] if self.tuned else []),
            f"- Layers: {len(self.quantized_layers)} quantized, {len(self.float_layers)} left in float",
            f"- Created {self.created} with qcore {self.qcore_version}",
            "",
            "## Size",
            "",
            "| parameters | before | after | saved |",
            "| --- | ---: | ---: | ---: |",
            f"| quantized Linear layers | {format_bytes(s.quantized_linear_float_bytes)} | "
            f"{format_bytes(s.quantized_linear_bytes)} | {s.quantized_linear_reduction:.1%} |",
            f"| whole model | {format_bytes(s.model_float_bytes)} | {format_bytes(s.model_quant_bytes)} | "
            f"{s.model_reduction:.1%} |",
            "",
            "## Quality",
            "",
            *(f"- {line}." for line in self._quality_lines()),
            "",
            "## Calibration",
            "",
            (f"{self.calibration.samples} samples in {self.calibration.batches} batches, "
             f"observer `{self.calibration.observer}`." if self.calibration else
             "None: no layer has static activation qparams."),
            "",
            "## Hardware",
            "",
            f"{self.hardware_description} (fingerprint `{self.hardware_fingerprint}`)",
            "",
            "## Layers",
            "",
            *([f"Layer names are relative to `{prefix}`.", ""] if prefix else []),
            "| layer | scheme | weights | activations | algorithms | weight SQNR | bytes before → after |",
            "| --- | --- | --- | --- | --- | ---: | ---: |",
        ]
        for layer in self.layers:
            out.append(
                f"| `{short(layer.name)}` | {layer.scheme or 'float'} | {_tensor_md(layer.weights)} | "
                f"{_tensor_md(layer.activations)} | {_md_cell(layer.algorithms_text())} | {_sqnr_text(layer)} | "
                f"{format_bytes(layer.float_bytes)} → {format_bytes(layer.quant_bytes)} |"
            )
        out += ["", "## Backend kernels", "", "| layer | recipe rule | kernel | why |", "| --- | --- | --- | --- |"]
        out += [f"| `{short(layer.name)}` | {_md_cell(layer.rule)} | `{layer.kernel}` | {_md_cell(layer.why)} |"
                for layer in self.quantized_layers]
        out += ["", "## Left in float", ""]
        if self.float_layers:
            out += ["| layer | why |", "| --- | --- |"]
            out += [f"| `{short(layer.name)}` | {_md_cell(layer.float_reason or '')} |" for layer in self.float_layers]
        else:
            out.append("Nothing: every targeted layer was quantized.")
        out += ["", "## Recipe", "", "```json", json.dumps(_jsonable(self.recipe_body), indent=2), "```", ""]
        return "\n".join(out)

    def _quality_lines(self, code: str = "`", *, measurements: bool = True) -> list[str]:
        """Quality facts, one a line; `code` quotes layer names (backticks in Markdown, nothing in a terminal)."""
        q = self.quality
        lines = []
        if q.weight_sqnr_worst_db is not None:
            lines.append(f"Worst per-layer weight SQNR: {q.weight_sqnr_worst_db:.1f} dB "
                         f"({code}{q.weight_sqnr_worst_layer}{code})")
        else:
            lines.append("Per-layer weight SQNR: not measured")
        if q.outputs:
            lines.append(f"Model-output cosine against the float model on {q.outputs} outputs"
                         + (f" ({q.eval_description})" if q.eval_description else "")
                         + f": mean {q.output_cosine_mean:.5f}, worst {q.output_cosine_worst:.5f}")
        else:
            lines.append("Model-output cosine: not measured (no evaluation inputs were given)")
        if measurements:
            lines += [m.describe() for m in q.measurements]
        return lines

    def summary(self) -> list[str]:
        """A few lines for a terminal: layers, sizes, quality, calibration, hardware.

        Extra measurements are left to whoever took them (the demo prints them
        as a table with their targets); ``card.md`` lists them all.
        """
        s = self.size
        floats = "; ".join(f"{layer.name}: {layer.float_reason}" for layer in self.float_layers[:3])
        if len(self.float_layers) > 3:
            floats += f"; and {len(self.float_layers) - 3} more"
        lines = [
            f"{self.recipe_name}: {len(self.quantized_layers)} layers quantized, "
            f"{len(self.float_layers)} left in float" + (f" ({floats})" if floats else ""),
            *([f"recipe {self.tuned}"] if self.tuned else []),
            f"quantized Linear storage {format_bytes(s.quantized_linear_float_bytes)} → "
            f"{format_bytes(s.quantized_linear_bytes)} ({s.quantized_linear_reduction:.1%} smaller); "
            f"whole model {format_bytes(s.model_float_bytes)} → {format_bytes(s.model_quant_bytes)} "
            f"({s.model_reduction:.1%} smaller)",
            *self._quality_lines(code="", measurements=False),
            "algorithms: " + (self.algorithms_summary() or "none"),
            "calibration: " + (f"{self.calibration.samples} samples, {self.calibration.batches} batches, observer "
                               f"{self.calibration.observer}" if self.calibration else "none (not needed)"),
            f"hardware: {self.hardware_description}",
        ]
        return lines

    def algorithms_summary(self) -> str:
        """Which algorithms ran, with their options, and on how many layers (``gptq(damp=0.01) on 36 layers``)."""
        counts: dict[str, int] = {}
        for layer in self.layers:
            for run in layer.algorithms:
                key = AlgorithmRun(run.algorithm, run.options).describe()
                counts[key] = counts.get(key, 0) + 1
        return "; ".join(f"{key} on {n} layer{'s' * (n != 1)}" for key, n in counts.items())

    def plan_table(self) -> Any:
        """A rich Table of the plan: layer, scheme, kernel, why (float layers with their reason)."""
        from rich.table import Table

        prefix = _common_prefix([layer.name for layer in self.layers])
        title = f"plan: {self.recipe_name}" + (f" (layers under {prefix})" if prefix else "")
        table = Table(title=title)
        for column in ("layer", "scheme", "kernel", "why"):
            table.add_column(column, overflow="fold")
        for layer in self.layers:
            name = layer.name.removeprefix(prefix)
            if layer.quantized:
                table.add_row(name, layer.scheme, layer.kernel, layer.why)
            else:
                table.add_row(name, "float", "-", layer.float_reason or "")
        return table

    # -- files ---------------------------------------------------------------------

    def write(self, directory: str | os.PathLike[str]) -> tuple[Path, Path]:
        """Write ``card.md`` and ``card.json`` into `directory` (created), each atomically; returns both paths."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        md = atomic_write(directory / CARD_MD, self.to_markdown())
        js = atomic_write(directory / CARD_JSON, json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n")
        return md, js


def load_card(directory: str | os.PathLike[str]) -> Card:
    """Read back the ``card.json`` of a saved directory, validated against `CARD_FIELDS`."""
    path = Path(directory) / CARD_JSON
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CardError(f"{path}: no quantization card here (is {directory} a directory written by "
                        "`qcore quantize`?)") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CardError(f"{path}:{exc.lineno}: not valid JSON: {exc.msg}") from None
    return Card.from_dict(data, where=str(path))


# -- building a card from a quantized model ------------------------------------


def build_card(
    model: nn.Module,
    *,
    float_outputs: torch.Tensor | Sequence[Any] | None = None,
    quant_outputs: torch.Tensor | Sequence[Any] | None = None,
    eval_description: str = "",
    model_source: str = "",
) -> Card:
    """The card of a model quantized by `qcore.quantize`.

    `float_outputs`/`quant_outputs` are the float and the quantized model's
    outputs on the same inputs (rows compared by cosine; give both or
    neither); `eval_description` says what those inputs were; `model_source`
    the string that rebuilds the float model (see `qcore.demo.models`).
    """
    state = state_of(model)
    recipe = state.recipe
    layers = tuple(_card_layer(record, state) for record in state.layers)
    source = getattr(recipe, "source", None)
    hardware = state.hardware
    calibration = state.calibration
    return Card(
        qcore_version=_qcore_version(),
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        model_source=model_source or type(model).__name__,
        model_type=f"{type(model).__module__}.{type(model).__qualname__}",
        recipe_name=recipe_name(recipe),
        recipe_source=str(source) if source else None,
        recipe_scheme=_scheme_name(recipe.scheme),
        recipe_body=_jsonable(recipe.to_dict()),
        hardware_description=hardware.describe(),
        hardware_fingerprint=hardware.fingerprint,
        hardware_profile=_jsonable(hardware.to_dict()),
        calibration=(Calibration(calibration.samples, calibration.batches, str(calibration.observer))
                     if calibration is not None else None),
        layers=layers,
        size=_size(model, layers),
        quality=_quality(layers, float_outputs, quant_outputs, eval_description),
    )


def recipe_name(recipe: Any) -> str:
    """A recipe's name: its own, else its file's stem, else its default scheme."""
    name = getattr(recipe, "name", None)
    if name:
        return str(name)
    source = getattr(recipe, "source", None)
    if source:
        return Path(str(source)).stem
    return _scheme_name(recipe.scheme)


def _scheme_name(scheme: Any) -> str:
    return scheme.name if isinstance(scheme, QuantScheme) else "none (float)"


def _card_layer(record: LayerRecord, state: QuantState) -> CardLayer:
    recipe = state.recipe
    scheme: QuantScheme | None = record.scheme
    quantized = scheme is not None
    acts = scheme.input_activations if quantized else None
    return CardLayer(
        name=record.name,
        rule=str(record.rule),
        in_features=int(record.in_features),
        out_features=int(record.out_features),
        scheme=scheme.name if quantized else None,
        weights=TensorQuant.from_spec(scheme.weights) if quantized and scheme.weights else None,
        activations=TensorQuant.from_spec(acts, recipe.observer_for(acts)[0]) if acts is not None else None,
        kernel=state.kernel(record.name) if quantized else None,
        why=state.why(record.name),
        float_reason=None if quantized else str(record.float_reason or "not quantized"),
        float_bytes=int(record.float_bytes),
        quant_bytes=int(record.quant_bytes) if quantized else int(record.float_bytes),
        weight_sqnr_db=_finite_or_none(record.weight_sqnr) if quantized else None,
        algorithms=record.algorithms,
    )


def tensor_bytes(model: nn.Module, *, skip: Collection[str] = ()) -> int:
    """Bytes of every parameter and buffer of `model` (shared tensors once) outside the modules in `skip`."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for name, tensor in (*model.named_parameters(), *model.named_buffers()):
        parts = name.split(".")
        if any(".".join(parts[:i]) in skip for i in range(1, len(parts))):
            continue
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset())
        if key in seen:
            continue
        seen.add(key)
        total += tensor.numel() * tensor.element_size()
    return total


def _size(model: nn.Module, layers: tuple[CardLayer, ...]) -> Size:
    untouched = tensor_bytes(model, skip={layer.name for layer in layers})
    quantized = [layer for layer in layers if layer.quantized]
    return Size(
        quantized_linear_float_bytes=sum(layer.float_bytes for layer in quantized),
        quantized_linear_bytes=sum(layer.quant_bytes for layer in quantized),
        model_float_bytes=untouched + sum(layer.float_bytes for layer in layers),
        model_quant_bytes=untouched + sum(layer.quant_bytes for layer in layers),
    )


def _as_rows(outputs: torch.Tensor | Sequence[Any]) -> torch.Tensor:
    """Outputs as a float (N, D) tensor: from a tensor, a NumPy array or a sequence of per-input tensors."""
    if isinstance(outputs, torch.Tensor):
        rows = outputs
    elif isinstance(outputs, Sequence) and outputs and isinstance(outputs[0], torch.Tensor):
        rows = torch.stack(list(outputs))
    else:
        rows = torch.as_tensor(outputs)
    return rows.detach().float().reshape(len(rows), -1)


def _quality(layers: tuple[CardLayer, ...], float_outputs: Any, quant_outputs: Any, eval_description: str
             ) -> Quality:
    measured = [(layer.weight_sqnr_db, layer.name) for layer in layers if layer.weight_sqnr_db is not None]
    worst_db, worst_name = min(measured) if measured else (None, None)
    if (float_outputs is None) != (quant_outputs is None):
        raise ValueError("build_card: give both float_outputs and quant_outputs, or neither")
    outputs, mean, low = 0, None, None
    if float_outputs is not None:
        ref, out = _as_rows(float_outputs), _as_rows(quant_outputs)
        if ref.shape != out.shape:
            raise ValueError(f"build_card: float outputs {tuple(ref.shape)} and quantized outputs "
                             f"{tuple(out.shape)} differ in shape")
        cos = cosine(ref, out)
        outputs, mean, low = int(cos.numel()), float(cos.mean()), float(cos.min())
    return Quality(
        weight_sqnr_worst_db=worst_db,
        weight_sqnr_worst_layer=worst_name,
        outputs=outputs,
        output_cosine_mean=mean,
        output_cosine_worst=low,
        eval_description=eval_description,
    )


# -- helpers -----------------------------------------------------------------------


def format_bytes(n: float) -> str:
    """Human-readable bytes (binary units), e.g. ``21.3 MiB``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def _common_prefix(names: Sequence[str]) -> str:
    """The dotted module path every name starts with (``0.model.`` for MiniLM), to keep table rows short."""
    if len(names) < 2:
        return ""
    parts = [name.split(".")[:-1] for name in names]
    common: list[str] = []
    for segment in zip(*parts):
        if len(set(segment)) != 1:
            break
        common.append(segment[0])
    return ".".join(common) + "." if common else ""


def _sqnr_text(layer: CardLayer) -> str:
    if layer.weight_sqnr_db is not None:
        return f"{layer.weight_sqnr_db:.1f} dB"
    return "—" if not layer.quantized else "exact or not measured"


def _tensor_md(tensor: TensorQuant | None) -> str:
    return tensor.describe() if tensor else "float"


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _fields_of(cls: type, data: Mapping[str, Any]) -> Any:
    """`cls(**data)` keeping only cls's attrs fields (derived values like ``passed`` are recomputed)."""
    names = {a.name for a in attrs.fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in names})


def _layer_from_dict(data: Mapping[str, Any]) -> CardLayer:
    tensors = {k: TensorQuant(**data[k]) if data[k] else None for k in ("weights", "activations")}
    runs = tuple(AlgorithmRun(**run) for run in data["algorithms"])
    return CardLayer(**{**data, **tensors, "algorithms": runs})


def _jsonable(value: Any) -> Any:
    """Plain JSON types: tuples/sets become lists, frozensets sorted, non-finite floats null."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (frozenset, set)):
        return sorted(_jsonable(v) for v in value)
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float):
        return _finite_or_none(value)
    if value is None or isinstance(value, (str, int, bool)):
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return str(value)


def _qcore_version() -> str:
    import qcore

    return qcore.__version__
