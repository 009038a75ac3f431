"""The built-in observers: found through the hook, contract qparams, the range each one chooses."""

from __future__ import annotations

import pytest
import torch

import qcore
from qcore.errors import NonFiniteError, ShapeError, SpecError
from qcore.observers import ObserverError
from qcore.qparams import qparams_from_range, reduce_minmax
from qcore.spec import QuantSpec

INT8 = QuantSpec("int8")
UINT8 = QuantSpec("uint8", symmetric=False)
NAMES = ("minmax", "moving_average", "histogram", "percentile")


def make(name: str, spec: QuantSpec = INT8, **options: object):
    return qcore.get_manager().observer(name).factory(spec, **options)


def fake_quant(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    """Quantize-dequantize per the numerics contract (per-tensor qparams)."""
    qmin, qmax = spec.qrange
    q = torch.clamp(torch.round(x.double() / scale.double()) + zero_point, qmin, qmax)
    return ((q - zero_point) * scale.double()).float()


def mse(x: torch.Tensor, observer) -> float:
    scale, zero_point = observer.qparams()
    return float(((fake_quant(x, scale, zero_point, observer.spec) - x) ** 2).mean())


def outlier_data() -> torch.Tensor:
    x = torch.randn(100_000, generator=torch.Generator().manual_seed(0))
    x[123] = 20.0
    return x


def test_every_builtin_observer_comes_through_the_hook() -> None:
    observers = qcore.get_manager().observers()
    assert set(NAMES) <= set(observers)
    assert all(observers[n].provider is not None and observers[n].provider.plugin == "qcore-builtin" for n in NAMES)


@pytest.mark.parametrize("spec", [INT8, UINT8, QuantSpec("int4"), QuantSpec("fp8_e4m3")])
def test_minmax_equals_the_contract_qparams_of_all_data(spec: QuantSpec) -> None:
    gen = torch.Generator().manual_seed(1)
    batches = [torch.randn(16, 32, generator=gen) * (i + 1) + i for i in range(4)]
    observer = make("minmax", spec)
    for batch in batches:
        observer.observe(batch)
    expected = qparams_from_range(*reduce_minmax(torch.cat(batches), spec), spec)
    scale, zero_point = observer.qparams()
    assert scale.dtype == torch.float32 and zero_point.dtype == torch.int32 and scale.shape == ()
    assert torch.equal(scale, expected[0]) and torch.equal(zero_point, expected[1])


def test_moving_average_is_an_ema_of_batch_extremes() -> None:
    observer = make("moving_average", UINT8, momentum=0.5)
    observer.observe(torch.tensor([-1.0, 3.0]))
    observer.observe(torch.tensor([-3.0, 7.0]))
    expected = qparams_from_range(torch.tensor(-2.0), torch.tensor(5.0), UINT8)
    assert torch.equal(observer.qparams()[0], expected[0]) and torch.equal(observer.qparams()[1], expected[1])


def test_moving_average_converges_to_a_steady_range_and_damps_a_spike() -> None:
    observer = make("moving_average", INT8)
    observer.observe(torch.tensor([-10.0, 10.0]))
    for _ in range(200):
        observer.observe(torch.tensor([-2.0, 2.0]))
    assert observer.qparams()[0].item() == pytest.approx(2.0 / 127, rel=1e-4)
    observer.observe(torch.tensor([-102.0, 102.0]))
    assert observer.qparams()[0].item() == pytest.approx(12.0 / 127, rel=1e-4)


def test_histogram_mse_clips_a_lone_outlier_and_lowers_the_error() -> None:
    x = outlier_data()
    minmax, histogram = make("minmax"), make("histogram")
    for batch in x.split(25_000):
        minmax.observe(batch)
        histogram.observe(batch)
    clipped = histogram.qparams()[0].item() * 127
    assert 5.0 < clipped < 19.0
    assert mse(x, histogram) < 0.8 * mse(x, minmax)


def test_histogram_mse_asymmetric_beats_minmax() -> None:
    x = outlier_data().abs() - 0.5
    minmax, histogram = make("minmax", UINT8), make("histogram", UINT8)
    minmax.observe(x)
    histogram.observe(x)
    assert histogram.qparams()[0] < minmax.qparams()[0]
    assert mse(x, histogram) < mse(x, minmax)


def test_histogram_keeps_the_range_when_nothing_is_worth_clipping() -> None:
    x = torch.linspace(-1.0, 1.0, 10_001)
    histogram = make("histogram")
    histogram.observe(x)
    assert histogram.qparams()[0].item() * 127 > 0.95


def test_histogram_regrows_its_range_over_batches() -> None:
    gen = torch.Generator().manual_seed(2)
    small, large = torch.rand(50_000, generator=gen), torch.rand(50_000, generator=gen) * 4
    together, split = make("percentile", percentile=99.0), make("percentile", percentile=99.0)
    together.observe(torch.cat([small, large]))
    split.observe(small)
    split.observe(large)
    hi_together, hi_split = together.qparams()[0].item(), split.qparams()[0].item()
    assert hi_split == pytest.approx(hi_together, rel=0.01)


def test_percentile_clips_at_the_requested_percentile() -> None:
    x = torch.linspace(0.0, 100.0, 100_001)
    observer = make("percentile", UINT8, percentile=90.0)
    observer.observe(x)
    scale = observer.qparams()[0].item()
    assert scale * 255 == pytest.approx(90.0 - 0.0, abs=0.2)
    default = make("percentile")
    default.observe(outlier_data())
    assert default.qparams()[0].item() * 127 < 6.0


@pytest.mark.parametrize("name", NAMES)
def test_per_channel_gives_one_scale_per_channel(name: str) -> None:
    spec = QuantSpec("int8", "channel", axis=1)
    observer = make(name, spec, **({"bins": 256} if name in ("histogram", "percentile") else {}))
    x = torch.randn(64, 4, generator=torch.Generator().manual_seed(3)) * torch.tensor([1.0, 2.0, 4.0, 0.0])
    observer.observe(x)
    scale, zero_point = observer.qparams()
    assert scale.shape == (4,) and zero_point.shape == (4,)
    assert scale[0] < scale[1] < scale[2] and scale[3] == 1.0
    if name == "minmax":
        assert torch.equal(scale, qparams_from_range(*reduce_minmax(x, spec), spec)[0])


def test_per_channel_rejects_a_changed_channel_count() -> None:
    observer = make("minmax", QuantSpec("int8", "channel", axis=-1))
    observer.observe(torch.zeros(2, 3))
    with pytest.raises(ShapeError, match="4 channels.*earlier batches had 3"):
        observer.observe(torch.zeros(2, 4))


@pytest.mark.parametrize("name", NAMES)
def test_non_finite_input_raises(name: str) -> None:
    observer = make(name)
    with pytest.raises(NonFiniteError, match="non-finite"):
        observer.observe(torch.tensor([1.0, float("nan"), 2.0]))
    with pytest.raises(NonFiniteError):
        observer.observe(torch.tensor([float("inf")]))


@pytest.mark.parametrize("name", NAMES)
def test_qparams_before_observe_is_a_clear_error(name: str) -> None:
    with pytest.raises(ObserverError, match=f"{name}.*before any observe"):
        make(name).qparams()


@pytest.mark.parametrize("name", NAMES)
def test_all_zero_data_gives_unit_scale(name: str) -> None:
    observer = make(name)
    observer.observe(torch.zeros(100))
    assert observer.qparams()[0].item() == 1.0 and observer.qparams()[1].item() == 0


@pytest.mark.parametrize(
    ("name", "options", "error", "message"),
    [
        ("minmax", {"momentum": 0.1}, TypeError, "'minmax'.*unknown option.*'momentum'.*accepted: none"),
        ("moving_average", {"momentun": 0.1}, TypeError, "'moving_average'.*'momentun'.*accepted: momentum"),
        ("percentile", {"mode": "mse"}, TypeError, "'percentile'.*'mode'.*accepted: bins, percentile"),
        ("moving_average", {"momentum": 0}, ValueError, "'moving_average': momentum must be"),
        ("histogram", {"mode": "kl"}, ValueError, "'histogram': unknown mode 'kl'; known: mse, percentile"),
        ("histogram", {"bins": 2.5}, ValueError, "'histogram': bins must be an integer"),
        ("percentile", {"percentile": 101}, ValueError, "'percentile': percentile must be"),
    ],
)
def test_bad_options_name_the_observer_and_what_is_accepted(name, options, error, message) -> None:
    with pytest.raises(error, match=message):
        make(name, **options)


def test_unobservable_specs_are_refused() -> None:
    with pytest.raises(SpecError, match="'minmax'.*granularity 'group'"):
        make("minmax", QuantSpec("int4", "group", group_size=32))
    with pytest.raises(SpecError, match="binary"):
        make("minmax", QuantSpec("binary"))
    with pytest.raises(SpecError, match="'histogram'.*fp8_e4m3"):
        make("histogram", QuantSpec("fp8_e4m3"))
