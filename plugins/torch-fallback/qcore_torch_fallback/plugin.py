"""Hook implementations of torch-fallback: the kernel descriptors and what this machine offers.

Linear alternatives are separate kernels so the matcher chooses by measuring;
each claims a scheme only where it computes that scheme's semantics exactly,
and says why not elsewhere. Priorities (used when nothing is measured) follow
the expected speed: fused integer/fp8 GEMMs, then int8/int4 weight kernels,
then the fp16 and float32 dequantize-then-matmul paths.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator

import torch

from qcore.descriptors import BackendInfo
from qcore.hardware import detect
from qcore.hookspecs import hookimpl
from qcore.kernels import YES, KernelImpl, KernelRequest, Support
from qcore_torch_fallback import (
    codes,
    linear_cuda,
    linear_dequant,
    linear_fbgemm,
    linear_int4pack,
    linear_int8pack,
    packing,
)
from qcore_torch_fallback.probe import BACKEND, backend_info

BOTH = ("cpu", "cuda")


def _any_spec(request: KernelRequest, hardware: object) -> Support:
    return YES


def tensor_kernels() -> Iterator[KernelImpl]:
    ops = {
        "quantize": codes.quantize,
        "dequantize": codes.dequantize,
        "pack_weight": packing.pack_weight,
        "unpack_weight": packing.unpack_weight,
    }
    for op, fn in ops.items():
        yield KernelImpl(BACKEND, op, op, fn=fn, supports=_any_spec, devices=BOTH, priority=10,
                         description=f"torch {op}, float64 quotients, every dtype and granularity")


def linear_kernels() -> Iterator[KernelImpl]:
    yield KernelImpl(
        BACKEND, "fbgemm-qdq", "linear", fn=linear_fbgemm.run, prepare=linear_fbgemm.prepare,
        supports=linear_fbgemm.supports, priority=40, accumulation="int32",
        description="fbgemm int8 GEMM (int32 accumulation) with our activation qparams; VNNI/AMX CPUs only",
    )
    yield KernelImpl(
        BACKEND, "int-mm", "linear", fn=linear_cuda.run, prepare=linear_cuda.prepare_int_mm,
        supports=linear_cuda.supports_int_mm, devices=("cuda",), priority=40, accumulation="int32",
        description="torch._int_mm int8×int8→int32, scales applied in float32 (M > 16)",
    )
    yield KernelImpl(
        BACKEND, "scaled-mm-fp8", "linear", fn=linear_cuda.run, prepare=linear_cuda.prepare_scaled_mm,
        supports=linear_cuda.supports_scaled_mm, devices=("cuda",), priority=40,
        description="torch._scaled_mm fp8 GEMM, float32 accumulation, scales applied after (sm_89+)",
    )
    yield KernelImpl(
        BACKEND, "int4pack-cuda", "linear", fn=linear_int4pack.run, prepare=linear_int4pack.prepare_cuda,
        supports=linear_int4pack.supports_cuda, devices=("cuda",), priority=30, accumulation="bfloat16",
        description="tinygemm int4 group kernel; activations rounded to bf16 (16-bit), bf16 scales (sm_80+)",
    )
    yield KernelImpl(
        BACKEND, "int8pack", "linear", fn=linear_int8pack.run, prepare=linear_int8pack.prepare,
        supports=linear_int8pack.supports, priority=30, accumulation="bfloat16",
        description="aten._weight_int8pack_mm: activation codes exact in bf16, output rounded to bf16; "
        "weight-only schemes round float activations to bf16 (16-bit)",
    )
    yield KernelImpl(
        BACKEND, "int4pack", "linear", fn=linear_int4pack.run, prepare=linear_int4pack.prepare_cpu,
        supports=linear_int4pack.supports_cpu, priority=30, accumulation="bfloat16",
        description="aten._weight_int4pack_mm_for_cpu; activations rounded to bf16 (16-bit), bf16 scales",
    )
    yield KernelImpl(
        BACKEND, "dequant-matmul-fp16", "linear", fn=linear_dequant.run,
        prepare=functools.partial(linear_dequant.prepare, torch.float16),
        supports=linear_dequant.supports, devices=("cuda",), priority=10,
        description="any scheme: weight dequantized once to fp16, activation spec applied, fp16 GEMM "
        "(values beyond ±65504 overflow)",
    )
    yield KernelImpl(
        BACKEND, "dequant-matmul", "linear", fn=linear_dequant.run,
        prepare=functools.partial(linear_dequant.prepare, torch.float32),
        supports=linear_dequant.supports, devices=BOTH, priority=0,
        description="any scheme: weight dequantized once to float32, activation spec applied, F.linear",
    )


@hookimpl
def qcore_kernels() -> Iterator[KernelImpl]:
    yield from tensor_kernels()
    yield from linear_kernels()


@hookimpl
def qcore_hardware() -> Iterator[BackendInfo]:
    yield backend_info(detect())
