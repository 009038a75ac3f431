"""qcore: backend-agnostic quantization for PyTorch.

The core says what a quantization scheme means; backend plugins (installed
separately, found through the ``qcore`` entry points) say how to run it fast;
the capability matcher chooses per layer and explains its choice.
"""

from qcore.descriptors import BackendInfo, ObserverImpl
from qcore.errors import (
    NoKernelError,
    NonFiniteError,
    PluginConflictError,
    PluginError,
    QcoreError,
    ShapeError,
    SpecError,
    UnknownNameError,
)
from qcore.hardware import HardwareProfile, detect as detect_hardware
from qcore.hookspecs import hookimpl
from qcore.kernels import (
    OPS,
    KernelImpl,
    KernelRequest,
    LinearWeights,
    PackedTensor,
    QTensor,
    Support,
)
from qcore.matcher import Matcher, Plan, Selection
from qcore.plugins import PluginManager, get_manager
from qcore.spec import DTYPES, PRESETS, QuantScheme, QuantSpec

__version__ = "0.1.0"

__all__ = [
    "DTYPES",
    "OPS",
    "PRESETS",
    "BackendInfo",
    "HardwareProfile",
    "KernelImpl",
    "KernelRequest",
    "LinearWeights",
    "Matcher",
    "NoKernelError",
    "NonFiniteError",
    "ObserverImpl",
    "PackedTensor",
    "Plan",
    "PluginConflictError",
    "PluginError",
    "PluginManager",
    "QTensor",
    "QcoreError",
    "QuantScheme",
    "QuantSpec",
    "Selection",
    "ShapeError",
    "SpecError",
    "Support",
    "UnknownNameError",
    "detect_hardware",
    "get_manager",
    "hookimpl",
]
