"""Fixed-grid Runge–Kutta solves in plain tensor operations: the path ODEBlock takes under
``torch.compile``.

torchdiffeq's front end (input checks, ``float(t[0])``, ``.item()``, ``.tolist()``,
``dtype.to_real``) breaks a compiled graph about twenty times per solve.  For a solver whose
coefficients are fixed numbers on a uniform grid — a :class:`~odezoo.SolverSpec` of a
registered family with scalar parameters and ``n_steps`` — none of that is needed: the
stages unroll into one graph.  The coefficients come from the spec (checked when it was
built), so a compiled model recompiles only when its solver changes.

Results agree with ``odeint`` on the same spec to floating-point round-off (the step
arithmetic is done in tensors of the state's dtype instead of Python floats); see
``tests/test_compile.py``.
"""
from __future__ import annotations

import torch

from .plan import check_coefficient_size, coefficient_limit
from .spec import SolverSpec

__all__ = ["direct_solvable", "solve_direct"]

# Plain dicts, not dtype.to_real() or an lru_cache call: both are foreign to a torch.compile graph.
_REAL = {torch.complex32: torch.float16, torch.complex64: torch.float32, torch.complex128: torch.float64}
_LIMITS = {dtype: coefficient_limit(dtype) for dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64)}


def direct_solvable(spec: SolverSpec) -> bool:
    """Whether :func:`solve_direct` can run ``spec``: a registered family with scalar
    parameters (so its checked coefficients are known) on ``n_steps`` uniform steps."""
    return spec.coefficients is not None and spec.n_steps is not None


def solve_direct(spec: SolverSpec, func, y0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The states at the times ``t`` (first dimension), like ``odeint(func, y0, t, ...)``
    with ``spec``'s method and options, integrating ``spec.n_steps`` uniform steps over
    ``[t[0], t[-1]]`` and interpolating linearly to inner output times, as torchdiffeq does."""
    if not direct_solvable(spec):
        raise ValueError(f"solve_direct needs a family solver with scalar parameters and n_steps, got {spec.label()}")
    A, b, c = spec.coefficients
    largest = max(abs(x) for x in (*(x for row in A for x in row), *b, *c))
    dtype = _REAL.get(y0.dtype, y0.dtype)
    limit = _LIMITS.get(dtype)
    if largest > (coefficient_limit(dtype) if limit is None else limit):  # as odeint refuses it (plan.make_plan)
        check_coefficient_size(spec.method, largest, dtype, {k: float(v) for k, v in spec.params.items()})
    t = t.to(y0.dtype) if y0.is_floating_point() else t
    grid = torch.linspace(t[0], t[-1], int(spec.n_steps) + 1, dtype=t.dtype, device=t.device)
    grid = torch.cat([t[:1], grid[1:-1], t[-1:]])
    states = [y0]
    y = y0
    for n in range(int(spec.n_steps)):
        t0, dt = grid[n], grid[n + 1] - grid[n]
        ks = []
        for i in range(len(c)):
            y_stage = y
            for j in range(i):
                if A[i][j] != 0.0:
                    y_stage = y_stage + (A[i][j] * dt) * ks[j]
            ks.append(func(t0 + c[i] * dt if c[i] != 0.0 else t0, y_stage))
        for i, weight in enumerate(b):
            if weight != 0.0:
                y = y + (weight * dt) * ks[i]
        states.append(y)
    if len(t) == 2:
        return torch.stack([states[0], states[-1]])
    return _interpolate(grid, torch.stack(states), t)


def _interpolate(grid: torch.Tensor, states: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Linear interpolation of grid states to the output times (torchdiffeq's default)."""
    index = torch.searchsorted(grid, t.contiguous(), right=True).clamp(1, len(grid) - 1)
    t0, t1 = grid[index - 1], grid[index]
    weight = ((t - t0) / (t1 - t0)).reshape(-1, *([1] * (states.ndim - 1)))
    return states[index - 1] + weight * (states[index] - states[index - 1])
