"""``SolverSpec`` and ``MetaSolver``: fixed, switching, smoothing and ensembles of solvers.

The paper's method (sections 3–4): while a neural ODE trains, the solver is drawn anew —
from a finite set (*switching*) or from a continuous distribution over a family's
parameters (*smoothing*) — or several solvers' outputs are averaged (*ensemble*).  When to
draw is the caller's choice: call :meth:`MetaSolver.resample` once per epoch (the paper) or
once per batch (the original code).
"""
from __future__ import annotations

import contextlib
import logging
import math
import secrets
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import torch
from torchdiffeq import odeint, odeint_adjoint

from . import _torchdiffeq_bridge as bridge
from .family import as_real
from .registry import registry
from .sampling import make_distribution, draw, validate_probabilities
from .stepper import float_plan

__all__ = ["SolverSpec", "MetaSolver"]

log = logging.getLogger(__name__)

MODES = ("fixed", "switching", "smoothing", "ensemble")


def _uniform_grid(n_steps: int):
    def grid(func, y0, t):
        g = torch.linspace(float(t[0]), float(t[-1]), n_steps + 1, dtype=t.dtype, device=t.device)
        g[0], g[-1] = t[0], t[-1]
        return g
    return grid


@dataclass(frozen=True)
class SolverSpec:
    """One concrete solver: a method, its parameters and a grid.

    ``method`` is a registered family (``rk2_u``, ...) or one of torchdiffeq's fixed-grid
    methods (``euler``, ``midpoint``, ``rk4``, ...).  Give ``n_steps`` (uniform steps over
    each integration interval) or ``step_size``, not both; with neither, the solver steps
    from output time to output time.  Parameters are validated on construction.
    """

    method: str
    params: Mapping[str, Any] = field(default_factory=dict)
    step_size: float | None = None
    n_steps: int | None = None

    def __post_init__(self):
        object.__setattr__(self, "params", dict(self.params))
        if self.step_size is not None and self.n_steps is not None:
            raise ValueError(f"SolverSpec({self.method!r}): give step_size or n_steps, not both")
        if self.n_steps is not None and (int(self.n_steps) != self.n_steps or self.n_steps < 1):
            raise ValueError(f"SolverSpec({self.method!r}): n_steps must be a positive integer, got {self.n_steps!r}")
        if self.step_size is not None and not (math.isfinite(self.step_size) and self.step_size > 0):
            raise ValueError(f"SolverSpec({self.method!r}): step_size must be positive, got {self.step_size!r}")
        family = registry.families().get(self.method)
        if family is not None:
            scalars = {k: v for k, v in self.params.items()
                       if not (isinstance(v, torch.Tensor) and v.ndim > 0)}
            resolved = family.resolve(self.params)  # unknown names -> ValueError
            if len(scalars) == len(self.params):
                # singular points -> ValueError now, not mid-training; the plan is cached for the solve
                float_plan(family, tuple(as_real(family.name, p, resolved[p]) for p in family.params))
            else:
                family.check(resolved)
        elif self.method in bridge.TORCHDIFFEQ_METHODS:
            if self.params:
                raise ValueError(f"SolverSpec({self.method!r}): torchdiffeq's {self.method!r} takes no "
                                 f"parameters, got {sorted(self.params)}")
        else:
            known = sorted(registry.families()) + sorted(bridge.TORCHDIFFEQ_METHODS)
            raise ValueError(f"SolverSpec: unknown method {self.method!r}; choose one of {known}")

    @property
    def family(self):
        return registry.families().get(self.method)

    def options(self) -> dict[str, Any]:
        """The ``options`` for ``torchdiffeq.odeint``."""
        options = dict(self.params)
        if self.n_steps is not None:
            options["grid_constructor"] = _uniform_grid(int(self.n_steps))
        elif self.step_size is not None:
            options["step_size"] = self.step_size
        return options

    def solve(self, func, y0, t, adjoint: bool = False, **kwargs):
        integrate = odeint_adjoint if adjoint else odeint
        return integrate(func, y0, t, method=self.method, options=self.options(), **kwargs)

    def label(self) -> str:
        params = ",".join(f"{k}={_fmt(v)}" for k, v in self.params.items())
        grid = f"{self.n_steps} steps" if self.n_steps else f"h={self.step_size:g}" if self.step_size else "output grid"
        return f"{self.method}({params}; {grid})" if params else f"{self.method}({grid})"

    def to_dict(self) -> dict:
        return {"method": self.method, "params": {k: _plain(v) for k, v in self.params.items()},
                "step_size": self.step_size, "n_steps": self.n_steps}

    @classmethod
    def from_dict(cls, data: Mapping) -> "SolverSpec":
        return cls(data["method"], dict(data.get("params") or {}), data.get("step_size"), data.get("n_steps"))


def _plain(value):
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().tolist()
    return float(value)


def _fmt(value):
    if isinstance(value, torch.Tensor) and value.ndim > 0:
        return f"[{value.numel()} per-sample, mean {float(value.double().mean()):.4g}]"
    return f"{float(value):.4g}"


#: Random choices (parameter points, spec indices, round seeds) are drawn this many rounds
#: at a time in one vectorized draw and handed out one per ``resample()``: drawing a single
#: point per batch costs more than solving a small model (see docs/benchmarks.md).
DRAW_BLOCK = 64


class MetaSolver:
    """Chooses the solver an :class:`~odezoo.ODEBlock` integrates with.

    Build one with :meth:`fixed`, :meth:`switching`, :meth:`smoothing` or :meth:`ensemble`.
    ``current`` is the active solver (a list for ensembles); ``resample()`` draws the next
    one; ``with meta.evaluating():`` fixes the deterministic evaluation solver;
    ``history`` logs every draw; ``state_dict()`` / ``load_state_dict()`` let a resumed run
    continue the same sequence.
    """

    def __init__(self, mode: str, *, specs: Sequence[SolverSpec] = (), probs=None, weights=None,
                 family=None, center=None, distribution=None, n_steps=None, step_size=None,
                 per_sample: bool = False, eval_spec: SolverSpec | None = None, seed: int | None = None):
        if mode not in MODES:
            raise ValueError(f"unknown MetaSolver mode {mode!r}; choose one of {MODES}")
        self.mode = mode
        self.specs = [s if isinstance(s, SolverSpec) else SolverSpec(**s) for s in specs]
        self.probs = probs
        self.weights = weights
        self.family = family
        self.center = center
        self.distribution = distribution
        self.n_steps = n_steps
        self.step_size = step_size
        self.per_sample = per_sample
        self.seed = seed
        self.generator = torch.Generator()
        # No seed: fresh entropy, without touching torch's global RNG (torch.seed() would reseed it).
        self.generator.manual_seed(seed if seed is not None else secrets.randbits(63))
        self.round = 0
        self.history: list[dict] = []
        self._eval_spec = eval_spec
        self._override: list[SolverSpec] | None = None
        self._round_seed: int | None = None
        self._block: list = []  # random choices drawn DRAW_BLOCK rounds at a time
        self._block_pos = 0
        self._block_state: torch.Tensor | None = None  # generator state before this block
        self._current = self._initial()
        self._log()

    # ------------------------------------------------------------------ constructors
    @classmethod
    def fixed(cls, spec: SolverSpec) -> "MetaSolver":
        """Always ``spec``."""
        return cls("fixed", specs=[spec])

    @classmethod
    def switching(cls, specs: Sequence[SolverSpec], probs: Sequence[float] | None = None,
                  seed: int | None = None, eval_spec: SolverSpec | None = None) -> "MetaSolver":
        """Draw one of ``specs`` (with ``probs``, default uniform) at each ``resample()``.
        Evaluation uses ``eval_spec`` (default: the most probable spec, the first on ties)."""
        if not specs:
            raise ValueError("MetaSolver.switching needs at least one SolverSpec")
        probs = validate_probabilities(probs, len(specs), "MetaSolver.switching probs")
        return cls("switching", specs=specs, probs=probs, seed=seed, eval_spec=eval_spec)

    @classmethod
    def smoothing(cls, method: str, center: Mapping[str, float] | None = None, distribution=None,
                  scale=None, *, n_steps: int | None = None, step_size: float | None = None,
                  per_sample: bool = False, seed: int | None = None) -> "MetaSolver":
        """Draw the family's parameters around ``center`` (default: the family's defaults)
        from ``distribution`` (``normal``/``uniform``/``cauchy``, a custom object, or None
        for the family's registered default), truncated to the family's sampling support.

        With ``per_sample=True`` every sample of a batch gets its own draw; ``resample()``
        then starts a new round of per-sample draws.  Evaluation uses the center.
        """
        family = registry.get(method)
        center = family.resolve(center)
        if not family.in_support(center):
            raise ValueError(f"MetaSolver.smoothing: center {center} is outside {method}'s sampling "
                             f"support ({family.support_text()})")
        dist = make_distribution(distribution, scale, family)
        eval_spec = SolverSpec(method, center, step_size=step_size, n_steps=n_steps)
        return cls("smoothing", family=family, center=center, distribution=dist, n_steps=n_steps,
                   step_size=step_size, per_sample=per_sample, seed=seed, eval_spec=eval_spec)

    @classmethod
    def ensemble(cls, specs: Sequence[SolverSpec], weights: Sequence[float] | None = None) -> "MetaSolver":
        """Average the final states of several solvers with ``weights`` (default equal)."""
        if not specs:
            raise ValueError("MetaSolver.ensemble needs at least one SolverSpec")
        weights = validate_probabilities(weights, len(specs), "MetaSolver.ensemble weights")
        return cls("ensemble", specs=specs, weights=weights)

    # ------------------------------------------------------------------ drawing
    def _initial(self) -> list[SolverSpec]:
        if self.mode == "smoothing":
            return self._draw_smoothing()
        if self.mode == "switching":
            return self._draw_switching()
        return list(self.specs)

    def _draw_switching(self) -> list[SolverSpec]:
        return [self.specs[self._next_draw()]]

    def _draw_smoothing(self) -> list[SolverSpec]:
        if self.per_sample:
            # The batch size is known only at solve time: draw a seed now, the points then.
            self._round_seed = self._next_draw()
            return [SolverSpec(self.family.name, self.center, self.step_size, self.n_steps)]
        return [self._next_draw()]

    def _next_draw(self):
        """The next of this block's random choices; a new block is drawn when it is used up."""
        if self._block_pos >= len(self._block):
            self._block_state = self.generator.get_state()
            self._block = self._draw_block()
            self._block_pos = 0
        value = self._block[self._block_pos]
        self._block_pos += 1
        return value

    def _draw_block(self) -> list:
        """``DRAW_BLOCK`` random choices in one vectorized draw: spec indices (switching),
        round seeds (per-sample smoothing) or solvers at parameter points (smoothing; built
        and validated together, which is cheaper than one at a time between solves)."""
        if self.mode == "switching":
            probs = torch.tensor(self.probs, dtype=torch.float64)
            return torch.multinomial(probs, DRAW_BLOCK, replacement=True, generator=self.generator).tolist()
        if self.per_sample:
            return torch.randint(0, 2 ** 62, (DRAW_BLOCK,), generator=self.generator).tolist()
        points = draw(self.family, self.distribution, self.center, DRAW_BLOCK, self.generator)
        columns = [points[p].tolist() for p in self.family.params]
        return [SolverSpec(self.family.name, dict(zip(self.family.params, values)), self.step_size, self.n_steps)
                for values in zip(*columns)]

    def resample(self):
        """Draw the next solver (fixed and ensemble modes keep theirs). Returns ``current``."""
        self.round += 1
        if self.mode in ("switching", "smoothing"):
            self._current = self._initial()
        self._log()
        return self.current

    def per_sample_params(self, batch: int) -> dict[str, torch.Tensor]:
        """This round's per-sample parameters for a batch of ``batch`` samples (same round,
        same batch size -> the same draws, so blocks sharing this MetaSolver agree)."""
        if not (self.mode == "smoothing" and self.per_sample):
            raise ValueError("per_sample_params needs MetaSolver.smoothing(..., per_sample=True)")
        generator = torch.Generator().manual_seed(self._round_seed)
        return draw(self.family, self.distribution, self.center, batch, generator)

    @property
    def current(self) -> SolverSpec | list[SolverSpec]:
        """The active solver; a list of specs in ensemble mode."""
        specs = self._active()
        return specs if self.mode == "ensemble" else specs[0]

    @property
    def eval_spec(self) -> SolverSpec | None:
        """The deterministic solver used inside ``evaluating()`` (None: keep ``current``)."""
        if self._eval_spec is not None:
            return self._eval_spec
        if self.mode == "switching":
            return self.specs[max(range(len(self.specs)), key=lambda i: (self.probs[i], -i))]
        return None

    def _active(self) -> list[SolverSpec]:
        return self._override if self._override is not None else self._current

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

    @property
    def randomized(self) -> bool:
        """Whether the solver changes between rounds (switching or smoothing, not overridden)."""
        return self._override is None and self.mode in ("switching", "smoothing")

    # ------------------------------------------------------------------ solving
    def solve(self, func, y0: torch.Tensor, t: torch.Tensor, adjoint: bool = False, **kwargs):
        """Integrate like ``torchdiffeq.odeint``; an ensemble returns the weighted average of
        its members' solutions."""
        specs = self._active()
        if self._override is None and self.mode == "smoothing" and self.per_sample:
            params = {p: v.to(y0.device) for p, v in self.per_sample_params(y0.shape[0]).items()}
            return SolverSpec(self.family.name, params, self.step_size, self.n_steps).solve(
                func, y0, t, adjoint=adjoint, **kwargs)
        if len(specs) == 1:
            return specs[0].solve(func, y0, t, adjoint=adjoint, **kwargs)
        weights = self.weights if (self._override is None and self.mode == "ensemble") \
            else [1.0 / len(specs)] * len(specs)
        out = None
        for weight, spec in zip(weights, specs):
            term = weight * spec.solve(func, y0, t, adjoint=adjoint, **kwargs)
            out = term if out is None else out + term
        return out

    # ------------------------------------------------------------------ logging and state
    def _log(self):
        entry = {"round": self.round, "mode": self.mode,
                 "solvers": [s.to_dict() for s in self._current]}
        if self.mode == "smoothing" and self.per_sample:
            entry["per_sample_seed"] = self._round_seed
        self.history.append(entry)
        if log.isEnabledFor(logging.DEBUG):  # describe() formats every label: skip it unless shown
            log.debug("MetaSolver round %d: %s", self.round, self.describe())

    def describe(self) -> str:
        """One line naming the active solver(s), for progress bars and logs."""
        specs = self._active()
        text = " + ".join(s.label() for s in specs)
        if self.mode == "smoothing" and self.per_sample and self._override is None:
            return f"{self.family.name} per-sample around {specs[0].label()}"
        return text

    def state_dict(self) -> dict:
        """Everything needed to continue the same sequence of solvers (tensors and plain data)."""
        blocked = self._block_state is not None
        return {"mode": self.mode, "round": self.round,
                "generator": self._block_state if blocked else self.generator.get_state(),
                "block_pos": self._block_pos if blocked else None,
                "current": [s.to_dict() for s in self._current], "round_seed": self._round_seed,
                "history": list(self.history)}

    def load_state_dict(self, state: Mapping) -> None:
        if state.get("mode") != self.mode:
            raise ValueError(f"MetaSolver.load_state_dict: state is for mode {state.get('mode')!r}, "
                             f"this MetaSolver is {self.mode!r}")
        self.generator.set_state(state["generator"])
        self._block, self._block_pos, self._block_state = [], 0, None
        if state.get("block_pos") is not None:  # redraw the block the saved run was using
            self._block_state = self.generator.get_state()
            self._block = self._draw_block()
            self._block_pos = int(state["block_pos"])
        self.round = int(state["round"])
        self._current = [SolverSpec.from_dict(d) for d in state["current"]]
        self._round_seed = state.get("round_seed")
        self.history = list(state.get("history", []))

    def __repr__(self):
        return f"MetaSolver({self.mode}: {self.describe()})"
