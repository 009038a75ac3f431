"""The plugin contract: pluggy hook specifications under the project name ``qcore``.

A plugin is a module (or object) with functions decorated ``@qcore.hookimpl``
whose names are the hooks below, registered through the entry-point group
``qcore`` in its ``pyproject.toml``::

    [project.entry-points.qcore]
    my-backend = "my_backend.plugin"

Every hook is called lazily (the first time qcore needs its answer, e.g. when
a plan is made or ``qcore backends`` runs), once per process, and never at
import. All hooks are collecting hooks: every plugin's results are gathered,
none stops the others (no ``firstresult``). Each implementation is called on
its own, so a plugin that raises is reported and the other plugins keep
working. A name provided twice (scheme, observer, kernel id, backend) is a
conflict error that names every provider and its version.
"""

from __future__ import annotations

from collections.abc import Iterable

import pluggy

from qcore.algorithm import AlgorithmImpl
from qcore.descriptors import BackendInfo, ObserverImpl
from qcore.kernels import KernelImpl
from qcore.spec import QuantScheme

PROJECT = "qcore"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


class QcoreSpecs:
    """The hooks a qcore plugin may implement. Implement only those you need."""

    @hookspec
    def qcore_schemes(self) -> Iterable[QuantScheme]:
        """Register extra quantization schemes (presets) by name.

        Called once, the first time a scheme is looked up by name (recipes,
        ``qcore backends --explain``). Return an iterable of `QuantScheme`;
        every plugin's schemes are collected. A name that another plugin or
        the built-in presets already use is a conflict error.

        Example::

            @qcore.hookimpl
            def qcore_schemes():
                yield QuantScheme("w6a16", QuantSpec("int8", "channel"), None, "...")
        """

    @hookspec
    def qcore_observers(self) -> Iterable[ObserverImpl]:
        """Register observers that compute static qparams from calibration data.

        Called once, the first time an observer is looked up by name. Return
        an iterable of `ObserverImpl`; all plugins' observers are collected
        (qcore's own ``minmax``, ``moving_average`` and ``histogram`` come
        through this hook too). A duplicate name is a conflict error.

        Example::

            @qcore.hookimpl
            def qcore_observers():
                yield ObserverImpl("absmax99", lambda spec: MyObserver(spec))
        """

    @hookspec
    def qcore_kernels(self) -> Iterable[KernelImpl]:
        """Register kernel implementations of the ops in `qcore.kernels.OPS`.

        Called once, the first time a plan is made or kernels are listed.
        Return an iterable of `KernelImpl`; all plugins' kernels are
        collected and the matcher chooses among those whose ``supports``
        says yes. Creating the descriptors must be cheap: do not import
        heavy libraries or touch a device here; do that in ``supports``,
        ``prepare`` or the kernel itself. A duplicate ``backend/name`` id is
        a conflict error.

        Example::

            @qcore.hookimpl
            def qcore_kernels():
                yield KernelImpl("my-backend", "linear-int8", "linear",
                                 fn=run, prepare=prepare, supports=supports)
        """

    @hookspec
    def qcore_algorithms(self) -> Iterable[AlgorithmImpl]:
        """Register quantization algorithms that a recipe's ``algorithms:`` list can name.

        Called once, the first time an algorithm is looked up (recipe
        validation, ``qcore algorithms``). Return an iterable of
        `AlgorithmImpl`: its name is the recipe entry, its options class the
        schema every entry is checked against, `applies` says which layers it
        acts on (and why not the others), `collector` what it gathers per
        layer during calibration and `run` what it does with it (see
        `qcore.algorithm`). All plugins' algorithms are collected (qcore's own
        ``gptq``, ``smoothquant`` and ``awq`` come through this hook too); a
        duplicate name is a conflict error that names both providers.

        Example::

            @qcore.hookimpl
            def qcore_algorithms():
                yield AlgorithmImpl("mse-clip", ClipOptions, applies=applies, run=run, kind="quantize")
        """

    @hookspec
    def qcore_hardware(self) -> Iterable[BackendInfo]:
        """Say whether each backend this plugin provides can run on this machine.

        Called once, the first time availability is needed (``qcore
        backends``, planning). Probe lazily here (import CuPy, look for a
        driver, ...) and return one `BackendInfo` per backend name: available,
        or unavailable with the precise reason. All results are collected; a
        backend without a `BackendInfo` is assumed available on the devices
        its kernels declare. Kernels of an unavailable backend are never
        chosen.

        Example::

            @qcore.hookimpl
            def qcore_hardware():
                try:
                    import cupy
                    cupy.cuda.runtime.getDeviceCount()
                except Exception as exc:
                    yield BackendInfo("my-backend", False, f"CuPy: {exc}")
                else:
                    yield BackendInfo("my-backend", True, devices=("cuda",))
        """
