"""The hooks odezoo calls.  Every plugin — built-in or third-party — implements these."""
from __future__ import annotations

from typing import Callable

import pluggy

PROJECT_NAME = "odezoo"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def odezoo_register_families(register: Callable[["SolverFamily"], None]) -> None:  # noqa: F821
    """Register solver families.

    Called once for each plugin when plugins are (re)loaded: at ``import odezoo`` and
    whenever a plugin is registered or unregistered; built-in plugins first, then the others
    in registration order (``tryfirst``/``trylast`` change nothing; ``hookwrapper``/``wrapper``
    implementations are refused).  Call ``register(family)`` once for each
    [`odezoo.SolverFamily`][odezoo.SolverFamily] the plugin provides; the return value is ignored.
    ``register`` checks each family — its tableau at the defaults, at each named member and
    across its sampling support must have the declared order and stages, its name must be new
    and must not shadow a torchdiffeq method — and skips a family it refuses (or whose checks
    raise) with an ``odezoo.OdezooPluginWarning``.  An exception escaping this hook skips the
    whole plugin with a warning; other plugins still load.
    """
