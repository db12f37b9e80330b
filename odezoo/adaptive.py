"""The adaptive solver of embedded pairs: torchdiffeq's Runge–Kutta step with odezoo's tableau.

An *embedded pair* is one set of stages ``(A, c)`` with two weight rows: ``b`` (the method
that advances the solution, order p) and ``b̂`` (the embedded method, order p̂ < p).  Their
difference estimates the local error, and torchdiffeq's step-size controller does the rest.
A pair is an :class:`odezoo.SolverFamily` with ``embedded_order`` set, whose tableau (an
:class:`odezoo.ButcherTableau`) carries ``b_embedded`` and optionally ``b_mid``;
:class:`EmbeddedRKSolver` is torchdiffeq's ``RKAdaptiveStepsizeODESolver`` for it, so
``rtol``/``atol``, ``first_step``, ``step_t``/``jump_t``, events and ``odeint_adjoint``
behave exactly as for ``dopri5``.
"""
from __future__ import annotations

from functools import lru_cache

import torch

from . import _torchdiffeq_bridge as bridge
from . import inputs
from .family import SolverFamily
from .order import dense_weights
from .plan import check_coefficient_size
from .tableau import ButcherTableau

__all__ = ["EmbeddedRKSolver", "ADAPTIVE_OPTIONS", "torchdiffeq_tableau", "mid_weights"]

#: Dense-output weights from the order conditions (see :func:`odezoo.order.dense_weights`).
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
    """torchdiffeq adaptive solver for one embedded-pair :class:`~odezoo.SolverFamily` (set on subclasses).

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
        largest = pair._largest()
        check_coefficient_size(family.name, largest, y0.dtype.to_real(), family.resolve(params))  # as odezoo.plan
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
