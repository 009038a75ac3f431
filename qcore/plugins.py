"""The plugin manager: loads the ``qcore`` entry points lazily and isolates failures.

Nothing is scanned at ``import qcore``: the first call that needs a plugin's
answer loads them all, once. A plugin that fails to import, implements a hook
that does not exist (a misspelling) or none at all (an entry point naming the
wrong module), or raises inside a hook is recorded as a `PluginProblem` and
left out; the others keep working. ``qcore backends`` shows the problems, a
plugin that failed to load as a row of its own.

Environment:
- ``QCORE_DISABLE_PLUGINS=a,b`` skips the entry points named ``a`` and ``b``;
- ``QCORE_TRACE_PLUGINS=1`` prints every hook call and its result to stderr.
"""

from __future__ import annotations

import importlib.metadata as importlib_metadata
import os
import sys
import threading
import traceback
from typing import Any, TypeVar

import attrs
import pluggy

from qcore import hookspecs
from qcore.algorithm import AlgorithmImpl
from qcore.descriptors import BackendInfo, ObserverImpl
from qcore.errors import PluginConflictError, PluginError, UnknownNameError
from qcore.kernels import KernelImpl, Provider
from qcore.spec import QuantScheme

ENTRY_POINT_GROUP = "qcore"
BUILTIN = "qcore-builtin"

T = TypeVar("T")


@attrs.frozen
class PluginProblem:
    """A plugin that failed: at load (`hook` is None) or inside one hook."""

    plugin: str
    provider: Provider
    error: str
    hook: str | None = None
    detail: str = ""

    def describe(self) -> str:
        where = f"in hook {self.hook}" if self.hook else "at load"
        return f"plugin {self.provider.describe()} failed {where}: {self.error}"


def _hook_names() -> set[str]:
    return {n for n in dir(hookspecs.QcoreSpecs) if n.startswith("qcore_")}


def _disabled_names() -> set[str]:
    raw = os.environ.get("QCORE_DISABLE_PLUGINS", "")
    return {name.strip() for name in raw.split(",") if name.strip()}


def _tracing() -> bool:
    return os.environ.get("QCORE_TRACE_PLUGINS", "") not in ("", "0")


def _format_exc(exc: BaseException) -> tuple[str, str]:
    return f"{type(exc).__name__}: {exc}", "".join(traceback.format_exception(exc))


class PluginManager:
    """qcore's view of its plugins. Use `get_manager()` for the process-wide one.

    `entry_points=False` gives a manager with only the built-in plugin and
    whatever is passed in `plugins` (name → module or object): what plugin
    authors use in tests (see `qcore.testing`).
    """

    def __init__(self, plugins: dict[str, Any] | None = None, *, entry_points: bool = True) -> None:
        self._extra = dict(plugins or {})
        self._use_entry_points = entry_points
        self._pm: pluggy.PluginManager | None = None
        self._providers: dict[str, Provider] = {}
        self._problems: list[PluginProblem] = []
        self._disabled: list[str] = []
        self._cache: dict[str, Any] = {}
        self._lock = threading.RLock()

    def _load(self) -> pluggy.PluginManager:
        with self._lock:
            if self._pm is not None:
                return self._pm
            pm = pluggy.PluginManager(hookspecs.PROJECT)
            pm.add_hookspecs(hookspecs.QcoreSpecs)
            from qcore import builtin

            self._register(pm, BUILTIN, builtin, Provider(BUILTIN, "qcore", _version("qcore")))
            if self._use_entry_points:
                self._load_entry_points(pm)
            for name, plugin in self._extra.items():
                self._register(pm, name, plugin, Provider(name))
            self._pm = pm
            return pm

    def _load_entry_points(self, pm: pluggy.PluginManager) -> None:
        disabled = _disabled_names()
        for ep in sorted(importlib_metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            dist = getattr(ep, "dist", None)
            provider = Provider(ep.name, dist.name if dist else None, dist.version if dist else None)
            if ep.name in disabled:
                self._disabled.append(ep.name)
                continue
            try:
                plugin = ep.load()
            except Exception as exc:
                error, detail = _format_exc(exc)
                self._problems.append(PluginProblem(ep.name, provider, error, None, detail))
                continue
            self._register(pm, ep.name, plugin, provider)

    def _register(self, pm: pluggy.PluginManager, name: str, plugin: Any, provider: Provider) -> None:
        try:
            pm.register(plugin, name=name)
            pm.check_pending()
            if not pm.get_hookcallers(plugin):
                raise PluginError(f"{getattr(plugin, '__name__', type(plugin).__name__)} implements none of "
                                  f"qcore's hooks ({', '.join(sorted(_hook_names()))}); the entry point must name "
                                  "the module that defines them")
        except Exception as exc:
            if pm.is_registered(plugin):
                pm.unregister(plugin)
            error, detail = _format_exc(exc)
            self._problems.append(PluginProblem(name, provider, error, None, detail))
            return
        self._providers[name] = provider

    # -- hook calls ---------------------------------------------------------

    def call(self, hook_name: str) -> list[tuple[Provider, Any]]:
        """Call every implementation of a hook on its own; failures become problems."""
        pm = self._load()
        results: list[tuple[Provider, Any]] = []
        for impl in reversed(getattr(pm.hook, hook_name).get_hookimpls()):
            provider = self._providers[impl.plugin_name]
            try:
                value = list(impl.function() or ())
            except Exception as exc:
                error, detail = _format_exc(exc)
                self._problems.append(PluginProblem(impl.plugin_name, provider, error, hook_name, detail))
                value = []
            if _tracing():
                names = ", ".join(getattr(v, "id", getattr(v, "name", repr(v))) for v in value)
                print(f"[qcore] {hook_name} <- {provider.describe()}: {names or 'nothing'}", file=sys.stderr)
            results.extend((provider, item) for item in value)
        return results

    def _collect(self, hook_name: str, kind: type[T], key: str) -> dict[str, T]:
        with self._lock:
            if hook_name in self._cache:
                return self._cache[hook_name]
            found: dict[str, T] = {}
            owners: dict[str, list[Provider]] = {}
            for provider, item in self.call(hook_name):
                if not isinstance(item, kind):
                    self._problems.append(
                        PluginProblem(
                            provider.plugin,
                            provider,
                            f"returned {type(item).__name__}, expected {kind.__name__}",
                            hook_name,
                        )
                    )
                    continue
                if hasattr(item, "provider"):
                    item = attrs.evolve(item, provider=provider)  # type: ignore[misc]
                name = getattr(item, key)
                owners.setdefault(name, []).append(provider)
                found[name] = item
            conflicts = {n: p for n, p in owners.items() if len(p) > 1}
            if conflicts:
                lines = [
                    f"{kind.__name__} {n!r} is provided by " + " and by ".join(p.describe() for p in provs)
                    for n, provs in conflicts.items()
                ]
                raise PluginConflictError(
                    "plugin conflict: " + "; ".join(lines) + ". Uninstall one or disable it with QCORE_DISABLE_PLUGINS."
                )
            self._cache[hook_name] = found
            return found

    # -- public views -------------------------------------------------------

    def schemes(self) -> dict[str, QuantScheme]:
        return self._collect("qcore_schemes", QuantScheme, "name")

    def observers(self) -> dict[str, ObserverImpl]:
        return self._collect("qcore_observers", ObserverImpl, "name")

    def kernels(self) -> dict[str, KernelImpl]:
        return self._collect("qcore_kernels", KernelImpl, "id")

    def algorithms(self) -> dict[str, AlgorithmImpl]:
        return self._collect("qcore_algorithms", AlgorithmImpl, "name")

    def backend_infos(self) -> dict[str, BackendInfo]:
        return self._collect("qcore_hardware", BackendInfo, "name")

    def backends(self) -> dict[str, BackendInfo]:
        """Every backend that registered kernels or reported hardware, with its status."""
        infos = dict(self.backend_infos())
        devices: dict[str, set[str]] = {}
        providers: dict[str, Provider | None] = {}
        for kernel in self.kernels().values():
            devices.setdefault(kernel.backend, set()).update(kernel.devices)
            providers.setdefault(kernel.backend, kernel.provider)
        for name, found in devices.items():
            info = infos.get(name)
            if info is None:
                infos[name] = BackendInfo(name, True, devices=tuple(sorted(found)), provider=providers[name])
            elif info.available and not info.devices:
                infos[name] = attrs.evolve(info, devices=tuple(sorted(found)))
        return dict(sorted(infos.items()))

    def scheme(self, name: str) -> QuantScheme:
        return _lookup(self.schemes(), name, "scheme")

    def observer(self, name: str) -> ObserverImpl:
        return _lookup(self.observers(), name, "observer")

    def algorithm(self, name: str) -> AlgorithmImpl:
        return _lookup(self.algorithms(), name, "algorithm")

    def backend(self, name: str) -> BackendInfo:
        return _lookup(self.backends(), name, "backend")

    @property
    def problems(self) -> list[PluginProblem]:
        self._load()
        return list(self._problems)

    @property
    def disabled(self) -> list[str]:
        self._load()
        return list(self._disabled)

    @property
    def plugins(self) -> dict[str, Provider]:
        """Every plugin that loaded, by name (the built-in one included)."""
        self._load()
        return dict(self._providers)


def _lookup(table: dict[str, T], name: str, what: str) -> T:
    try:
        return table[name]
    except KeyError:
        raise UnknownNameError(f"unknown {what} {name!r}; known: {', '.join(sorted(table)) or 'none'}") from None


def _version(dist: str) -> str | None:
    try:
        return importlib_metadata.version(dist)
    except importlib_metadata.PackageNotFoundError:
        return None


_manager: PluginManager | None = None
_manager_lock = threading.Lock()


def get_manager() -> PluginManager:
    """The process-wide manager, created (not loaded) on first use."""
    global _manager
    with _manager_lock:
        if _manager is None:
            _manager = PluginManager()
        return _manager


def set_manager(manager: PluginManager | None) -> PluginManager | None:
    """Replace the process-wide manager (tests); returns the previous one. None resets."""
    global _manager
    with _manager_lock:
        previous, _manager = _manager, manager
        return previous

