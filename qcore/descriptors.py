"""Small frozen descriptors that plugins return from hooks (besides KernelImpl)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs

from qcore.errors import SpecError
from qcore.kernels import Provider


def _check_name(_inst: Any, attr: attrs.Attribute, value: str) -> None:
    if not value or not isinstance(value, str):
        raise SpecError(f"{attr.name} must be a non-empty string, got {value!r}")


@attrs.frozen
class BackendInfo:
    """What a backend plugin detected: whether it can run here, and if not, why.

    `devices` are the torch device types it can run on now ("cpu", "cuda");
    `capabilities` are free-form facts worth showing ("sm_90", "fp8", "avx2").
    Probing happens when the hook is called, never at import.
    """

    name: str = attrs.field(validator=_check_name)
    available: bool
    reason: str = ""
    devices: tuple[str, ...] = ()
    capabilities: tuple[str, ...] = ()
    provider: Provider | None = None

    def __attrs_post_init__(self) -> None:
        if not self.available and not self.reason:
            raise SpecError(f"backend {self.name!r} is unavailable: say why in `reason`")


@attrs.frozen
class ObserverImpl:
    """A named observer. `factory(spec, **options)` returns a fresh observer for one tensor.

    An observer has ``observe(x: Tensor) -> None`` (called once per calibration
    batch) and ``qparams() -> (scale, zero_point)`` in the canonical shapes of
    `qcore.kernels` for the spec it was built with.
    """

    name: str = attrs.field(validator=_check_name)
    factory: Callable[..., Any]
    description: str = ""
    provider: Provider | None = None
