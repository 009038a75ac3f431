"""Hardware profile: detection and a fingerprint that changes exactly when the machine does."""

from __future__ import annotations

import attrs

from qcore.hardware import CudaDevice, detect


def test_detect_reports_this_machine() -> None:
    hw = detect()
    assert hw.cores >= 1 and hw.arch and hw.torch_version
    assert "cpu" in hw.devices
    assert hw.describe().startswith(hw.arch)


def test_fingerprint_is_stable_and_sensitive() -> None:
    hw = detect()
    assert hw.fingerprint == attrs.evolve(hw).fingerprint
    assert len(hw.fingerprint) == 16
    changed = [
        attrs.evolve(hw, isa=hw.isa | {"amx"}),
        attrs.evolve(hw, cores=hw.cores + 1),
        attrs.evolve(hw, torch_version="0.0"),
        attrs.evolve(hw, cuda=(CudaDevice(0, "H100", (9, 0), 80 << 30),)),
    ]
    assert len({hw.fingerprint, *(c.fingerprint for c in changed)}) == 5


def test_cuda_device_sm() -> None:
    assert CudaDevice(0, "x", (8, 9), 1).sm == 89
    hw = attrs.evolve(detect(), cuda=(CudaDevice(0, "H100", (9, 0), 1),))
    assert hw.devices == ("cpu", "cuda") and "sm_90" in hw.describe()
