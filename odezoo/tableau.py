"""A frozen, validated Butcher tableau for explicit Runge–Kutta methods."""
from __future__ import annotations

import math
from functools import cached_property

import numpy as np

from .order import order_residuals

__all__ = ["ButcherTableau", "MAX_CHECKED_ORDER", "validate"]

MAX_CHECKED_ORDER = 6
_CONSISTENCY_RTOL = 1e-12


def _floats(name: str, value, ndim: int):
    """``value`` as nested Python lists of floats with ``ndim`` levels, or ValueError."""
    try:
        if ndim == 1:
            return [float(x) for x in value]
        return [[float(x) for x in row] for row in value]
    except (TypeError, ValueError):
        # strings, ragged rows, a scalar where a list belongs: let NumPy name the problem
        try:
            array = np.array(value, dtype=np.float64)
        except (TypeError, ValueError) as error:
            raise ValueError(f"ButcherTableau: {name} must be numeric, got {value!r}") from error
        raise ValueError(f"ButcherTableau: {name} must be {ndim}-dimensional, got shape {array.shape}") from None


def validate(A, b, c) -> tuple[list[list[float]], list[float], list[float]]:
    """Check the coefficients of an explicit Runge–Kutta method; return them as Python floats.

    Checks: numeric and finite entries; ``A`` square and strictly lower triangular
    (explicit); ``b`` and ``c`` of matching length; ``c_i = Σ_j a_ij``; ``Σ b = 1``.  Each
    failure raises ``ValueError`` naming the check.  Plain Python on purpose: a tableau has
    a handful of entries, and solvers whose parameters change every batch validate one
    tableau per batch, where NumPy's per-call overhead would dominate.
    """
    A, b, c = _floats("A", A, 2), _floats("b", b, 1), _floats("c", c, 1)
    for name, entries in (("A", [x for row in A for x in row]), ("b", b), ("c", c)):
        if not all(math.isfinite(x) for x in entries):
            shown = A if name == "A" else entries
            raise ValueError(f"ButcherTableau: {name} has non-finite entries: {shown}")
    s = len(A)
    if any(len(row) != s for row in A):
        raise ValueError(f"ButcherTableau: A must be square, got {s} rows of lengths {[len(row) for row in A]}")
    if s == 0:
        raise ValueError("ButcherTableau: a method needs at least one stage")
    if len(b) != s or len(c) != s:
        raise ValueError(f"ButcherTableau: A is {s}x{s}, so b and c need length {s}; "
                         f"got b of length {len(b)} and c of length {len(c)}")
    for i, row in enumerate(A):
        for j in range(i, s):
            if row[j] != 0.0:
                raise ValueError(f"ButcherTableau: A must be strictly lower triangular (explicit method); "
                                 f"a[{i + 1},{j + 1}] = {row[j]!r}")
    for i, row in enumerate(A):
        row_sum = math.fsum(row)
        if abs(row_sum - c[i]) > _CONSISTENCY_RTOL * (1.0 + sum(abs(x) for x in row)):
            raise ValueError(f"ButcherTableau: c_i must equal the row sum of A; "
                             f"c[{i + 1}] = {c[i]!r} but sum_j a[{i + 1},j] = {row_sum!r}")
    total = math.fsum(b)
    if abs(total - 1.0) > _CONSISTENCY_RTOL * (1.0 + sum(abs(x) for x in b)):
        raise ValueError(f"ButcherTableau: the weights b must sum to 1 (consistency); sum(b) = {total!r}")
    return A, b, c


def _frozen(values) -> np.ndarray:
    array = np.array(values, dtype=np.float64)
    array.setflags(write=False)
    return array


class ButcherTableau:
    """Coefficients (A, b, c) of an explicit Runge–Kutta method, checked on construction.

    Checks: finite entries; ``A`` square and strictly lower triangular (explicit);
    ``b`` and ``c`` of matching length; ``c_i = Σ_j a_ij``; ``Σ b = 1``.  Each failure
    raises ``ValueError`` naming the check.  Instances are immutable (read-only float64
    arrays) and hashable.
    """

    __slots__ = ("A", "b", "c", "__dict__")

    def __init__(self, A, b, c):
        A, b, c = validate(A, b, c)
        A, b, c = _frozen(A), _frozen(b), _frozen(c)
        object.__setattr__(self, "A", A)
        object.__setattr__(self, "b", b)
        object.__setattr__(self, "c", c)

    def __setattr__(self, name, value):
        raise AttributeError("ButcherTableau is immutable")

    @property
    def stages(self) -> int:
        return self.A.shape[0]

    def order_residual(self, p: int) -> float:
        """Largest |Φ(t) − 1/γ(t)| over the rooted trees with exactly ``p`` vertices."""
        return max(abs(r) for _, r in order_residuals(self.A, self.b, p))

    def _tolerance(self) -> float:
        magnitude = max(1.0, float(np.abs(self.A).max()), float(np.abs(self.b).max()))
        return 1e-10 * magnitude ** 3

    @cached_property
    def _order(self) -> int:
        tol = self._tolerance()
        order = 0
        for p in range(1, MAX_CHECKED_ORDER + 1):
            if self.order_residual(p) > tol:
                break
            order = p
        return order

    def order(self) -> int:
        """Highest p ≤ 6 for which every order condition (rooted trees of ≤ p vertices) holds."""
        return self._order

    def __eq__(self, other):
        if not isinstance(other, ButcherTableau):
            return NotImplemented
        return (np.array_equal(self.A, other.A) and np.array_equal(self.b, other.b)
                and np.array_equal(self.c, other.c))

    def __hash__(self):
        return hash((self.A.tobytes(), self.b.tobytes(), self.c.tobytes()))

    def __repr__(self):
        return f"ButcherTableau(A={self.A.tolist()}, b={self.b.tolist()}, c={self.c.tolist()})"

    def __str__(self):
        cells = [[f"{x:.6g}" for x in [self.c[i], *self.A[i]]] for i in range(self.stages)]
        cells.append(["", *(f"{x:.6g}" for x in self.b)])
        width = max(len(cell) for row in cells for cell in row)
        lines = []
        for i, row in enumerate(cells):
            if i == self.stages:
                lines.append("-" * (width + 1) + "+" + "-" * ((width + 1) * self.stages + 1))
            lines.append(f"{row[0]:>{width}} | " + " ".join(f"{x:>{width}}" for x in row[1:]))
        return "\n".join(lines)
