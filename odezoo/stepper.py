"""One generic explicit Runge–Kutta stepper for every registered family.

torchdiffeq gets one subclass of `ParameterizedRKSolver` per family (see
``registry.py``).  The tableau is turned into a *plan* once per solve (``plan.py``): Python
floats when the parameters are plain numbers (so every stage is a single fused ``torch.add(..,
alpha=..)``), tensors when a parameter needs a gradient or differs per sample; the grid and
its stage times are prepared once per grid (``timegrid.py``).  With float
coefficients and nothing to intercept (no ``perturb``, callback or differentiable time) each
step runs as straight-line code generated once per tableau shape (`_straight_line_step`);
everything else takes the general loop (`ParameterizedRKSolver._stages`), with the same
operations in the same order.
"""
from __future__ import annotations

import functools
import math

import numpy as np
import torch

from . import _torchdiffeq_bridge as bridge
from . import inputs
from ._torchdiffeq_bridge import FixedGridODESolver, Perturb
from .family import SolverFamily
from .plan import StepPlan, make_plan
from .step_warning import output_grid
from .timegrid import PreparedGrid, Timeline, prepared, stage_time

__all__ = ["ParameterizedRKSolver", "scaled_terms", "straight_line"]

_TORCHDIFFEQ_OPTIONS = ("step_size", "grid_constructor", "interp", "perturb")
_PASSED_BY_TORCHDIFFEQ = ("rtol", "atol", "norm")


def scaled_terms(plan: StepPlan, dt):
    """``(rows, weights)`` of ``plan`` as terms ``(j, coef, value)`` meaning ``value·coef·k_j``
    with the step ``dt`` folded in: float coefficients times a float step become one float;
    tensor coefficients keep the float step as ``value`` (``addcmul``'s scalar, so scaling
    costs no tensor operation); a tensor step (differentiable time) multiplies every coefficient."""
    def term(j, a):
        if isinstance(dt, float) and not isinstance(a, float):
            return (j, a, dt)
        return (j, a * dt, 1.0)
    return (tuple(tuple(term(j, a) for j, a in row) for row in plan.rows),
            tuple(term(i, b) for i, b in plan.weights))


def _combine(base, terms, ks):
    """``base + Σ value·coef·k_j`` over ``terms`` from `scaled_terms` (just the sum when
    ``base`` is None): one fused tensor operation per term, ``add(alpha=float)`` for float
    coefficients, ``addcmul(value=float)`` for tensor ones."""
    out = None
    for j, coef, value in terms:
        k = ks[j]
        if isinstance(coef, float):
            if out is None:
                out = k * coef if base is None else torch.add(base, k, alpha=coef)
            else:
                out.add_(k, alpha=coef)
        elif out is None:
            out = (k * coef) * value if base is None else torch.addcmul(base, k, coef, value=value)
        else:
            out.addcmul_(k, coef, value=value)
    if out is None:
        return base if base is not None else torch.zeros_like(ks[0])
    return out


@functools.lru_cache(maxsize=256)
def _straight_line_step(rows: tuple, weights: tuple):
    """One explicit Runge–Kutta step as straight-line Python for the *structure* of a float plan
    (``rows[i]`` / ``weights``: the stage indices j of the nonzero coefficients), so a step makes
    no Python loops, no per-term type checks and no wrapper calls — the same tensor operations,
    in the same order, as `_stages` and `_combine` with float coefficients (bit for
    bit the same result).  The step takes ``(f, y0, t, c, dtype)``: the stage times ``t``, the
    coefficients times the step ``c`` in row-major order, then the weights; ``t[i]`` is cast to
    the real dtype of a stage's input where that is not ``dtype`` (as torchdiffeq's wrapper
    does).  Returns ``(y1, k0)``.  Generated once per structure (a tableau shape, not a value)."""
    lines = ["def step(f, y0, t, c, dtype):"]
    n = 0

    def combined(target, terms):
        nonlocal n
        if not terms:
            lines.append(f"    {target} = y0")
            return
        first, *rest = terms
        lines.append(f"    {target} = add(y0, k{first}, alpha=c[{n}])")
        n += 1
        for j in rest:
            lines.append(f"    {target}.add_(k{j}, alpha=c[{n}])")
            n += 1

    lines.append("    k0 = f(t[0] if y0.dtype is dtype else cast(t[0], y0), y0)")
    for i, terms in enumerate(rows, start=1):
        combined("y", terms)
        lines.append(f"    k{i} = f(t[{i}] if y.dtype is dtype else cast(t[{i}], y), y)")
    combined("y", weights)
    lines.append("    return y, k0")
    namespace = {"add": torch.add, "cast": _cast_time}
    exec(compile("\n".join(lines), f"<odezoo step {rows} {weights}>", "exec"), namespace)
    return namespace["step"]


def _cast_time(t, y):
    return t.to(y.dtype.to_real())


def straight_line(rows, weights):
    """``(step, coefficients)`` for scaled float terms from `scaled_terms`, or None when a
    coefficient is a tensor or there is no weight (those take the general path)."""
    terms = [term for row in rows for term in row] + list(weights)
    if not weights or not all(isinstance(coef, float) for _, coef, _ in terms):
        return None
    step = _straight_line_step(tuple(tuple(j for j, _, _ in row) for row in rows), tuple(j for j, _, _ in weights))
    return step, tuple(coef for _, coef, _ in terms)


def _perturbed(func, node):
    """The call of one stage under ``perturb``: through torchdiffeq's wrapper with ``Perturb.NEXT``
    at node 0 (just after ``t0``), ``Perturb.PREV`` at node 1 (just before ``t1``), unperturbed
    elsewhere.  A tensor node (per-sample or differentiable parameters) is nudged sample by
    sample, the same way: the time cast to the state's real dtype, then moved to the next
    representable value where the node is 0 and the previous one where it is 1 (with
    torchdiffeq's gradient-preserving ``nextafter``)."""
    if isinstance(node, float):
        which = Perturb.NEXT if node == 0.0 else Perturb.PREV if node == 1.0 else Perturb.NONE
        return functools.partial(func, perturb=which)
    at_start, at_end = (node == 0.0).detach(), (node == 1.0).detach()
    if not bool((at_start | at_end).any()):  # one host sync per solve
        return functools.partial(func, perturb=Perturb.NONE)

    def call(t, y):
        t = t.real if t.is_complex() else t
        t = t.to(y.dtype.to_real())
        t = torch.where(at_start, bridge.nextafter(t, t + 1), torch.where(at_end, bridge.nextafter(t, t - 1), t))
        return func(t, y, perturb=Perturb.NONE)
    return call


def _direct(base):
    """Call ``base(t, y)`` the way torchdiffeq's wrapper does with ``Perturb.NONE``: ``t``
    cast to the real dtype of ``y`` (a no-op for stage times cast once per solve)."""
    def call(t, y):
        real = y.dtype.to_real()
        return base(t if t.dtype == real else t.to(real), y)
    return call


class ParameterizedRKSolver(FixedGridODESolver):
    """torchdiffeq fixed-grid solver for one `SolverFamily` (set on subclasses).

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
        where = f"method {family.name!r}"
        if step_size is not None and not (type(step_size) is float and 0.0 < step_size < math.inf):
            step_size = inputs.positive_number(f"{where}: step_size", step_size)  # the door (floats pass as they are)
        if interp not in ("linear", "cubic"):
            raise ValueError(f"{where}: interp must be 'linear' or 'cubic', got {interp!r}")
        if perturb is not False and perturb is not True and not isinstance(perturb, np.bool_):
            raise ValueError(f"{where}: perturb must be True or False, got {perturb!r}")
        perturb = bool(perturb)
        # A grid that is a pure function of t's values (torchdiffeq's step_size grid, odezoo's
        # uniform n-step grid) lets integrate() reuse the grid bookkeeping across solves.
        self._grid_key = (("step", float(step_size)) if step_size is not None and grid_constructor is None
                          else getattr(grid_constructor, "odezoo_grid_key", None))
        if step_size is None and grid_constructor is None:  # torchdiffeq #137: steps = output gaps
            grid_constructor = output_grid(family.name)  # same grid, plus an OdezooStepWarning
        super().__init__(func, y0, step_size=step_size, grid_constructor=grid_constructor,
                         interp=interp, perturb=perturb, **options)
        self.plan = make_plan(family, params, y0)

    # -- one step --------------------------------------------------------------
    def _stage_calls(self, func):
        """One callable ``(t, y) -> f`` per stage, calling ``func`` (torchdiffeq's wrapper).

        With ``perturb`` no stage evaluates exactly on a grid point, as torchdiffeq's perturb
        test requires: every stage at node 0 is taken just after ``t0`` and every stage at
        node 1 just before ``t1`` (torchdiffeq's convention for its first and last stages) —
        inner stages and repeated nodes too, and per sample where nodes are tensors.
        Without it the wrapper would only cast ``t``, so the wrapped function is called directly.
        """
        nodes = self.plan.nodes
        if not self.perturb:  # the user's function, behind torchdiffeq's wrapper or not (odezoo.odeint)
            base = bridge.unwrap_perturb(func)
            return [_direct(func if base is None else base)] * len(nodes)
        return [_perturbed(func, node) for node in nodes]

    def _stages(self, calls, y0, times, rows):
        """All stage derivatives k_1..k_s; ``times[i]`` is stage i's time, ``rows`` the
        plan's rows already multiplied by the step."""
        ks = [calls[0](times[0], y0)]
        for i, terms in enumerate(rows, start=1):
            ks.append(calls[i](times[i], _combine(y0, terms, ks)))
        return ks

    def _step_func(self, func, t0, dt, t1, y0):
        # Used by torchdiffeq's event handling; integrate() does not call it.
        times = [stage_time(node, t0, t1, dt) for node in self.plan.nodes]
        rows, weights = scaled_terms(self.plan, dt)
        ks = self._stages(self._stage_calls(func), y0, times, rows)
        return _combine(None, weights, ks), ks[0]

    # -- the whole grid --------------------------------------------------------
    def integrate(self, t, t_values=None):
        """Same contract and results as ``FixedGridODESolver.integrate``.

        Everything that does not change from step to step is prepared once per solve: the
        grid's bookkeeping runs on Python floats (one host sync per solve, none per step)
        unless the time grid itself needs a gradient; the stage times of every step are
        computed at once; coefficients times the step are computed once per distinct step
        size; and without ``perturb`` the function is called without torchdiffeq's wrapper,
        whose only work would be to cast ``t`` (and compute ``y.abs()`` to find the dtype).
        When the grid is a pure function of the values of ``t`` (``step_size``, or odezoo's
        ``n_steps`` grid) and the nodes are numbers, that preparation is kept, keyed by those
        values — never by tensor identity — and reused while none of its tensors has been
        modified in place (their version counters are checked on every reuse)."""
        if t_values is None:
            t_values = inputs.time_values(f"method {self.family.name!r}", t.tolist())
        timeline = self._timeline(t, t_values)
        plan = self.plan
        time_grid, grid_values = timeline.time_grid, timeline.grid_values
        t0_list, t1_list, dt_list, step_times = timeline.t0s, timeline.t1s, timeline.dts, timeline.step_times
        differentiable_time = time_grid.requires_grad
        calls = self._stage_calls(self.func)
        callback = getattr(self.func, "callback_step", None)
        if callback is None or bridge.is_null_callback(callback):
            callback = None
        scaled_by_dt = {}  # step size -> (rows, weights) multiplied by that step
        # The common case — float coefficients, a real state, no perturb, callback or
        # differentiable time — runs each step as straight-line code (same operations).
        base = None
        dtype = self.y0.dtype
        if not (self.perturb or differentiable_time or callback is not None or dtype.is_complex):
            base = bridge.unwrap_perturb(self.func) or self.func
        straight_by_dt = {}  # step size -> (step, coefficients) or None

        solution = [self.y0]
        j = 1
        n_out = len(t_values)
        y0 = self.y0
        for n in range(len(grid_values) - 1):
            t0f, t1f = grid_values[n], grid_values[n + 1]
            if base is not None:
                step = t1f - t0f
                straight = straight_by_dt.get(step, False)
                if straight is False:
                    straight = straight_by_dt[step] = straight_line(*scaled_terms(plan, step))
                if straight is not None:
                    y1, f0 = straight[0](base, y0, step_times[n], straight[1], dtype)
                    while j < n_out and t1f >= t_values[j]:
                        solution.append(self._interpolate(t0_list[n], t1_list[n], t0f, t1f, y0, y1, f0, t[j],
                                                          t_values[j]))
                        j += 1
                    y0 = y1
                    continue
            if differentiable_time:
                rows, weights = scaled_terms(plan, dt_list[n])
            else:
                step = t1f - t0f
                scaled = scaled_by_dt.get(step)
                if scaled is None:
                    scaled = scaled_by_dt[step] = scaled_terms(plan, step)
                rows, weights = scaled
            if callback is not None:
                callback(t0_list[n], y0, dt_list[n])
            ks = self._stages(calls, y0, step_times[n], rows)
            y1 = _combine(y0, weights, ks)
            while j < n_out and t1f >= t_values[j]:
                solution.append(self._interpolate(t0_list[n], t1_list[n], t0f, t1f, y0, y1, ks[0], t[j],
                                                  t_values[j]))
                j += 1
            y0 = y1
        return torch.stack(solution)

    def integrate_per_sample(self, t: torch.Tensor, n_steps: int | None = None) -> torch.Tensor:
        """Each sample over its own times: ``t`` of shape ``(T, batch)`` (checked by
        [`odezoo.inputs.sample_times`][odezoo.inputs.sample_times]), the states at ``t[j, b]`` returned with shape
        ``(T, batch, ...)``.

        Every sample takes the same number of steps over its own grid — one step per interval
        between its output times, or ``n_steps`` equal steps over its whole interval (odezoo's
        ``SolverSpec(n_steps=...)`` grid) — so a step is one batched operation with a step size
        per sample; a sample whose times decrease steps backwards.  The stages, plan (scalar or
        per-sample parameters) and linear interpolation to inner output times are the solver's
        own, so each sample's result equals a solve of that sample alone on the same grid to
        round-off.  Autograd flows to ``y0``, the function's parameters, the parameters and ``t``.
        """
        y0 = self.y0
        batch, count = t.shape[1], t.shape[0]
        if count == 1:
            return y0.unsqueeze(0)
        if n_steps is None:
            grid = t
        else:
            fraction = torch.arange(n_steps + 1, dtype=t.dtype, device=t.device).div_(n_steps)
            grid = torch.cat([t[:1], t[0] + fraction[1:-1, None] * (t[-1] - t[0]), t[-1:]])
        shape = (batch,) + (1,) * (y0.ndim - 1)
        stage_dtype = y0.dtype.to_real()
        calls = self._stage_calls(self.func)
        states = [y0]
        for n in range(grid.shape[0] - 1):
            t0, t1 = grid[n], grid[n + 1]
            dt = (t1 - t0).reshape(shape)
            times = [stage_time(node, t0.reshape(shape), t1.reshape(shape), dt, stage_dtype) for node in self.plan.nodes]
            rows, weights = scaled_terms(self.plan, dt)
            rows = tuple(tuple(_as_dtype(term, stage_dtype) for term in row) for row in rows)
            weights = tuple(_as_dtype(term, stage_dtype) for term in weights)
            ks = self._stages(calls, y0, times, rows)
            y0 = _combine(y0, weights, ks)
            states.append(y0)
        return _interpolate_per_sample(grid, torch.stack(states), t)

    def _timeline(self, t, t_values) -> Timeline:
        """The grid's bookkeeping and every step's stage times.  The grid part depends only on
        the grid kind and t's values, so when those are all it depends on it is kept
        (`odezoo.timegrid.prepared`) and each float node's column of stage times is kept
        with it; tensor nodes (per-sample or differentiable parameters) and nodes that change
        every solve (smoothing) only cost their own column."""
        stage_dtype = self.y0.dtype.to_real()
        key = None
        if self._grid_key is not None and not t.requires_grad:
            key = (self._grid_key, tuple(t_values), t.dtype, t.device)
        grid = prepared(key, lambda: self._make_grid(t))
        columns = [grid.column(node, stage_dtype) for node in self.plan.nodes]
        return Timeline(grid.time_grid, grid.grid_values, grid.t0_list, grid.t1_list, grid.dt_list,
                        list(zip(*columns)))

    def _make_grid(self, t) -> PreparedGrid:
        time_grid = self.grid_constructor(self.func, self.y0, t)
        if not (time_grid[0] == t[0] and time_grid[-1] == t[-1]):
            raise ValueError(f"the grid_constructor returned a grid from {float(time_grid[0])!r} to "
                             f"{float(time_grid[-1])!r}, but it must start and end at the integration times "
                             f"t[0]={float(t[0])!r} and t[-1]={float(t[-1])!r}; include both end points")
        t0s, t1s = time_grid[:-1], time_grid[1:]
        dts = t1s - t0s
        return PreparedGrid(time_grid, time_grid.tolist(), t0s, t1s, dts, t0s.unbind(0), t1s.unbind(0), dts.unbind(0))

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


def _as_dtype(term, dtype):
    """A scaled term with its tensor coefficient in the stage dtype (computed in the time's dtype)."""
    j, coef, value = term
    return (j, coef.to(dtype), value) if isinstance(coef, torch.Tensor) and coef.dtype != dtype else term


def _interpolate_per_sample(grid: torch.Tensor, states: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The states at the times ``t`` (T, batch) from the states on each sample's ``grid`` (N + 1,
    batch): for output j of sample b the first step whose end reaches ``t[j, b]`` in the sample's
    direction, as the eager stepper takes it, and the same linear interpolation (exactly the grid
    state where the time is a grid point)."""
    direction = torch.where(t[-1] > t[0], 1.0, -1.0).to(grid.dtype)
    ends = (grid[1:] * direction).T.contiguous()  # (batch, N), increasing in every row
    step = torch.searchsorted(ends, (t * direction).T.contiguous()).T.clamp_(max=grid.shape[0] - 2)  # (T, batch)
    sample = torch.arange(t.shape[1], device=t.device).expand_as(step)
    g0, g1 = grid.gather(0, step), grid.gather(0, step + 1)
    y0, y1 = states[step, sample], states[step + 1, sample]
    extra = (1,) * (states.ndim - 2)
    slope = ((t - g0) / (g1 - g0)).to(states.dtype if not states.is_complex() else states.real.dtype)
    out = y0 + slope.reshape(slope.shape + extra) * (y1 - y0)
    out = torch.where((t == g1).reshape(t.shape + extra), y1, out)
    return torch.where((t == g0).reshape(t.shape + extra), y0, out)
