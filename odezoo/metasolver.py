"""``MetaSolver``: fixed, switching, smoothing and ensembles of solvers — one small class per mode.

The paper's method (sections 3–4): while a neural ODE trains, the solver is drawn anew —
from a finite set (*switching*) or from a continuous distribution over a family's
parameters (*smoothing*) — or several solvers' outputs are averaged (*ensemble*).  When to
draw is the caller's choice: call `MetaSolver.resample` once per batch (the paper's
code) or once per epoch (the paper's text).

Build one with the factories `MetaSolver.fixed`, `switching`,
`smoothing` and `ensemble`; each returns the class of
its mode (`FixedSolver`, `SwitchingSolver`, `SmoothingSolver`,
`PerSampleSmoothingSolver`, `EnsembleSolver`), all behind one interface.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import secrets
from typing import Mapping, Sequence

import torch

from .registry import registry
from .sampling import distribution_identity, distribution_label, draw, make_distribution, validate_probabilities
from .spec import SolverSpec, check_parameter

__all__ = ["MetaSolver", "FixedSolver", "SwitchingSolver", "SmoothingSolver", "PerSampleSmoothingSolver",
           "EnsembleSolver", "MODES", "DRAW_BLOCK"]

log = logging.getLogger(__name__)

MODES = ("fixed", "switching", "smoothing", "ensemble")

#: Random choices (parameter points, spec indices, round seeds) are drawn this many rounds
#: at a time in one vectorized draw and handed out one per ``resample()``: drawing a single
#: point per batch costs more than solving a small model (see docs/benchmarks.md).
DRAW_BLOCK = 64


def _specs(specs: Sequence[SolverSpec | Mapping], what: str) -> list[SolverSpec]:
    if isinstance(specs, (SolverSpec, str, Mapping)) or not isinstance(specs, Sequence):
        raise ValueError(f"{what} needs a list of SolverSpecs, got {specs!r}")
    if not specs:
        raise ValueError(f"{what} needs at least one SolverSpec")
    out = []
    for i, s in enumerate(specs):
        if isinstance(s, SolverSpec):
            out.append(s)
        elif isinstance(s, Mapping):
            try:
                out.append(SolverSpec(**s))
            except TypeError as error:
                raise ValueError(f"{what}: spec {i} {dict(s)!r}: {error}") from None
        else:
            raise ValueError(f"{what}: spec {i} must be a SolverSpec (or a mapping of its fields), got {s!r}")
    return out


def _int(value, what: str, low: int = 0, high: int | None = None) -> int:
    """An int in [low, high] from a saved state (a bool, float or text is refused)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f">= {low}"
        raise ValueError(f"MetaSolver.load_state_dict: {what} must be an integer {bound}, got {value!r}")
    return value


def _differences(saved, here, path: str = "") -> list[str]:
    """The entries where two identities disagree, as 'key: saved -> here' lines."""
    if isinstance(saved, Mapping) and isinstance(here, Mapping):
        out = []
        for key in list(dict.fromkeys([*saved, *here])):
            out += _differences(saved.get(key), here.get(key), f"{path}.{key}" if path else str(key))
        return out
    return [] if saved == here else [f"{path or 'identity'}: {saved!r} in the state, {here!r} here"]


class MetaSolver:
    """Chooses the solver an [`ODEBlock`][odezoo.ODEBlock] integrates with.

    Build one with `fixed`, `switching`, `smoothing` or `ensemble`.
    ``current`` is the active solver (a list for ensembles); ``resample()`` draws the next
    one; ``with meta.evaluating():`` fixes the deterministic evaluation solver;
    ``history`` logs every draw (one dict per round: ``round``, ``mode``, ``solvers`` — a list
    of `SolverSpec.to_dict` — and, for per-sample smoothing, ``per_sample_seed``);
    ``state_dict()`` / ``load_state_dict()`` let a resumed run continue the same sequence;
    ``identity()`` is the configuration a state belongs to (``load_state_dict`` refuses a
    state of another configuration before changing anything).
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
        (`PerSampleSmoothingSolver`); ``resample()`` then starts a new round of
        per-sample draws.  Evaluation uses the center.  An adaptive family (``rk2_u_adaptive``)
        takes ``rtol``/``atol`` instead of a grid."""
        if not isinstance(per_sample, bool):
            raise ValueError(f"MetaSolver.smoothing: per_sample must be True or False, got {per_sample!r}")
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
        """``solver`` itself if it is a MetaSolver; a `SolverSpec` wrapped in `fixed`."""
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

    def known_specs(self) -> list[SolverSpec]:
        """The solvers this MetaSolver can make active without drawing new parameters: its
        member specs and its evaluation solver (a smoothing solver draws the rest)."""
        return [s for s in (self.eval_spec,) if s is not None]

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

    def summary(self) -> str:
        """What this MetaSolver is, as a model label: the fixed solver, the set it switches
        among, the distribution it smooths with (``rk2_u(8 steps), u ~ N(0.5, σ=0.0125)``) or
        the ensemble — never a single draw."""
        return " + ".join(s.label() for s in self._current)

    def identity(self) -> dict:
        """The configuration that decides which solvers this MetaSolver draws, as plain data:
        mode, specs, family, center, distribution (kind and scale), grid (n_steps /
        step_size), probs / weights, evaluation solver.  The seed is not part of it (a
        state carries its generator).  ``state_dict()`` stores it and ``load_state_dict()``
        compares it."""
        return {"mode": self.mode}

    def fingerprint(self) -> str:
        """A short digest of `identity` (16 hex digits), for logs and file names."""
        text = json.dumps(self.identity(), sort_keys=True, default=repr)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]

    def state_dict(self) -> dict:
        """Everything needed to continue the same sequence of solvers (tensors and plain
        data), with the `identity` of the configuration it belongs to."""
        return {"mode": self.mode, "identity": self.identity(), "round": self.round,
                "current": [s.to_dict() for s in self._current], "history": list(self.history)}

    def load_state_dict(self, state: Mapping, strict: bool = True) -> None:
        """Continue from ``state_dict()``.

        The whole state is checked before anything changes, so a refused state leaves this
        MetaSolver as it was: its mode, its `identity` (a state of another family,
        center, distribution, set of specs, probabilities, weights or grid is refused with
        the differences listed), its structure (round, current solvers, history, generator)
        and that its current solvers belong to this configuration.  A state without an
        identity (written before odezoo stored one) loads only where its contents prove it
        belongs here (fixed mode); otherwise it is refused unless ``strict=False``, which
        skips the configuration checks (the structure is still checked).
        """
        prefix = "MetaSolver.load_state_dict"
        if not isinstance(state, Mapping):
            raise ValueError(f"{prefix}: expected the dict from state_dict(), got {type(state).__name__}")
        if state.get("mode") != self.mode:
            raise ValueError(f"{prefix}: state is for mode {state.get('mode')!r}, "
                             f"this MetaSolver is {self.mode!r}")
        saved = state.get("identity")
        if strict and saved is not None:
            differences = _differences(saved, self.identity())
            if differences:
                raise ValueError(
                    f"{prefix}: the state belongs to another solver configuration ("
                    + "; ".join(differences) + "). Build the MetaSolver with the configuration the state "
                    "was saved with to continue it, or start afresh (a new run) to use the new one.")
        missing = [key for key in ("round", "current") if key not in state]
        if missing:
            raise ValueError(f"{prefix}: the state has no {missing} entries; pass the dict from state_dict()")
        round_ = _int(state["round"], "round")
        if not isinstance(state["current"], Sequence) or isinstance(state["current"], (str, bytes)) \
                or not state["current"]:
            raise ValueError(f"{prefix}: 'current' must be a non-empty list of solver dicts, got {state['current']!r}")
        try:
            current = [SolverSpec.from_dict(d) for d in state["current"]]
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"{prefix}: 'current' holds a solver that cannot be rebuilt: {error}") from None
        history = state.get("history", [])
        if not isinstance(history, Sequence) or isinstance(history, (str, bytes)) \
                or not all(isinstance(h, Mapping) for h in history):
            raise ValueError(f"{prefix}: 'history' must be a list of dicts, got {type(history).__name__}")
        if strict:
            problem = self._foreign(current)
            if problem:
                raise ValueError(f"{prefix}: the state's current solver does not belong to this MetaSolver "
                                 f"({problem}); it was saved by another configuration")
            if saved is None and not self._verifiable_without_identity():
                raise ValueError(
                    f"{prefix}: the state has no 'identity' (it was written by an older odezoo), and a "
                    f"{self.mode} state does not show which {self._unverifiable()} it was drawn with, so it "
                    f"cannot be checked against this MetaSolver. Start afresh, or pass strict=False to load "
                    f"it unchecked if you know it was saved with this same configuration.")
        random_state = self._parse_random_state(state)
        # Everything is checked: only now does anything change.
        self._apply_random_state(random_state)
        self.round = round_
        self._current = current
        self.history = list(history)

    def _foreign(self, current: list[SolverSpec]) -> str | None:
        """Why ``current`` cannot be this configuration's active solver (None: it can)."""
        return None

    def _verifiable_without_identity(self) -> bool:
        return False

    def _unverifiable(self) -> str:
        return "configuration"

    def _parse_random_state(self, state: Mapping):
        return None

    def _apply_random_state(self, prepared) -> None:
        pass

    def __repr__(self):
        return f"{type(self).__name__}({self.mode}: {self.describe()})"


def _unique(specs: list[SolverSpec]) -> list[SolverSpec]:
    out = []
    for spec in specs:
        if spec not in out:
            out.append(spec)
    return out


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

    def known_specs(self) -> list[SolverSpec]:
        return _unique([*self.specs, *super().known_specs()])

    def identity(self) -> dict:
        return {"mode": self.mode, "specs": [s.to_dict() for s in self.specs]}

    def _foreign(self, current):
        return None if current == self.specs else f"{[s.label() for s in current]} is not {self.specs[0].label()}"

    def _verifiable_without_identity(self) -> bool:
        return True  # the current solver is the whole configuration


class EnsembleSolver(MetaSolver):
    """Averages the solutions of several solvers with fixed weights."""

    mode = "ensemble"

    def __init__(self, specs: Sequence[SolverSpec], weights: Sequence[float] | None = None):
        super().__init__()
        self.specs = _specs(specs, "MetaSolver.ensemble")
        self.weights = validate_probabilities(weights, len(self.specs), "MetaSolver.ensemble weights")
        self._current = list(self.specs)
        self._log()

    def known_specs(self) -> list[SolverSpec]:
        return _unique([*self.specs, *super().known_specs()])

    def identity(self) -> dict:
        return {"mode": self.mode, "specs": [s.to_dict() for s in self.specs], "weights": list(self.weights)}

    def _foreign(self, current):
        return None if current == self.specs else f"members {[s.label() for s in current]}"

    def _unverifiable(self) -> str:
        return "weights"

    @property
    def current(self) -> list[SolverSpec]:
        """The member solvers (a list)."""
        return self._active()

    def _weights(self) -> list[float]:
        return self.weights if self._override is None else super()._weights()

    def summary(self) -> str:
        return "ensemble of " + " + ".join(f"{w:.3g}·{s.label()}" for w, s in zip(self.weights, self.specs))


class _RandomSolver(MetaSolver):
    """Shared machinery of the randomized modes: a seeded generator whose choices are drawn
    ``DRAW_BLOCK`` rounds at a time (resumable mid-block through ``state_dict``)."""

    def __init__(self, seed: int | None):
        super().__init__()
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
            raise ValueError(f"MetaSolver: seed must be a non-negative integer or None, got {seed!r}")
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

    def _parse_random_state(self, state: Mapping):
        """The generator (and the block of draws in use) rebuilt from ``state`` on the side,
        so that a bad state changes nothing."""
        prefix = "MetaSolver.load_state_dict"
        saved = state.get("generator")
        if not isinstance(saved, torch.Tensor) or saved.dtype != torch.uint8:
            raise ValueError(f"{prefix}: 'generator' must be the uint8 tensor of Generator.get_state(), "
                             f"got {type(saved).__name__}")
        generator = torch.Generator()
        try:
            generator.set_state(saved.cpu())
        except (RuntimeError, ValueError, TypeError) as error:
            raise ValueError(f"{prefix}: 'generator' is not a valid generator state ({error})") from None
        block, block_pos, block_state = [], 0, None
        if state.get("block_pos") is not None:  # redraw the block the saved run was using
            block_pos = _int(state["block_pos"], "block_pos", 0, DRAW_BLOCK)
            block_state = generator.get_state()
            previous = self.generator
            self.generator = generator
            try:
                block = self._draw_block()
            finally:
                self.generator = previous
        return generator, block, block_pos, block_state

    def _apply_random_state(self, prepared) -> None:
        self.generator, self._block, self._block_pos, self._block_state = prepared


class SwitchingSolver(_RandomSolver):
    """Draws one of a finite set of solvers at each round."""

    mode = "switching"

    def __init__(self, specs: Sequence[SolverSpec], probs: Sequence[float] | None = None, seed: int | None = None,
                 eval_spec: SolverSpec | None = None):
        specs = _specs(specs, "MetaSolver.switching")
        probs = validate_probabilities(probs, len(specs), "MetaSolver.switching probs")
        super().__init__(seed)
        if eval_spec is not None and not isinstance(eval_spec, SolverSpec):
            raise ValueError(f"MetaSolver.switching: eval_spec must be a SolverSpec, got {eval_spec!r}")
        self.specs, self.probs, self._eval_spec = specs, probs, eval_spec
        self._start()

    def known_specs(self) -> list[SolverSpec]:
        return _unique([*self.specs, *super().known_specs()])

    def identity(self) -> dict:
        return {"mode": self.mode, "specs": [s.to_dict() for s in self.specs], "probs": list(self.probs),
                "eval_spec": self.eval_spec.to_dict()}

    def _foreign(self, current):
        if len(current) != 1 or current[0] not in self.specs:
            return f"{[s.label() for s in current]} is not one of {[s.label() for s in self.specs]}"
        return None

    def _unverifiable(self) -> str:
        return "probabilities"

    def _draw_block(self) -> list:
        probs = torch.tensor(self.probs, dtype=torch.float64)
        return torch.multinomial(probs, DRAW_BLOCK, replacement=True, generator=self.generator).tolist()

    def _draw(self) -> list[SolverSpec]:
        return [self.specs[self._next_draw()]]

    def summary(self) -> str:
        return "switching among " + ", ".join(f"{s.label()} (p={p:.3g})" for s, p in zip(self.specs, self.probs))

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
        if isinstance(self, PerSampleSmoothingSolver) and family.adaptive:
            raise ValueError(f"MetaSolver.smoothing: {method} is adaptive, and adaptive methods take one "
                             f"parameter value per solve; use per_sample=False")
        where = f"MetaSolver.smoothing({method!r})"
        if center is not None and not isinstance(center, Mapping):
            raise ValueError(f"{where}: center must be a mapping such as {{'u': 0.5}}, got {center!r}")
        try:
            center = {name: check_parameter(name, value, per_sample=False) for name, value in (center or {}).items()}
            center = {name: float(value) for name, value in family.resolve(center).items()}
        except ValueError as error:
            raise ValueError(f"{where}: center: {error}") from None
        if not family.in_support(center):
            raise ValueError(f"MetaSolver.smoothing: center {center} is outside {method}'s sampling "
                             f"support ({family.support_text()})")
        dist = make_distribution(distribution, scale, family)
        self._eval_spec = SolverSpec(method, center, step_size=step_size, n_steps=n_steps, rtol=rtol, atol=atol)
        super().__init__(seed)
        self.family, self.center, self.distribution = family, center, dist
        self.n_steps, self.step_size = self._eval_spec.n_steps, self._eval_spec.step_size
        self.rtol, self.atol = rtol, atol
        self._start()

    @property
    def eval_spec(self) -> SolverSpec:
        return self._eval_spec

    def _spec(self, params) -> SolverSpec:
        return SolverSpec(self.family.name, params, self.step_size, self.n_steps, self.rtol, self.atol)

    def summary(self) -> str:
        grid = self._eval_spec.label()[len(self.family.name):]
        grid = grid[grid.index(";") + 2:-1] if ";" in grid else grid.strip("()")
        per = ", per sample" if isinstance(self, PerSampleSmoothingSolver) else ""
        return f"{self.family.name}({grid}), {distribution_label(self.distribution, self.center)}{per}"

    def identity(self) -> dict:
        identity = {"mode": self.mode, "per_sample": isinstance(self, PerSampleSmoothingSolver),
                    "family": self.family.name, "center": dict(self.center),
                    "distribution": distribution_identity(self.distribution),
                    "n_steps": self._eval_spec.n_steps, "step_size": self._eval_spec.step_size}
        if self.rtol is not None or self.atol is not None:
            identity.update(rtol=self.rtol, atol=self.atol)
        return identity

    def _foreign(self, current):
        spec = current[0]
        if len(current) != 1 or spec.method != self.family.name or \
                (spec.n_steps, spec.step_size) != (self._eval_spec.n_steps, self._eval_spec.step_size):
            return f"{[s.label() for s in current]} is not a {self.family.name} solver on this grid"
        point = self.family.resolve(spec.params)
        if any(isinstance(v, torch.Tensor) for v in point.values()) or not self.family.in_support(point):
            return (f"its parameters {spec.label()} are not a point this configuration draws: {self.family.name}'s "
                    f"sampling support is {self.family.support_text()}")
        return None

    def _unverifiable(self) -> str:
        return "center and distribution"

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
        if adjoint:
            raise ValueError("MetaSolver.smoothing(per_sample=True) cannot solve with the adjoint method "
                             "(odeint_adjoint flattens the batch the per-sample parameters apply to); use "
                             "adjoint=False, or per_sample=False")
        if not isinstance(y0, torch.Tensor) or y0.ndim == 0:
            raise ValueError(f"MetaSolver.smoothing(per_sample=True) draws one parameter point per sample along "
                             f"dim 0 of y0, but y0 has no batch dimension "
                             f"(shape {tuple(y0.shape) if isinstance(y0, torch.Tensor) else type(y0).__name__}); "
                             f"pass y0 of shape (batch, ...)")
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

    def _foreign(self, current):
        if current != [self._eval_spec]:
            return f"{[s.label() for s in current]} is not the center {self._eval_spec.label()}"
        return None

    def _unverifiable(self) -> str:
        return "distribution"

    def _parse_random_state(self, state: Mapping):
        round_seed = state.get("round_seed")
        if round_seed is not None:
            round_seed = _int(round_seed, "round_seed")
        return super()._parse_random_state(state), round_seed

    def _apply_random_state(self, prepared) -> None:
        super()._apply_random_state(prepared[0])
        self._round_seed = prepared[1]
