"""``ODEBlock``: an ``nn.Module`` that integrates a function with a MetaSolver."""
from __future__ import annotations

import contextlib
import warnings
from typing import Sequence

import torch
from torch import nn

from . import inputs
from .direct import DirectSolve, direct_solvable
from .metasolver import MetaSolver
from .sampling import validate_probabilities
from .spec import SolverSpec

__all__ = ["ODEBlock", "OdezooCompileWarning", "solver_blocks", "using_solver", "ensemble_predict"]


class OdezooCompileWarning(UserWarning):
    """Under ``torch.compile`` an ``ODEBlock``'s solver could not take the compiled path and runs
    eagerly through ``odeint`` (same numbers, graph breaks); the message says why."""


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
        solver: a `MetaSolver` (may be shared by several blocks) or a
            `SolverSpec` (wrapped in ``MetaSolver.fixed``).
        t: integration times; the default (0, 1) integrates over the unit interval.
        adjoint: use [`odezoo.odeint_adjoint`][odezoo.odeint_adjoint] (memory O(1) in the number of steps),
            per-sample times included.
        return_trajectory: return the states at every time in ``t`` instead of the last.

    ``nfe`` counts function evaluations since the last reset (``block.nfe = 0``); it does
    not count inside ``torch.compile``d code.

    ``t`` goes through the one door ([`odezoo.inputs.times`][odezoo.inputs.times]): finite, strictly increasing
    or decreasing, at least two times; a tensor keeps its dtype (a sequence of numbers becomes
    float64, exactly), and the solve runs on it as given.

    Under ``torch.compile`` a fixed-grid family solver with scalar parameters runs through
    [`odezoo.direct.DirectSolve`][odezoo.direct.DirectSolve], prepared on the host from ``t``'s values when the block
    is built: the eager stepper's own step code, grid and interpolation as plain tensor
    operations that compile into one graph (torchdiffeq's front end breaks the graph about
    twenty times per solve), with the eager path's numbers for every ``t``.  Any other solver
    runs eagerly through ``odeint`` and says so once (`OdezooCompileWarning`).
    ``direct=True`` takes the direct path in eager mode too (and refuses other solvers),
    ``direct=False`` never.
    """

    def __init__(self, func, solver: MetaSolver | SolverSpec, t: Sequence[float] | torch.Tensor = (0.0, 1.0),
                 adjoint: bool = False, return_trajectory: bool = False, direct: bool | None = None):
        super().__init__()
        self.func = func
        object.__setattr__(self, "_programs", {})  # prepared direct solves, by solver
        self.solver = solver
        if adjoint and self.solver.per_sample:
            raise ValueError("ODEBlock: adjoint=True cannot be used with MetaSolver.smoothing(per_sample=True) "
                             "(odeint_adjoint flattens the batch the per-sample parameters apply to); use "
                             "adjoint=False, or per_sample=False")
        t = inputs.times("ODEBlock", t, minimum=2)  # the one door: finite, strictly monotone; dtype kept
        self.register_buffer("t", t, persistent=False)
        self._t_values = tuple(t.tolist())  # the direct path's grid is prepared from these, on the host
        self.adjoint = adjoint
        self.return_trajectory = return_trajectory
        self.direct = direct
        self.nfe = 0
        object.__setattr__(self, "_counted", _Counted(func, self))  # not a submodule
        object.__setattr__(self, "_told", False)
        self._prepare()

    @property
    def solver(self) -> MetaSolver:
        """The `MetaSolver` (a `SolverSpec` assigned here is wrapped in ``MetaSolver.fixed``)."""
        return self._solver

    @solver.setter
    def solver(self, solver: MetaSolver | SolverSpec) -> None:
        object.__setattr__(self, "_solver", MetaSolver.of(solver))
        if hasattr(self, "_t_values"):
            self._prepare()

    def _direct_allowed(self) -> bool:
        """Whether this block may take the direct path at all (not with adjoint, not with direct=False)."""
        return self.direct is not False and not self.adjoint

    def _prepare(self) -> None:
        """Prepare the direct solve of every solver the MetaSolver can make active without a new
        draw, now, outside any compiled graph (a smoothing draw is prepared on first use)."""
        if not self._direct_allowed() or self._solver.per_sample:
            return
        for spec in self._solver.known_specs():
            if direct_solvable(spec):
                self._program_for(spec)

    def _apply(self, fn, *args, **kwargs):
        """``.to()``, ``.float()``, ``.double()``, ...: ``t`` may change dtype; prepare for the new one."""
        out = super()._apply(fn, *args, **kwargs)
        self._prepare()
        return out

    def forward(self, x: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
        """The final state (or, with ``return_trajectory``, the states at every time) from ``x``.

        ``t`` of shape ``(T, batch)`` integrates each sample over its own times instead of the
        block's ``t`` ([`odezoo.odeint`][odezoo.odeint] with per-sample times, or with ``adjoint=True``
        [`odezoo.odeint_adjoint`][odezoo.odeint_adjoint]; odezoo's families, eagerly);
        the states come back with shape ``(T, batch, ...)``, the last of each sample at ``[-1]``."""
        if t is not None:
            if torch.compiler.is_compiling() and not self._told:
                object.__setattr__(self, "_told", True)
                warnings.warn("ODEBlock: under torch.compile, per-sample times run through odeint eagerly (graph "
                              "breaks): the compiled path takes the block's own t", OdezooCompileWarning, stacklevel=2)
        else:
            program = self._direct_program()
            if program is not None:
                out = program(self._counted, x)
                return out if self.return_trajectory else out[-1]
            t = self.t
        kwargs = {}
        if self.adjoint:
            kwargs["adjoint_params"] = tuple(p for p in self.func.parameters()) if isinstance(self.func, nn.Module) else ()
        out = self.solver.solve(self._counted, x, t, adjoint=self.adjoint, **kwargs)
        return out if self.return_trajectory else out[-1]

    def _direct_program(self) -> DirectSolve | None:
        """The prepared solve of the direct path, or None for the ``odeint`` path.  Under
        ``torch.compile`` a solver the direct path cannot run is said once
        (`OdezooCompileWarning`) and runs eagerly through ``odeint``, with the same numbers."""
        compiling = torch.compiler.is_compiling()
        if not self._direct_allowed() or not (self.direct or compiling):
            return None
        specs = self.solver.active_specs()
        if len(specs) != 1 or not direct_solvable(specs[0]) or self.solver.per_sample:
            if self.direct:
                raise ValueError(f"ODEBlock(direct=True) needs one fixed-grid family solver with scalar parameters; "
                                 f"the active solver is {self.solver.describe()}")
            if not self._told:
                object.__setattr__(self, "_told", True)
                warnings.warn(f"ODEBlock: under torch.compile, {self.solver.describe()} runs through odeint "
                              f"eagerly (graph breaks): the compiled path takes one fixed-grid family solver with "
                              f"scalar parameters", OdezooCompileWarning, stacklevel=2)
            return None
        return self._program_for(specs[0])

    def _program_for(self, spec: SolverSpec) -> DirectSolve:
        """The prepared direct solve of ``spec`` over this block's times (kept per solver)."""
        key = (spec.method, tuple(sorted(spec.params.items())), spec.n_steps, spec.step_size, self.t.dtype)
        program = self._programs.get(key)
        if program is None:
            program = self._programs[key] = DirectSolve(spec, torch.tensor(self._t_values, dtype=self.t.dtype))
            if len(self._programs) > 64:
                self._programs.pop(next(iter(self._programs)))
        return program

    def extra_repr(self) -> str:
        return f"solver={self.solver.describe()}, t={self.t.tolist()}, adjoint={self.adjoint}"


def solver_blocks(model: nn.Module) -> list[ODEBlock]:
    """Every `ODEBlock` inside ``model``, in module order."""
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
