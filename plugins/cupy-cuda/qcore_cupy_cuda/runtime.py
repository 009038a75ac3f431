"""CuPy, imported lazily: probing, kernel compilation (cached per process) and launches on torch's stream.

Nothing here touches CuPy or a device at import: `cupy()` imports it on the
first call. Kernels live as CUDA C sources in ``kernels/``; each file is
compiled once per process by NVRTC through ``cupy.RawModule`` the first time
one of its kernels is used (CuPy then caches the binary on disk too). Tensors
cross between torch and CuPy through DLPack without copies, and every kernel
runs on torch's current stream, so it orders with torch work and can be
captured in a CUDA graph.
"""

from __future__ import annotations

import functools
import importlib
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch

from qcore.descriptors import BackendInfo

BACKEND = "cupy-cuda"
KERNEL_DIR = Path(__file__).parent / "kernels"
DP4A_MIN_SM = 61

# Template instantiations NVRTC must emit, per source file (extern "C" kernels need none).
NAME_EXPRESSIONS: dict[str, tuple[str, ...]] = {
    "quant.cu": (),
    "gemm_dp4a.cu": (
        "quantize_rows_int8<float>",
        "quantize_rows_int8<f16>",
        "gemm_dp4a<true>",
        "gemm_dp4a<false>",
    ),
    "gemv_w4a16.cu": ("gemv_w4a16<float>", "gemv_w4a16<f16>"),
}


def cupy() -> ModuleType:
    """The cupy module, imported on first use (an ImportError says how to install it)."""
    try:
        return importlib.import_module("cupy")
    except ImportError as exc:
        raise ImportError(
            f"the {BACKEND} backend needs CuPy: pip install cupy-cuda12x (or cupy-cuda13x for a CUDA 13 driver); "
            f"import failed with: {exc}"
        ) from exc


def probe() -> BackendInfo:
    """Whether CuPy can run kernels here, with CuPy's own error text when it cannot."""
    try:
        cp = cupy()
    except ImportError as exc:
        return BackendInfo(BACKEND, False, f"CuPy is not installed ({exc.__cause__})")
    try:
        count = cp.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CUDARuntimeError and friends: no driver, driver too old, ...
        return BackendInfo(BACKEND, False, f"CuPy: {exc}")
    if count == 0:
        return BackendInfo(BACKEND, False, "CuPy: no CUDA device found")
    if not torch.cuda.is_available():
        return BackendInfo(
            BACKEND, False,
            f"CuPy sees {count} CUDA device(s) but torch {torch.__version__} cannot use CUDA; tensors cannot be exchanged",
        )
    try:
        major, minor = cp.cuda.nvrtc.getVersion()
    except Exception as exc:  # no libnvrtc: nothing can be compiled
        return BackendInfo(BACKEND, False, f"CuPy cannot compile kernels: {exc}")
    sms = sorted({int(cp.cuda.Device(i).compute_capability) for i in range(count)})
    caps = [f"sm_{sm}" for sm in sms] + [f"nvrtc {major}.{minor}", f"cupy {cp.__version__}"]
    if sms[0] >= DP4A_MIN_SM:
        caps.append("dp4a")
    return BackendInfo(BACKEND, True, devices=("cuda",), capabilities=tuple(caps))


@functools.cache
def _module(filename: str) -> Any:
    source = (KERNEL_DIR / filename).read_text(encoding="utf-8")
    names = NAME_EXPRESSIONS[filename]
    return cupy().RawModule(
        code=source,
        options=("-std=c++17", f"-I{KERNEL_DIR}"),
        name_expressions=names or None,
    )


@functools.cache
def kernel(filename: str, name: str) -> Any:
    """The compiled kernel `name` of ``kernels/<filename>`` (compiled on first use)."""
    return _module(filename).get_function(name)


def require_cuda(t: torch.Tensor, what: str) -> None:
    if not t.is_cuda:
        raise ValueError(f"{BACKEND} kernels run on CUDA tensors; {what} is on {t.device}")


def as_cupy(t: torch.Tensor) -> Any:
    """A zero-copy CuPy view of a CUDA tensor (DLPack), ordered on the current (torch's) stream."""
    return cupy().from_dlpack(t.detach())


@functools.lru_cache(maxsize=64)
def _external_stream(pointer: int, device_index: int) -> Any:
    with warnings.catch_warnings():  # CuPy 14 deprecates it for Stream.from_external, absent from CuPy 13
        warnings.simplefilter("ignore", DeprecationWarning)
        return cupy().cuda.ExternalStream(pointer, device_index)


@contextmanager
def torch_stream(device: torch.device) -> Iterator[None]:
    """Make torch's current stream on `device` CuPy's current stream (and `device` its device)."""
    cp = cupy()
    index = device.index if device.index is not None else torch.cuda.current_device()
    stream = torch.cuda.current_stream(index)
    with cp.cuda.Device(index), _external_stream(stream.cuda_stream, index):
        yield


def i32(v: int) -> Any:
    """A kernel `int` argument (CuPy would pass a Python int as 64 bits)."""
    return np.int32(v)


def i64(v: int) -> Any:
    """A kernel `long long` argument."""
    return np.int64(v)
