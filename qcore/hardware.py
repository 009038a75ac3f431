"""What this machine has: CPU architecture and ISA features, cores, torch, CUDA devices.

The fingerprint identifies the machine for the autotune cache: timings taken
on one CPU/GPU/torch combination are never reused on another.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
from typing import Any

import attrs
import torch

ISA_FLAGS: dict[str, tuple[str, ...]] = {
    "avx2": ("avx2",),
    "fma": ("fma",),
    "f16c": ("f16c",),
    "avx512": ("avx512f",),
    "avx512bw": ("avx512bw",),
    "avx512_bf16": ("avx512_bf16",),
    "vnni": ("avx512_vnni", "avx_vnni"),
    "amx": ("amx_tile",),
    "neon": ("neon", "asimd"),
    "asimddp": ("asimddp",),
    "sve": ("sve",),
}


@attrs.frozen
class CudaDevice:
    index: int
    name: str
    capability: tuple[int, int]
    memory_bytes: int

    @property
    def sm(self) -> int:
        return self.capability[0] * 10 + self.capability[1]


@attrs.frozen
class HardwareProfile:
    """This machine as far as kernels care. Build it with `detect()`."""

    arch: str
    cpu_model: str
    isa: frozenset[str]
    cores: int
    torch_version: str
    cuda: tuple[CudaDevice, ...] = ()
    os: str = ""

    @property
    def devices(self) -> tuple[str, ...]:
        return ("cpu", "cuda") if self.cuda else ("cpu",)

    def has(self, feature: str) -> bool:
        return feature in self.isa

    def to_dict(self) -> dict[str, Any]:
        data = attrs.asdict(self)
        data["isa"] = sorted(self.isa)
        return data

    @property
    def fingerprint(self) -> str:
        """Stable short hash of everything that changes kernel timings."""
        blob = json.dumps(self.to_dict(), sort_keys=True, default=list).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def describe(self) -> str:
        gpus = ", ".join(f"{d.name} (sm_{d.sm})" for d in self.cuda) or "no CUDA device"
        isa = ", ".join(sorted(self.isa)) or "none detected"
        return f"{self.arch} {self.cpu_model}, {self.cores} cores, ISA {isa}; {gpus}; torch {self.torch_version}"


def _cpu_flags_and_model() -> tuple[set[str], str]:
    flags: set[str] = set()
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                key = key.strip()
                if key in ("flags", "Features") and not flags:
                    flags = set(value.split())
                elif key in ("model name", "CPU part") and value.strip():
                    model = value.strip()
    except OSError:
        pass
    if platform.machine() in ("arm64", "aarch64"):
        flags.add("neon")
    return flags, model


def _cuda_devices() -> tuple[CudaDevice, ...]:
    if not torch.cuda.is_available():
        return ()
    devices = []
    for i in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(i)
        devices.append(CudaDevice(i, props.name, (props.major, props.minor), props.total_memory))
    return tuple(devices)


@functools.cache
def detect() -> HardwareProfile:
    """Probe this machine once per process."""
    flags, model = _cpu_flags_and_model()
    isa = frozenset(name for name, aliases in ISA_FLAGS.items() if flags.intersection(aliases))
    return HardwareProfile(
        arch=platform.machine(),
        cpu_model=model,
        isa=isa,
        cores=os.cpu_count() or 1,
        torch_version=torch.__version__,
        cuda=_cuda_devices(),
        os=platform.system(),
    )
