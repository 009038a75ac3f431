"""Why a cpu-native kernel cannot run a request exactly (None where it can); `supports` combines them.

Pure functions of the request: no library call except the ISA check, never raising.
"""

from __future__ import annotations

from qcore.kernels import YES, KernelRequest, Support, no
from qcore.spec import QuantSpec

K_LIMIT = 131072
"""|a·b| ≤ 128·127 per product: int32 sums of up to 131072 products cannot overflow (the contract asks 65536)."""


def answer(*reasons: str | None) -> Support:
    reason = next((r for r in reasons if r), None)
    return no(reason) if reason else YES


def channel_axis(w: QuantSpec) -> str | None:
    if w.granularity == "channel" and w.axis not in (0, -2):
        return f"weight scales along axis {w.axis} vary along K; the kernels scale output channels (axis 0)"
    return None


def int8_weights(w: QuantSpec | None) -> str | None:
    """Symmetric int8 codes (|b| ≤ 127) with one scale per output channel or per tensor."""
    if w is None:
        return "float weights: the integer GEMM multiplies int8 weight codes"
    if w.dtype != "int8":
        return f"{w.dtype} weights: the integer GEMM takes int8 weight codes"
    if not w.symmetric:
        return "asymmetric int8 weights can reach -128, which breaks the exact vpmaddubsw sign trick"
    if w.granularity == "group":
        return f"group{w.group_size} weight scales vary along K; the integer GEMM scales whole output channels"
    return channel_axis(w)


def int8_activations(a: QuantSpec | None) -> str | None:
    """int8 activation codes per token (dynamic) or per tensor (static, calibrated)."""
    if a is None:
        return "weight-only scheme: activations stay float (the weight-only kernels run it)"
    if a.dtype != "int8":
        return f"{a.dtype} activations: the integer GEMM takes int8 codes (|a| ≤ 128 keeps pair sums in int16)"
    if a.dynamic and a.granularity != "token":
        return (f"dynamic {a.granularity} activation scales: the kernel quantizes per token (dynamic) or per "
                "tensor (static)")
    if not a.dynamic and a.granularity != "tensor":
        return f"static {a.granularity} activation qparams depend on the calibration shape; use per tensor"
    return None


def weight_only(request: KernelRequest) -> str | None:
    scheme = request.scheme
    assert scheme is not None
    if scheme.input_activations is not None:
        return "the scheme quantizes activations: the weight-only kernels multiply float activations"
    w = scheme.weights
    if w is None:
        return "float weights: nothing to dequantize"
    if w.dtype not in ("int8", "int4", "uint4"):
        return f"{w.dtype} weights: the weight-only kernels take int8, int4 or uint4 codes"
    if w.dtype == "int8" and w.granularity == "group":
        return f"int8 group{w.group_size} weights: the int8 weight-only kernel scales whole output channels"
    if w.granularity == "group" and w.group_size % 8:
        return f"group_size {w.group_size}: 4-bit groups must be whole 32-bit words of 8 codes"
    return channel_axis(w)


def k_limit(request: KernelRequest) -> str | None:
    if request.shape is not None and len(request.shape) == 3 and request.shape[1] > K_LIMIT:
        return f"K={request.shape[1]} > {K_LIMIT}: int32 sums could overflow at extreme codes"
    return None
