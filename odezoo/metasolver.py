"""``MetaSolver``: fixed, switching, smoothing and ensembles of solvers — one small class per mode.

The paper's method (sections 3–4): while a neural ODE trains, the solver is drawn anew —
from a finite set (*switching*) or from a continuous distribution over a family's
parameters (*smoothing*) — or several solvers' outputs are averaged (*ensemble*).  When to
draw is the caller's choice: call :meth:`MetaSolver.resample` once per batch (the paper's
code) or once per epoch (the paper's text).

Build one with the factories :meth:`MetaSolver.fixed`, :meth:`~MetaSolver.switching`,
:meth:`~MetaSolver.smoothing` and :meth:`~MetaSolver.ensemble`; each returns the class of
its mode (:class:`FixedSolver`, :class:`SwitchingSolver`, :class:`SmoothingSolver`,
:class:`PerSampleSmoothingSolver`, :class:`EnsembleSolver`), all behind one interface.
"""
from __future__ import annotations

import contextlib
import logging
import secrets
from typing import Any, Mapping, Sequence

import torch

from .registry import registry
from .sampling import draw, make_distribution, validate_probabilities
from .spec import SolverSpec

__all__ = ["MetaSolver", "FixedSolver", "SwitchingSolver", "SmoothingSolver", "PerSampleSmoothingSolver",
           "EnsembleSolver", "MODES", "DRAW_BLOCK"]

log = logging.getLogger(__name__)

MODES = ("fixed", "switching", "smoothing", "ensemble")

#: Random choices (parameter points, spec indices, round seeds) are drawn this many rounds
#: at a time in one vectorized draw and handed out one per ``resample()``: drawing a single
#: point per batch costs more than solving a small model (see docs/benchmarks.md).
DRAW_BLOCK = 64


def _specs(specs: Sequence[SolverSpec | Mapping], what: str) -> list[SolverSpec]:
    if not specs:
        raise ValueError(f"{what} needs at least one SolverSpec")
    return [s if isinstance(s, SolverSpec) else SolverSpec(**s) for s in specs]


class MetaSolver:
    """Chooses the solver an :class:`~odezoo.ODEBlock` integrates with.

    Build one with :meth:`fixed`, :meth:`switching`, :meth:`smoothing` or :meth:`ensemble`.
    ``current`` is the active solver (a list for ensembles); ``resample()`` draws the next
    one; ``with meta.evaluating():`` fixes the deterministic evaluation solver;
    ``history`` logs every draw (one dict per round: ``round``, ``mode``, ``solvers`` — a list
    of :meth:`SolverSpec.to_dict` — and, for per-sample smoothing, ``per_sample_seed``);
    ``state_dict()`` / ``load_state_dict()`` let a resumed run continue the same sequence.
    """

    mode: str = ""

    def __init__(self, *args, **kwargs):
        if type(self) is MetaSolver:
            raise TypeError("build a MetaSolver with MetaSolver.fixed(spec), .switching(specs), "
                            ".smoothing(method, ...) or .ensemble(specs)")
        self.round = 0
        self.history: list[dict] = []
        self._override: list[SolverSpec] | None = None
        self._current: list[SolverSpec] = []

    # ------------------------------------------------------------------ factories
    @staticmethod
    def fixed(spec: SolverSpec) -> "FixedSolver":
        """Always ``spec``."""
        return FixedSolver(spec)

    @staticmethod
    def switching(specs: Sequence[SolverSpec], probs: Sequence[float] | None = None,
                  seed: int | None = None, eval_spec: SolverSpec | None = None) -> "SwitchingSolver":
        """Draw one of ``specs`` (with ``probs``, default uniform) at each ``resample()``.
        Evaluation uses ``eval_spec`` (default: the most probable spec, the first on ties)."""
        return SwitchingSolver(specs, probs=probs, seed=seed, eval_spec=eval_spec)

    @staticmethod
    def smoothing(method: str, center: Mapping[str, float] | None = None, distribution=None, scale=None, *,
                  n_steps: int | None = None, step_size: float | None = None, per_sample: bool = False,
                  seed: int | None = None, rtol: float | None = None,
                  atol: float | None = None) -> "SmoothingSolver":
        """Draw the family's parameters around ``center`` (default: the family's defaults)
        from ``distribution`` (``normal``/``uniform``/``cauchy``, a custom object, or None
        for the family's registered default), truncated to the family's sampling support.

        With ``per_sample=True`` every sample of a batch gets its own draw
        (:class:`PerSampleSmoothingSolver`); ``resample()`` then starts a new round of
        per-sample draws.  Evaluation uses the center.  An adaptive family (``rk2_u_adaptive``)
        takes ``rtol``/``atol`` instead of a grid."""
        cls = PerSampleSmoothingSolver if per_sample else SmoothingSolver
        tolerances = {k: v for k, v in (("rtol", rtol), ("atol", atol)) if v is not None}
        return cls(method, center, distribution, scale, n_steps=n_steps, step_size=step_size, seed=seed,
                   **tolerances)

    @staticmethod
    def ensemble(specs: Sequence[SolverSpec], weights: Sequence[float] | None = None) -> "EnsembleSolver":
        """Average the final states of several solvers with ``weights`` (default equal)."""
        return EnsembleSolver(specs, weights)

    @staticmethod
    def of(solver: "MetaSolver | SolverSpec") -> "MetaSolver":
        """``solver`` itself if it is a MetaSolver; a :class:`SolverSpec` wrapped in :meth:`fixed`."""
        if isinstance(solver, SolverSpec):
            return FixedSolver(solver)
        if not isinstance(solver, MetaSolver):
            raise ValueError(f"expected a MetaSolver or a SolverSpec, got {solver!r}")
        return solver

    # ------------------------------------------------------------------ drawing (per mode)
    def _draw(self) -> list[SolverSpec]:
        """The solvers of the next round (fixed modes: the same ones)."""
        return self._current

    def resample(self):
        """Draw the next solver (fixed and ensemble keep theirs).  Returns ``current``."""
        self.round += 1
        self._current = self._draw()
        self._log()
        return self.current

    def per_sample_params(self, batch: int) -> dict[str, torch.Tensor]:
        """This round's per-sample parameters (per-sample smoothing only)."""
        raise ValueError("per_sample_params needs MetaSolver.smoothing(..., per_sample=True)")

    # ------------------------------------------------------------------ the active solver
    @property
    def current(self) -> SolverSpec | list[SolverSpec]:
        """The active solver."""
        return self._active()[0]

    @property
    def eval_spec(self) -> SolverSpec | None:
        """The deterministic solver used inside ``evaluating()`` (None: keep ``current``)."""
        return None

    @property
    def randomized(self) -> bool:
        """Whether the solver changes between rounds (switching or smoothing, not overridden)."""
        return False

    def _active(self) -> list[SolverSpec]:
        return self._override if self._override is not None else self._current

    def active_specs(self) -> list[SolverSpec]:
        """The specs the next solve will use (several for an ensemble or a ``using`` list)."""
        return list(self._active())

    @property
    def per_sample(self) -> bool:
        """Whether solves draw parameters per sample (per-sample smoothing, not overridden)."""
        return False

    @contextlib.contextmanager
    def evaluating(self):
        """Use the deterministic evaluation solver inside the block (the center for
        smoothing, ``eval_spec`` for switching; fixed and ensemble are unchanged)."""
        spec = self.eval_spec
        with self.using(spec) if spec is not None else contextlib.nullcontext():
            yield self

    @contextlib.contextmanager
    def using(self, spec: SolverSpec | Sequence[SolverSpec]):
        """Temporarily solve with ``spec`` (or a list of specs, averaged with equal weights)."""
        previous = self._override
        self._override = [spec] if isinstance(spec, SolverSpec) else list(spec)
        try:
            yield self
        finally:
            self._override = previous

    # ------------------------------------------------------------------ solving
    def solve(self, func, y0: torch.Tensor, t: torch.Tensor, adjoint: bool = False, **kwargs):
        """Integrate like ``torchdiffeq.odeint``; several active specs (an ensemble, or
        ``using`` a list) return the weighted average of their solutions."""
        specs = self._active()
        if len(specs) == 1:
            return specs[0].solve(func, y0, t, adjoint=adjoint, **kwargs)
        return _average(specs, self._weights(), func, y0, t, adjoint, kwargs)

    def _weights(self) -> list[float]:
        return [1.0 / len(self._active())] * len(self._active())

    # ------------------------------------------------------------------ logging and state
    def _log(self):
        entry = {"round": self.round, "mode": self.mode, "solvers": [s.to_dict() for s in self._current]}
        entry.update(self._log_extra())
        self.history.append(entry)
        if log.isEnabledFor(logging.DEBUG):  # describe() formats every label: skip it unless shown
            log.debug("MetaSolver round %d: %s", self.round, self.describe())

    def _log_extra(self) -> dict:
        return {}

    def describe(self) -> str:
        """One line naming the active solver(s), for progress bars and logs."""
        return " + ".join(s.label() for s in self._active())

    def state_dict(self) -> dict:
        """Everything needed to continue the same sequence of solvers (tensors and plain data)."""
        return {"mode": self.mode, "round": self.round, "current": [s.to_dict() for s in self._current],
                "history": list(self.history)}

    def load_state_dict(self, state: Mapping) -> None:
        """Continue from ``state_dict()``; a state of another mode is refused."""
        if state.get("mode") != self.mode:
            raise ValueError(f"MetaSolver.load_state_dict: state is for mode {state.get('mode')!r}, "
                             f"this MetaSolver is {self.mode!r}")
        current = [SolverSpec.from_dict(d) for d in state["current"]]
        self._load_random_state(state)
        self.round = int(state["round"])
        self._current = current
        self.history = list(state.get("history", []))

    def _load_random_state(self, state: Mapping) -> None:
        pass

    def __repr__(self):
        return f"{type(self).__name__}({self.mode}: {self.describe()})"


def _average(specs, weights, func, y0, t, adjoint, kwargs):
    out = None
    for weight, spec in zip(weights, specs):
        term = weight * spec.solve(func, y0, t, adjoint=adjoint, **kwargs)
        out = term if out is None else out + term
    return out


class FixedSolver(MetaSolver):
    """Always the same solver."""

    mode = "fixed"

    def __init__(self, spec: SolverSpec):
        super().__init__()
        if not isinstance(spec, SolverSpec):
            raise ValueError(f"MetaSolver.fixed needs a SolverSpec, got {spec!r}")
        self.specs = [spec]
        self._current = [spec]
        self._log()


class EnsembleSolver(MetaSolver):
    """Averages the solutions of several solvers with fixed weights."""

    mode = "ensemble"

    def __init__(self, specs: Sequence[SolverSpec], weights: Sequence[float] | None = None):
        super().__init__()
        self.specs = _specs(specs, "MetaSolver.ensemble")
        self.weights = validate_probabilities(weights, len(self.specs), "MetaSolver.ensemble weights")
        self._current = list(self.specs)
        self._log()

    @property
    def current(self) -> list[SolverSpec]:
        """The member solvers (a list)."""
        return self._active()

    def _weights(self) -> list[float]:
        return self.weights if self._override is None else super()._weights()


class _RandomSolver(MetaSolver):
    """Shared machinery of the randomized modes: a seeded generator whose choices are drawn
    ``DRAW_BLOCK`` rounds at a time (resumable mid-block through ``state_dict``)."""

    def __init__(self, seed: int | None):
        super().__init__()
        self.seed = seed
        self.generator = torch.Generator()
        # No seed: fresh entropy, without touching torch's global RNG (torch.seed() would reseed it).
        self.generator.manual_seed(seed if seed is not None else secrets.randbits(63))
        self._block: list = []
        self._block_pos = 0
        self._block_state: torch.Tensor | None = None  # generator state before this block

    def _start(self):
        self._current = self._draw()
        self._log()

    def _draw_block(self) -> list:
        raise NotImplementedError

    def _next_draw(self):
        """The next of this block's random choices; a new block is drawn when it is used up."""
        if self._block_pos >= len(self._block):
            self._block_state = self.generator.get_state()
            self._block = self._draw_block()
            self._block_pos = 0
        value = self._block[self._block_pos]
        self._block_pos += 1
        return value

    @property
    def randomized(self) -> bool:
        return self._override is None

    def state_dict(self) -> dict:
        blocked = self._block_state is not None
        return {**super().state_dict(),
                "generator": self._block_state if blocked else self.generator.get_state(),
                "block_pos": self._block_pos if blocked else None}

    def _load_random_state(self, state: Mapping) -> None:
        self.generator.set_state(state["generator"])
        self._block, self._block_pos, self._block_state = [], 0, None
        if state.get("block_pos") is not None:  # redraw the block the saved run was using
            self._block_state = self.generator.get_state()
            self._block = self._draw_block()
            self._block_pos = int(state["block_pos"])


class SwitchingSolver(_RandomSolver):
    """Draws one of a finite set of solvers at each round."""

    mode = "switching"

    def __init__(self, specs: Sequence[SolverSpec], probs: Sequence[float] | None = None, seed: int | None = None,
                 eval_spec: SolverSpec | None = None):
        specs = _specs(specs, "MetaSolver.switching")
        probs = validate_probabilities(probs, len(specs), "MetaSolver.switching probs")
        super().__init__(seed)
        self.specs, self.probs, self._eval_spec = specs, probs, eval_spec
        self._start()

    def _draw_block(self) -> list:
        probs = torch.tensor(self.probs, dtype=torch.float64)
        return torch.multinomial(probs, DRAW_BLOCK, replacement=True, generator=self.generator).tolist()

    def _draw(self) -> list[SolverSpec]:
        return [self.specs[self._next_draw()]]

    @property
    def eval_spec(self) -> SolverSpec:
        if self._eval_spec is not None:
            return self._eval_spec
        return self.specs[max(range(len(self.specs)), key=lambda i: (self.probs[i], -i))]


class SmoothingSolver(_RandomSolver):
    """Draws a family's parameters from a distribution around a center at each round."""

    mode = "smoothing"

    def __init__(self, method: str, center: Mapping[str, float] | None = None, distribution=None, scale=None, *,
                 n_steps: int | None = None, step_size: float | None = None, seed: int | None = None,
                 rtol: float | None = None, atol: float | None = None):
        family = registry.get(method)
        if isinstance(self, PerSampleSmoothingSolver) and getattr(family, "adaptive", False):
            raise ValueError(f"MetaSolver.smoothing: {method} is adaptive, and adaptive methods take one "
                             f"parameter value per solve; use per_sample=False")
        center = family.resolve(center)
        if not family.in_support(center):
            raise ValueError(f"MetaSolver.smoothing: center {center} is outside {method}'s sampling "
                             f"support ({family.support_text()})")
        dist = make_distribution(distribution, scale, family)
        self._eval_spec = SolverSpec(method, center, step_size=step_size, n_steps=n_steps, rtol=rtol, atol=atol)
        super().__init__(seed)
        self.family, self.center, self.distribution = family, center, dist
        self.n_steps, self.step_size = n_steps, step_size
        self.rtol, self.atol = rtol, atol
        self._start()

    @property
    def eval_spec(self) -> SolverSpec:
        return self._eval_spec

    def _spec(self, params) -> SolverSpec:
        return SolverSpec(self.family.name, params, self.step_size, self.n_steps, self.rtol, self.atol)

    def _draw_block(self) -> list:
        """``DRAW_BLOCK`` solvers at parameter points, drawn in one vectorized draw and
        validated together (cheaper than one at a time between solves)."""
        points = draw(self.family, self.distribution, self.center, DRAW_BLOCK, self.generator)
        columns = [points[p].tolist() for p in self.family.params]
        return [self._spec(dict(zip(self.family.params, values))) for values in zip(*columns)]

    def _draw(self) -> list[SolverSpec]:
        return [self._next_draw()]


class PerSampleSmoothingSolver(SmoothingSolver):
    """Smoothing where every sample of a batch gets its own parameter draw.

    The batch size is known only at solve time, so each round draws a seed; the points are
    drawn from it when the batch arrives (same round, same batch size -> same draws, so
    blocks sharing this MetaSolver agree)."""

    @property
    def per_sample(self) -> bool:
        return self._override is None

    def __init__(self, *args, **kwargs):
        self._round_seed: int | None = None
        super().__init__(*args, **kwargs)

    def _draw_block(self) -> list:
        return torch.randint(0, 2 ** 62, (DRAW_BLOCK,), generator=self.generator).tolist()

    def _draw(self) -> list[SolverSpec]:
        self._round_seed = self._next_draw()
        return [self._spec(self.center)]

    def per_sample_params(self, batch: int) -> dict[str, torch.Tensor]:
        """This round's per-sample parameters for a batch of ``batch`` samples."""
        generator = torch.Generator().manual_seed(self._round_seed)
        return draw(self.family, self.distribution, self.center, batch, generator)

    def solve(self, func, y0: torch.Tensor, t: torch.Tensor, adjoint: bool = False, **kwargs):
        if self._override is not None:
            return super().solve(func, y0, t, adjoint=adjoint, **kwargs)
        params = {p: v.to(y0.device) for p, v in self.per_sample_params(y0.shape[0]).items()}
        return self._spec(params).solve(func, y0, t, adjoint=adjoint, **kwargs)

    def _log_extra(self) -> dict:
        return {"per_sample_seed": self._round_seed}

    def describe(self) -> str:
        if self._override is not None:
            return super().describe()
        return f"{self.family.name} per-sample around {self._current[0].label()}"

    def state_dict(self) -> dict:
        return {**super().state_dict(), "round_seed": self._round_seed}

    def _load_random_state(self, state: Mapping) -> None:
        super()._load_random_state(state)
        self._round_seed = state.get("round_seed")
