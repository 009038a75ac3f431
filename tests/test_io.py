"""qcore.io: safetensors round trip, metadata, atomic writes, and clear failures on bad files or skeletons."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest
import safetensors.torch
import torch
from torch import nn

from qcore import api, files, io
from qcore.nn import QuantLinear


class Net(nn.Module):
    """Linears with and without bias, a LayerNorm (float params and buffers) and a tied pair of weights."""

    def __init__(self, hidden: int = 64) -> None:
        super().__init__()
        self.up = nn.Linear(32, hidden)
        self.norm = nn.LayerNorm(hidden)
        self.down = nn.Linear(hidden, 32, bias=False)
        self.head = nn.Linear(32, 32)
        self.tied = nn.Linear(32, 32)
        self.tied.weight = self.head.weight
        self.register_buffer("offset", torch.linspace(0, 1, 32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.down(torch.relu(self.norm(self.up(x))))
        return self.head(h) + self.tied(h) + self.offset


def build(seed: int = 0, **kw: int) -> Net:
    torch.manual_seed(seed)
    return Net(**kw)


RECIPE = {
    "qcore": 1, "scheme": "w8a8", "ignore": ["head", "tied"], "calibration": {"samples": 16},
    "schemes": {"w4g16-asym": {"weights": {"dtype": "uint4", "granularity": "group", "group_size": 16,
                                           "symmetric": False}}},
    "overrides": [{"match": "down", "scheme": "w4g16-asym"}],
}


@pytest.fixture
def saved(tmp_path: Path) -> tuple[Path, Net, torch.Tensor]:
    model = build()
    with torch.no_grad():
        model.norm.weight.uniform_(0.5, 1.5)
    x = torch.randn(4, 32)
    api.quantize(model, RECIPE, [torch.randn(8, 32) for _ in range(2)], progress=False, measure=False)
    io.save(model, tmp_path)
    return tmp_path, model, x


def test_round_trip_is_bit_identical(saved: tuple[Path, Net, torch.Tensor], monkeypatch: pytest.MonkeyPatch) -> None:
    directory, model, x = saved

    def no_pickle(*_a: object, **_k: object) -> None:
        raise AssertionError("pickle used")

    monkeypatch.setattr(pickle, "loads", no_pickle)
    monkeypatch.setattr(torch, "load", no_pickle)
    loaded = io.load(directory, lambda: build(seed=1))
    assert isinstance(loaded.up, QuantLinear) and isinstance(loaded.down, QuantLinear)
    assert type(loaded.tied) is nn.Linear and loaded.tied.weight is loaded.head.weight
    assert torch.equal(loaded(x), model(x))
    ours, theirs = model.state_dict(), loaded.state_dict()
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) and ours[k].dtype == theirs[k].dtype for k in ours)
    state, original = api.state_of(loaded), api.state_of(model)
    assert [(r.name, r.scheme, state.kernel(r.name), r.quant_bytes, r.weight_sqnr) for r in state.layers] == [
        (r.name, r.scheme, original.kernel(r.name), r.quant_bytes, r.weight_sqnr) for r in original.layers]
    assert state.recipe.to_dict() == original.recipe.to_dict()
    assert state.calibration == original.calibration


def test_tied_weights_stay_tied(saved: tuple[Path, Net, torch.Tensor]) -> None:
    directory, _, _ = saved
    loaded = io.load(directory, build(seed=2))
    assert loaded.tied.weight.data_ptr() == loaded.head.weight.data_ptr()
    assert "tied.weight" in io.read_metadata(directory)["qcore.aliases"]


def test_metadata_records_schemes_kernels_recipe_plan_hardware(saved: tuple[Path, Net, torch.Tensor]) -> None:
    directory, model, _ = saved
    meta = io.read_metadata(directory)
    state = api.state_of(model)
    assert meta["qcore.version"] and meta["qcore.format"] == io.FORMAT
    layers = {entry["name"]: entry for entry in meta["qcore.layers"]}
    assert layers["down"]["scheme"] == state.layer("down").scheme.to_dict()
    assert layers["up"]["kernel"] == model.up.kernel_id and layers["tied"]["kernel"] is None
    assert meta["qcore.recipe"] == state.recipe.to_dict()
    assert [p["kernel"] for p in meta["qcore.plan"]] == [state.kernel(r.name) for r in state.layers]
    assert meta["qcore.hardware"]["fingerprint"] == state.hardware.fingerprint
    assert meta["qcore.calibration"] == {"samples": 16, "batches": 2, "observer": "minmax"}


def test_interrupted_save_leaves_previous_checkpoint(saved: tuple[Path, Net, torch.Tensor],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    directory, model, x = saved
    before = (directory / io.FILENAME).read_bytes()

    def half_then_fail(fh, data: bytes) -> None:  # type: ignore[no-untyped-def]
        fh.write(data[: len(data) // 2])
        raise OSError("disk full")

    monkeypatch.setattr(files, "write_chunks", half_then_fail)
    with torch.no_grad():
        model.norm.bias.add_(1.0)
    with pytest.raises(OSError, match="disk full"):
        io.save(model, directory)
    assert (directory / io.FILENAME).read_bytes() == before
    assert os.listdir(directory) == [io.FILENAME]
    monkeypatch.undo()
    io.save(model, directory)
    assert torch.equal(io.load(directory, build())(x), model(x))


def test_truncated_and_corrupt_files_fail_naming_the_file(saved: tuple[Path, Net, torch.Tensor]) -> None:
    directory, _, _ = saved
    path = directory / io.FILENAME
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])
    with pytest.raises(io.CheckpointError, match=f"{path}.*truncated or corrupt"):
        io.load(directory, build)
    corrupt = bytearray(data)
    corrupt[-5] ^= 0xFF
    path.write_bytes(bytes(corrupt))
    with pytest.raises(io.CheckpointError, match=f"{path}.*digest"):
        io.load(directory, build)
    with pytest.raises(io.CheckpointError, match="no such checkpoint"):
        io.load(directory / "elsewhere", build)


def test_not_a_qcore_checkpoint(tmp_path: Path) -> None:
    safetensors.torch.save_file({"w": torch.zeros(2)}, str(tmp_path / io.FILENAME))
    with pytest.raises(io.CheckpointError, match="not a qcore checkpoint"):
        io.load(tmp_path, build)


class Wider(Net):
    def __init__(self) -> None:
        super().__init__(hidden=48)


class Extra(Net):
    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(3))


class Renamed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inner = Net()


@pytest.mark.parametrize(("factory", "message"), [
    (Wider, r"layer 'up' was Linear\(32, 64\); the skeleton has Linear\(32, 48\)"),
    (Extra, r"tensor 'scale' is missing"),
    (Renamed, r"layer 'up' is recorded in the checkpoint but absent from the Renamed skeleton"),
])
def test_skeleton_mismatch_names_layer_or_tensor(saved: tuple[Path, Net, torch.Tensor], factory: type,
                                                 message: str) -> None:
    directory, _, _ = saved
    with pytest.raises(io.CheckpointError, match=message):
        io.load(directory, factory)


def test_shape_mismatch_of_a_float_tensor(saved: tuple[Path, Net, torch.Tensor]) -> None:
    directory, _, _ = saved
    skeleton = build()
    skeleton.offset = torch.zeros(31)
    with pytest.raises(io.CheckpointError, match=r"tensor 'offset' has shape \(32,\), the model needs \(31,\)"):
        io.load(directory, skeleton)


def test_bert_round_trip(tmp_path: Path) -> None:
    from transformers import BertConfig, BertModel

    def bert() -> BertModel:
        config = BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                            intermediate_size=64, max_position_embeddings=16)
        return BertModel(config).eval()

    torch.manual_seed(0)
    model = api.quantize(bert(), {"qcore": 1, "scheme": "w8a8-dynamic"}, progress=False, measure=False)
    ids = torch.randint(0, 50, (2, 10))
    io.save(model, tmp_path)
    loaded = io.load(tmp_path, bert)
    assert torch.equal(loaded(input_ids=ids).last_hidden_state, model(input_ids=ids).last_hidden_state)
    header = json.loads((tmp_path / io.FILENAME).read_bytes()[8:8 + int.from_bytes(
        (tmp_path / io.FILENAME).read_bytes()[:8], "little")])
    assert "encoder.layer.0.attention.self.query.weight_data" in header
