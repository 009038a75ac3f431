"""Quantization as data: the dtype table, QuantSpec, QuantScheme and the presets.

A QuantSpec says how one tensor is quantized; a QuantScheme says what happens to
one layer (its weights and its input activations). Both are frozen attrs classes
validated on construction, so an invalid combination never reaches a kernel.
"""

from __future__ import annotations

from typing import Any, Literal

import attrs

from qcore.errors import SpecError

GRANULARITIES: tuple[str, ...] = ("tensor", "channel", "group", "token")


@attrs.frozen
class DTypeInfo:
    """One row of the dtype table.

    `qmin`/`qmax` are the full code range; symmetric integer specs use the
    restricted range [-qmax, qmax] (see `QuantSpec.qrange`). `fmax` is the
    largest finite value of a float format (0 for integer formats).
    """

    name: str
    bits: int
    signed: bool
    kind: Literal["int", "float"]
    qmin: int = 0
    qmax: int = 0
    fmax: float = 0.0
    torch_dtype: str = "int8"

    @property
    def is_float(self) -> bool:
        return self.kind == "float"

    @property
    def sub_byte(self) -> bool:
        """Formats narrower than a byte are packed several codes a byte for storage."""
        return self.kind == "int" and self.bits < 8

    @property
    def scaled(self) -> bool:
        """fp16/bf16 are plain casts; every other format carries a scale."""
        return self.name not in ("fp16", "bf16")


DTYPES: dict[str, DTypeInfo] = {
    d.name: d
    for d in (
        DTypeInfo("int8", 8, True, "int", -128, 127),
        DTypeInfo("uint8", 8, False, "int", 0, 255, torch_dtype="uint8"),
        DTypeInfo("int4", 4, True, "int", -8, 7),
        DTypeInfo("uint4", 4, False, "int", 0, 15, torch_dtype="uint8"),
        DTypeInfo("ternary", 2, True, "int", -1, 1),
        DTypeInfo("binary", 1, True, "int", -1, 1),
        DTypeInfo("fp8_e4m3", 8, True, "float", fmax=448.0, torch_dtype="float8_e4m3fn"),
        DTypeInfo("fp8_e5m2", 8, True, "float", fmax=57344.0, torch_dtype="float8_e5m2"),
        DTypeInfo("fp16", 16, True, "float", fmax=65504.0, torch_dtype="float16"),
        DTypeInfo("bf16", 16, True, "float", fmax=3.3895313892515355e38, torch_dtype="bfloat16"),
    )
}


def dtype_info(name: str) -> DTypeInfo:
    try:
        return DTYPES[name]
    except KeyError:
        raise SpecError(f"unknown dtype {name!r}; known: {', '.join(DTYPES)}") from None


def _check_dtype(_inst: Any, _attr: Any, value: str) -> None:
    dtype_info(value)


def _check_granularity(_inst: Any, _attr: Any, value: str) -> None:
    if value not in GRANULARITIES:
        raise SpecError(f"unknown granularity {value!r}; known: {', '.join(GRANULARITIES)}")


@attrs.frozen
class QuantSpec:
    """How one tensor is quantized.

    - `dtype`: a key of `DTYPES`.
    - `granularity`: `tensor` (one scale), `channel` (one per index of `axis`),
      `group` (one per `group_size` consecutive values of the last axis) or
      `token` (one per row, i.e. per index of every axis but the last; dynamic only).
    - `symmetric`: zero-point 0 and the restricted range [-qmax, qmax]; asymmetric
      specs use the full range and an integer zero-point.
    - `dynamic`: qparams computed from the tensor at run time instead of ahead.
    - `observer`: name of the observer that computes static qparams.
    """

    dtype: str = attrs.field(validator=_check_dtype)
    granularity: str = attrs.field(default="tensor", validator=_check_granularity)
    axis: int = 0
    group_size: int | None = None
    symmetric: bool = True
    dynamic: bool = False
    observer: str = "minmax"

    def __attrs_post_init__(self) -> None:
        info = self.info
        where = f"QuantSpec(dtype={self.dtype!r}, granularity={self.granularity!r})"
        if self.granularity == "group":
            if self.group_size is None or self.group_size <= 0:
                raise SpecError(f"{where}: group granularity needs a positive group_size (e.g. 128)")
        elif self.group_size is not None:
            raise SpecError(f"{where}: group_size={self.group_size} is only meaningful with granularity='group'")
        if self.granularity == "token" and not self.dynamic:
            raise SpecError(f"{where}: per-token scales only exist at run time; set dynamic=True")
        if not info.scaled and self.granularity != "tensor":
            raise SpecError(f"{where}: {self.dtype} is a plain cast without scales; use granularity='tensor'")
        if not self.symmetric:
            if info.is_float:
                raise SpecError(f"{where}: float formats are symmetric only; set symmetric=True")
            if self.dtype in ("binary", "ternary"):
                raise SpecError(f"{where}: {self.dtype} codes are symmetric by definition; set symmetric=True")
        elif info.kind == "int" and not info.signed:
            raise SpecError(
                f"{where}: an unsigned dtype needs a zero-point; use symmetric=False or the signed "
                f"{self.dtype.removeprefix('u')}"
            )

    @property
    def info(self) -> DTypeInfo:
        return DTYPES[self.dtype]

    @property
    def bits(self) -> int:
        return self.info.bits

    @property
    def qrange(self) -> tuple[int, int]:
        """Code range: restricted [-qmax, qmax] when symmetric, the dtype's full range otherwise."""
        info = self.info
        if self.symmetric and info.kind == "int":
            return -info.qmax, info.qmax
        return info.qmin, info.qmax

    def describe(self) -> str:
        parts = [self.dtype, self.granularity if self.granularity != "group" else f"group{self.group_size}"]
        if self.granularity == "channel":
            parts[-1] = f"channel(axis={self.axis})"
        parts.append("sym" if self.symmetric else "asym")
        parts.append("dynamic" if self.dynamic else "static")
        return " ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> QuantSpec:
        return cls(**data)


def _check_name(_inst: Any, _attr: Any, value: str) -> None:
    if not value or not isinstance(value, str):
        raise SpecError("a QuantScheme needs a non-empty name")


@attrs.frozen
class QuantScheme:
    """What happens to one layer: its weights and its input activations.

    Either may be None: `input_activations=None` is weight-only quantization
    (activations stay float), `weights=None` would leave the weights float.
    """

    name: str = attrs.field(validator=_check_name)
    weights: QuantSpec | None = None
    input_activations: QuantSpec | None = None
    description: str = ""

    def __attrs_post_init__(self) -> None:
        if self.weights is None and self.input_activations is None:
            raise SpecError(f"scheme {self.name!r}: quantizes nothing; give weights and/or input_activations")
        w, a = self.weights, self.input_activations
        if w is not None and w.granularity == "token":
            raise SpecError(f"scheme {self.name!r}: weights are static; use channel or group, not token")
        if a is not None and a.granularity == "channel":
            raise SpecError(f"scheme {self.name!r}: per-channel activation scales cannot be folded; use token")

    @property
    def weight_only(self) -> bool:
        return self.input_activations is None

    @property
    def needs_calibration(self) -> bool:
        """Static activation qparams are computed from calibration data."""
        a = self.input_activations
        return a is not None and a.info.scaled and not a.dynamic

    def describe(self) -> str:
        w = self.weights.describe() if self.weights else "float"
        a = self.input_activations.describe() if self.input_activations else "float"
        return f"weights {w}; activations {a}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "weights": self.weights.to_dict() if self.weights else None,
            "input_activations": self.input_activations.to_dict() if self.input_activations else None,
            "description": self.description,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> QuantScheme:
        return cls(
            name=data["name"],
            weights=QuantSpec.from_dict(data["weights"]) if data.get("weights") else None,
            input_activations=(
                QuantSpec.from_dict(data["input_activations"]) if data.get("input_activations") else None
            ),
            description=data.get("description", ""),
        )


_W8_CHANNEL = QuantSpec("int8", "channel", axis=0)

PRESETS: dict[str, QuantScheme] = {
    s.name: s
    for s in (
        QuantScheme(
            "w8a8",
            _W8_CHANNEL,
            QuantSpec("int8", "tensor", observer="minmax"),
            "int8 per-channel weights, int8 per-tensor static activations (needs calibration)",
        ),
        QuantScheme(
            "w8a8-dynamic",
            _W8_CHANNEL,
            QuantSpec("int8", "token", dynamic=True),
            "int8 per-channel weights, int8 per-token activations computed at run time",
        ),
        QuantScheme("w8a16", _W8_CHANNEL, None, "int8 per-channel weights, float activations"),
        QuantScheme(
            "w4a16",
            QuantSpec("int4", "group", group_size=128),
            None,
            "int4 symmetric weights in groups of 128, float activations",
        ),
        QuantScheme(
            "w4a16-asym",
            QuantSpec("uint4", "group", group_size=128, symmetric=False),
            None,
            "uint4 asymmetric weights (integer zero-point) in groups of 128, float activations",
        ),
        QuantScheme(
            "fp8",
            QuantSpec("fp8_e4m3", "channel", axis=0),
            QuantSpec("fp8_e4m3", "token", dynamic=True),
            "fp8 e4m3 per-channel weights, fp8 e4m3 per-token dynamic activations",
        ),
        QuantScheme("fp16", QuantSpec("fp16"), QuantSpec("fp16", dynamic=True), "fp16 weights and activations"),
        QuantScheme("ternary", QuantSpec("ternary", "channel", axis=0), None, "ternary {-1,0,1} weights per channel"),
        QuantScheme(
            "binary",
            QuantSpec("binary", "channel", axis=0),
            None,
            "binary {-1,+1} weights, per-channel scale mean(|w|)",
        ),
    )
}
