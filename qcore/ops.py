"""The ops as plain functions: each call goes to the kernel the matcher ranks first by priority.

These are what the core itself uses to quantize weights, pack them for
storage and compute static activation qparams. Every conforming backend gives
the same codes, so the choice here only affects speed.
"""

from __future__ import annotations

import weakref

import torch

from qcore import weights
from qcore.kernels import KernelImpl, KernelRequest, LinearWeights, PackedTensor, QTensor
from qcore.matcher import AUTO, Matcher
from qcore.plugins import PluginManager, get_manager
from qcore.spec import QuantScheme, QuantSpec


_chosen: weakref.WeakKeyDictionary[PluginManager, dict[tuple, KernelImpl]] = weakref.WeakKeyDictionary()


def kernel_for(op: str, device: str | torch.device, spec: QuantSpec, backend: str = AUTO) -> KernelImpl:
    """The kernel the core uses for a tensor op (priority-ranked, remembered per plugin manager)."""
    manager = get_manager()
    memo = _chosen.setdefault(manager, {})
    key = (op, torch.device(device).type, spec, backend)
    if key not in memo:
        request = KernelRequest(op, key[1], spec=spec)
        memo[key] = Matcher(manager, measure=False).select(request, backend=backend).chosen
    return memo[key]


def quantize(x: torch.Tensor, spec: QuantSpec, scale: torch.Tensor | None = None,
             zero_point: torch.Tensor | None = None, *, backend: str = AUTO) -> QTensor:
    return kernel_for("quantize", x.device, spec, backend).fn(x, spec, scale, zero_point)


def dequantize(q: QTensor, *, backend: str = AUTO) -> torch.Tensor:
    return kernel_for("dequantize", q.codes.device, q.spec, backend).fn(q)


def pack_weight(q: QTensor, *, backend: str = AUTO) -> PackedTensor:
    return kernel_for("pack_weight", q.codes.device, q.spec, backend).fn(q)


def unpack_weight(p: PackedTensor, *, backend: str = AUTO) -> QTensor:
    return kernel_for("unpack_weight", p.data.device, p.spec, backend).fn(p)


def linear_weights(scheme: QuantScheme, weight: torch.Tensor, bias: torch.Tensor | None = None, *,
                   act_scale: torch.Tensor | None = None, act_zero_point: torch.Tensor | None = None,
                   sample: torch.Tensor | None = None, qweight: QTensor | None = None) -> LinearWeights:
    """`qcore.weights.linear_weights` with the priority-ranked `quantize` kernel."""
    return weights.linear_weights(scheme, weight, bias, quantize=quantize, act_scale=act_scale,
                                  act_zero_point=act_zero_point, sample=sample, qweight=qweight)
