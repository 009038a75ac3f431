"""QuantSpec / QuantScheme validation, the dtype table and the presets."""

from __future__ import annotations

import pytest

from qcore.errors import SpecError
from qcore.spec import DTYPES, PRESETS, QuantScheme, QuantSpec


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"dtype": "int8", "granularity": "group"}, "needs a positive group_size"),
        ({"dtype": "int8", "granularity": "group", "group_size": 0}, "needs a positive group_size"),
        ({"dtype": "int8", "granularity": "channel", "group_size": 64}, "only meaningful with granularity='group'"),
        ({"dtype": "int8", "granularity": "token"}, "set dynamic=True"),
        ({"dtype": "binary", "symmetric": False}, "symmetric by definition"),
        ({"dtype": "ternary", "symmetric": False}, "symmetric by definition"),
        ({"dtype": "fp8_e4m3", "symmetric": False}, "float formats are symmetric only"),
        ({"dtype": "uint8"}, "use symmetric=False or the signed int8"),
        ({"dtype": "uint4"}, "use symmetric=False or the signed int4"),
        ({"dtype": "fp16", "granularity": "channel"}, "plain cast"),
        ({"dtype": "int9"}, "unknown dtype 'int9'; known: int8"),
        ({"dtype": "int8", "granularity": "row"}, "unknown granularity 'row'"),
    ],
)
def test_invalid_specs_say_what_to_change(kwargs: dict, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        QuantSpec(**kwargs)


def test_specs_are_frozen_and_hashable() -> None:
    spec = QuantSpec("int8", "channel")
    with pytest.raises(AttributeError):
        spec.dtype = "int4"  # type: ignore[misc]
    assert {spec: 1}[QuantSpec("int8", "channel")] == 1


@pytest.mark.parametrize("name", sorted(DTYPES))
def test_dtype_table_is_consistent(name: str) -> None:
    info = DTYPES[name]
    if info.kind == "int":
        assert info.qmax - info.qmin + 1 <= 2**info.bits or name == "binary"
        assert (info.qmin < 0) == info.signed
    else:
        assert info.fmax > 0


def test_symmetric_range_is_restricted_and_asymmetric_is_full() -> None:
    assert QuantSpec("int8").qrange == (-127, 127)
    assert QuantSpec("int4").qrange == (-7, 7)
    assert QuantSpec("int8", symmetric=False).qrange == (-128, 127)
    assert QuantSpec("uint4", symmetric=False).qrange == (0, 15)
    assert QuantSpec("ternary").qrange == (-1, 1)


def test_schemes_reject_meaningless_combinations() -> None:
    with pytest.raises(SpecError, match="quantizes nothing"):
        QuantScheme("empty")
    with pytest.raises(SpecError, match="weights are static"):
        QuantScheme("bad", QuantSpec("int8", "token", dynamic=True))
    with pytest.raises(SpecError, match="per-channel activation"):
        QuantScheme("bad", QuantSpec("int8"), QuantSpec("int8", "channel"))


@pytest.mark.parametrize("name", ["w8a8", "w8a8-dynamic", "w8a16", "w4a16", "fp8", "fp16", "ternary", "binary"])
def test_required_presets_exist_and_round_trip(name: str) -> None:
    scheme = PRESETS[name]
    assert scheme.name == name
    assert QuantScheme.from_dict(scheme.to_dict()) == scheme


def test_preset_semantics() -> None:
    assert PRESETS["w8a8"].needs_calibration and not PRESETS["w8a8-dynamic"].needs_calibration
    assert PRESETS["w8a8-dynamic"].input_activations.granularity == "token"
    assert PRESETS["w4a16"].weights.group_size == 128 and PRESETS["w4a16"].weight_only
    assert PRESETS["fp8"].weights.dtype == "fp8_e4m3"
