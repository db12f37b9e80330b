"""odezoo: parameterized Runge–Kutta solver families for neural ODEs.

``import odezoo`` loads the solver-family plugins and registers every family as a
torchdiffeq fixed-grid method::

    import odezoo
    from torchdiffeq import odeint
    y = odeint(f, y0, t, method="rk4_uv", options={"u": 0.3, "v": 0.6, "step_size": 0.05})

``odezoo.odeint`` is the same function with a shorter front end for odezoo's families
(identical results; see `odezoo.frontend`).
"""
from __future__ import annotations

import sys as _sys

__version__ = "0.1.0"

# `python -m odezoo ...` imports this package before it runs odezoo/__main__.py.  While Python is
# still looking for the module (sys.argv[0] == "-m"), odezoo_cli (standard library only) answers
# what parsing alone answers (--help of the program and of every command, --version, a usage
# error) and exits, so torch is never imported for it; a command that runs goes on from here.
if _sys.argv[:1] == ["-m"]:
    from odezoo_cli._app import answer_before_import

    answer_before_import("odezoo")

from .family import Constraint, DistributionSpec, SolverFamily, SINGULAR_TOL
from .hookspecs import hookimpl, hookspec
from .tableau import ButcherTableau
from .registry import BUILTIN_FAMILY_MODULES, ENTRY_POINT_GROUP, OdezooPluginWarning, registry as _registry
from .step_warning import OdezooStepWarning
from .frontend import odeint
from .adjoint import odeint_adjoint
from .metasolver import (EnsembleSolver, FixedSolver, MetaSolver, PerSampleSmoothingSolver, SmoothingSolver,
                         SwitchingSolver)
from .spec import SolverSpec
from .odeblock import ODEBlock, OdezooCompileWarning, ensemble_predict, solver_blocks, using_solver
from .sampling import Cauchy, Choice, Normal, ParameterDistribution, Uniform
from .tableau_methods import register_tableau, unregister_tableau

# Loading the built-ins imports the package odezoo.families (one module per family), which binds
# the attribute ``odezoo.families`` to that package; the function below takes the name back, so
# ``odezoo.families()`` is the registry query and ``from odezoo.families import rk2_u`` the module.
_registry.load(BUILTIN_FAMILY_MODULES)  # imports the odezoo.families package: ``families`` is bound below


def families() -> dict[str, SolverFamily]:
    """All registered families, by name."""
    return _registry.families()


def get_family(name: str) -> SolverFamily:
    """The family called ``name``; ``ValueError`` listing the known names otherwise."""
    return _registry.get(name)


def register_plugin(plugin, name: str | None = None) -> str:
    """Register a plugin object (module or instance with ``@odezoo.hookimpl`` methods)."""
    return _registry.register_plugin(plugin, name=name)


def unregister_plugin(plugin) -> None:
    """Unregister a plugin (the object or its name); its families leave torchdiffeq too."""
    _registry.unregister_plugin(plugin)


def plugin_manager():
    """The underlying ``pluggy.PluginManager``."""
    return _registry.pm


def plugin_problems() -> list[str]:
    """Messages about plugins and families that were refused since import."""
    return list(_registry.problems)



__all__ = [
    "ButcherTableau", "Constraint", "DistributionSpec", "SolverFamily", "SINGULAR_TOL",
    "ENTRY_POINT_GROUP", "OdezooPluginWarning", "OdezooStepWarning", "OdezooCompileWarning",
    "families", "get_family", "register_plugin", "unregister_plugin", "plugin_manager",
    "plugin_problems", "hookimpl", "hookspec", "odeint", "odeint_adjoint",
    "MetaSolver", "FixedSolver", "SwitchingSolver", "SmoothingSolver", "PerSampleSmoothingSolver",
    "EnsembleSolver", "SolverSpec", "ODEBlock", "ensemble_predict", "solver_blocks", "using_solver",
    "Normal", "Uniform", "Cauchy", "Choice", "ParameterDistribution",
    "register_tableau", "unregister_tableau",
]
