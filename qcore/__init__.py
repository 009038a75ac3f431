"""qcore: backend-agnostic quantization for PyTorch.

The core says what a quantization scheme means; backend plugins (installed
separately, found through the ``qcore`` entry points) say how to run it fast;
the capability matcher chooses per layer and explains its choice.
"""

from qcore.algorithm import AlgorithmContext, AlgorithmImpl, AlgorithmRun, Collector, LayerWork
from qcore.api import convert, plan, prepare_qat, quantize
from qcore.compressed_tensors.args import FormatError
from qcore.compressed_tensors.writer import ExportReport, export
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
from qcore.io import CheckpointError, load, read_metadata, save
from qcore.matcher import Matcher, Plan, Selection
from qcore.nn import FakeQuantLinear, QuantLinear
from qcore.plugins import PluginManager, get_manager
from qcore.recipe import Recipe, RecipeError, load_recipe
from qcore.spec import DTYPES, PRESETS, QuantScheme, QuantSpec
from qcore.state import LayerRecord, QuantState, state_of
from qcore.tuning import Constraint, TuneError, TuneResult, tune

__version__ = "0.1.0"

__all__ = [
    "DTYPES",
    "OPS",
    "PRESETS",
    "AlgorithmContext",
    "AlgorithmImpl",
    "AlgorithmRun",
    "BackendInfo",
    "Collector",
    "CheckpointError",
    "Constraint",
    "ExportReport",
    "FakeQuantLinear",
    "FormatError",
    "HardwareProfile",
    "KernelImpl",
    "KernelRequest",
    "LayerRecord",
    "LayerWork",
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
    "QuantLinear",
    "QuantState",
    "QcoreError",
    "QuantScheme",
    "QuantSpec",
    "Recipe",
    "RecipeError",
    "Selection",
    "ShapeError",
    "SpecError",
    "Support",
    "TuneError",
    "TuneResult",
    "UnknownNameError",
    "convert",
    "detect_hardware",
    "export",
    "get_manager",
    "hookimpl",
    "load",
    "load_recipe",
    "plan",
    "prepare_qat",
    "quantize",
    "read_metadata",
    "save",
    "state_of",
    "tune",
]
