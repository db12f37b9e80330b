"""The only module that touches torchdiffeq's private solver table.

torchdiffeq (0.2.x) looks methods up in ``torchdiffeq._impl.odeint.SOLVERS``, a plain dict
that ``odeint_adjoint`` shares.  If that ever changes shape, this module fails loudly at
``import odezoo`` instead of letting ``method="rk4_uv"`` fail somewhere later.
"""
from __future__ import annotations

import importlib

import torch
import torchdiffeq

try:
    # import_module, not ``from torchdiffeq._impl import odeint``: the package re-exports
    # the function under the module's name.
    _odeint = importlib.import_module("torchdiffeq._impl.odeint")
    _adjoint = importlib.import_module("torchdiffeq._impl.adjoint")
    from torchdiffeq._impl.solvers import FixedGridODESolver
    from torchdiffeq._impl.misc import Perturb
    from torchdiffeq._impl.adjoint import find_parameters  # odeint_adjoint's default adjoint_params
except ImportError as error:  # pragma: no cover - depends on the installed torchdiffeq
    raise ImportError(
        f"odezoo needs torchdiffeq's fixed-grid solver internals (torchdiffeq 0.2.x); the "
        f"installed torchdiffeq {getattr(torchdiffeq, '__version__', '?')} does not have them: "
        f"{error}. Install a supported version: pip install 'torchdiffeq>=0.2.3,<0.3'") from error

SOLVERS = getattr(_odeint, "SOLVERS", None)
if not isinstance(SOLVERS, dict) or getattr(_adjoint, "SOLVERS", None) is not SOLVERS:
    raise ImportError(
        "odezoo cannot register its methods: torchdiffeq._impl.odeint.SOLVERS is no longer the "
        "dict shared with odeint_adjoint. Install a supported version: "
        "pip install 'torchdiffeq>=0.2.3,<0.3'")

try:  # adaptive (embedded-pair) methods subclass torchdiffeq's Runge–Kutta adaptive solver
    from torchdiffeq._impl.rk_common import RKAdaptiveStepsizeODESolver
    from torchdiffeq._impl.rk_common import _ButcherTableau as RKTableau
except ImportError as error:  # pragma: no cover - depends on the installed torchdiffeq
    raise ImportError(
        f"odezoo needs torchdiffeq's adaptive Runge–Kutta internals (RKAdaptiveStepsizeODESolver, "
        f"_ButcherTableau; torchdiffeq 0.2.x): {error}. Install a supported version: "
        f"pip install 'torchdiffeq>=0.2.3,<0.3'") from error
if tuple(getattr(RKTableau, "_fields", ())) != ("alpha", "beta", "c_sol", "c_error"):
    raise ImportError("odezoo cannot build adaptive methods: torchdiffeq's _ButcherTableau no longer has the "
                      "fields (alpha, beta, c_sol, c_error). Install a supported version: "
                      "pip install 'torchdiffeq>=0.2.3,<0.3'")

try:  # torchdiffeq's nextafter keeps the gradient of the time it nudges (perturb)
    from torchdiffeq._impl.misc import _nextafter as nextafter
except ImportError:  # pragma: no cover - depends on the installed torchdiffeq
    def nextafter(x1, x2):
        with torch.no_grad():
            out = torch.nextafter(x1, x2)
        return x1 + (out - x1).detach()

try:  # only a fast path needs these; without them every call goes through the wrapper
    from torchdiffeq._impl.misc import _PerturbFunc, _null_callback
except ImportError:  # pragma: no cover - depends on the installed torchdiffeq
    _PerturbFunc = _null_callback = None

#: torchdiffeq's own method names, captured before odezoo adds any.
TORCHDIFFEQ_METHODS = frozenset(SOLVERS)

__all__ = ["FixedGridODESolver", "Perturb", "find_parameters", "TORCHDIFFEQ_METHODS", "install", "uninstall", "installed",
           "unwrap_perturb", "is_null_callback", "nextafter", "RKAdaptiveStepsizeODESolver", "RKTableau"]


def unwrap_perturb(func):
    """The function inside torchdiffeq's ``_PerturbFunc`` wrapper, or None if ``func`` is not one.

    With ``perturb=Perturb.NONE`` the wrapper only casts ``t`` to the real dtype of ``y``
    (computing ``y.abs()`` to learn it) before calling what it wraps, so a solver that casts
    its stage times itself may call the wrapped function directly.
    """
    if _PerturbFunc is not None and type(func) is _PerturbFunc:
        return func.base_func
    return None


def is_null_callback(callback) -> bool:
    """Whether ``callback`` is torchdiffeq's do-nothing default."""
    return _null_callback is not None and callback is _null_callback


def install(name: str, solver_class: type) -> None:
    if name in TORCHDIFFEQ_METHODS:
        raise ValueError(f"{name!r} is one of torchdiffeq's own methods")
    SOLVERS[name] = solver_class


def uninstall(name: str) -> None:
    if name not in TORCHDIFFEQ_METHODS:
        SOLVERS.pop(name, None)


def installed(name: str):
    return SOLVERS.get(name)
