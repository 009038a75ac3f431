"""Exception types. Each says what went wrong and where, so callers can add context."""

from __future__ import annotations


class QcoreError(Exception):
    """Base class of every error qcore raises on purpose."""


class SpecError(QcoreError, ValueError):
    """A QuantSpec or QuantScheme that cannot be built; the message says what to change."""


class NonFiniteError(QcoreError, ValueError):
    """NaN or Inf where a finite tensor is required (weights, calibration data)."""


class ShapeError(QcoreError, ValueError):
    """A tensor shape that the requested quantization cannot handle."""


class PluginError(QcoreError):
    """A plugin failed to load or raised in a hook."""


class PluginConflictError(PluginError):
    """Two plugins provide the same name; the message names every provider."""


class UnknownNameError(QcoreError, KeyError):
    """A scheme, backend, kernel or observer name that nothing provides."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class NoKernelError(QcoreError):
    """No kernel can run a request, or `strict` forbids the fallback that could."""
