"""The reference side of every comparison: cpu-reference's kernels, called on the CPU.

The oracle is looked up in the manager under test when it registers the
reference backend (so a test's fresh manager can hold both); otherwise it is
loaded on its own from its entry point, so a vendor's manager never needs it.
"""

from __future__ import annotations

import importlib.metadata as importlib_metadata

import torch

from qcore.errors import NoKernelError, QcoreError
from qcore.hardware import detect
from qcore.kernels import KernelImpl, KernelRequest, LinearWeights, QTensor
from qcore.plugins import ENTRY_POINT_GROUP, PluginManager
from qcore.spec import QuantScheme, QuantSpec

REFERENCE = "cpu-reference"


def _reference_manager(manager: PluginManager, backend: str) -> PluginManager:
    if any(k.backend == backend for k in manager.kernels().values()):
        return manager
    for ep in importlib_metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == backend:
            return PluginManager({backend: ep.load()}, entry_points=False)
    raise QcoreError(f"the conformance oracle {backend!r} is not installed (pip install qcore-{backend})")


class Oracle:
    """The reference backend's ops on CPU tensors; results are what every backend must match."""

    def __init__(self, manager: PluginManager, backend: str = REFERENCE) -> None:
        self.backend = backend
        self._kernels = [k for k in _reference_manager(manager, backend).kernels().values() if k.backend == backend]
        self._hardware = detect()

    def kernel(self, request: KernelRequest) -> KernelImpl:
        reasons = []
        for kernel in self._kernels:
            support = kernel.check(request, self._hardware)
            if support.ok:
                return kernel
            reasons.append(f"{kernel.id}: {support.reason}")
        raise NoKernelError(f"the oracle {self.backend} cannot run {request.op} {request.subject}: "
                            + ("; ".join(reasons) or "no kernel for this op"))

    def quantize(self, x: torch.Tensor, spec: QuantSpec, scale: torch.Tensor | None = None,
                 zero_point: torch.Tensor | None = None) -> QTensor:
        kernel = self.kernel(KernelRequest("quantize", "cpu", spec=spec, shape=tuple(x.shape)))
        return kernel.fn(x, spec, scale, zero_point)

    def dequantize(self, q: QTensor) -> torch.Tensor:
        return self.kernel(KernelRequest("dequantize", "cpu", spec=q.spec, shape=tuple(q.shape))).fn(q)

    def linear_weights(self, scheme: QuantScheme, weight: torch.Tensor, bias: torch.Tensor | None,
                       sample: torch.Tensor) -> LinearWeights:
        """Weights quantized by the oracle; static activation qparams calibrated (min-max) on `sample`."""
        assert scheme.weights is not None
        act = scheme.input_activations
        act_q = self.quantize(sample, act) if act is not None and act.info.scaled and not act.dynamic else None
        return LinearWeights(scheme=scheme, weight=self.quantize(weight, scheme.weights), bias=bias,
                             act_scale=None if act_q is None else act_q.scale,
                             act_zero_point=None if act_q is None else act_q.zero_point)

    def linear(self, weights: LinearWeights, x: torch.Tensor) -> torch.Tensor:
        shape = (x.numel() // x.shape[-1], weights.in_features, weights.out_features)
        kernel = self.kernel(KernelRequest("linear", "cpu", scheme=weights.scheme, shape=shape))
        assert kernel.prepare is not None
        return kernel.fn(kernel.prepare(weights), x)
