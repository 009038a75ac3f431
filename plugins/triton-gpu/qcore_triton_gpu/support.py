"""What the triton-gpu kernels can run, and the precise reason when they cannot.

Pure Python on descriptors: no triton import, no device access, never raises
(the matcher calls these for every request).
"""

from __future__ import annotations

from qcore.hardware import HardwareProfile
from qcore.kernels import YES, KernelRequest, Support, no
from qcore.spec import QuantScheme, QuantSpec

BACKEND = "triton-gpu"

MIN_SM = 75
"""Oldest NVIDIA architecture Triton generates code for (Turing)."""
INT8_DOT_SM = 80
"""tl.dot on int8 → int32 and on tf32 needs Ampere tensor cores."""
FP8_SM = 89
"""fp32 → fp8 conversion instructions (cvt.*.e4m3/e5m2) exist from Ada/Hopper on."""

FP8_WITHHELD = (
    "fp8 codes differed from cpu-reference on an H100 (tests/gpu/test_triton_gpu_cuda.py, 2026-11-26); "
    "the kernel now writes fp8 bit patterns itself, which matches the oracle on every value and tie "
    "under the interpreter, but is not claimed until a GPU run confirms it"
)
"""Lift once test_fp8_codes_equal_reference_on_device passes on sm_89+ silicon."""

QUANT_DTYPES = ("int8", "uint8", "int4", "uint4", "ternary", "binary", "fp8_e4m3", "fp8_e5m2")
PACK_DTYPES = ("int4", "uint4")
WEIGHT_ONLY_DTYPES = ("int8", "uint8", "int4", "uint4")
GROUP_MULTIPLE = 32
"""A fused-dequantization tile (BLOCK_K ≥ 32) must lie inside one group."""


def min_sm(hardware: HardwareProfile) -> int | None:
    """Smallest compute capability among the CUDA devices (None without any): kernels must run on all."""
    return min((d.sm for d in hardware.cuda), default=None)


def _device(request: KernelRequest, hardware: HardwareProfile, need_sm: int, what: str) -> Support:
    if request.device != "cuda":
        return no(f"{BACKEND} runs on cuda only, not {request.device}")
    sm = min_sm(hardware)
    if sm is None:
        return no("no CUDA device detected")
    if sm < need_sm:
        return no(f"{what} needs compute capability sm_{need_sm}+, this GPU is sm_{sm}")
    return YES


def spec_shape_problem(spec: QuantSpec, shape: tuple[int, ...] | None) -> str:
    """Why a tensor of `shape` cannot be quantized with `spec` ('' when it can, or when the shape is unknown)."""
    if shape is None:
        return ""
    if spec.granularity == "group":
        assert spec.group_size is not None
        if not shape or shape[-1] % spec.group_size:
            last = shape[-1] if shape else 1
            return f"group_size {spec.group_size} does not divide the last dimension {last}"
    if spec.granularity == "channel" and not -len(shape) <= spec.axis < max(len(shape), 1):
        return f"channel axis {spec.axis} is out of range for a {len(shape)}-d tensor"
    if spec.granularity == "token" and not shape:
        return "per-token quantization needs at least one dimension"
    return ""


def supports_quantize(request: KernelRequest, hardware: HardwareProfile) -> Support:
    """quantize and dequantize: integer formats (incl. ternary/binary) and fp8; fp16/bf16 are plain torch casts."""
    spec = request.spec
    assert spec is not None
    if spec.dtype not in QUANT_DTYPES:
        return no(f"{spec.dtype} is not a triton-gpu format (supported: {', '.join(QUANT_DTYPES)})")
    fp8 = spec.info.is_float
    dev = _device(request, hardware, FP8_SM if fp8 else MIN_SM, f"{spec.dtype}" if fp8 else "Triton")
    if not dev:
        return dev
    if fp8:
        return no(FP8_WITHHELD)
    problem = spec_shape_problem(spec, request.shape)
    return no(problem) if problem else YES


def supports_pack(request: KernelRequest, hardware: HardwareProfile) -> Support:
    """pack_weight / unpack_weight of 4-bit codes (two a byte, low nibble first)."""
    spec = request.spec
    assert spec is not None
    if spec.dtype not in PACK_DTYPES:
        return no(f"triton-gpu packs only 4-bit codes ({', '.join(PACK_DTYPES)}), not {spec.dtype}")
    return _device(request, hardware, MIN_SM, "Triton")


def weight_only_problem(scheme: QuantScheme, shape: tuple[int, ...] | None) -> str:
    """Why the fused dequantize-GEMM cannot run `scheme` on an (M, K, N) shape ('' when it can)."""
    w = scheme.weights
    if w is None or scheme.input_activations is not None:
        return "not a weight-only scheme"
    if w.dtype not in WEIGHT_ONLY_DTYPES:
        return f"weight dtype {w.dtype} is not fused (supported: {', '.join(WEIGHT_ONLY_DTYPES)})"
    if w.granularity == "channel":
        if w.axis not in (0, -2):
            return f"per-channel weight scales must be per output channel (axis 0), not axis {w.axis}"
    elif w.granularity == "group":
        assert w.group_size is not None
        if w.group_size % GROUP_MULTIPLE:
            return f"group_size {w.group_size} is not a multiple of {GROUP_MULTIPLE} (the dequantization tile)"
        if shape is not None and shape[1] % w.group_size:
            return f"group_size {w.group_size} does not divide in_features {shape[1]}"
    else:
        return f"weight granularity {w.granularity} is not fused (channel or group)"
    return ""


def w8a8_problem(scheme: QuantScheme) -> str:
    """Why the int8 × int8 GEMM cannot run `scheme` ('' when it can)."""
    w, a = scheme.weights, scheme.input_activations
    if w is None or a is None:
        return "quantizes weights and activations; this scheme leaves one of them float"
    if (w.dtype, w.granularity, w.symmetric) != ("int8", "channel", True) or w.axis not in (0, -2):
        return f"weights must be int8 symmetric per output channel, not {w.describe()}"
    if a.dtype != "int8" or not a.symmetric or a.granularity not in ("token", "tensor"):
        return f"activations must be int8 symmetric per token or per tensor, not {a.describe()}"
    return ""


def supports_weight_only(request: KernelRequest, hardware: HardwareProfile) -> Support:
    assert request.scheme is not None
    problem = weight_only_problem(request.scheme, request.shape)
    return no(problem) if problem else _device(request, hardware, INT8_DOT_SM, "tf32 tl.dot")


def supports_w8a8(request: KernelRequest, hardware: HardwareProfile) -> Support:
    assert request.scheme is not None
    problem = w8a8_problem(request.scheme)
    return no(problem) if problem else _device(request, hardware, INT8_DOT_SM, "int8 tl.dot")
