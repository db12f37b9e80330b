"""A frozen, validated Butcher tableau for explicit Runge–Kutta methods."""
from __future__ import annotations

from functools import cached_property

import numpy as np

from .order import order_residuals

__all__ = ["ButcherTableau", "MAX_CHECKED_ORDER"]

MAX_CHECKED_ORDER = 6
_CONSISTENCY_RTOL = 1e-12


def _as_array(name: str, value, ndim: int) -> np.ndarray:
    try:
        array = np.array(value, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"ButcherTableau: {name} must be numeric, got {value!r}") from error
    if array.ndim != ndim:
        raise ValueError(f"ButcherTableau: {name} must be {ndim}-dimensional, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"ButcherTableau: {name} has non-finite entries: {array.tolist()}")
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
        A = _as_array("A", A, 2)
        b = _as_array("b", b, 1)
        c = _as_array("c", c, 1)
        s = A.shape[0]
        if A.shape != (s, s):
            raise ValueError(f"ButcherTableau: A must be square, got shape {A.shape}")
        if s == 0:
            raise ValueError("ButcherTableau: a method needs at least one stage")
        if b.shape != (s,) or c.shape != (s,):
            raise ValueError(f"ButcherTableau: A is {s}x{s}, so b and c need length {s}; "
                             f"got b of length {b.shape[0]} and c of length {c.shape[0]}")
        upper = np.triu(A)
        if np.any(upper != 0):
            i, j = map(int, np.argwhere(upper != 0)[0])
            raise ValueError(f"ButcherTableau: A must be strictly lower triangular (explicit method); "
                             f"a[{i + 1},{j + 1}] = {A[i, j]!r}")
        row_sums = A.sum(axis=1)
        scale = 1.0 + np.abs(A).sum(axis=1)
        bad = np.abs(row_sums - c) > _CONSISTENCY_RTOL * scale
        if np.any(bad):
            i = int(np.argmax(bad))
            raise ValueError(f"ButcherTableau: c_i must equal the row sum of A; "
                             f"c[{i + 1}] = {c[i]!r} but sum_j a[{i + 1},j] = {row_sums[i]!r}")
        if abs(b.sum() - 1.0) > _CONSISTENCY_RTOL * (1.0 + np.abs(b).sum()):
            raise ValueError(f"ButcherTableau: the weights b must sum to 1 (consistency); "
                             f"sum(b) = {b.sum()!r}")
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
