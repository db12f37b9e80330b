"""The adaptive solver of embedded pairs: torchdiffeq's Runge–Kutta step with odezoo's tableau.

An *embedded pair* is one set of stages ``(A, c)`` with two weight rows: ``b`` (the method
that advances the solution, order p) and ``b̂`` (the embedded method, order p̂ < p).  Their
difference estimates the local error, and torchdiffeq's step-size controller does the rest.
A pair is an [`odezoo.SolverFamily`][odezoo.SolverFamily] with ``embedded_order`` set, whose tableau (an
[`odezoo.ButcherTableau`][odezoo.ButcherTableau]) carries ``b_embedded`` and optionally ``b_mid``;
`EmbeddedRKSolver` is torchdiffeq's ``RKAdaptiveStepsizeODESolver`` for it, so
``rtol``/``atol``, ``first_step``, ``step_t``/``jump_t``, events and ``odeint_adjoint``
behave exactly as for ``dopri5``.
"""
from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import torch

from . import _torchdiffeq_bridge as bridge
from . import inputs
from .family import SolverFamily
from .order import dense_weights
from .plan import check_coefficient_size
from .tableau import ButcherTableau

__all__ = ["EmbeddedRKSolver", "ADAPTIVE_OPTIONS", "torchdiffeq_tableau", "mid_weights"]

#: Dense-output weights from the order conditions (see `odezoo.order.dense_weights`).
mid_weights = dense_weights


# ---------------------------------------------------------------------------- the solver
#: torchdiffeq's options of RKAdaptiveStepsizeODESolver (``norm`` comes from odeint itself).
ADAPTIVE_OPTIONS = ("first_step", "min_step", "max_step", "step_t", "jump_t", "safety", "ifactor", "dfactor",
                    "max_num_steps", "dtype")


@lru_cache(maxsize=4096)
def torchdiffeq_tableau(tableau: ButcherTableau):
    """``(RKTableau, mid, dense)`` for torchdiffeq's Runge–Kutta step.

    torchdiffeq's step takes ``k_0 = f(t0, y0)`` from the previous step and uses its last
    stage as ``f(t1, y1)`` for the next one.  An FSAL pair (dopri5, tsit5) already ends with
    that stage; any other pair gets it appended (weight 0 in both rows), so a step costs s
    evaluations either way.  ``dense`` is ``"mid"`` with ``b_mid`` (torchdiffeq's quartic),
    else ``"hermite"`` (cubic Hermite through the step's ends).
    """
    A, b, c = tableau.A.tolist(), tableau.b.tolist(), tableau.c.tolist()
    error = [bi - ei for bi, ei in zip(b, tableau.b_embedded.tolist())]
    mid = None if tableau.b_mid is None else tableau.b_mid.tolist()
    s = len(b)
    beta = [A[i][:i] for i in range(1, s)]
    if tableau.is_fsal:
        alpha, c_sol = c[1:], b
    else:
        alpha, c_sol = c[1:] + [1.0], b + [0.0]
        beta.append(b)
        error = error + [0.0]
        mid = None if mid is None else mid + [0.0]
    f64 = dict(dtype=torch.float64)
    rk = bridge.RKTableau(alpha=torch.tensor(alpha, **f64), beta=[torch.tensor(row, **f64) for row in beta],
                          c_sol=torch.tensor(c_sol, **f64), c_error=torch.tensor(error, **f64))
    dense = "hermite" if mid is None else "mid"
    mid_tensor = torch.zeros(len(c_sol), **f64) if mid is None else torch.tensor(mid, **f64)
    return rk, mid_tensor, dense


class EmbeddedRKSolver(bridge.RKAdaptiveStepsizeODESolver):
    """torchdiffeq adaptive solver for one embedded-pair [`SolverFamily`][odezoo.SolverFamily] (set on subclasses).

    Options: the family's parameters (numbers) and torchdiffeq's adaptive options
    (``first_step``, ``min_step``, ``max_step``, ``step_t``, ``jump_t``, ``safety``,
    ``ifactor``, ``dfactor``, ``max_num_steps``, ``dtype``).  Everything after the tableau —
    the step, the error ratio, the controller, events, interpolation with ``b_mid`` — is
    torchdiffeq's own code; ``order`` (the controller's exponent 1/order) is p̂ + 1 as for
    torchdiffeq's pairs.
    """

    family: SolverFamily
    order: int

    def __init__(self, func, y0, rtol, atol, **options):
        family = self.family
        params = {name: options.pop(name) for name in family.params if name in options}
        unknown = sorted(set(options) - set(ADAPTIVE_OPTIONS) - {"norm"})
        if unknown:
            raise ValueError(f"method {family.name!r}: unknown option(s) {unknown}; it takes its parameters "
                             f"{list(family.params)} and torchdiffeq's adaptive options {list(ADAPTIVE_OPTIONS)} "
                             f"(rtol and atol are arguments of odeint)")
        for name, value in params.items():
            if isinstance(value, torch.Tensor) and (value.numel() != 1 or value.requires_grad):
                raise ValueError(
                    f"method {family.name!r}: adaptive methods take one number per parameter and do not "
                    f"differentiate with respect to it; {name} is a tensor of shape {tuple(value.shape)}"
                    f"{' that requires a gradient' if value.requires_grad else ''} (per-sample parameters and "
                    f"gradients w.r.t. parameters need a fixed-grid family)")
            params[name] = inputs.real_number(f"method {family.name!r}: parameter {name}", value, tensor=True)
        where = f"method {family.name!r}"
        inputs.state(where, y0)
        # torchdiffeq's numeric options, through the same door as every number (they are cast to tensors
        # there, so text, bools and complex values would otherwise fail deep inside or pass silently)
        for name in ("first_step", "safety", "ifactor", "dfactor"):
            if options.get(name) is not None:
                options[name] = inputs.positive_number(f"{where}: {name}", options[name])
        for name in ("min_step", "max_step"):
            if name in options:
                value = inputs.real_number(f"{where}: {name}", options[name], finite=name == "min_step", tensor=True)
                if not value >= 0:
                    raise ValueError(f"{where}: {name} must be a number >= 0, got {options[name]!r}")
                options[name] = value
        if "max_num_steps" in options:
            options["max_num_steps"] = inputs.whole_number(f"{where}: max_num_steps", options["max_num_steps"], low=1)
        self.pair = family.tableau(**params)
        pair = self.pair
        self.stats = None
        check_coefficient_size(family.name, pair.largest, y0.dtype.to_real(), family.resolve(params))  # as odezoo.plan
        self.tableau, self.mid, self.dense = torchdiffeq_tableau(self.pair)
        super().__init__(func, y0, rtol, atol, **options)

    def _before_integrate(self, t):
        inputs.time_values(f"method {self.family.name!r}", t.tolist())
        return super()._before_integrate(t)

    def _interp_fit(self, y0, y1, k, dt):
        if self.dense == "mid":
            return super()._interp_fit(y0, y1, k, dt)
        # Cubic Hermite through (y0, f0) and (y1, f1), as coefficients of x^0..x^3 with
        # x = (t - t0) / dt: what torchdiffeq's interpolation evaluates.
        dt = dt.type_as(y0)
        f0, f1 = k[..., 0], k[..., -1]
        delta = y1 - y0
        return [y0, dt * f0, 3 * delta - dt * (2 * f0 + f1), dt * (f0 + f1) - 2 * delta]

    # -- per-sample times ------------------------------------------------------------
    def integrate_per_sample(self, t: torch.Tensor) -> torch.Tensor:
        """Each sample over its own times ``t`` of shape ``(T, batch)`` (checked by
        [`odezoo.inputs.sample_times`][odezoo.inputs.sample_times]), with its own error control: the states at ``t[j, b]``,
        shape ``(T, batch, ...)``.

        Every sample runs torchdiffeq's adaptive algorithm on its own — the initial step of
        Hairer, Nørsett & Wanner (II.4), the step with this pair's tableau, the error ratio
        (RMS over the sample's entries of ``error / (atol + rtol·max(|y0|, |y1|))``), acceptance
        at ratio ≤ 1, the controller (``safety``, ``ifactor``, ``dfactor``, exponent 1/(p̂+1),
        ``min_step``/``max_step``) and the dense output between steps — with its own step size,
        accepting or rejecting its own steps, all samples' steps taken as one batched step; a
        sample whose times decrease integrates its negated time, as torchdiffeq does.  The
        solve ends when the last sample has passed its last time.  ``self.stats`` then holds
        per-sample counts (``nfe``, ``accepted``, ``rejected``).  Backpropagation flows through
        the accepted steps.
        """
        y0 = self.y0
        count, batch = t.shape
        shape = (batch,) + (1,) * (y0.ndim - 1)
        real = y0.abs().dtype
        device = y0.device
        counts = {name: torch.zeros(batch, dtype=torch.long, device=device) for name in ("nfe", "accepted", "rejected")}
        self.stats = counts
        if count == 1:
            return y0.unsqueeze(0)
        tdt = self.dtype
        sign = torch.where(t[-1] > t[0], 1.0, -1.0).to(tdt)
        s = t.to(tdt) * sign  # every column increasing: torchdiffeq integrates a decreasing t as -t
        sign_y = sign.to(real).reshape(shape)
        func = self.func

        if bool((sign > 0).all()):
            f = func  # every sample runs forward: its clock is its time
        else:
            def f(time, y):  # time: (batch, 1, ...) in the state's real dtype, on the increasing clock
                return sign_y * func(time * sign_y, y)

        def norm(x):  # torchdiffeq's RMS norm, per sample
            return x.abs().pow(2).reshape(batch, -1).mean(1).sqrt()

        def per_sample(x):
            return x.reshape(shape)

        rtol, atol = self.rtol, self.atol
        f0 = f(per_sample(s[0].to(real)), y0)
        counts["nfe"] += 1
        if self.first_step is None:  # torchdiffeq's _select_initial_step, per sample
            order = self.order - 1
            scale = atol + y0.abs() * rtol
            d0, d1 = norm(y0 / scale), norm(f0 / scale)
            h0 = torch.where((d0 < 1e-5) | (d1 < 1e-5), torch.full_like(d0, 1e-6), 0.01 * d0 / d1).abs()
            y1 = y0 + per_sample(h0.to(y0.dtype)) * f0
            f1 = f(per_sample((s[0] + h0.to(tdt)).to(real)), y1)
            counts["nfe"] += 1
            d2 = (norm((f1 - f0) / scale) / h0).abs()
            tiny = (d1 <= 1e-15) & (d2 <= 1e-15)
            h1 = torch.where(tiny, torch.maximum(torch.full_like(h0, 1e-6), h0 * 1e-3),
                             (0.01 / torch.maximum(d1, d2)) ** (1.0 / float(order + 1))).abs()
            dt = torch.minimum(100 * h0, h1).to(tdt)
        else:
            dt = self.first_step.expand(batch).clone()
        t1 = s[0].clone()  # where each sample's solution has got to
        y, f_current = y0, f0
        x_dtype = y0.dtype if not y0.is_complex() else real
        # Each step is a fixed sequence of batched tensor operations; the host reads at most three booleans
        # per step (the step's preconditions; whether any output was reached; then whether all are done),
        # and every output a step reaches, for every sample, comes from one evaluation of the dense output.
        # The tableau is read as floats once per solve; counts are kept as attempts and acceptances.
        s_rows = s.T.contiguous()  # (batch, T): each sample's increasing clock, for searchsorted
        later = torch.arange(1, count, device=device).unsqueeze(1)  # (T - 1, 1): the outputs after the first
        pending = torch.zeros((count - 1,) + tuple(y0.shape), dtype=y0.dtype, device=device)  # outputs 1..T-1
        index = torch.ones(batch, dtype=torch.long, device=device)  # each sample's next output
        active = torch.ones(batch, dtype=torch.bool, device=device)
        steps = torch.zeros(batch, dtype=torch.long, device=device)
        attempts = torch.zeros(batch, dtype=torch.long, device=device)
        accepted = torch.zeros(batch, dtype=torch.long, device=device)
        min_step, max_step, max_num_steps = self.min_step, self.max_step, int(self.max_num_steps)
        plain_bounds = float(min_step) == 0.0 and float(max_step) == float("inf")
        controller = (self.safety, self.ifactor, self.dfactor, torch.ones_like(self.dfactor), 1.0 / float(self.order))
        zero, one = torch.zeros((), dtype=tdt, device=device), torch.ones((), dtype=tdt, device=device)
        reset = torch.zeros((), dtype=torch.long, device=device)
        finished, loops = False, 0
        while not finished:
            stepping = active
            dt = torch.where(torch.isfinite(dt), dt, min_step).clamp(min_step, max_step)
            step = torch.where(stepping, dt, zero)
            t_next = t1 + step
            stuck = stepping & ~(t_next > t1)
            problem = stuck.any() | ~torch.isfinite(y).all()
            if loops >= max_num_steps:  # before that, no sample can have taken max_num_steps steps
                problem = problem | (steps >= max_num_steps).any()
            loops += 1
            if bool(problem):
                self._raise_per_sample(stuck, steps, y, dt, batch)
            y1, f1, error, ks = self._batched_step(f, y, f_current, t1, step, t_next, shape, real)
            ratio = norm(error / (atol + rtol * torch.max(y.abs(), y1.abs())))
            if plain_bounds:  # torchdiffeq's conditions with min_step 0 and no max_step
                accept = stepping & (ratio <= 1)
            else:
                accept = stepping & (((ratio <= 1) & ~(step > max_step)) | (step <= min_step))
            # the outputs this step passes (torchdiffeq interpolates with the step that first reaches an
            # output time; a step covers an output only once it is accepted): all at once, per sample
            reach = torch.where(accept, torch.searchsorted(s_rows, t_next.unsqueeze(1), right=True).squeeze(1), index)
            moved = reach > index
            if bool(moved.any()):
                covered = (later >= index) & (later < reach)  # (T - 1, batch): the outputs this step reaches
                x = torch.where(covered, (s[1:] - t1) / torch.where(stepping, step, one), zero)
                coefficients = self._batched_dense(y, y1, ks, per_sample(step.to(x_dtype)))
                value = _dense_evaluate(coefficients, x.to(x_dtype).reshape((count - 1,) + shape))
                pending = torch.where(covered.reshape((count - 1,) + shape), value, pending)
                index = reach
                active = index < count
                finished = not bool(active.any())
            keep = per_sample(accept)
            t1 = torch.where(accept, t_next, t1)
            y, f_current = torch.where(keep, y1, y), torch.where(keep, f1, f_current)
            dt = torch.where(stepping, _optimal_steps(step, ratio, *controller), dt).clamp(min_step, max_step)
            attempts += stepping
            accepted += accept
            steps = torch.where(moved, reset, steps + stepping)  # torchdiffeq counts per output time
        stages = len(self.tableau.alpha)
        self.stats = {"nfe": counts["nfe"] + stages * attempts, "accepted": accepted, "rejected": attempts - accepted}
        return torch.cat([y0.unsqueeze(0), pending])

    def _raise_per_sample(self, stuck, steps, y, dt, batch):
        """The error torchdiffeq raises for one solve, naming the first sample it concerns (the step count
        as the previous step ended, then the step size and the state as this one starts)."""
        if bool((steps >= self.max_num_steps).any()):
            b = int((steps >= self.max_num_steps).nonzero()[0])
            raise AssertionError(f"max_num_steps exceeded ({int(steps[b])}>={int(self.max_num_steps)}) (sample {b})")
        if bool(stuck.any()):
            b = int(stuck.nonzero()[0])
            raise AssertionError(f"underflow in dt {float(dt[b])} (sample {b})")
        if not bool(torch.isfinite(y).all()):
            b = int((~torch.isfinite(y)).reshape(batch, -1).any(1).nonzero()[0])
            raise AssertionError(f"non-finite values in state `y` (sample {b})")

    def _batched_step(self, f, y0, f0, t0, dt, t1, shape, real):
        """torchdiffeq's ``_runge_kutta_step`` with a step size per sample: each combination
        ``y0 + dt·Σ a_j k_j`` as one fused sum of the stages and one multiply-add by the step; the
        stage times ``t0 + α·dt`` of all stages at once (``t1`` where α is 1)."""
        weights = self._weights(real, t0.device)
        t0, dt, t1 = (x.to(real) for x in (t0, dt, t1))
        inner = (t0 + weights.alpha * dt).reshape((-1,) + shape).unbind(0)
        t1 = t1.reshape(shape)
        dt = dt.reshape(shape)
        ks = [f0]
        y = y0
        for i, beta in enumerate(weights.beta):
            y = _step(y0, dt, ks, beta)
            ks.append(f(t1 if weights.at_end[i] else inner[i], y))
        if not weights.fsal:
            y = _step(y0, dt, ks, weights.c_sol)
        return y, ks[-1], _step(None, dt, ks, weights.c_error), ks

    def _weights(self, real, device):
        """The tableau as Python floats (and the stage nodes as a column in ``real``), once per solve."""
        cached = getattr(self, "_float_weights", None)
        if cached is None or cached.alpha.dtype != real or cached.alpha.device != device:
            tableau = self.tableau
            alpha, c_sol = tableau.alpha.tolist(), tableau.c_sol.tolist()
            beta = [row.tolist() for row in tableau.beta]
            cached = self._float_weights = _FloatWeights(
                alpha=torch.tensor(alpha, dtype=real, device=device).unsqueeze(1), at_end=[a == 1.0 for a in alpha],
                beta=beta, c_sol=c_sol, fsal=c_sol[-1] == 0 and c_sol[:-1] == beta[-1],
                c_error=tableau.c_error.tolist(), mid=self.mid.tolist())
        return cached

    def _batched_dense(self, y0, y1, ks, dt):
        """The dense output's coefficients of every sample's step (as `_interp_fit`)."""
        f0, f1 = ks[0], ks[-1]
        if self.dense == "mid":
            y_mid = _step(y0, dt, ks, self._weights(dt.dtype, dt.device).mid)
            a = 2 * dt * (f1 - f0) - 8 * (y1 + y0) + 16 * y_mid
            b = dt * (5 * f0 - 3 * f1) + 18 * y0 + 14 * y1 - 32 * y_mid
            c = dt * (f1 - 4 * f0) - 11 * y0 - 5 * y1 + 16 * y_mid
            return [y0, dt * f0, c, b, a]
        delta = y1 - y0
        return [y0, dt * f0, 3 * delta - dt * (2 * f0 + f1), dt * (f0 + f1) - 2 * delta]


class _FloatWeights(NamedTuple):
    alpha: torch.Tensor      # (stages, 1): the nodes of stages 2.., in the state's real dtype
    at_end: list             # whether each of those nodes is 1 (its time is the step's end)
    beta: list
    c_sol: list
    fsal: bool               # the solution's weights are the last stage's: y1 is that stage's input
    c_error: list
    mid: list


def _step(y0, dt, ks, weights):
    """``y0 + dt·Σ w_j k_j`` (just ``dt·Σ w_j k_j`` when ``y0`` is None); zero weights skipped."""
    total = None
    for k, w in zip(ks, weights):
        if w != 0.0:
            total = k * w if total is None else total.add_(k, alpha=w)
    if total is None:
        return torch.zeros_like(ks[0]) if y0 is None else y0
    return total * dt if y0 is None else torch.addcmul(y0, dt, total)


def _dense_evaluate(coefficients, x):
    """torchdiffeq's ``_interp_evaluate``: Σ c_i x^i, x in [0, 1] per sample."""
    total = coefficients[0] + x * coefficients[1]
    power = x
    for coefficient in coefficients[2:]:
        power = power * x
        total = total + power * coefficient
    return total


def _optimal_steps(step, ratio, safety, ifactor, dfactor, one, exponent):
    """torchdiffeq's ``_optimal_step_size``, per sample (``one``: 1 as a tensor like ``dfactor``;
    ``exponent``: 1/order).  Where the ratio is 0 the factor is ``ifactor`` (torchdiffeq's special
    case: ``safety / 0`` is inf, which the clamp brings down to ``ifactor``)."""
    with torch.no_grad():
        ratio = ratio.to(step.dtype)
        factor = torch.maximum(safety / ratio ** exponent, torch.where(ratio < 1, one, dfactor)).clamp(max=ifactor)
        return step * factor
