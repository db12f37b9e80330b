"""One generic explicit Runge–Kutta stepper for every registered family.

torchdiffeq gets one subclass of :class:`ParameterizedRKSolver` per family (see
``registry.py``).  The tableau is turned into a *plan* once per solve: Python floats when
the parameters are plain numbers (so every stage is a single fused ``torch.add(..,
alpha=..)``), tensors when a parameter needs a gradient or differs per sample.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from ._torchdiffeq_bridge import FixedGridODESolver, Perturb
from .family import SolverFamily

__all__ = ["ParameterizedRKSolver", "StepPlan", "make_plan"]

_TORCHDIFFEQ_OPTIONS = ("step_size", "grid_constructor", "interp", "perturb")
_PASSED_BY_TORCHDIFFEQ = ("rtol", "atol", "norm")

Coef = Any  # float, or a tensor (0-dim or broadcastable per sample)


@dataclass(frozen=True)
class StepPlan:
    """Non-zero coefficients of one tableau, ready for stepping.

    rows[i] lists (j, a_ij) for stage i ≥ 1; weights lists (i, b_i); nodes[i] is c_i.
    Entries are floats or tensors.  ``batch`` is the per-sample size, or None.
    """

    rows: tuple[tuple[tuple[int, Coef], ...], ...]
    weights: tuple[tuple[int, Coef], ...]
    nodes: tuple[Coef, ...]
    batch: int | None = None

    @property
    def stages(self) -> int:
        return len(self.nodes)


def _nonzero(entries):
    return tuple((j, a) for j, a in enumerate(entries) if not (isinstance(a, float) and a == 0.0))


def make_plan(family: SolverFamily, params: dict[str, Any], y0: torch.Tensor) -> StepPlan:
    """Validate ``params`` for ``family`` and precompute the coefficients for ``y0``."""
    resolved = family.resolve(params)
    tensors = {}
    for name, value in resolved.items():
        if isinstance(value, torch.Tensor):
            if value.ndim == 0 and not value.requires_grad:
                resolved[name] = float(value)
            elif value.ndim in (0, 1):
                tensors[name] = value
            else:
                raise ValueError(f"{family.name}: parameter {name} must be a number, a 0-dim tensor or "
                                 f"a tensor of shape (batch,); got shape {tuple(value.shape)}")
        elif not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ValueError(f"{family.name}: parameter {name} must be a number or a tensor, got {value!r}")

    if not tensors:
        tableau = family.tableau(**resolved)
        A, b, c = tableau.A.tolist(), tableau.b.tolist(), tableau.c.tolist()
        return StepPlan(rows=tuple(_nonzero(A[i][:i]) for i in range(1, tableau.stages)),
                        weights=_nonzero(b), nodes=tuple(c))

    family.check(resolved)
    batch = None
    for name, value in tensors.items():
        if value.ndim == 1:
            if batch is not None and value.shape[0] != batch:
                raise ValueError(f"{family.name}: per-sample parameters disagree on the batch size "
                                 f"({batch} vs {value.shape[0]} for {name})")
            batch = value.shape[0]
    if batch is not None and (y0.ndim == 0 or y0.shape[0] != batch):
        raise ValueError(
            f"{family.name}: per-sample parameters of shape ({batch},) apply along dim 0 of y0, but "
            f"the state has shape {tuple(y0.shape)}. Pass one tensor y0 whose dim 0 is the batch "
            f"(tuples of states and odeint_adjoint's augmented state are flattened, so per-sample "
            f"parameters need plain odeint with a tensor state).")
    broadcast = (batch,) + (1,) * (y0.ndim - 1) if batch is not None else None
    for name, value in tensors.items():
        value = value.to(dtype=y0.dtype, device=y0.device)
        resolved[name] = value.reshape(broadcast) if value.ndim == 1 else value
    A, b, c = family.coefficients(resolved)
    s = len(c)
    return StepPlan(rows=tuple(_nonzero(A[i][:i]) for i in range(1, s)),
                    weights=_nonzero(b), nodes=tuple(c), batch=batch)


def _combine(base, terms, ks, dt):
    """``base + Σ (coef·dt)·k_j`` (just the sum when ``base`` is None), using one fused
    tensor operation per term: ``add(alpha=float)`` or ``addcmul`` for tensor coefficients."""
    out = None
    for j, coef in terms:
        scaled = coef * dt
        k = ks[j]
        if out is None:
            if base is None:
                out = k * scaled
            elif isinstance(scaled, float):
                out = torch.add(base, k, alpha=scaled)
            else:
                out = torch.addcmul(base, k, scaled)
        elif isinstance(scaled, float):
            out.add_(k, alpha=scaled)
        else:
            out.addcmul_(k, scaled)
    if out is None:
        return base if base is not None else torch.zeros_like(ks[0])
    return out


class ParameterizedRKSolver(FixedGridODESolver):
    """torchdiffeq fixed-grid solver for one :class:`SolverFamily` (set on subclasses).

    Options: the family's parameters (floats, 0-dim tensors — differentiable — or tensors
    of shape ``(batch,)`` applied along dim 0 of ``y0``) plus torchdiffeq's fixed-grid
    options ``step_size``, ``grid_constructor``, ``interp`` and ``perturb``.
    """

    family: SolverFamily
    order: int

    def __init__(self, func, y0, step_size=None, grid_constructor=None, interp="linear",
                 perturb=False, **options):
        family = self.family
        params = {name: options.pop(name) for name in family.params if name in options}
        unknown = sorted(set(options) - set(_PASSED_BY_TORCHDIFFEQ))
        if unknown:
            raise ValueError(f"method {family.name!r}: unknown option(s) {unknown}; it takes its "
                             f"parameters {list(family.params)} and {list(_TORCHDIFFEQ_OPTIONS)}")
        if step_size is not None:
            size = float(step_size)
            if not (math.isfinite(size) and size > 0):
                raise ValueError(f"method {family.name!r}: step_size must be a positive finite "
                                 f"number, got {step_size!r}")
        if interp not in ("linear", "cubic"):
            raise ValueError(f"method {family.name!r}: interp must be 'linear' or 'cubic', got {interp!r}")
        super().__init__(func, y0, step_size=step_size, grid_constructor=grid_constructor,
                         interp=interp, perturb=perturb, **options)
        self.plan = make_plan(family, params, y0)

    # -- one step --------------------------------------------------------------
    def _stages(self, func, y0, times, dt):
        """All stage derivatives k_1..k_s; ``times[i]`` is stage i's time, ``dt`` a float or tensor."""
        plan = self.plan
        ks = [func(times[0], y0, perturb=Perturb.NEXT if self.perturb else Perturb.NONE)]
        for i, terms in enumerate(plan.rows, start=1):
            y_i = _combine(y0, terms, ks, dt)
            node = plan.nodes[i]
            if self.perturb and isinstance(node, float) and node == 1.0:
                ks.append(func(times[i], y_i, perturb=Perturb.PREV))
            else:
                ks.append(func(times[i], y_i))
        return ks

    def _step_func(self, func, t0, dt, t1, y0):
        times = [t0 if _is(node, 0.0) else t1 if _is(node, 1.0) else t0 + node * dt
                 for node in self.plan.nodes]
        ks = self._stages(func, y0, times, dt)
        return _combine(None, self.plan.weights, ks, dt), ks[0]

    # -- the whole grid --------------------------------------------------------
    def integrate(self, t):
        """Same contract and results as ``FixedGridODESolver.integrate``; the grid's
        bookkeeping runs on Python floats (one host sync per solve, none per step) unless
        the time grid itself needs a gradient."""
        time_grid = self.grid_constructor(self.func, self.y0, t)
        assert time_grid[0] == t[0] and time_grid[-1] == t[-1]
        grid_values = time_grid.tolist()
        t_values = t.tolist()
        plan = self.plan
        differentiable_time = time_grid.requires_grad

        t0s, t1s = time_grid[:-1], time_grid[1:]
        dts = t1s - t0s
        # Stage times of every step for scalar nodes, in one tensor op per node.
        columns = [None if not isinstance(node, float)
                   else t0s.unbind(0) if node == 0.0
                   else t1s.unbind(0) if node == 1.0
                   else (t0s + node * dts).unbind(0)
                   for node in plan.nodes]
        t0_list, t1_list, dt_list = t0s.unbind(0), t1s.unbind(0), dts.unbind(0)

        solution = [self.y0]
        j = 1
        y0 = self.y0
        for n in range(len(grid_values) - 1):
            t0, t1, dt = t0_list[n], t1_list[n], dt_list[n]
            t0f, t1f = grid_values[n], grid_values[n + 1]
            coef_dt = dt if differentiable_time else t1f - t0f
            times = [column[n] if column is not None else t0 + node * dt
                     for column, node in zip(columns, plan.nodes)]
            self.func.callback_step(t0, y0, dt)
            ks = self._stages(self.func, y0, times, coef_dt)
            y1 = _combine(y0, plan.weights, ks, coef_dt)
            while j < len(t_values) and t1f >= t_values[j]:
                solution.append(self._interpolate(t0, t1, t0f, t1f, y0, y1, ks[0], t[j], t_values[j]))
                j += 1
            y0 = y1
        return torch.stack(solution)

    def _interpolate(self, t0, t1, t0f, t1f, y0, y1, f0, t_j, t_jf):
        if self.interp == "linear":
            if t_jf == t0f:
                return y0
            if t_jf == t1f:
                return y1
            slope = (t_j - t0) / (t1 - t0)
            return y0 + slope * (y1 - y0)
        f1 = self.func(t1, y1)
        return self._cubic_hermite_interp(t0, y0, f0, t1, y1, f1, t_j)


def _is(node, value: float) -> bool:
    return isinstance(node, float) and node == value
