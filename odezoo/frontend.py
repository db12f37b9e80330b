"""``odezoo.odeint``: torchdiffeq's ``odeint``, with a short front end for odezoo's fixed-grid families.

torchdiffeq's ``odeint`` normalizes every input before it solves: tuple states, decreasing
times, tolerance and norm options, the device of ``t``, a perturbation wrapper around the
function and its callbacks — about 30 µs of small operations per call, which on a cheap
function is several percent of the solve.  For the common case none of that changes
anything, so `odeint` checks that it *is* the common case and hands the inputs straight
to the family's solver:

* ``method`` is a registered fixed-grid odezoo family, ``event_fn`` is None;
* ``y0`` is one floating-point tensor; ``t`` a 1-D floating tensor on ``y0``'s device, without
  a gradient, with at least two strictly increasing values;
* ``options`` holds only the family's parameters, ``step_size``, a ``grid_constructor`` made
  by odezoo (``SolverSpec(n_steps=...)``), ``interp='linear'`` and ``perturb=False``.

For every odezoo method (fixed-grid or adaptive) ``t`` first goes through the one door
([`odezoo.inputs.time_values`][odezoo.inputs.time_values]: finite, strictly monotone), so a NaN, an infinite end time
or a repeated time is the same ``ValueError`` on every path.  Anything else — torchdiffeq's own
methods, adaptive families, tuples, decreasing times,
``perturb``, cubic interpolation, your own grid constructor — goes to ``torchdiffeq.odeint``
unchanged.  A ``t`` of shape ``(T, batch)`` — per-sample times, which torchdiffeq does not take —
goes through [`odezoo.inputs.sample_times`][odezoo.inputs.sample_times] to the method's own ``integrate_per_sample``.  Both paths run the same solver on the same grid, so the results are identical,
bit for bit (``tests/test_frontend.py``).
"""
from __future__ import annotations

import weakref

import torch
import torchdiffeq

from . import _torchdiffeq_bridge as bridge
from . import inputs
from .adaptive import EmbeddedRKSolver
from .step_warning import output_grid
from .stepper import ParameterizedRKSolver

__all__ = ["odeint"]

_EASY_OPTIONS = ("step_size", "grid_constructor", "interp", "perturb")


def _short_path(solver, y0, t, values, options) -> bool:
    """Whether the short path applies (``values``: ``t``'s values, checked by the door)."""
    if _kind(solver) != "fixed":
        return False
    if type(y0) is not torch.Tensor or not y0.is_floating_point():
        return False
    if len(values) < 2 or values[1] < values[0] or t.requires_grad or t.device != y0.device:
        return False
    if options:
        params = solver.family.params
        for key, value in options.items():
            if key in params or key == "step_size":
                continue
            if key == "grid_constructor" and getattr(value, "odezoo_grid_key", None) is not None:
                continue
            if (key == "interp" and value == "linear") or (key == "perturb" and value is False):
                continue
            return False
    return True


#: solver class -> "fixed", "adaptive" or "" (not odezoo's); issubclass on torchdiffeq's ABCs is slow
_KINDS: "weakref.WeakKeyDictionary[type, str]" = weakref.WeakKeyDictionary()


def _kind(solver) -> str:
    if not isinstance(solver, type):
        return ""
    kind = _KINDS.get(solver)
    if kind is None:
        kind = _KINDS[solver] = ("fixed" if issubclass(solver, ParameterizedRKSolver) else
                                 "adaptive" if issubclass(solver, EmbeddedRKSolver) else "")
    return kind


def odeint(func, y0, t, *, rtol=1e-7, atol=1e-9, method=None, options=None, event_fn=None):
    """Integrate ``dy/dt = func(t, y)`` from ``y0`` at ``t[0]`` to every time in ``t`` — the
    signature, behaviour and results of ``torchdiffeq.odeint``.

    For an odezoo fixed-grid family in the common case (see the module docstring) the
    family's solver runs without torchdiffeq's input normalization, which changes no result
    and saves its per-call cost; everything else is ``torchdiffeq.odeint`` itself.
    """
    solver = bridge.installed(method) if isinstance(method, str) else None
    if isinstance(t, torch.Tensor) and t.ndim == 2:
        return _per_sample_times(solver, func, y0, t, method, options, event_fn, rtol, atol)
    if _kind(solver) and isinstance(t, torch.Tensor) and t.ndim == 1 and t.is_floating_point():
        values = inputs.time_values(f"odeint(method={method!r})", t.tolist())  # the one door for t
        if event_fn is None and _short_path(solver, y0, t, values, options):
            return solver(func=func, y0=y0, rtol=rtol, atol=atol, **(options or {})).integrate(t, values)
    return torchdiffeq.odeint(func, y0, t, rtol=rtol, atol=atol, method=method, options=options, event_fn=event_fn)


def _per_sample_times(solver, func, y0, t, method, options, event_fn, rtol, atol):
    """``t`` of shape (T, batch): each sample integrated over its own times, in one batched solve
    (fixed grid: [`odezoo.stepper.ParameterizedRKSolver.integrate_per_sample`][odezoo.stepper.ParameterizedRKSolver.integrate_per_sample]; embedded pairs,
    each sample with its own error control: `odezoo.adaptive.EmbeddedRKSolver.integrate_per_sample`)."""
    where = f"odeint(method={method!r})"
    kind = _kind(solver)
    if not kind:
        raise ValueError(f"{where}: per-sample times (t of shape (T, batch)) need one of odezoo's methods; "
                         f"{method!r} is not one of odezoo's families. Use a family such as 'rk4_uv' or 'tsit5', "
                         f"or loop over the samples")
    if event_fn is not None or not isinstance(y0, torch.Tensor):
        raise ValueError(f"{where}: per-sample times need one tensor state y0 of shape (batch, ...) and no event_fn")
    if kind == "adaptive":
        inputs.sample_times(where, t, y0)
        options = dict(options or {})
        stats = options.pop("stats", None)
        unsupported = sorted(set(options) & {"step_t", "jump_t", "norm"})
        if unsupported:
            raise ValueError(f"{where}: with per-sample times {unsupported} are not supported (each sample has its own "
                             f"times and its own RMS error norm)")
        if stats is not None and not isinstance(stats, dict):
            raise ValueError(f"{where}: options['stats'] must be a dict to fill with per-sample counts, got {stats!r}")
        solve = solver(func=func, y0=y0, rtol=rtol, atol=atol, norm=None, **options)
        out = solve.integrate_per_sample(t)
        if stats is not None:
            stats.update(solve.stats)
        return out
    inputs.sample_times(where, t, y0)
    options = dict(options or {})
    n_steps = None
    grid = options.pop("grid_constructor", None)
    if grid is not None:
        key = getattr(grid, "odezoo_grid_key", None)
        if key is None or key[0] != "n":
            raise ValueError(f"{where}: with per-sample times the grid is n equal steps per sample (SolverSpec("
                             f"n_steps=...)) or one step per interval between output times (no grid option); a "
                             f"grid_constructor of your own cannot see each sample's times")
        n_steps = key[1]
    if options.get("step_size") is not None:
        raise ValueError(f"{where}: with per-sample times every sample takes the same number of steps, so give "
                         f"n_steps (SolverSpec(n_steps=...)) instead of step_size: a step size would give each "
                         f"sample a different number of steps")
    if options.get("perturb") or options.get("interp", "linear") != "linear":
        raise ValueError(f"{where}: per-sample times support interp='linear' and perturb=False only")
    options.pop("perturb", None)
    options.pop("interp", None)
    if grid is None:  # one step per interval between output times, said as for a shared t
        grid = output_grid(method, per_sample=True)
        grid(func, y0, t)
    return solver(func=func, y0=y0, rtol=1e-7, atol=1e-9, grid_constructor=grid,
                  **options).integrate_per_sample(t, n_steps)
