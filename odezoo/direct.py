"""Fixed-grid solves prepared ahead of time: the path ``ODEBlock`` takes under ``torch.compile``.

torchdiffeq's front end (input checks, ``float(t[0])``, ``.item()``, ``.tolist()``,
``dtype.to_real``) breaks a compiled graph about twenty times per solve.  For a solver whose
coefficients are fixed numbers — a [`SolverSpec`][odezoo.SolverSpec] of a registered fixed-grid
family with scalar parameters — everything that needs the host can be done once, before
compiling, from the values of ``t``: `DirectSolve` validates ``t`` through the one door
([`odezoo.inputs.times`][odezoo.inputs.times]), builds the eager path's own grid (the spec's ``n_steps``,
``step_size`` or output grid, decreasing ``t`` handled as torchdiffeq does: negated times and a
negated function), its plan and each step's coefficients.  A call then runs the *same* step
code as the eager stepper (`odezoo.stepper.straight_line`) with the same stage times and
the same interpolation — plain tensor operations that unroll into one graph — so its numbers
are the eager path's, and what the eager path refuses it refuses, with the same message.
"""
from __future__ import annotations

import torch

from . import inputs
from ._torchdiffeq_bridge import FixedGridODESolver
from .plan import check_coefficient_size, coefficient_limit, float_plan
from .spec import SolverSpec, uniform_grid
from .step_warning import output_grid
from .stepper import scaled_terms, straight_line
from .timegrid import node_times

__all__ = ["DirectSolve", "direct_solvable", "solve_direct"]

# Plain dicts, not dtype.to_real() or an lru_cache call: both are foreign to a torch.compile graph.
_REAL = {torch.complex32: torch.float16, torch.complex64: torch.float32, torch.complex128: torch.float64}
_LIMITS = {dtype: coefficient_limit(dtype) for dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64)}


def direct_solvable(spec: SolverSpec) -> bool:
    """Whether `DirectSolve` can run ``spec``: a registered fixed-grid family with scalar
    parameters (so its checked tableau is known).  Anything else — torchdiffeq's own methods,
    embedded pairs, per-sample or differentiable parameters — runs through ``odeint``."""
    return spec.tableau is not None and not spec.tableau.embedded


class DirectSolve:
    """One fixed-grid solve of ``spec`` over the times ``t``, prepared on the host.

    Building it checks ``t`` (finite, strictly monotone, at least two times) and the spec, and
    computes the grid, the plan and every step's coefficients as Python numbers; calling it
    with ``(func, y0)`` returns the states at the times ``t`` (first dimension), equal to
    ``spec.solve(func, y0, t)`` — the same operations in the same order.
    """

    def __init__(self, spec: SolverSpec, t):
        if not direct_solvable(spec):
            raise ValueError(f"a direct solve needs a fixed-grid family with scalar parameters, got {spec.label()}; "
                             f"other solvers run through odezoo.odeint")
        t = inputs.times(f"{spec.method}", t, minimum=2)
        self.spec = spec
        self.t_dtype = t.dtype
        values = t.tolist()
        self.reversed = values[1] < values[0]
        forward = -t if self.reversed else t  # torchdiffeq integrates a decreasing t as -t, increasing
        self.t_values = forward.tolist()
        if spec.n_steps is not None:
            grid_of = uniform_grid(int(spec.n_steps))
            grid = -grid_of(None, None, t) if self.reversed else grid_of(None, None, t)
        elif spec.step_size is not None:
            grid = FixedGridODESolver._grid_constructor_from_step_size(spec.step_size)(None, None, forward)
        else:
            grid = output_grid(spec.method)(None, None, forward)
        if not (grid[0] == forward[0] and grid[-1] == forward[-1]):  # the eager stepper's own check
            raise ValueError(f"the grid runs from {float(grid[0])!r} to {float(grid[-1])!r}, but it must start and end "
                             f"at t[0] and t[-1]")
        self.grid_values = grid.tolist()
        family = spec.family
        self.plan = float_plan(family, tuple(float(spec.params.get(p, family.defaults[p])) for p in family.params))
        steps = {}
        self.steps = []
        for t0f, t1f in zip(self.grid_values[:-1], self.grid_values[1:]):
            size = t1f - t0f
            if size not in steps:
                steps[size] = straight_line(*scaled_terms(self.plan, size))
            self.steps.append(steps[size])
        # which output times each step produces: (index j, kind) with kind 0 (= y0), 1 (= y1) or 2 (interpolated)
        self.outputs = []
        j, n_out = 1, len(self.t_values)
        for n, (t0f, t1f) in enumerate(zip(self.grid_values[:-1], self.grid_values[1:])):
            produced = []
            while j < n_out and t1f >= self.t_values[j]:
                kind = 0 if self.t_values[j] == t0f else 1 if self.t_values[j] == t1f else 2
                produced.append((j, kind))
                j += 1
            self.outputs.append(produced)

    def __call__(self, func, y0: torch.Tensor) -> torch.Tensor:
        dtype = y0.dtype
        stage_dtype = _REAL.get(dtype, dtype)
        limit = _LIMITS.get(stage_dtype)
        if self.plan.largest > (coefficient_limit(stage_dtype) if limit is None else limit):  # as make_plan refuses it
            spec = self.spec
            check_coefficient_size(spec.method, self.plan.largest, stage_dtype,
                                   {k: float(v) for k, v in spec.params.items()})
        device = y0.device
        grid = torch.tensor(self.grid_values, dtype=self.t_dtype, device=device)
        times = torch.tensor(self.t_values, dtype=self.t_dtype, device=device)
        t0s, t1s = grid[:-1], grid[1:]
        dts = t1s - t0s
        t0_list, t1_list = t0s.unbind(0), t1s.unbind(0)
        columns = [node_times(node, t0s, t1s, dts, t0_list, stage_dtype) for node in self.plan.nodes]
        step_times = list(zip(*columns))
        f = _reversed(func) if self.reversed else func
        solution = [y0]
        for n, (step, coefficients) in enumerate(self.steps):
            y1, f0 = step(f, y0, step_times[n], coefficients, dtype)
            for j, kind in self.outputs[n]:
                if kind == 0:
                    solution.append(y0)
                elif kind == 1:
                    solution.append(y1)
                else:  # linear interpolation, as the eager stepper's
                    slope = (times[j] - t0_list[n]) / (t1_list[n] - t0_list[n])
                    solution.append(y0 + slope * (y1 - y0))
            y0 = y1
        return torch.stack(solution)


def _reversed(func):
    """``func`` for a decreasing ``t``, as torchdiffeq's ``_ReverseFunc(mul=-1)`` calls it."""
    def call(t, y):
        return -1.0 * func(-t, y)
    return call


def solve_direct(spec: SolverSpec, func, y0: torch.Tensor, t) -> torch.Tensor:
    """The states at the times ``t`` (first dimension), equal to ``spec.solve(func, y0, t)``:
    ``DirectSolve(spec, t)(func, y0)``."""
    return DirectSolve(spec, t)(func, y0)
