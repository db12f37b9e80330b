"""Embedded Runge–Kutta pairs: the tableau, its order checks, the adaptive family and its solver.

An *embedded pair* is one set of stages ``(A, c)`` with two weight rows: ``b`` (the method
that advances the solution, order p) and ``b̂`` (the embedded method, order p̂ < p).  Their
difference estimates the local error, and torchdiffeq's step-size controller does the rest:

* :class:`EmbeddedTableau` — a :class:`~odezoo.ButcherTableau` that also carries
  ``b_embedded`` and, optionally, dense-output weights ``b_mid`` (``y(t0 + dt/2) ≈ y0 +
  dt·Σ b_mid_i k_i``, torchdiffeq's ``c_mid``).  Both rows' orders come from rooted trees,
  with a tolerance relative to the size of each condition's terms.
* :class:`AdaptiveFamily` — a :class:`~odezoo.SolverFamily` whose formula also returns
  ``b̂`` (and ``b_mid``); plugins register it through the same hook.
* :class:`EmbeddedRKSolver` — torchdiffeq's ``RKAdaptiveStepsizeODESolver`` for one
  adaptive family, so ``rtol``/``atol``, ``first_step``, ``step_t``/``jump_t``, events and
  ``odeint_adjoint`` behave exactly as for ``dopri5``.
* :func:`register_tableau` / :func:`unregister_tableau` — one constant tableau as a method.
"""
from __future__ import annotations

import itertools
import math
import warnings
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from . import _torchdiffeq_bridge as bridge
from .family import SolverFamily
from .hookspecs import hookimpl
from .order import density, rooted_trees
from .plan import check_coefficient_size
from .registry import OdezooPluginWarning, registry
from .tableau import ButcherTableau

__all__ = ["EmbeddedTableau", "AdaptiveFamily", "EmbeddedRKSolver", "OrderConditions", "ORDER_RTOL",
           "MAX_PAIR_ORDER", "mid_weights", "register_tableau", "unregister_tableau", "TABLEAU_PLUGIN_PREFIX"]

#: A condition Φ(t) = θ^|t|/γ(t) holds when |Φ − θ^|t|/γ| ≤ ORDER_RTOL · (Φ computed with |A|, |b|  +  θ^|t|/γ).
ORDER_RTOL = 1e-10
#: Orders are computed up to this many tree vertices (Verner/DOP853-class pairs need 8, and 9 to see they stop).
MAX_PAIR_ORDER = 10
_SUM_RTOL = 1e-12
#: Plugin name under which :func:`register_tableau` registers a tableau.
TABLEAU_PLUGIN_PREFIX = "register_tableau:"


# ---------------------------------------------------------------------------- order conditions
class OrderConditions:
    """The order conditions of one stage matrix ``A``, for any weight row.

    For every rooted tree t the stage weights w(t) (Φ(t) = bᵀ·w(t)) are computed once, with
    ``A`` and with ``|A|`` (the size of the terms: ``|b|ᵀ·w_|A|(t)`` bounds every product
    that enters Φ(t)), and memoized over subtrees, so checking a 13-stage pair against all
    1,005 trees with up to 9 vertices takes milliseconds.  Trees come from
    :func:`odezoo.order.rooted_trees`.
    """

    def __init__(self, A):
        self.A = np.array(A, dtype=np.float64)
        self.abs_A = np.abs(self.A)
        self._weights: dict = {}
        self._abs_weights: dict = {}

    def _w(self, tree, A, memo):
        value = memo.get(tree)
        if value is None:
            value = np.ones(A.shape[0])
            for child in tree:
                value = value * (A @ self._w(child, A, memo))
            memo[tree] = value
        return value

    def stage_weights(self, tree) -> np.ndarray:
        """w(t): Φ(t) = b · w(t)."""
        return self._w(tree, self.A, self._weights)

    def residuals(self, weights, p: int, theta: float = 1.0, target: bool = True):
        """``(tree, Φ(t) − θ^p/γ(t), scale)`` for every tree with ``p`` vertices; ``target=False``
        compares Φ with 0 (an error estimator's conditions)."""
        weights = np.asarray(weights, dtype=np.float64)
        abs_weights = np.abs(weights)
        out = []
        for tree in rooted_trees(p):
            exact = theta ** p / density(tree) if target else 0.0
            phi = float(weights @ self.stage_weights(tree))
            scale = float(abs_weights @ self._w(tree, self.abs_A, self._abs_weights)) + abs(exact)
            out.append((tree, phi - exact, scale))
        return out

    def holds(self, weights, p: int, theta: float = 1.0, target: bool = True, rtol: float = ORDER_RTOL) -> bool:
        return all(abs(r) <= rtol * scale for _, r, scale in self.residuals(weights, p, theta, target))

    def order(self, weights, theta: float = 1.0, target: bool = True, max_order: int = MAX_PAIR_ORDER) -> int:
        """Highest p ≤ ``max_order`` such that every condition with ≤ p vertices holds."""
        order = 0
        for p in range(1, max_order + 1):
            if not self.holds(weights, p, theta, target):
                break
            order = p
        return order


def mid_weights(A, order: int = 4, theta: float = 0.5) -> list[float]:
    """Dense-output weights at ``theta`` from the order conditions: the smallest ``b(θ)`` with
    ``Σ b_i(θ) Φ_i(t) = θ^|t|/γ(t)`` for every tree with ≤ ``order`` vertices (least squares).
    ``ValueError`` if the stages cannot satisfy them.  Use for pairs without a published
    interpolant that fits torchdiffeq's quartic (e.g. DOP853, whose own needs extra stages)."""
    conditions = OrderConditions(A)
    rows, rhs = [], []
    for p in range(1, order + 1):
        for tree in rooted_trees(p):
            rows.append(conditions.stage_weights(tree))
            rhs.append(theta ** p / density(tree))
    weights, *_ = np.linalg.lstsq(np.array(rows), np.array(rhs), rcond=None)
    if conditions.order(weights, theta=theta, max_order=order) < order:
        raise ValueError(f"no dense-output weights of order {order} at theta={theta} exist for these stages")
    return [float(x) for x in weights]


# ---------------------------------------------------------------------------- the tableau
def _row(name: str, values, stages: int) -> list[float]:
    try:
        row = [float(x) for x in values]
    except (TypeError, ValueError):
        raise ValueError(f"EmbeddedTableau: {name} must be a sequence of numbers, got {values!r}") from None
    if len(row) != stages:
        raise ValueError(f"EmbeddedTableau: A has {stages} stages, so {name} needs length {stages}; got {len(row)}")
    if not all(math.isfinite(x) for x in row):
        raise ValueError(f"EmbeddedTableau: {name} has non-finite entries: {row}")
    return row


def _readonly(values) -> np.ndarray:
    array = np.array(values, dtype=np.float64)
    array.setflags(write=False)
    return array


class EmbeddedTableau(ButcherTableau):
    """An explicit Runge–Kutta pair: ``(A, b, c)`` plus the embedded row ``b_embedded`` and
    optional dense-output weights ``b_mid``.

    Checked on construction, beyond :class:`ButcherTableau`'s checks: ``b_embedded`` has one
    weight per stage and sums to 1 and differs from ``b``; ``b_mid`` sums to 1/2.  Orders:
    :meth:`order` (main row), :meth:`embedded_order`, :meth:`error_order` (of the estimate
    ``b − b̂``: its conditions must vanish up to the embedded order) and :meth:`mid_order`
    (conditions at θ = 1/2), all from rooted trees with a relative tolerance.
    """

    def __init__(self, A, b, c, b_embedded, b_mid=None):
        super().__init__(A, b, c)
        s = self.stages
        embedded = _row("b_embedded", b_embedded, s)
        total = math.fsum(embedded)
        if abs(total - 1.0) > _SUM_RTOL * (1.0 + sum(abs(x) for x in embedded)):
            raise ValueError(f"EmbeddedTableau: the embedded weights b_embedded must sum to 1 (consistency); "
                             f"sum = {total!r}")
        if embedded == self.b.tolist():
            raise ValueError("EmbeddedTableau: b_embedded equals b, so the pair estimates no error")
        mid = None
        if b_mid is not None:
            mid = _row("b_mid", b_mid, s)
            total = math.fsum(mid)
            if abs(total - 0.5) > _SUM_RTOL * (1.0 + sum(abs(x) for x in mid)):
                raise ValueError(f"EmbeddedTableau: the dense-output weights b_mid (at the half step) must sum "
                                 f"to 1/2; sum = {total!r}")
        object.__setattr__(self, "b_embedded", _readonly(embedded))
        object.__setattr__(self, "b_mid", None if mid is None else _readonly(mid))

    @cached_property
    def conditions(self) -> OrderConditions:
        return OrderConditions(self.A)

    @cached_property
    def _orders(self) -> dict:
        conditions = self.conditions
        return {"main": conditions.order(self.b),
                "embedded": conditions.order(self.b_embedded),
                "error": conditions.order(self.b - self.b_embedded, target=False),
                "mid": None if self.b_mid is None else conditions.order(self.b_mid, theta=0.5)}

    def order(self) -> int:
        """Order of the main row ``b`` (≤ MAX_PAIR_ORDER), from rooted trees, relative tolerance."""
        return self._orders["main"]

    def embedded_order(self) -> int:
        """Order of the embedded row ``b_embedded``."""
        return self._orders["embedded"]

    def error_order(self) -> int:
        """Highest q for which the error weights ``b − b̂`` annihilate every tree with ≤ q vertices
        (the estimate is O(h^(q+1))); equals the embedded order for a proper pair."""
        return self._orders["error"]

    def mid_order(self) -> int | None:
        """Order of the dense-output weights at θ = 1/2, or None without ``b_mid``."""
        return self._orders["mid"]

    @property
    def is_fsal(self) -> bool:
        """First same as last: the last stage is f(t1, y1) (c_s = 1, last row of A = b, b_s = 0)."""
        return bool(self.c[-1] == 1.0 and self.b[-1] == 0.0 and np.array_equal(self.A[-1, :-1], self.b[:-1]))

    def __eq__(self, other):
        if not isinstance(other, EmbeddedTableau):
            return NotImplemented
        same_mid = (self.b_mid is None and other.b_mid is None) or (
            self.b_mid is not None and other.b_mid is not None and np.array_equal(self.b_mid, other.b_mid))
        return super().__eq__(other) and np.array_equal(self.b_embedded, other.b_embedded) and same_mid

    def __hash__(self):
        return hash((super().__hash__(), self.b_embedded.tobytes(),
                     None if self.b_mid is None else self.b_mid.tobytes()))

    def __repr__(self):
        mid = "" if self.b_mid is None else f", b_mid={self.b_mid.tolist()}"
        return (f"EmbeddedTableau(A={self.A.tolist()}, b={self.b.tolist()}, c={self.c.tolist()}, "
                f"b_embedded={self.b_embedded.tolist()}{mid})")

    def __str__(self):
        lines = super().__str__().split("\n")
        width = lines[0].index("|") - 1
        for label, row in (("b^", self.b_embedded), ("mid", self.b_mid)):
            if row is not None:
                lines.append(f"{label:>{width}} | " + " ".join(f"{x:>{width}.6g}" for x in row))
        return "\n".join(lines)


# ---------------------------------------------------------------------------- the family
@dataclass(frozen=True, eq=False)
class AdaptiveFamily(SolverFamily):
    """A (possibly parameterized) embedded Runge–Kutta pair, registered like any family.

    Like :class:`~odezoo.SolverFamily`, plus ``embedded_order`` (p̂); ``order`` is the main
    row's order p.  ``formula(**params)`` returns ``(A, b, c, b_embedded)`` or ``(A, b, c,
    b_embedded, b_mid)``.  Registration checks, at the defaults, at every member and at a
    grid of points of the sampling support: the main order equals ``order``, the embedded
    order and the error estimate's order equal ``embedded_order``, and ``b_mid`` (if any) is
    at least first-order at the half step.  Without ``b_mid`` the solver interpolates output
    times with the cubic Hermite polynomial through (y0, f0, y1, f1).

    The torchdiffeq method is adaptive: options are the family's parameters (numbers) plus
    torchdiffeq's adaptive options (``first_step``, ``step_t``, ``jump_t``, ``max_num_steps``,
    ...), with ``rtol``/``atol`` passed to ``odeint`` as usual.
    """

    embedded_order: int = 0

    adaptive = True  # a class attribute, not a field: SolverFamily has none

    @classmethod
    def constant(cls, name: str, A, b, c, b_embedded, order: int, embedded_order: int, b_mid=None, *,
                 description: str = "", reference: str = "") -> "AdaptiveFamily":
        """A pair without parameters from its coefficients (what tsit5, dop853 and the example
        ``bs32`` plugin are): ``A`` square nested numbers, ``b``, ``c``, ``b_embedded`` and the
        optional dense-output weights ``b_mid`` sequences.  ``TypeError``/``ValueError`` for
        rows that are not numbers; the orders are checked when the family registers."""
        rows = (_constant(A), _constant(b), _constant(c), _constant(b_embedded)) + (
            () if b_mid is None else (_constant(b_mid),))
        return cls(name=name, params=(), defaults={}, order=int(order), embedded_order=int(embedded_order),
                   stages=len(rows[0]), formula=lambda: rows, description=description, reference=reference)

    def __post_init__(self):
        super().__post_init__()
        if not isinstance(self.embedded_order, int) or not 1 <= self.embedded_order < self.order:
            raise ValueError(f"family {self.name!r}: embedded_order must be an integer with "
                             f"1 <= embedded_order < order = {self.order}, got {self.embedded_order!r}")

    # -- coefficients ------------------------------------------------------------
    def tableau(self, **params) -> EmbeddedTableau:
        """The pair at ``params`` (defaults for missing ones); ``ValueError`` at singular points."""
        resolved = self.resolve(params)
        return _pair_tableau(self, tuple(_real(self.name, p, resolved[p]) for p in self.params))

    def checked_coefficients(self, key: tuple[float, ...]):
        """The main method's (A, b, c), checked (the pair is validated as a whole)."""
        tableau = _pair_tableau(self, tuple(key))
        return tuple(tuple(row) for row in tableau.A.tolist()), tuple(tableau.b.tolist()), tuple(tableau.c.tolist())

    def coefficients(self, params: Mapping[str, Any]):
        return tuple(self.formula(**params)[:3])

    @property
    def order_label(self) -> str:
        return f"{self.order}({self.embedded_order})"

    # -- registration ------------------------------------------------------------
    def check_points(self) -> list[tuple[str, dict]]:
        """Where registration checks the orders: defaults, members, a grid of the support."""
        points = [("defaults", dict(self.defaults))]
        points += [(f"member {member}", dict(params)) for member, params in self.members.items()]
        axes = []
        for p in self.params:
            low, high = self.support[p]
            if not (math.isfinite(low) and math.isfinite(high)):
                return points
            axes.append(np.linspace(low, high, 5))
        if axes:
            for values in itertools.product(*axes):
                point = {p: float(v) for p, v in zip(self.params, values)}
                if self.in_support(point):
                    points.append((f"support point {point}", point))
        return points

    def registration_problem(self) -> str | None:
        """Why this family cannot be registered, or None (called by the registry)."""
        for label, params in self.check_points():
            try:
                tab = self.tableau(**params)
            except ValueError as error:
                return f"its pair at {label} is invalid: {error}"
            if tab.stages != self.stages:
                return f"it declares {self.stages} stages but its pair at {label} has {tab.stages}."
            if tab.order() != self.order:
                return (f"it declares order {self.order} but its main row at {label} has order {tab.order()} "
                        f"(order conditions from rooted trees, relative tolerance {ORDER_RTOL:g}).")
            if tab.embedded_order() != self.embedded_order:
                return (f"it declares embedded order {self.embedded_order} but its embedded row at {label} has "
                        f"order {tab.embedded_order()} (order conditions from rooted trees).")
            if tab.error_order() != self.embedded_order:
                return (f"its error estimate b - b_embedded at {label} has order {tab.error_order()}, not the "
                        f"embedded order {self.embedded_order}.")
            if tab.b_mid is not None and tab.mid_order() < 1:
                return f"its dense-output weights b_mid at {label} fail the first-order condition at the half step."
        return None

    def solver_class(self) -> type:
        """The torchdiffeq solver class for this family (installed by the registry)."""
        return type(f"{self.name}_solver", (EmbeddedRKSolver,), {
            "family": self, "order": self.embedded_order + 1,
            "__doc__": f"torchdiffeq adaptive solver for the embedded pair {self.name!r}.",
            "__module__": __name__,
        })


def _real(family: str, name: str, value) -> float:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"{family}: adaptive methods take one value per parameter; {name} has shape "
                             f"{tuple(value.shape)} (per-sample parameters need a fixed-grid family)")
        if value.requires_grad:
            raise ValueError(f"{family}: adaptive methods do not differentiate with respect to their "
                             f"parameters; pass {name} as a number (gradients w.r.t. {name} need a "
                             f"fixed-grid family)")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{family}: parameter {name} must be a real number, got {value!r}") from None


@lru_cache(maxsize=4096)
def _pair_tableau(family: AdaptiveFamily, key: tuple[float, ...]) -> EmbeddedTableau:
    params = dict(zip(family.params, key))
    family.check(params)  # singular sets -> ValueError naming the constraint
    rows = family.formula(**params)
    if not isinstance(rows, (tuple, list)) or len(rows) not in (4, 5):
        raise ValueError(f"{family.name}: an adaptive family's formula returns (A, b, c, b_embedded) or "
                         f"(A, b, c, b_embedded, b_mid); got {type(rows).__name__} of length "
                         f"{len(rows) if hasattr(rows, '__len__') else '?'}")
    try:
        return EmbeddedTableau(*rows)
    except ValueError as error:
        raise ValueError(f"{family.name} at {params}: {error}") from None


# ---------------------------------------------------------------------------- the solver
#: torchdiffeq's options of RKAdaptiveStepsizeODESolver (``norm`` comes from odeint itself).
ADAPTIVE_OPTIONS = ("first_step", "min_step", "max_step", "step_t", "jump_t", "safety", "ifactor", "dfactor",
                    "max_num_steps", "dtype")


@lru_cache(maxsize=4096)
def torchdiffeq_tableau(tableau: EmbeddedTableau):
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
    """torchdiffeq adaptive solver for one :class:`AdaptiveFamily` (set on subclasses).

    Options: the family's parameters (numbers) and torchdiffeq's adaptive options
    (``first_step``, ``min_step``, ``max_step``, ``step_t``, ``jump_t``, ``safety``,
    ``ifactor``, ``dfactor``, ``max_num_steps``, ``dtype``).  Everything after the tableau —
    the step, the error ratio, the controller, events, interpolation with ``b_mid`` — is
    torchdiffeq's own code; ``order`` (the controller's exponent 1/order) is p̂ + 1 as for
    torchdiffeq's pairs.
    """

    family: AdaptiveFamily
    order: int

    def __init__(self, func, y0, rtol, atol, **options):
        family = self.family
        params = {name: options.pop(name) for name in family.params if name in options}
        unknown = sorted(set(options) - set(ADAPTIVE_OPTIONS) - {"norm"})
        if unknown:
            raise ValueError(f"method {family.name!r}: unknown option(s) {unknown}; it takes its parameters "
                             f"{list(family.params)} and torchdiffeq's adaptive options {list(ADAPTIVE_OPTIONS)} "
                             f"(rtol and atol are arguments of odeint)")
        resolved = family.resolve(params)
        key = tuple(_real(family.name, p, resolved[p]) for p in family.params)
        self.pair = _pair_tableau(family, key)
        pair = self.pair
        largest = float(max(np.abs(x).max() for x in (pair.A, pair.b, pair.c, pair.b_embedded)))
        dtype = y0.dtype.to_real() if (y0.is_floating_point() or y0.is_complex()) else torch.float64
        check_coefficient_size(family.name, largest, dtype, resolved)  # as for fixed grids (odezoo.plan)
        self.tableau, self.mid, self.dense = torchdiffeq_tableau(self.pair)
        super().__init__(func, y0, rtol, atol, **options)

    def _interp_fit(self, y0, y1, k, dt):
        if self.dense == "mid":
            return super()._interp_fit(y0, y1, k, dt)
        # Cubic Hermite through (y0, f0) and (y1, f1), as coefficients of x^0..x^3 with
        # x = (t - t0) / dt: what torchdiffeq's interpolation evaluates.
        dt = dt.type_as(y0)
        f0, f1 = k[..., 0], k[..., -1]
        delta = y1 - y0
        return [y0, dt * f0, 3 * delta - dt * (2 * f0 + f1), dt * (f0 + f1) - 2 * delta]


# ---------------------------------------------------------------------------- one tableau, one call
class _TableauPlugin:
    """The plugin behind :func:`register_tableau`: offers one family through the usual hook."""

    def __init__(self, family: SolverFamily):
        self.family = family

    @hookimpl
    def odezoo_register_families(self, register):
        register(self.family)


def _constant(rows):
    return [list(map(float, row)) for row in rows] if rows and isinstance(rows[0], (list, tuple, np.ndarray)) \
        else list(map(float, rows))


def register_tableau(name: str, A, b, c, order: int, b_embedded=None, embedded_order: int | None = None,
                     b_mid=None, *, description: str = "", reference: str = "") -> SolverFamily:
    """Register one constant tableau as a torchdiffeq method and return its family.

    Without ``b_embedded`` it becomes a fixed-grid method (a :class:`~odezoo.SolverFamily`
    without parameters; ``options={"step_size": ...}``); with ``b_embedded`` and
    ``embedded_order`` an adaptive one (an :class:`AdaptiveFamily`; ``rtol``/``atol``).
    ``b_mid`` gives dense-output weights at the half step (adaptive only).  The checks are
    those of a plugin's family (orders from rooted trees, name not taken, not one of
    torchdiffeq's methods); a refusal raises ``ValueError`` with the reason and registers
    nothing.  Remove it with :func:`unregister_tableau`.
    """
    if (b_embedded is None) != (embedded_order is None):
        raise ValueError(f"register_tableau({name!r}): give b_embedded and embedded_order together")
    if b_mid is not None and b_embedded is None:
        raise ValueError(f"register_tableau({name!r}): b_mid (dense output) belongs to an adaptive pair; a "
                         f"fixed-grid method interpolates with torchdiffeq's interp='linear' or 'cubic'")
    if name in bridge.TORCHDIFFEQ_METHODS:
        raise ValueError(f"register_tableau({name!r}): {name!r} is one of torchdiffeq's own methods; choose "
                         f"another name")
    existing = registry.families().get(name)
    if existing is not None:
        raise ValueError(f"register_tableau({name!r}): the name is already registered by {existing.provider!r}; "
                         f"choose another name or unregister that one first")
    description = description or ("embedded pair" if b_embedded is not None else "Runge–Kutta method") \
        + " from odezoo.register_tableau"
    try:
        if b_embedded is None:
            rows = (_constant(A), _constant(b), _constant(c))
            family = SolverFamily(name=name, params=(), defaults={}, order=int(order), stages=len(rows[0]),
                                  formula=lambda: rows, description=description, reference=reference)
        else:
            family = AdaptiveFamily.constant(name, A, b, c, b_embedded, order, embedded_order, b_mid,
                                             description=description, reference=reference)
    except (TypeError, ValueError, IndexError) as error:
        if "family" in str(error):  # the family's own checks (name, orders): already clear
            raise ValueError(f"register_tableau({name!r}): {error}") from None
        raise ValueError(f"register_tableau({name!r}): A, b, c, b_embedded and b_mid must be numbers "
                         f"(A a square nested sequence)") from None
    family.tableau()  # invalid coefficients -> ValueError now, with the tableau's own message

    plugin_name = TABLEAU_PLUGIN_PREFIX + name
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        registry.register_plugin(_TableauPlugin(family), name=plugin_name)
    ours = [w for w in caught if issubclass(w.category, OdezooPluginWarning) and repr(name) in str(w.message)]
    for w in caught:  # other plugins' messages are theirs: pass them on
        if w not in ours:
            warnings.warn(w.message, w.category, stacklevel=2)
    registered = registry.families().get(name)
    if registered is None or registered.provider != plugin_name:
        registry.unregister_plugin(plugin_name)
        reasons = [str(w.message) for w in ours]
        for reason in reasons:  # reported by the exception instead
            if reason in registry.problems:
                registry.problems.remove(reason)
        raise ValueError("; ".join(reasons) or f"register_tableau({name!r}) was refused")
    return registered


def unregister_tableau(name: str) -> None:
    """Remove a method added by :func:`register_tableau` (it leaves torchdiffeq too)."""
    plugin_name = TABLEAU_PLUGIN_PREFIX + name
    if registry.pm.get_plugin(plugin_name) is None:
        raise ValueError(f"unregister_tableau({name!r}): no tableau of that name was registered with "
                         f"odezoo.register_tableau")
    registry.unregister_plugin(plugin_name)
