"""``ODEBlock``: an ``nn.Module`` that integrates a function with a MetaSolver."""
from __future__ import annotations

import contextlib
from typing import Sequence

import torch
from torch import nn

from .direct import direct_solvable, solve_direct
from .metasolver import MetaSolver
from .sampling import validate_probabilities
from .spec import SolverSpec

__all__ = ["ODEBlock", "solver_blocks", "using_solver", "ensemble_predict"]


class _Counted(nn.Module):
    """Calls ``func`` and counts evaluations (kept out of the module tree on purpose)."""

    def __init__(self, func, block):
        super().__init__()
        object.__setattr__(self, "func", func)
        object.__setattr__(self, "block", block)

    def forward(self, t, y):
        if not torch.compiler.is_compiling():  # a Python counter would force a recompile per call
            self.block.nfe += 1
        return self.func(t, y)


class ODEBlock(nn.Module):
    """Integrates ``dy/dt = func(t, y)`` over ``t`` and returns the final state.

    Args:
        func: an ``nn.Module`` (or callable) ``func(t, y)``.
        solver: a :class:`MetaSolver` (may be shared by several blocks) or a
            :class:`SolverSpec` (wrapped in ``MetaSolver.fixed``).
        t: integration times; the default (0, 1) integrates over the unit interval.
        adjoint: use ``odeint_adjoint`` (memory O(1) in the number of steps).
        return_trajectory: return the states at every time in ``t`` instead of the last.

    ``nfe`` counts function evaluations since the last reset (``block.nfe = 0``); it does
    not count inside ``torch.compile``d code.

    Under ``torch.compile`` a fixed-step family solver (scalar parameters, ``n_steps``) runs
    through :func:`odezoo.direct.solve_direct`, plain tensor operations that compile into one
    graph, instead of torchdiffeq's front end, which breaks the graph about twenty times per
    solve; results agree with the ``odeint`` path to round-off.  ``direct=True`` takes that
    path in eager mode too, ``direct=False`` never.
    """

    def __init__(self, func, solver: MetaSolver | SolverSpec, t: Sequence[float] | torch.Tensor = (0.0, 1.0),
                 adjoint: bool = False, return_trajectory: bool = False, direct: bool | None = None):
        super().__init__()
        self.func = func
        self.solver = MetaSolver.of(solver)
        if adjoint and getattr(self.solver, "per_sample", False):
            raise ValueError("ODEBlock: adjoint=True cannot be used with MetaSolver.smoothing(per_sample=True) "
                             "(odeint_adjoint flattens the batch the per-sample parameters apply to); use "
                             "adjoint=False, or per_sample=False")
        t = torch.as_tensor(t, dtype=torch.get_default_dtype())
        if t.ndim != 1 or len(t) < 2:
            raise ValueError(f"ODEBlock: t must hold at least two times, got {t.tolist()}")
        self.register_buffer("t", t, persistent=False)
        self.adjoint = adjoint
        self.return_trajectory = return_trajectory
        self.direct = direct
        self.nfe = 0
        object.__setattr__(self, "_counted", _Counted(func, self))  # not a submodule

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.t.to(dtype=x.dtype) if x.is_floating_point() else self.t
        spec = self._direct_spec()
        if spec is not None:
            out = solve_direct(spec, self._counted, x, t)
            return out if self.return_trajectory else out[-1]
        kwargs = {}
        if self.adjoint:
            kwargs["adjoint_params"] = tuple(p for p in self.func.parameters()) if isinstance(self.func, nn.Module) else ()
        out = self.solver.solve(self._counted, x, t, adjoint=self.adjoint, **kwargs)
        return out if self.return_trajectory else out[-1]

    def _direct_spec(self) -> SolverSpec | None:
        """The spec to solve with :func:`solve_direct`, or None for the ``odeint`` path."""
        if self.adjoint or self.direct is False or not (self.direct or torch.compiler.is_compiling()):
            return None
        specs = self.solver.active_specs()
        if len(specs) != 1 or not direct_solvable(specs[0]) or self.solver.per_sample:
            if self.direct:
                raise ValueError(f"ODEBlock(direct=True) needs one fixed-step family solver with scalar parameters "
                                 f"and n_steps; the active solver is {self.solver.describe()}")
            return None
        return specs[0]

    def extra_repr(self) -> str:
        return f"solver={self.solver.describe()}, t={self.t.tolist()}, adjoint={self.adjoint}"


def solver_blocks(model: nn.Module) -> list[ODEBlock]:
    """Every :class:`ODEBlock` inside ``model``, in module order."""
    return [m for m in model.modules() if isinstance(m, ODEBlock)]


def _meta_solvers(model: nn.Module) -> list[MetaSolver]:
    seen: dict[int, MetaSolver] = {}
    for block in solver_blocks(model):
        seen.setdefault(id(block.solver), block.solver)
    if not seen:
        raise ValueError(f"{type(model).__name__} has no ODEBlock")
    return list(seen.values())


@contextlib.contextmanager
def using_solver(model: nn.Module, spec: SolverSpec | Sequence[SolverSpec] | None):
    """Run every ODEBlock of ``model`` with ``spec`` inside the block; ``None`` means each
    MetaSolver's deterministic evaluation solver (``MetaSolver.evaluating``)."""
    with contextlib.ExitStack() as stack:
        for meta in _meta_solvers(model):
            stack.enter_context(meta.evaluating() if spec is None else meta.using(spec))
        yield model


@torch.no_grad()
def ensemble_predict(model: nn.Module, x: torch.Tensor, specs: Sequence[SolverSpec],
                     weights: Sequence[float] | None = None) -> torch.Tensor:
    """"Ensemble of models for free" (the paper, section 3): class probabilities of one
    trained model run with each solver in ``specs``, averaged (weighted)."""
    weights = validate_probabilities(weights, len(specs), "ensemble_predict weights")
    probs = None
    for weight, spec in zip(weights, specs):
        with using_solver(model, spec):
            p = weight * torch.softmax(model(x), dim=-1)
        probs = p if probs is None else probs + p
    return probs
