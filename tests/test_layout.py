"""The layout rules of qcore.layout: qparam shapes, packed shapes, group divisibility, flat indexing."""

from __future__ import annotations

import pytest
import torch

from qcore.errors import ShapeError
from qcore.layout import check_groups, flat_qparam_index, given_qparams, packed_shape, qparam_shape
from qcore.qparams import expand
from qcore.spec import QuantSpec


@pytest.mark.parametrize(
    ("spec", "shape"),
    [
        (QuantSpec("int8"), (3, 5)),
        (QuantSpec("int8", "token", dynamic=True), (2, 3, 5)),
        (QuantSpec("int8", "token", dynamic=True), (7,)),
        (QuantSpec("int4", "group", group_size=4), (2, 3, 12)),
        (QuantSpec("int8", "channel", axis=0), (4, 3, 5)),
        (QuantSpec("int8", "channel", axis=1), (4, 3, 5)),
        (QuantSpec("int8", "channel", axis=-1), (4, 3, 5)),
        (QuantSpec("int8", "channel", axis=0), (6,)),
    ],
)
def test_flat_qparam_index_matches_the_canonical_layout(spec: QuantSpec, shape: tuple[int, ...]) -> None:
    """Element i reads qparam (i // div) % mod: the same one qcore.qparams.expand broadcasts to it."""
    div, mod = flat_qparam_index(spec, shape)
    qshape = qparam_shape(spec, shape)
    ids = torch.arange(torch.Size(qshape).numel()).reshape(qshape)
    broadcast = expand(ids, spec, torch.Size(shape))
    if spec.granularity == "group":
        broadcast = broadcast.expand(*qshape, spec.group_size)
    expected = broadcast.expand(torch.Size(shape)) if spec.granularity != "group" else broadcast.reshape(shape)
    got = (torch.arange(torch.Size(shape).numel()) // div % mod).reshape(shape)
    assert torch.equal(got, expected)



@pytest.mark.parametrize(
    ("spec", "shape", "expected"),
    [
        (QuantSpec("int8"), (4, 6), ()),
        (QuantSpec("fp16"), (4, 6), ()),
        (QuantSpec("int8", "channel", axis=0), (4, 6), (4,)),
        (QuantSpec("int8", "channel", axis=-1), (4, 6), (6,)),
        (QuantSpec("int8", "token", dynamic=True), (2, 4, 6), (2, 4)),
        (QuantSpec("int4", "group", group_size=3), (4, 6), (4, 2)),
    ],
)
def test_qparam_shape(spec: QuantSpec, shape: tuple[int, ...], expected: tuple[int, ...]) -> None:
    assert qparam_shape(spec, shape) == expected


@pytest.mark.parametrize(("dtype", "k", "stored"), [("int8", 7, 7), ("int4", 7, 4), ("uint4", 8, 4),
                                                    ("ternary", 5, 2), ("binary", 9, 2), ("fp8_e4m3", 5, 5)])
def test_packed_shape_packs_sub_byte_codes_along_the_last_axis(dtype: str, k: int, stored: int) -> None:
    assert packed_shape(QuantSpec(dtype, symmetric=not dtype.startswith("u")), (3, k)) == (3, stored)


@pytest.mark.parametrize("shape", [(4, 10), (10,), ()])
def test_a_group_size_that_does_not_divide_is_a_shape_error_naming_both(shape: tuple[int, ...]) -> None:
    spec = QuantSpec("int4", "group", group_size=4)
    for call in (lambda: check_groups(spec, shape), lambda: qparam_shape(spec, shape),
                 lambda: flat_qparam_index(spec, shape)):
        with pytest.raises(ShapeError, match="group_size 4 does not divide"):
            call()


def test_channel_axis_out_of_range_is_a_shape_error() -> None:
    with pytest.raises(ShapeError, match="axis 2"):
        qparam_shape(QuantSpec("int8", "channel", axis=2), (3, 4))


def test_given_qparams_must_have_the_canonical_shape() -> None:
    spec = QuantSpec("int8", "channel", axis=0)
    scale, zp = given_qparams(spec, (3, 4), torch.ones(3, dtype=torch.float64), None, "cpu")
    assert scale.dtype == torch.float32 and zp.dtype == torch.int32 and zp.shape == (3,) and not zp.any()
    with pytest.raises(ShapeError, match=r"scale has shape \(4,\).*needs \(3,\)"):
        given_qparams(spec, (3, 4), torch.ones(4), None, "cpu")
    with pytest.raises(ShapeError, match="zero_point"):
        given_qparams(spec, (3, 4), torch.ones(3), torch.zeros(1, 3), "cpu")
