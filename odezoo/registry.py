"""Plugin loading (pluggy) and the family registry that feeds torchdiffeq.

Built-in families come from ``BUILTIN_FAMILY_MODULES``; third-party ones from the
``odezoo`` entry-point group (skipped when ``ODEZOO_DISABLE_PLUGIN_AUTOLOAD=1``).  Every
plugin answers the same hook, ``odezoo_register_families(register)``.  A broken plugin or a
family that fails its checks is reported with an :class:`OdezooPluginWarning` and skipped;
the rest keep working.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import os
import warnings
from types import ModuleType
from typing import Any

import pluggy

from . import _torchdiffeq_bridge as bridge
from . import hookspecs
from .family import SolverFamily
from .stepper import ParameterizedRKSolver

__all__ = ["ENTRY_POINT_GROUP", "DISABLE_AUTOLOAD_ENV", "OdezooPluginWarning", "Registry"]

ENTRY_POINT_GROUP = "odezoo"
DISABLE_AUTOLOAD_ENV = "ODEZOO_DISABLE_PLUGIN_AUTOLOAD"
BUILTIN_PROVIDER = "odezoo (built-in)"


class OdezooPluginWarning(UserWarning):
    """A plugin or one of its families was refused; the message says which and why."""


class Registry:
    def __init__(self):
        self.pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self.pm.add_hookspecs(hookspecs)
        self._families: dict[str, SolverFamily] = {}
        self._providers: dict[str, str] = {}  # plugin name -> label shown to users
        self.problems: list[str] = []

    # ------------------------------------------------------------------ loading
    def load(self, builtin_modules, autoload: bool | None = None) -> None:
        for module_name in builtin_modules:
            try:
                module = importlib.import_module(module_name)
            except Exception as error:  # a broken built-in must not hide the others
                self._warn(f"built-in plugin {module_name} failed to import: {error!r}")
                continue
            self.pm.register(module, name=module_name)
            self._providers[module_name] = BUILTIN_PROVIDER
        if autoload is None:
            autoload = os.environ.get(DISABLE_AUTOLOAD_ENV, "") in ("", "0")
        if autoload:
            self._load_entry_points()
        self.refresh()

    def _load_entry_points(self) -> None:
        seen = set()
        for dist in importlib.metadata.distributions():
            for entry_point in dist.entry_points:
                if entry_point.group != ENTRY_POINT_GROUP or entry_point.value in seen:
                    continue
                seen.add(entry_point.value)
                label = f"{dist.metadata['Name']} {dist.version}"
                if self.pm.get_plugin(entry_point.name) is not None or self.pm.is_blocked(entry_point.name):
                    continue
                try:
                    plugin = entry_point.load()
                except Exception as error:
                    self._warn(f"plugin {entry_point.name!r} from {label} failed to load and is skipped: "
                               f"{error!r}. Reinstall or uninstall that package.")
                    continue
                if self.pm.is_registered(plugin):
                    continue  # a built-in also listed in the entry-point group
                try:
                    self.pm.register(plugin, name=entry_point.name)
                except ValueError as error:
                    self._warn(f"plugin {entry_point.name!r} from {label} was refused: {error}")
                    continue
                self._providers[entry_point.name] = label

    def register_plugin(self, plugin: Any, name: str | None = None) -> str:
        plugin_name = self.pm.register(plugin, name=name)
        if plugin_name is None:
            raise ValueError(f"plugin {name or plugin!r} is blocked")
        self._providers.setdefault(plugin_name, plugin_name)
        self.refresh()
        return plugin_name

    def unregister_plugin(self, plugin: Any) -> None:
        if isinstance(plugin, str):
            name = plugin
            plugin = self.pm.get_plugin(name)
            if plugin is None:
                raise ValueError(f"no plugin named {name!r} is registered")
        self.pm.unregister(plugin)
        self.refresh()

    # ------------------------------------------------------------------ families
    def refresh(self) -> None:
        """Ask every plugin for its families and make torchdiffeq's table match."""
        collected: dict[str, SolverFamily] = {}
        for impl in self.pm.hook.odezoo_register_families.get_hookimpls():
            provider = self._providers.get(impl.plugin_name, impl.plugin_name)
            offered: dict[str, SolverFamily] = {}

            def register(family, _provider=provider, _offered=offered):
                problem = self._check(family, _provider, collected, _offered)
                if problem:
                    self._warn(problem)
                else:
                    import dataclasses
                    _offered[family.name] = dataclasses.replace(family, provider=_provider)

            try:
                impl.function(register=register)
            except Exception as error:
                self._warn(f"plugin {provider!r} raised {error!r} while registering its families; "
                           f"it is skipped.")
                continue
            collected.update(offered)

        for name in set(self._families) - set(collected):
            bridge.uninstall(name)
        for name, family in collected.items():
            if self._families.get(name) is not family:
                bridge.install(name, _solver_class(family))
        self._families = collected

    def _check(self, family, provider, collected, offered) -> str | None:
        if not isinstance(family, SolverFamily):
            return f"plugin {provider!r} registered {family!r}, which is not an odezoo.SolverFamily; skipped."
        name = family.name
        if name in bridge.TORCHDIFFEQ_METHODS:
            return (f"family {name!r} from {provider!r} is refused: it would shadow torchdiffeq's own "
                    f"method of that name. Rename the family.")
        if name in collected or name in offered:
            owner = (collected.get(name) or offered[name]).provider
            return f"family {name!r} from {provider!r} is refused: the name is already registered by {owner!r}."
        try:
            tableau = family.tableau()
            members = {member: family.tableau(**params) for member, params in family.members.items()}
        except ValueError as error:
            return f"family {name!r} from {provider!r} is refused: its defaults or members are invalid: {error}"
        if tableau.stages != family.stages:
            return (f"family {name!r} from {provider!r} is refused: it declares {family.stages} stages "
                    f"but its tableau has {tableau.stages}.")
        for label, tab in [("defaults", tableau), *members.items()]:
            if tab.order() != family.order:
                return (f"family {name!r} from {provider!r} is refused: it declares order {family.order} but "
                        f"its tableau at {label} has order {tab.order()} (order conditions checked from "
                        f"rooted trees).")
        if not family.in_support(family.defaults):
            return (f"family {name!r} from {provider!r} is refused: its defaults {family.defaults} lie outside "
                    f"its sampling support ({family.support_text()}).")
        extra_check = getattr(family, "registration_problem", None)  # e.g. an embedded pair's second row
        problem = extra_check() if extra_check is not None else None
        if problem:
            return f"family {name!r} from {provider!r} is refused: {problem}"
        return None

    def _warn(self, message: str) -> None:
        self.problems.append(message)
        warnings.warn(message, OdezooPluginWarning, stacklevel=3)

    # ------------------------------------------------------------------ queries
    def families(self) -> dict[str, SolverFamily]:
        return dict(self._families)

    def get(self, name: str) -> SolverFamily:
        try:
            return self._families[name]
        except KeyError:
            known = ", ".join(sorted(self._families)) or "none"
            raise ValueError(f"unknown solver family {name!r}; registered families: {known}. "
                             f"Run `odezoo families` to list them with their parameters.") from None


def _solver_class(family: SolverFamily) -> type:
    make = getattr(family, "solver_class", None)  # a family kind with its own solver (adaptive pairs)
    if make is not None:
        return make()
    return type(f"{family.name}_solver", (ParameterizedRKSolver,), {
        "family": family, "order": family.order,
        "__doc__": f"torchdiffeq fixed-grid solver for the {family.name!r} family.",
        "__module__": __name__,
    })


#: The process-wide registry behind ``odezoo.families()`` and torchdiffeq's method table.
registry = Registry()
