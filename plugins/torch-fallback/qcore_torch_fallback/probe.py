"""What torch offers this backend here: quantized engines, int8/int4 CPU kernels, CUDA devices.

Called from the `qcore_hardware` hook, never at import.
"""

from __future__ import annotations

import torch

from qcore.descriptors import BackendInfo
from qcore.hardware import HardwareProfile

BACKEND = "torch-fallback"
ISA_FACTS = ("avx2", "avx512", "vnni", "amx", "neon")
CPU_OPS = ("_weight_int8pack_mm", "_weight_int4pack_mm_for_cpu")


def capabilities(hardware: HardwareProfile) -> tuple[str, ...]:
    caps = [f"engine:{e}" for e in torch.backends.quantized.supported_engines if e != "none"]
    caps += [f"op:{op}" for op in CPU_OPS if hasattr(torch.ops.aten, op)]
    caps += [f"isa:{f}" for f in ISA_FACTS if hardware.has(f)]
    for d in hardware.cuda:
        caps.append(f"cuda:{d.index}:sm_{d.sm}")
        if d.capability >= (8, 9):
            caps.append(f"cuda:{d.index}:fp8")
    return tuple(caps)


def backend_info(hardware: HardwareProfile) -> BackendInfo:
    return BackendInfo(BACKEND, True, devices=hardware.devices, capabilities=capabilities(hardware))
