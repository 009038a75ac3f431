"""`supports` checks: cheap, never raising, each refusal saying exactly what does not fit."""

from __future__ import annotations

from qcore.hardware import HardwareProfile
from qcore.kernels import YES, KernelRequest, Support, no
from qcore_cupy_cuda.runtime import DP4A_MIN_SM

INT_DTYPES: tuple[str, ...] = ("int8", "uint8", "int4", "uint4")
MAX_K_INT32 = 131072   # 127 * 127 * K stays below 2**31: the dp4a accumulation is exact
MAX_GEMV_M = 16        # the w4a16 GEMV re-reads the weights per 8 rows: a decode-sized kernel
GEMV_CHUNK = 32        # codes one lane dequantizes at a time; they must share one group


def _no_gpu(hardware: HardwareProfile) -> Support | None:
    if not hardware.cuda:
        return no("torch sees no CUDA device")
    return None


def tensor_op(request: KernelRequest, hardware: HardwareProfile) -> Support:
    """quantize / dequantize: integer formats of 4 or 8 bits, any granularity."""
    spec = request.spec
    assert spec is not None
    if spec.dtype not in INT_DTYPES:
        return no(f"handles {', '.join(INT_DTYPES)}, not {spec.dtype}")
    if (refusal := _no_gpu(hardware)) is not None:
        return refusal
    shape = request.shape
    if shape is not None and spec.granularity == "group" and (not shape or shape[-1] % spec.group_size):
        last = shape[-1] if shape else 1
        return no(f"group_size {spec.group_size} does not divide the last dimension {last}")
    if shape is not None and not shape and spec.granularity in ("token", "channel"):
        return no(f"{spec.granularity} quantization needs at least one dimension")
    return YES


def w8a8(request: KernelRequest, hardware: HardwareProfile) -> Support:
    """int8 symmetric weights (per channel of axis 0, or per tensor) x int8 symmetric activations
    (dynamic per token, or static per tensor), on sm_61+ with K % 4 == 0."""
    scheme = request.scheme
    assert scheme is not None
    w, a = scheme.weights, scheme.input_activations
    if w is None or w.dtype != "int8" or not w.symmetric or w.granularity not in ("channel", "tensor"):
        return no(f"needs int8 symmetric per-channel or per-tensor weights; {scheme.name} has "
                  f"{w.describe() if w else 'float weights'}")
    if w.granularity == "channel" and w.axis not in (0, -2):
        return no(f"per-channel weight scales must be along the output axis 0, not axis {w.axis}")
    if a is None or a.dtype != "int8" or not a.symmetric:
        return no(f"needs int8 symmetric activations; {scheme.name} has {a.describe() if a else 'float activations'}")
    if not ((a.granularity == "token" and a.dynamic) or (a.granularity == "tensor" and not a.dynamic)):
        return no(f"activations must be dynamic per token or static per tensor, not {a.describe()}")
    if (refusal := _no_gpu(hardware)) is not None:
        return refusal
    sm = min(d.sm for d in hardware.cuda)
    if sm < DP4A_MIN_SM:
        return no(f"__dp4a needs compute capability sm_{DP4A_MIN_SM} or newer; this GPU is sm_{sm}")
    if request.shape is not None:
        _, k, _ = request.shape
        if k % 4:
            return no(f"K={k} is not a multiple of 4 (__dp4a packs 4 int8 codes a word)")
        if k > MAX_K_INT32:
            return no(f"K={k} > {MAX_K_INT32}: int32 accumulation could overflow at extreme codes")
    return YES


def w4a16(request: KernelRequest, hardware: HardwareProfile) -> Support:
    """int4 (symmetric) or uint4 (zero-point) group weights, float activations, small M."""
    scheme = request.scheme
    assert scheme is not None
    w, a = scheme.weights, scheme.input_activations
    if a is not None:
        return no(f"weight-only kernel; {scheme.name} quantizes activations ({a.describe()})")
    if w is None or w.dtype not in ("int4", "uint4") or w.granularity != "group":
        return no(f"needs int4/uint4 group weights; {scheme.name} has {w.describe() if w else 'float weights'}")
    g = w.group_size
    assert g is not None
    if g % GEMV_CHUNK:
        return no(f"group_size {g} is not a multiple of {GEMV_CHUNK}")
    if (refusal := _no_gpu(hardware)) is not None:
        return refusal
    if request.shape is not None:
        m, k, _ = request.shape
        if k % g:
            return no(f"group_size {g} does not divide K={k}")
        if m > MAX_GEMV_M:
            return no(f"GEMV kernel for M <= {MAX_GEMV_M} (decode); M={m} is a GEMM's job")
    return YES
