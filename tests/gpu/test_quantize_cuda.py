"""A model quantized on the CPU and then moved to CUDA re-plans its kernels there (and back)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from qcore import api, metrics
from qcore.nn import QuantLinear

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")]


@pytest.mark.parametrize("scheme", ["w8a16", "w4a16", "w8a8-dynamic"])
def test_moving_a_quantized_model_rebinds_its_kernels(scheme: str) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(256, 512), nn.ReLU(), nn.Linear(512, 128))
    api.quantize(model, {"qcore": 1, "scheme": scheme}, progress=False, measure=False)
    x = torch.randn(8, 256)
    on_cpu = model(x)
    layers = [m for m in model.modules() if isinstance(m, QuantLinear)]
    model.cuda()
    assert all("cuda" in m.selection.chosen.devices and m.weight_scale.is_cuda for m in layers)
    on_gpu = model(x.cuda().half())
    assert on_gpu.dtype == torch.float16 and metrics.sqnr(on_cpu, on_gpu.float().cpu()) > 40
    model.cpu()
    assert all("cpu" in m.selection.chosen.devices for m in layers)
    assert metrics.sqnr(on_cpu, model(x)) > 45
