"""``register_tableau``: one constant tableau as a torchdiffeq method, in one call.

The method is an ordinary [`SolverFamily`][odezoo.SolverFamily] without parameters, offered through
the same plugin hook as every other family, so it gets every registration check.
"""
from __future__ import annotations

import warnings

from . import _torchdiffeq_bridge as bridge
from . import inputs
from .family import SolverFamily
from .hookspecs import hookimpl
from .registry import OdezooPluginWarning, registry
from .tableau import ButcherTableau

__all__ = ["register_tableau", "unregister_tableau", "TABLEAU_PLUGIN_PREFIX"]

#: Plugin name under which `register_tableau` registers a tableau.
TABLEAU_PLUGIN_PREFIX = "register_tableau:"


class _TableauPlugin:
    """The plugin behind `register_tableau`: offers one family through the usual hook."""

    def __init__(self, family: SolverFamily):
        self.family = family

    @hookimpl
    def odezoo_register_families(self, register):
        register(self.family)


def register_tableau(name: str, A, b, c, order: int, b_embedded=None, embedded_order: int | None = None,
                     b_mid=None, *, description: str = "", reference: str = "") -> SolverFamily:
    """Register one constant tableau as a torchdiffeq method and return its family.

    Without ``b_embedded`` it becomes a fixed-grid method (``options={"step_size": ...}``);
    with ``b_embedded`` and ``embedded_order`` an adaptive one (``rtol``/``atol``).  ``b_mid``
    gives dense-output weights at the half step (adaptive only).  The checks are those of any
    plugin's family (the tableau's own checks, orders from rooted trees, the name not taken
    and not one of torchdiffeq's methods); a refusal raises ``ValueError`` with the reason and
    registers nothing.  Remove it with `unregister_tableau`.
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"register_tableau: the name must be an identifier such as 'my_rk4', got {name!r}")
    where = f"register_tableau({name!r})"
    if (b_embedded is None) != (embedded_order is None):
        raise ValueError(f"{where}: give b_embedded and embedded_order together")
    order = inputs.whole_number(f"{where}: order", order, low=1)
    if embedded_order is not None:
        embedded_order = inputs.whole_number(f"{where}: embedded_order", embedded_order, low=1)
    if name in bridge.TORCHDIFFEQ_METHODS:
        raise ValueError(f"{where}: {name!r} is one of torchdiffeq's own methods; choose another name")
    existing = registry.families().get(name)
    if existing is not None:
        raise ValueError(f"{where}: the name is already registered by {existing.provider!r}; "
                         f"choose another name or unregister that one first")
    description = description or ("embedded pair" if b_embedded is not None else "Runge–Kutta method") \
        + " from odezoo.register_tableau"
    try:
        tableau = ButcherTableau(A, b, c, b_embedded, b_mid)
        family = SolverFamily.from_tableau(name, tableau, order, embedded_order,
                                           description=description, reference=reference)
    except ValueError as error:
        raise ValueError(f"{where}: {error}") from None

    plugin_name = TABLEAU_PLUGIN_PREFIX + name
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        registry.register_plugin(_TableauPlugin(family), name=plugin_name)
    ours = [w for w in caught if issubclass(w.category, OdezooPluginWarning) and repr(name) in str(w.message)]
    for w in caught:  # other plugins' messages are theirs: pass them on
        if w not in ours:
            warnings.warn(w.message, w.category, stacklevel=2)
    registered = registry.families().get(name)
    if registered is None or registered.provider != plugin_name:
        registry.unregister_plugin(plugin_name)
        reasons = [str(w.message) for w in ours]
        for reason in reasons:  # reported by the exception instead
            if reason in registry.problems:
                registry.problems.remove(reason)
        raise ValueError("; ".join(reasons) or f"register_tableau({name!r}) was refused")
    return registered


def unregister_tableau(name: str) -> None:
    """Remove a method added by `register_tableau` (it leaves torchdiffeq too)."""
    plugin_name = TABLEAU_PLUGIN_PREFIX + name
    if registry.pm.get_plugin(plugin_name) is None:
        raise ValueError(f"unregister_tableau({name!r}): no tableau of that name was registered with "
                         f"odezoo.register_tableau")
    registry.unregister_plugin(plugin_name)
