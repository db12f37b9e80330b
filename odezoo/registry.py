"""Plugin loading (pluggy) and the family registry that feeds torchdiffeq.

Built-in families come from ``BUILTIN_FAMILY_MODULES``; third-party ones from the
``odezoo`` entry-point group (skipped when ``ODEZOO_DISABLE_PLUGIN_AUTOLOAD=1``).  Every
plugin answers the same hook, ``odezoo_register_families(register)``.

Guarantees (whatever a plugin does, ``import odezoo`` works):

* Built-ins are registered first and their hooks run first, whatever hookimpl options
  (``tryfirst``, ``trylast``) a plugin sets, so a third-party family can never take a
  built-in's name — not even when that built-in failed to load.
* A plugin that pluggy rejects (a hook argument the hookspec does not have), that implements
  a hook odezoo does not define (e.g. a misspelled ``odezoo_register_familes``; found the way
  ``PluginManager.check_pending`` finds them), that wraps the hook (``hookwrapper``/``wrapper``),
  that has no odezoo hook at all, or that fails to import or raises in its hook is refused whole.
* A family is refused alone — its siblings still register — when it fails a check or when a
  check of it raises anything at all.
* Two distributions that declare the same entry-point name: the first found keeps it, the other
  is refused.
* Every refusal is an `OdezooPluginWarning` (also listed by ``odezoo.plugin_problems()``)
  naming the distribution (or plugin name) and the reason.
"""
from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
import os
import re
import warnings
import weakref
from typing import Any

import pluggy

from . import _torchdiffeq_bridge as bridge
from . import hookspecs
from .adaptive import EmbeddedRKSolver
from .family import SolverFamily, verify_family
from .stepper import ParameterizedRKSolver

__all__ = ["ENTRY_POINT_GROUP", "DISABLE_AUTOLOAD_ENV", "BUILTIN_FAMILY_MODULES", "OdezooPluginWarning", "Registry"]

ENTRY_POINT_GROUP = "odezoo"
DISABLE_AUTOLOAD_ENV = "ODEZOO_DISABLE_PLUGIN_AUTOLOAD"
BUILTIN_PROVIDER = "odezoo (built-in)"
#: The built-in families, one module each under ``odezoo/families/``, listed once; loaded by
#: name (the core imports no family) and registered through the same hook as third-party ones.
BUILTIN_FAMILY_MODULES = tuple(f"odezoo.families.{name}" for name in (
    "rk2_u", "rk3_uv", "rk4_u1", "rk4_u2", "rk4_u3", "rk4_uv", "rk2_u_adaptive", "tsit5", "dop853"))
HOOK = "odezoo_register_families"

# A plugin may raise anything at all while it loads or runs — any BaseException subclass
# (SystemExit, GeneratorExit, its own) — and odezoo still works; only KeyboardInterrupt
# passes through: the user asked to stop.


class OdezooPluginWarning(UserWarning):
    """A plugin or one of its families was refused; the message says which and why."""


class Registry:
    def __init__(self):
        self.pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self.pm.add_hookspecs(hookspecs)
        self._families: dict[str, SolverFamily] = {}
        self._providers: dict[str, str] = {}  # plugin name -> label shown to users
        self._builtins: list[str] = []  # built-in plugin names, in the order they run
        self._third_party: list[str] = []  # other plugin names, in registration order
        self._reserved: dict[str, str] = {}  # family names of built-ins that failed to load
        self.problems: list[str] = []

    # ------------------------------------------------------------------ loading
    def load(self, builtin_modules, autoload: bool | None = None) -> None:
        for module_name in builtin_modules:
            try:
                module = importlib.import_module(module_name)
            except KeyboardInterrupt:  # the user asked to stop
                raise
            except BaseException as error:  # a broken built-in must not hide the others
                self._warn(f"built-in plugin {module_name} failed to import: {error!r}")
                self._reserved[module_name.rpartition(".")[2]] = BUILTIN_PROVIDER
                continue
            problem = self._admit(module, module_name, BUILTIN_PROVIDER)
            if problem:
                self._warn(problem)
                self._reserved[module_name.rpartition(".")[2]] = BUILTIN_PROVIDER
            else:
                self._builtins.append(module_name)
        if autoload is None:
            autoload = os.environ.get(DISABLE_AUTOLOAD_ENV, "") in ("", "0")
        if autoload:
            self._load_entry_points()
        self.refresh()

    def _load_entry_points(self) -> None:
        try:
            distributions = list(importlib.metadata.distributions())
        except KeyboardInterrupt:  # the user asked to stop
            raise
        except BaseException as error:
            self._warn(f"the installed distributions could not be listed, so no third-party plugin "
                       f"is loaded: {error!r}")
            return
        seen: set[str] = set()  # distributions, by normalized name
        claimed: dict[str, str] = {}  # entry-point name -> the distribution that has it
        for dist in distributions:
            try:
                dist_name = dist.metadata["Name"] or "?"
                label = f"{dist_name} {dist.version}"
                entry_points = [ep for ep in dist.entry_points if ep.group == ENTRY_POINT_GROUP]
            except KeyboardInterrupt:  # the user asked to stop
                raise
            except BaseException as error:
                self._warn(f"a distribution's metadata could not be read ({error!r}); its odezoo "
                           f"plugins, if any, are skipped. Reinstall it.")
                continue
            key = re.sub(r"[-_.]+", "-", dist_name).lower()
            if key in seen:
                continue  # the same distribution again, further down sys.path: shadowed, as for imports
            seen.add(key)
            for entry_point in entry_points:
                if entry_point.name in claimed:
                    self._warn(f"plugin {entry_point.name!r} from {label} is refused: {claimed[entry_point.name]} "
                               f"already provides an odezoo entry point named {entry_point.name!r}, and two "
                               f"distributions cannot share one. Uninstall one of them.")
                    continue
                claimed[entry_point.name] = label
                try:
                    plugin = entry_point.load()
                except KeyboardInterrupt:  # the user asked to stop
                    raise
                except BaseException as error:
                    self._warn(f"plugin {entry_point.name!r} from {label} failed to load and is skipped: "
                               f"{error!r}. Reinstall or uninstall that package.")
                    continue
                problem = self._admit(plugin, entry_point.name, label)
                if problem:
                    self._warn(problem)

    def _admit(self, plugin: Any, name: str, label: str) -> str | None:
        """Register ``plugin`` with pluggy under ``name`` unless it is defective; return the
        reason it was refused (naming ``label``), or None once it is registered."""
        refused = f"plugin {name!r} from {label} is refused"
        if self.pm.get_plugin(name) is not None:
            other = self._providers.get(name, name)
            return f"{refused}: the plugin name {name!r} is already taken (by {other})."
        try:
            if self.pm.is_registered(plugin):
                other = self.pm.get_name(plugin)
                return (f"{refused}: the same object is already registered as plugin {other!r} "
                        f"({self._providers.get(other, other)}).")
            registered = self.pm.register(plugin, name=name)
        except KeyboardInterrupt:  # the user asked to stop
            raise
        except BaseException as error:  # pluggy.PluginValidationError: e.g. an unknown hook argument
            return f"{refused}: {_reason(error)}"
        if registered is None:
            return f"{refused}: the name {name!r} is blocked in odezoo's plugin manager."
        problem = self._hook_problem(plugin)
        if problem:
            self.pm.unregister(plugin)
            return f"{refused}: {problem}"
        self._providers[name] = label
        if label != BUILTIN_PROVIDER:
            self._third_party.append(name)
        return None

    def _hook_problem(self, plugin: Any) -> str | None:
        """Why a just-registered plugin cannot work, or None.  Unknown hook names are found
        like ``PluginManager.check_pending`` finds them (implementations without a hookspec
        that are not ``optionalhook``), but for this plugin only and all of them at once."""
        unknown, wrappers, ours = [], [], 0
        for hook_name, caller in vars(self.pm.hook).items():
            if hook_name.startswith("_"):
                continue
            for impl in caller.get_hookimpls():
                if impl.plugin is not plugin:
                    continue
                if not caller.has_spec():
                    if not impl.optionalhook:
                        unknown.append(hook_name)
                    continue
                ours += 1
                if impl.hookwrapper or impl.wrapper:
                    wrappers.append(hook_name)
        specs = sorted(name for name in vars(hookspecs) if name.startswith("odezoo_"))
        if unknown:
            return (f"it implements {', '.join(map(repr, sorted(unknown)))}, which odezoo does not define "
                    f"(its hooks: {', '.join(specs)}), so that code would never run — a misspelled hook "
                    f"name? Fix the name, or mark an implementation meant for another odezoo version "
                    f"@odezoo.hookimpl(optionalhook=True).")
        if wrappers:
            return (f"its {', '.join(wrappers)} is a hookwrapper/wrapper; odezoo calls each plugin's "
                    f"implementation itself (built-ins first), so register families from a plain "
                    f"@odezoo.hookimpl.")
        if not ours:
            unmarked = [attr for attr in specs if callable(getattr(plugin, attr, None))]
            hint = (f" ({', '.join(unmarked)} is not marked with @odezoo.hookimpl)" if unmarked else "")
            return f"it implements no odezoo hook{hint}, so it could not register anything."
        return None

    def register_plugin(self, plugin: Any, name: str | None = None) -> str:
        """Register ``plugin``; ``ValueError`` naming the reason if it is defective (the checks
        of plugin loading).  Its families are then checked one by one: a refused family is an
        `OdezooPluginWarning`."""
        if name is None:
            name = self.pm.get_canonical_name(plugin)
        problem = self._admit(plugin, name, name)
        if problem:
            raise ValueError(problem)
        self.refresh()
        return name

    def unregister_plugin(self, plugin: Any) -> None:
        if isinstance(plugin, str):
            name = plugin
            plugin = self.pm.get_plugin(name)
            if plugin is None:
                raise ValueError(f"no plugin named {name!r} is registered")
        name = self.pm.get_name(plugin)
        self.pm.unregister(plugin)
        for names in (self._builtins, self._third_party):
            if name in names:
                names.remove(name)
        self.refresh()

    # ------------------------------------------------------------------ families
    def _hook_order(self) -> list:
        """The hook implementations in the order odezoo runs them: built-ins first, then other
        plugins in registration order; pluggy's ordering options play no part."""
        impls = [impl for impl in self.pm.hook.odezoo_register_families.get_hookimpls()
                 if not (impl.hookwrapper or impl.wrapper)]
        rank = {name: i for i, name in enumerate(self._builtins + self._third_party)}
        return sorted(impls, key=lambda impl: rank.get(impl.plugin_name, len(rank)))  # stable

    def refresh(self) -> None:
        """Ask every plugin for its families and make torchdiffeq's table match."""
        collected: dict[str, SolverFamily] = {}
        reserved = dict(self._reserved)  # family name -> built-in provider
        builtins = set(self._builtins)
        for impl in self._hook_order():
            provider = self._providers.get(impl.plugin_name, impl.plugin_name)
            builtin = impl.plugin_name in builtins
            offered: dict[str, SolverFamily] = {}
            open_ = [True]

            def register(family, _provider=provider, _offered=offered, _builtin=builtin, _open=open_):
                if not _open[0]:
                    self._warn(f"plugin {_provider!r} called register() after its {HOOK} returned; "
                               f"ignored. Register families inside the hook.")
                    return
                try:
                    problem = self._check(family, _provider, collected, _offered, reserved)
                    if not problem:
                        _offered[family.name] = dataclasses.replace(family, provider=_provider)
                except KeyboardInterrupt:  # the user asked to stop
                    raise
                except BaseException as error:
                    problem = (f"family {_name_of(family)!r} from {_provider!r} is refused: checking it "
                               f"raised {_reason(error)}")
                if problem:
                    self._warn(problem)
                    if _builtin and isinstance(_name_of(family), str):
                        reserved.setdefault(_name_of(family), _provider)

            try:
                returned = impl.function(**{arg: register for arg in impl.argnames})
            except KeyboardInterrupt:  # the user asked to stop
                raise
            except BaseException as error:
                self._warn(f"plugin {provider!r} raised {error!r} while registering its families; "
                           f"it is skipped.")
                continue
            finally:
                open_[0] = False
            if returned is not None:
                if hasattr(returned, "close"):
                    returned.close()
                self._warn(f"plugin {provider!r}: {HOOK} returned {returned!r}, which odezoo ignores; "
                           f"call register(family) for each family instead.")
            collected.update(offered)

        for name in set(self._families) - set(collected):
            bridge.uninstall(name)
        for name, family in collected.items():
            if self._families.get(name) is not family:
                bridge.install(name, _solver_class(family))
        self._families = collected

    def _check(self, family, provider, collected, offered, reserved) -> str | None:
        if not isinstance(family, SolverFamily):
            return f"plugin {provider!r} registered {family!r}, which is not an odezoo.SolverFamily; skipped."
        name = family.name
        if name in bridge.TORCHDIFFEQ_METHODS:
            return (f"family {name!r} from {provider!r} is refused: it would shadow torchdiffeq's own "
                    f"method of that name. Rename the family.")
        if name in collected or name in offered:
            owner = (collected.get(name) or offered[name]).provider
            return f"family {name!r} from {provider!r} is refused: the name is already registered by {owner!r}."
        if name in reserved and reserved[name] != provider:
            return (f"family {name!r} from {provider!r} is refused: the name belongs to a built-in family "
                    f"({reserved[name]}), even though that built-in is unavailable. Rename the family.")
        reason = _verification(family)
        return f"family {name!r} from {provider!r} is refused: {reason}" if reason else None

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


def _name_of(family) -> Any:
    try:
        return family.name
    except KeyboardInterrupt:
        raise
    except BaseException:
        return "?"


def _reason(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


# A family is immutable, so its numeric verification is done once per object.
_verified: "weakref.WeakKeyDictionary[SolverFamily, str | None]" = weakref.WeakKeyDictionary()


def _verification(family: SolverFamily) -> str | None:
    """Why ``family`` fails its numeric checks (without the "family ... is refused" prefix),
    or None ([`odezoo.family.verify_family`][odezoo.family.verify_family])."""
    try:
        return _verified[family]
    except (KeyError, TypeError):
        pass
    reason = verify_family(family)
    try:
        _verified[family] = reason
    except TypeError:
        pass
    return reason


def _solver_class(family: SolverFamily) -> type:
    """The torchdiffeq solver class of ``family``, from its data: an embedded pair
    (``embedded_order`` set) is adaptive, every other family fixed-grid."""
    base, order, kind = ((EmbeddedRKSolver, family.embedded_order + 1, "adaptive") if family.adaptive
                         else (ParameterizedRKSolver, family.order, "fixed-grid"))
    return type(f"{family.name}_solver", (base,), {
        "family": family, "order": order,
        "__doc__": f"torchdiffeq {kind} solver for the {family.name!r} family.",
        "__module__": __name__,
    })


#: The process-wide registry behind ``odezoo.families()`` and torchdiffeq's method table.
registry = Registry()
