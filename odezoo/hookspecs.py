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
    whenever a plugin is registered or unregistered.  Call ``register(family)`` once for
    each :class:`odezoo.SolverFamily` the plugin provides.  ``register`` checks each
    family — its tableau at the defaults (and at each named member) must have the declared
    order and stages, its name must be new and must not shadow a torchdiffeq method — and
    skips a family it refuses with an ``odezoo.OdezooPluginWarning``.  An exception
    escaping this hook skips the whole plugin with a warning; other plugins still load.
    """
