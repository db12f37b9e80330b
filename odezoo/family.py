"""``SolverFamily``: the one family type — a parameterized explicit Runge–Kutta method (or
embedded pair) as data plus one coefficient formula — and its registration check."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Callable, Mapping

import numpy as np
import torch

from . import inputs
from .order import MAX_ORDER, verified_orders
from .tableau import ButcherTableau
from .tableau import validate_batch as validate_tableau_batch

__all__ = ["SolverFamily", "Constraint", "DistributionSpec", "SINGULAR_TOL", "support_points", "verify_family"]

#: |expression| below this counts as singular: coefficients would be ~1/SINGULAR_TOL or worse.
SINGULAR_TOL = 1e-6

# A coefficient formula returns (A, b, c) — for an embedded pair (A, b, c, b_embedded) or
# (A, b, c, b_embedded, b_mid) — as nested lists whose entries are numbers
# (constants: Python ints or floats, NumPy scalars, fractions.Fraction, ...) or expressions
# of the parameters.  Written with + - * / only, the same formula evaluates on floats (for
# the tableau and fixed parameters), on float64 NumPy arrays (per-sample parameters, all
# samples checked at once) and on float64 tensors (parameters that need a gradient); every
# result is checked in float64 and only then cast to the state's dtype.  An entry that
# stays a number is known not to depend on the parameters, which is how the stepper knows
# whether stage times vary per sample.
CoefficientFormula = Callable[..., tuple]


@dataclass(frozen=True)
class Constraint:
    """A singular set of a family: the tableau does not exist where ``expression == 0``.

    ``expression`` takes the family's parameters as keyword arguments.
    """

    description: str
    expression: Callable[..., float]


@dataclass(frozen=True)
class DistributionSpec:
    """A default sampling distribution, declared as data: ``kind`` centered on the defaults.

    ``kind`` is one of ``normal``, ``uniform``, ``cauchy``; ``scale`` is the standard
    deviation, the half width or the Cauchy scale respectively.
    """

    kind: str = "normal"
    scale: float = 0.0125


@dataclass(frozen=True, eq=False)
class SolverFamily:
    """A parameterized explicit Runge–Kutta family, or embedded pair: the one family type.

    A family without ``embedded_order`` is a fixed-grid method (torchdiffeq's ``step_size`` /
    ``grid_constructor`` options); with it, an adaptive one (``rtol``/``atol``), its formula
    also returning the embedded row ``b_embedded`` (and optionally ``b_mid``).  The registry
    derives the torchdiffeq solver class from that field alone.

    Attributes:
        name: method name, used as the torchdiffeq ``method=``.
        params: parameter names, e.g. ``("u", "v")``.
        defaults: parameter values used when one is not given.
        order, stages: declared order p (≤ ``odezoo.order.MAX_ORDER``) and number of stages s
            (checked on registration).
        formula: ``formula(**params) -> (A, b, c)``, or ``(A, b, c, b_embedded[, b_mid])`` for
            an embedded pair (see ``CoefficientFormula``).
        embedded_order: the embedded row's order p̂ < p for an embedded pair, else None.
        constraints: the singular sets, each refused with a ``ValueError``.
        support: per parameter a closed interval ``(low, high)`` a sampler may draw from.
        support_margin: sampled points also keep this distance from every singular set.
        distribution: default sampling distribution (kind and scale).
        members: named classic members, e.g. ``{"midpoint": {"u": 0.5}}``.
        description, reference: shown by ``odezoo tableau`` and in the docs.
    """

    name: str
    params: tuple[str, ...]
    defaults: Mapping[str, float]
    order: int
    stages: int
    formula: CoefficientFormula
    embedded_order: int | None = None
    constraints: tuple[Constraint, ...] = ()
    support: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    support_margin: float = 0.05
    distribution: DistributionSpec = DistributionSpec()
    members: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    description: str = ""
    reference: str = ""
    provider: str | None = field(default=None, compare=False)

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise ValueError(f"family name must be an identifier, got {self.name!r}")
        where = f"family {self.name!r}"
        object.__setattr__(self, "params", tuple(self.params))
        if not isinstance(self.defaults, Mapping):
            raise ValueError(f"{where}: defaults must be a mapping of parameter names to numbers")
        missing = set(self.params) - set(self.defaults)
        if missing or set(self.defaults) - set(self.params):
            raise ValueError(f"{where}: defaults must give exactly the parameters "
                             f"{self.params}, got {sorted(self.defaults)}")
        object.__setattr__(self, "defaults", {k: inputs.real_number(f"{where}: default {k}", self.defaults[k])
                                              for k in self.params})
        order = inputs.whole_number(f"{where}: order", self.order, low=1, high=MAX_ORDER)
        object.__setattr__(self, "order", order)
        object.__setattr__(self, "stages", inputs.whole_number(f"{where}: stages", self.stages, low=1))
        if self.embedded_order is not None:
            object.__setattr__(self, "embedded_order", inputs.whole_number(
                f"{where}: embedded_order", self.embedded_order, low=1, high=order - 1))
        if not callable(self.formula):
            raise ValueError(f"{where}: formula must be callable, got {self.formula!r}")
        support = {}
        for p in self.params:
            bounds = self.support.get(p, (-math.inf, math.inf))
            low, high = (inputs.real_number(f"{where}: support of {p}", x, finite=False) for x in bounds)
            if not low <= high:
                raise ValueError(f"{where}: the support of {p} is empty ({low} > {high})")
            support[p] = (low, high)
        object.__setattr__(self, "support", support)
        object.__setattr__(self, "constraints", tuple(self.constraints))

    @classmethod
    def from_tableau(cls, name: str, tableau: ButcherTableau, order: int, embedded_order: int | None = None, *,
                     description: str = "", reference: str = "") -> "SolverFamily":
        """A family without parameters: one constant tableau (what tsit5, dop853, the example
        ``bs32`` plugin and [`odezoo.register_tableau`][odezoo.register_tableau] are).  An embedded pair needs
        ``tableau.b_embedded`` and ``embedded_order``."""
        if not isinstance(tableau, ButcherTableau):
            raise ValueError(f"family {name!r}: expected an odezoo.ButcherTableau, got {type(tableau).__name__}")
        if (tableau.b_embedded is None) != (embedded_order is None):
            raise ValueError(f"family {name!r}: give embedded_order exactly when the tableau has b_embedded")
        rows = tuple(x.tolist() for x in tableau._rows() if x is not None)
        return cls(name=name, params=(), defaults={}, order=order, stages=tableau.stages,
                   formula=lambda: rows, embedded_order=embedded_order,
                   description=description, reference=reference)

    @property
    def adaptive(self) -> bool:
        """Whether this family is an embedded pair (an adaptive torchdiffeq method)."""
        return self.embedded_order is not None

    @property
    def order_label(self) -> str:
        """``"4"``, or ``"5(4)"`` for an embedded pair."""
        return str(self.order) if self.embedded_order is None else f"{self.order}({self.embedded_order})"

    # ------------------------------------------------------------------ parameters
    def resolve(self, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Defaults filled in; unknown names refused."""
        params = dict(params or {})
        unknown = sorted(set(params) - set(self.params))
        if unknown:
            raise ValueError(f"{self.name}: unknown parameter(s) {unknown}; "
                             f"this family takes {list(self.params)}")
        return {p: params.get(p, self.defaults[p]) for p in self.params}

    def check(self, params: Mapping[str, Any]) -> None:
        """Raise ``ValueError`` if any value is non-finite or lies on (or within rounding
        of) a singular set.  Values may be floats or arrays (checked elementwise)."""
        if _plain_numbers_pass(self, params) or _arrays_pass(self, params) or _tensors_pass(self, params):
            return
        values = {}
        for p in self.params:
            array = np.asarray(_to_numpy(params[p]), dtype=np.float64)
            if not np.all(np.isfinite(array)):
                where = f" (sample {int(np.flatnonzero(~np.isfinite(array))[0])})" if array.ndim else ""
                raise ValueError(f"{self.name}: parameter {p} must be finite, got {_show(array)}{where}")
            values[p] = array
        for constraint in self.constraints:
            with np.errstate(all="ignore"):
                distance = np.abs(np.asarray(constraint.expression(**values), dtype=np.float64))
            bad = ~(distance >= SINGULAR_TOL)
            if np.any(bad):
                where = ""
                if distance.ndim:
                    index = int(np.flatnonzero(bad)[0])
                    values_at = {p: float(np.broadcast_to(v, distance.shape).flat[index])
                                 for p, v in values.items()}
                    where = f" (sample {index})"
                else:
                    values_at = {p: float(v) for p, v in values.items()}
                shown = ", ".join(f"{p}={v:.10g}" for p, v in values_at.items())
                raise ValueError(
                    f"{self.name}: parameters {shown}{where} violate the constraint "
                    f"{constraint.description} — the tableau is singular there (the expression is "
                    f"within {SINGULAR_TOL:g} of zero, so its coefficients would blow up). "
                    f"Choose parameters away from it; the sampling support is {self.support_text()}.")

    def in_support(self, params: Mapping[str, float]) -> bool:
        """Whether a (scalar) point lies in the sampling support, away from singular sets."""
        return bool(self.support_mask({p: np.asarray(params[p], dtype=np.float64)
                                       for p in self.params}).all())

    def support_mask(self, values: Mapping[str, np.ndarray]) -> np.ndarray:
        """Elementwise support test for arrays of parameter values (used by samplers)."""
        mask = np.ones(np.broadcast(*values.values()).shape, dtype=bool)
        for p in self.params:
            low, high = self.support[p]
            mask &= (values[p] >= low) & (values[p] <= high)
        with np.errstate(all="ignore"):
            for constraint in self.constraints:
                mask &= np.abs(constraint.expression(**values)) >= self.support_margin
        return mask

    def support_text(self) -> str:
        box = ", ".join(f"{low:g} <= {p} <= {high:g}" for p, (low, high) in self.support.items())
        return f"{box} at distance >= {self.support_margin:g} from singular sets" if self.constraints else box

    # ------------------------------------------------------------------ coefficients
    def tableau(self, **params) -> ButcherTableau:
        """The checked Butcher tableau at ``params`` (missing ones take the defaults; any real
        number, see [`odezoo.inputs.real_number`][odezoo.inputs.real_number]), with the embedded and dense-output
        rows of an embedded pair.  Cached per point.

        Raises ``ValueError`` for unknown names, values that are not real numbers,
        non-finite values, singular points, and coefficients that fail the tableau checks;
        whatever the formula itself raises becomes a ``ValueError`` naming the family and
        the point."""
        resolved = self.resolve(params)
        key = tuple(inputs.real_number(f"{self.name}: parameter {p}", resolved[p], tensor=True)
                    for p in self.params)
        return _tableau(self, key)

    def checked_batch(self, values: Mapping[str, Any], n: int):
        """The main method's ``(A, b, c)`` for ``n`` parameter points at once.

        ``values`` maps each parameter to a float or a float64 array of shape ``(n,)`` (one
        value per sample).  The checks are those of `tableau` — singular sets, then every
        tableau check of [`odezoo.tableau.validate`][odezoo.tableau.validate] — run on all points together in
        float64; a failure raises the ``ValueError`` the scalar path would raise at the first
        failing sample, naming it.  Returns an `odezoo.tableau.CheckedBatch`.
        """
        params = {p: values[p] for p in self.params}
        try:
            with np.errstate(all="ignore"):  # non-finite results are refused by the checks below
                if not _arrays_pass(self, params, guarded=True):
                    self.check(params)  # explains the first sample on a singular set
                return validate_tableau_batch(*self.evaluate(params)[:3], n)
        except ValueError as error:
            k = getattr(error, "sample", None)
            where = "" if k is None else f" (sample {k}: {_point(_pick(params, k))})"
            raise ValueError(f"{self.name}{where}: {error}") from None

    def evaluate(self, params: Mapping[str, Any]) -> tuple:
        """``formula(**params)`` unchecked — the rows as the formula returns them, entries of
        whatever type the parameters have (floats, float64 arrays, tensors that need a
        gradient).  Whatever the formula raises, and a result that is not 3 rows (5 or 4 with
        the embedded row of a pair), becomes a ``ValueError``."""
        try:
            rows = self.formula(**params)
        except Exception as error:  # noqa: BLE001 - a plugin's formula may raise anything
            raise ValueError(f"its formula raised {type(error).__name__}: {error}") from None
        expected = (4, 5) if self.adaptive else (3,)
        if not isinstance(rows, (tuple, list)) or len(rows) not in expected:
            shape = ("(A, b, c, b_embedded) or (A, b, c, b_embedded, b_mid)" if self.adaptive
                     else "(A, b, c)")
            size = len(rows) if isinstance(rows, (tuple, list)) else "?"
            raise ValueError(f"its formula must return {shape}; got {type(rows).__name__} of length {size}"
                             + ("" if self.adaptive else " (an embedded pair declares embedded_order)"))
        return tuple(rows)

    def __str__(self):
        return self.name


def _point(params: Mapping[str, Any]) -> str:
    return ", ".join(f"{p}={float(v):.10g}" if np.ndim(v) == 0 else f"{p}={v}" for p, v in params.items())


def _pick(params: Mapping[str, Any], k: int) -> dict[str, float]:
    return {p: float(v.reshape(-1)[k] if np.size(v) > 1 else np.reshape(v, -1)[0]) if isinstance(v, np.ndarray)
            else v for p, v in params.items()}


#: Points per family at which registration checks the order (see `support_points`).
SUPPORT_SAMPLES = 64
SUPPORT_GRID = 81
_SUPPORT_SEED = 20240601


def support_points(family: "SolverFamily", samples: int = SUPPORT_SAMPLES,
                   grid: int = SUPPORT_GRID, seed: int = _SUPPORT_SEED) -> list[dict[str, float]]:
    """Deterministic parameter points covering ``family``'s sampling support.

    A regular grid of about ``grid`` points over the support box (with its corners and
    edges) plus ``samples`` seeded uniform draws from the box, keeping the points that
    `SolverFamily.support_mask` accepts (inside the box, ``support_margin`` away from
    every singular set).  An unbounded side of the box is replaced by the default
    ± 10·(1 + |default|).  Registration checks the declared order and stages at each of
    these points, so a family whose order holds only at its defaults is refused.
    """
    if not family.params:
        return []
    lows, highs = [], []
    for p in family.params:
        low, high = family.support[p]
        default = family.defaults[p]
        reach = 10.0 * (1.0 + abs(default))
        low = low if math.isfinite(low) else min(default, high) - reach
        high = high if math.isfinite(high) else max(default, low) + reach
        lows.append(low)
        highs.append(high)
    per_axis = max(2, int(round(grid ** (1.0 / len(family.params)))))
    axes = [np.linspace(low, high, per_axis) for low, high in zip(lows, highs)]
    mesh = [axis.reshape(-1) for axis in np.meshgrid(*axes, indexing="ij")]
    rng = np.random.default_rng(seed)
    drawn = [rng.uniform(low, high, samples) for low, high in zip(lows, highs)]
    columns = {p: np.concatenate([m, d]) for p, m, d in zip(family.params, mesh, drawn)}
    keep = family.support_mask(columns)
    return [{p: float(columns[p][i]) for p in family.params} for i in np.flatnonzero(keep)]


@lru_cache(maxsize=4096)
def _tableau(family: SolverFamily, key: tuple[float, ...]) -> ButcherTableau:
    params = dict(zip(family.params, key))
    family.check(params)  # singular points -> ValueError naming the constraint
    try:
        return ButcherTableau(*family.evaluate(params))
    except ValueError as error:
        raise ValueError(f"{family.name} at {_point(params) or 'its defaults'}: {error}") from None


def verify_family(family: SolverFamily) -> str | None:
    """Why ``family`` cannot be registered, or None: the one registration check, for every family.

    At its defaults, at every named member and at every point of `support_points` (its
    sampling support), the tableau must exist and have the declared stages and order; an
    embedded pair's embedded row and its error estimate ``b − b̂`` must have the declared
    embedded order, and its ``b_mid`` (if any) be at least first order at the half step.  Orders
    come from [`odezoo.order.verified_orders`][odezoo.order.verified_orders], batched over the points.  Only the class's
    own methods are used, so nothing a family object overrides can skip a check.
    """
    if type(family) is not SolverFamily:
        return (f"it is a {type(family).__name__}, not an odezoo.SolverFamily: a family is data (give the "
                f"formula and declarations to SolverFamily itself), so that nothing can change how it is checked.")
    named = [("its defaults", dict(family.defaults))]
    named += [(f"member {member}", dict(params)) for member, params in family.members.items()]
    support = [(f"{_point(point)}, a point of its sampling support", point) for point in support_points(family)]
    tableaux = []
    for k, (label, params) in enumerate(named + support):
        if k == len(named) and not SolverFamily.in_support(family, family.defaults):
            return (f"its defaults {family.defaults} lie outside its sampling support "
                    f"({SolverFamily.support_text(family)}).")
        try:
            tableau = SolverFamily.tableau(family, **params)
        except ValueError as error:
            return f"its tableau at {label} is invalid: {error}"
        if tableau.stages != family.stages:
            return f"it declares {family.stages} stages but its tableau at {label} has {tableau.stages}."
        if family.adaptive and tableau.b_embedded is None:  # cannot happen: evaluate() checks the arity
            return f"it declares an embedded order but its tableau at {label} has no embedded row."
        tableaux.append(tableau)
    named += support
    A = np.stack([t.A for t in tableaux])
    rows = [("order", lambda t: t.b, 1.0, True, family.order, "its tableau")]
    if family.adaptive:
        rows += [("embedded order", lambda t: t.b_embedded, 1.0, True, family.embedded_order, "its embedded row"),
                 ("embedded order", lambda t: t.b - t.b_embedded, 1.0, False, family.embedded_order,
                  "its error estimate b - b_embedded")]
    for what, row, theta, target, declared, whose in rows:
        orders, undecided = verified_orders(A, np.stack([row(t) for t in tableaux]), min(declared + 1, MAX_ORDER),
                                            theta=theta, target=target)
        # undecided beyond the declared order leaves the declared order verified (a lower bound)
        wrong = np.flatnonzero((orders != declared) & (undecided == 0))
        if wrong.size:
            k = int(wrong[0])
            return (f"it declares {what} {declared} but {whose} at {named[k][0]} has order {int(orders[k])} "
                    f"(order conditions checked from rooted trees at {len(named)} points; narrow the support "
                    f"to where the order holds).")
        unsure = np.flatnonzero((undecided != 0) & (undecided <= declared))
        if unsure.size:
            k = int(unsure[0])
            return (f"its {what} cannot be verified at {named[k][0]}: the order-{int(undecided[k])} conditions "
                    f"cancel beyond float64 precision (coefficients too large). Narrow the support or widen "
                    f"support_margin.")
    with_mid = [k for k, t in enumerate(tableaux) if t.b_mid is not None]
    if with_mid:
        orders, _ = verified_orders(A[with_mid], np.stack([tableaux[k].b_mid for k in with_mid]), 1, theta=0.5)
        if (orders < 1).any():
            k = with_mid[int(np.flatnonzero(orders < 1)[0])]
            return f"its dense-output weights b_mid at {named[k][0]} fail the first-order condition at the half step."
    return None


def _plain_numbers_pass(family: SolverFamily, params: Mapping[str, Any]) -> bool:
    """Fast path of ``check`` for plain Python numbers: True when they are fine.  False
    sends ``check`` down the general NumPy path, which also explains any failure."""
    try:
        values = {p: params[p] for p in family.params}
        if not all(type(v) is float or type(v) is int for v in values.values()):
            return False
        return (all(math.isfinite(v) for v in values.values())
                and all(abs(float(constraint.expression(**values))) >= SINGULAR_TOL
                        for constraint in family.constraints))
    except (ArithmeticError, TypeError, ValueError):
        return False


def _arrays_pass(family: SolverFamily, params: Mapping[str, Any], guarded: bool = False) -> bool:
    """Fast path of ``check`` for float64 NumPy arrays mixed with Python floats (per-sample
    values on the host): True when they are fine; False sends ``check`` down the general
    path, which also explains any failure.  ``guarded``: the caller has silenced NumPy's
    floating-point warnings already."""
    values = [params[p] for p in family.params]
    if not any(type(v) is np.ndarray for v in values):
        return False
    if not guarded:
        with np.errstate(all="ignore"):
            return _arrays_pass(family, params, guarded=True)
    try:
        for v in values:
            if not math.isfinite(v.sum() if type(v) is np.ndarray else v):  # inf/NaN anywhere
                return False
        for constraint in family.constraints:
            if not np.abs(constraint.expression(**params)).min() >= SINGULAR_TOL:
                return False
        return True
    except (ArithmeticError, TypeError, ValueError):
        return False


def _tensors_pass(family: SolverFamily, params: Mapping[str, Any]) -> bool:
    """Fast path of ``check`` for tensors (per-sample or differentiable parameters): the
    test in a handful of torch operations and one host sync, where NumPy would cost more
    than a small solve.  False sends ``check`` down the NumPy path, which explains any failure."""
    if not any(isinstance(params[p], torch.Tensor) for p in family.params):
        return False
    try:
        values, poison = {}, None
        for p in family.params:
            value = params[p]
            if isinstance(value, torch.Tensor):
                value = value.detach() if value.requires_grad else value
                value = value if value.dtype == torch.float64 else value.to(torch.float64)
                term = value.sum()
                poison = term if poison is None else poison + term
            else:
                value = float(value)
                if not math.isfinite(value):
                    return False
            values[p] = value
        poison = poison * 0.0  # 0, or NaN when some value is inf or NaN
        distances = [torch.as_tensor(c.expression(**values), dtype=torch.float64) for c in family.constraints]
        if not distances:
            return float(poison) == 0.0
        if len(distances) > 1:
            distances = [torch.cat([d.reshape(-1) for d in distances])]
        return float(distances[0].abs().min() + poison) >= SINGULAR_TOL  # NaN compares False
    except (ArithmeticError, TypeError, ValueError, RuntimeError):
        return False


def _to_numpy(value):
    if hasattr(value, "detach"):
        return value.detach().to("cpu").double().numpy()
    return value


def _show(array: np.ndarray) -> str:
    return repr(float(array)) if array.ndim == 0 else np.array2string(array, threshold=8)
