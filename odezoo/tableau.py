"""The one tableau type: a frozen, validated Butcher tableau for explicit Runge–Kutta methods
(with an embedded row and dense-output weights where the method has them)."""
from __future__ import annotations

import math
from functools import cached_property, lru_cache

import numpy as np

from .order import MAX_ORDER, order_residuals, verified_orders

__all__ = ["ButcherTableau", "CheckedBatch", "validate", "validate_batch"]

_CONSISTENCY_RTOL = 1e-12


def _floats(name: str, value, ndim: int):
    """``value`` as nested Python lists of floats with ``ndim`` levels, or ValueError."""
    try:
        if ndim == 1:
            return [float(x) for x in value]
        return [[float(x) for x in row] for row in value]
    except OverflowError:  # e.g. a Python int or Fraction beyond float64's range
        raise ValueError(f"ButcherTableau: {name} has entries too large for float64: {value!r}") from None
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
        row_sum, scale = _sum(row, f"row {i + 1} of A")
        if abs(row_sum - c[i]) > _CONSISTENCY_RTOL * scale:
            raise ValueError(f"ButcherTableau: c_i must equal the row sum of A; "
                             f"c[{i + 1}] = {c[i]!r} but sum_j a[{i + 1},j] = {row_sum!r}")
    total, scale = _sum(b, "b")
    if abs(total - 1.0) > _CONSISTENCY_RTOL * scale:
        raise ValueError(f"ButcherTableau: the weights b must sum to 1 (consistency); sum(b) = {total!r}")
    return A, b, c


def _sum(values: list[float], what: str) -> tuple[float, float]:
    """``(Σ values, 1 + Σ |values|)``; ValueError where float64 overflows (never OverflowError)."""
    try:
        total = math.fsum(values)
    except OverflowError:
        total = math.inf
    scale = 1.0 + sum(abs(x) for x in values)
    if not (math.isfinite(total) and math.isfinite(scale)):
        raise ValueError(f"ButcherTableau: the entries of {what} are too large for float64 "
                         f"(their sum overflows): {values}")
    return total, scale


class CheckedBatch:
    """``n`` tableaux that passed the checks of `validate`, entry by entry.

    Entries are numbered A row by row, then b, then c.  ``varying`` lists the entries given
    per tableau, ``rows`` holds them (a float64 array of shape (len(varying), n), not to be modified);
    ``constants`` has every entry as a float (the first tableau's value where it varies).
    ``largest`` is the largest magnitude of any entry.
    """

    __slots__ = ("constants", "rows", "varying", "stages", "largest")

    def __init__(self, constants, rows, varying, stages, largest):
        self.constants, self.rows, self.varying = constants, rows, varying
        self.stages, self.largest = stages, largest


def validate_batch(A, b, c, n: int) -> CheckedBatch:
    """`validate` for a batch of ``n`` tableaux given entry by entry.

    Each entry of ``A``, ``b``, ``c`` is a number (the same in every tableau; any real type:
    int, float, NumPy scalar, ``Fraction``) or an array of shape ``(n,)`` (one value per
    tableau).  The checks are those of `validate` with the same tolerances, run on all
    tableaux at once in float64; on a failure the first failing tableau is run through
    `validate` itself, so the ``ValueError`` is the one the scalar path raises; its
    ``sample`` attribute is the index of that tableau.
    """
    try:
        A, b, c = [list(row) for row in A], list(b), list(c)
        s = len(A)
        well_formed = s >= 1 and all(len(row) == s for row in A) and len(b) == s and len(c) == s
    except TypeError:
        well_formed = False
    if not well_formed:
        validate(A, b, c)  # explains the shape problem
        raise ValueError(f"ButcherTableau: malformed coefficients A={A!r}, b={b!r}, c={c!r}")
    flat = [x for row in A for x in row] + b + c
    constants, varying, arrays = [], [], []
    try:
        for i, x in enumerate(flat):
            if type(x) is not float:
                if not (type(x) is np.ndarray and x.shape == (n,)):
                    x = np.asarray(x, dtype=np.float64)
                    if not x.ndim:
                        constants.append(float(x))
                        continue
                    x = np.broadcast_to(x.reshape(-1), (n,))
                varying.append(i)
                arrays.append(x)
                x = float(x[0])
            constants.append(x)
        rows = np.array(arrays, dtype=np.float64) if arrays else np.empty((0, n))
    except (TypeError, ValueError, OverflowError):
        validate(*_at(A, b, c, 0))
        raise ValueError(f"ButcherTableau: coefficients must be numbers or arrays of shape ({n},)") from None
    largest = _fast_pass(constants, rows, varying, s)
    if largest is None:
        stack = np.empty((len(flat) + 1, n))
        stack[:-1] = np.array(constants)[:, None]
        stack[varying] = rows
        stack[-1] = 1.0
        largest, bad = _batch_failures(stack, s, varying)
        if bad is not None:
            k = int(np.flatnonzero(bad)[0])
            try:
                validate(*_at(A, b, c, k))
                error = ValueError(f"ButcherTableau: the coefficients fail the tableau checks "
                                   f"(A={_at(A, b, c, k)[0]}, b={_at(A, b, c, k)[1]})")
            except ValueError as raised:
                error = raised
            error.sample = k  # which tableau of the batch
            raise error
    return CheckedBatch(constants, rows, varying, s, largest)


def _fast_pass(constants: list[float], rows: np.ndarray, varying: list[int], s: int) -> float | None:
    """The largest |entry| when every tableau passes the checks of `validate` and the
    numbers are tame (finite, below 1e300); None sends `validate_batch` to the full
    per-tableau check, which also explains a failure.  Constant entries are summed in
    Python, the varying ones in two small matrix products, so a batch costs about a dozen
    NumPy calls whatever the number of stages."""
    M_var, M_tol_var, const_rows, upper = _split_matrices(s, tuple(varying))
    if any(i in upper for i in varying) or any(constants[i] != 0.0 for i in upper if i not in varying):
        return None
    largest = max(abs(x) for x in constants)
    if not largest < 1e300:  # NaN too
        return None
    residual0, tolerance0 = [], []
    for entries, tol_entries, offset in const_rows:
        residual0.append(sum(sign * constants[j] for j, sign in entries) + offset)
        tolerance0.append(_CONSISTENCY_RTOL * (1.0 + sum(abs(constants[j]) for j in tol_entries)))
    if not varying:
        ok = all(abs(r) <= t for r, t in zip(residual0, tolerance0))
        return largest if ok else None
    # Sufficient for the tolerances of validate (each is at least RTOL): every residual within
    # RTOL.  Tableaux with large entries may need the full tolerance: the slow path decides.
    residual = M_var @ rows
    residual += np.array(residual0)[:, None]
    np.abs(residual, out=residual)
    worst = float(residual.max())  # NaN or inf when an entry is not finite
    if not worst <= _CONSISTENCY_RTOL:
        return None
    return max(largest, float(rows.max()), -float(rows.min()))


@lru_cache(maxsize=256)
def _split_matrices(s: int, varying: tuple[int, ...]):
    """For the consistency residuals of `validate` (rows of A: Σ_j a_ij − c_i; then
    Σ b − 1): the coefficients of the varying entries (``M_var``, ``M_tol_var`` with the
    tolerance factor RTOL), per residual the constant entries with their signs, the constant
    entries of its tolerance and its constant offset; and A's diagonal and upper triangle."""
    m = s * s + 2 * s
    M, M_tol, upper = _consistency_matrices(s)
    position = {j: k for k, j in enumerate(varying)}
    M_var = M[:, list(varying)] if varying else np.zeros((s + 1, 0))
    M_tol_var = M_tol[:, list(varying)] if varying else np.zeros((s + 1, 0))
    const_rows = []
    for r in range(s + 1):
        entries = [(j, M[r, j]) for j in range(m) if M[r, j] != 0.0 and j not in position]
        tol_entries = [j for j in range(m) if M_tol[r, j] != 0.0 and j not in position]
        const_rows.append((entries, tol_entries, M[r, m]))
    return M_var, M_tol_var, const_rows, upper


def _batch_failures(stack: np.ndarray, s: int, varying: list[int]):
    """``(largest |entry|, mask of the tableaux that fail a check of validate or None)``;
    the tableaux are the columns of ``stack`` (A row by row, then b, then c).

    The consistency checks are linear in the entries: residual = M·stack − (0, …, 0, 1) and
    tolerance = RTOL·(1 + |M_A|·|stack|), with one row per row of A (Σ_j a_ij − c_i) and one
    for b (Σ b_i − 1), the quantities of `validate`.  The fast path reduces everything
    to a few numbers; the per-tableau mask is computed only when something fails.
    """
    M, M_tol, upper = _consistency_matrices(s)
    with np.errstate(all="ignore"):
        magnitude = np.abs(stack)
        largest = float(magnitude.max())  # NaN when any entry is NaN
        margin = M @ stack  # the last row of stack is ones: M's last column holds the -1 of Σb − 1
        np.abs(margin, out=margin)
        scale = M_tol @ magnitude  # RTOL·(1 + Σ|entries|), the 1 again from the row of ones
        margin -= scale
        explicit = not any(i in upper for i in varying) and not any(stack[i, 0] for i in upper)
        if explicit and largest < 1e300 and float(margin.max()) <= 0.0:
            return largest, None  # finite entries, sums that cannot overflow, checks hold
        bad = ~((margin <= 0.0).all(axis=0) & np.isfinite(scale).all(axis=0)
                & np.isfinite(magnitude).all(axis=0))
        bad |= (stack[sorted(upper)] != 0.0).any(axis=0)
    return largest, (bad if bad.any() else None)


@lru_cache(maxsize=None)
def _consistency_matrices(s: int):
    """``(M, M_tol, upper)`` for stacks of s² + 2s entries plus a last row of ones.

    ``M @ stack`` gives Σ_j a_ij − c_i for each row i of A, then Σ b_i − 1; ``M_tol @ |stack|``
    gives their tolerances RTOL·(1 + Σ_j |a_ij|) and RTOL·(1 + Σ |b_i|), as in `validate`;
    ``upper`` holds the flat indices of A's diagonal and upper triangle.
    """
    m = s * s + 2 * s
    M = np.zeros((s + 1, m + 1))
    M_tol = np.zeros((s + 1, m + 1))
    for i in range(s):
        M[i, i * s:(i + 1) * s] = 1.0
        M[i, s * s + s + i] = -1.0
        M_tol[i, i * s:(i + 1) * s] = _CONSISTENCY_RTOL
    M[s, s * s:s * s + s] = 1.0
    M[s, m] = -1.0
    M_tol[s, s * s:s * s + s] = _CONSISTENCY_RTOL
    M_tol[:, m] = _CONSISTENCY_RTOL
    upper = frozenset(i * s + j for i in range(s) for j in range(i, s))
    return M, M_tol, upper


def _at(A, b, c, k: int):
    """Tableau ``k`` of a batch given entry by entry (entries that are not arrays as given)."""
    def pick(x):
        if isinstance(x, np.ndarray) and x.ndim:
            return x.reshape(-1)[k] if x.size > 1 else x.reshape(-1)[0]
        return x
    return [[pick(x) for x in row] for row in A], [pick(x) for x in b], [pick(x) for x in c]


def _frozen(values) -> np.ndarray:
    array = np.array(values, dtype=np.float64)
    array.setflags(write=False)
    return array


def _extra_row(name: str, values, stages: int, total: float, shown: str) -> list[float]:
    """An embedded or dense-output weight row: ``stages`` finite numbers summing to ``total``."""
    row = _floats(name, values, 1)
    if len(row) != stages:
        raise ValueError(f"ButcherTableau: A has {stages} stages, so {name} needs length {stages}; got {len(row)}")
    if not all(math.isfinite(x) for x in row):
        raise ValueError(f"ButcherTableau: {name} has non-finite entries: {row}")
    row_sum, scale = _sum(row, name)
    if abs(row_sum - total) > _CONSISTENCY_RTOL * scale:
        raise ValueError(f"ButcherTableau: the weights {name} must sum to {shown} (consistency); "
                         f"sum({name}) = {row_sum!r}")
    return row


class ButcherTableau:
    """Coefficients of an explicit Runge–Kutta method, checked on construction: ``(A, b, c)``
    and, for an embedded pair, the embedded weights ``b_embedded`` (b̂) and optional
    dense-output weights ``b_mid`` at the half step (``y(t0 + dt/2) ≈ y0 + dt·Σ b_mid_i k_i``).

    Checks: finite entries; ``A`` square and strictly lower triangular (explicit);
    ``b`` and ``c`` of matching length; ``c_i = Σ_j a_ij``; ``Σ b = 1``; ``b_embedded`` one
    weight per stage, summing to 1 and differing from ``b``; ``b_mid`` summing to 1/2.  Each
    failure raises ``ValueError`` naming the check.  Instances are immutable (read-only float64
    arrays) and hashable.  Orders come from one engine, [`odezoo.order.verified_orders`][odezoo.order.verified_orders]:
    `order` (the main row), `embedded_order`, `error_order` (of the estimate
    ``b − b̂``) and `mid_order` (at θ = 1/2).
    """

    __slots__ = ("A", "b", "c", "b_embedded", "b_mid", "__dict__")

    def __init__(self, A, b, c, b_embedded=None, b_mid=None):
        A, b, c = validate(A, b, c)
        s = len(b)
        embedded = mid = None
        if b_embedded is not None:
            embedded = _extra_row("b_embedded", b_embedded, s, 1.0, "1")
            if embedded == b:
                raise ValueError("ButcherTableau: b_embedded equals b, so the pair estimates no error")
        if b_mid is not None:
            if embedded is None:
                raise ValueError("ButcherTableau: b_mid (dense output at the half step) belongs to an embedded "
                                 "pair; give b_embedded too, or leave b_mid out (fixed-grid methods interpolate "
                                 "with torchdiffeq's interp='linear' or 'cubic')")
            mid = _extra_row("b_mid", b_mid, s, 0.5, "1/2")
        for name, value in (("A", _frozen(A)), ("b", _frozen(b)), ("c", _frozen(c)),
                            ("b_embedded", None if embedded is None else _frozen(embedded)),
                            ("b_mid", None if mid is None else _frozen(mid))):
            object.__setattr__(self, name, value)

    def __setattr__(self, name, value):
        raise AttributeError("ButcherTableau is immutable")

    @property
    def stages(self) -> int:
        return self.A.shape[0]

    @property
    def embedded(self) -> bool:
        """Whether this is an embedded pair (it has ``b_embedded``)."""
        return self.b_embedded is not None

    @property
    def is_fsal(self) -> bool:
        """First same as last: the last stage is f(t1, y1) (c_s = 1, last row of A = b, b_s = 0)."""
        return bool(self.c[-1] == 1.0 and self.b[-1] == 0.0 and np.array_equal(self.A[-1, :-1], self.b[:-1]))

    def order_residual(self, p: int) -> float:
        """Largest |Φ(t) − 1/γ(t)| over the rooted trees with exactly ``p`` vertices."""
        return max(abs(r) for _, r in order_residuals(self.A, self.b, p))

    @cached_property
    def _orders(self) -> dict:
        rows = {"main": (self.b, 1.0, True)}
        if self.b_embedded is not None:
            rows["embedded"] = (self.b_embedded, 1.0, True)
            rows["error"] = (self.b - self.b_embedded, 1.0, False)
        if self.b_mid is not None:
            rows["mid"] = (self.b_mid, 0.5, True)
        out = {}
        for key, (weights, theta, target) in rows.items():
            orders, undecided = verified_orders(self.A, weights, MAX_ORDER, theta=theta, target=target)
            out[key] = (int(orders[0]), int(undecided[0]))
        return out

    def _decided(self, key: str, row: str) -> int | None:
        if key not in self._orders:
            return None
        order, undecided = self._orders[key]
        if undecided:
            raise ValueError(
                f"ButcherTableau: the order of {row} cannot be decided in float64: the coefficients are so "
                f"large (largest |entry| {self.largest:.3g}) that the order-{undecided} conditions "
                f"cancel beyond float64 precision or overflow; the order is at least {order}. "
                f"Choose parameters with smaller coefficients (away from singular sets).")
        return order

    def order(self) -> int:
        """Highest p ≤ ``odezoo.order.MAX_ORDER`` for which every order condition (rooted trees of
        ≤ p vertices) holds for the weights ``b``.

        Each condition Φ(t) = 1/γ(t) is tested with a tolerance relative to the size of its
        terms (``odezoo.order.ORDER_RTOL`` times Φ of (|A|, |b|) plus 1/γ), so large
        coefficients cannot pass a condition they miss.  ``ValueError`` when float64 cannot
        decide: the coefficients are so large that a condition's terms cancel beyond what
        float64 resolves (``odezoo.order.ORDER_RESOLUTION``), or its elementary weight
        overflows.  A failed condition is always decided, so the order returned is exact.
        """
        return self._decided("main", "b")

    def embedded_order(self) -> int | None:
        """Order of the embedded row ``b_embedded`` (None for a method without one)."""
        return self._decided("embedded", "b_embedded")

    def error_order(self) -> int | None:
        """Highest q for which the error weights ``b − b̂`` annihilate every tree with ≤ q vertices
        (the estimate is O(h^(q+1))); equals the embedded order for a proper pair."""
        return self._decided("error", "b - b_embedded")

    def mid_order(self) -> int | None:
        """Order of the dense-output weights at θ = 1/2, or None without ``b_mid``."""
        return self._decided("mid", "b_mid")

    @property
    def largest(self) -> float:
        """The largest magnitude of any coefficient (every row)."""
        rows = [x for x in (self.A, self.b, self.c, self.b_embedded, self.b_mid) if x is not None]
        return float(max(np.abs(x).max() for x in rows))

    def _rows(self) -> tuple:
        return (self.A, self.b, self.c, self.b_embedded, self.b_mid)

    def __eq__(self, other):
        if not isinstance(other, ButcherTableau):
            return NotImplemented
        return all((x is None and y is None) or (x is not None and y is not None and np.array_equal(x, y))
                   for x, y in zip(self._rows(), other._rows()))

    def __hash__(self):
        return hash(tuple(None if x is None else x.tobytes() for x in self._rows()))

    def __repr__(self):
        extra = "".join(f", {name}={row.tolist()}" for name, row in (("b_embedded", self.b_embedded),
                                                                      ("b_mid", self.b_mid)) if row is not None)
        return f"ButcherTableau(A={self.A.tolist()}, b={self.b.tolist()}, c={self.c.tolist()}{extra})"

    def __str__(self):
        cells = [[f"{x:.6g}" for x in [self.c[i], *self.A[i]]] for i in range(self.stages)]
        cells.append(["", *(f"{x:.6g}" for x in self.b)])
        extra = [(label, row) for label, row in (("b^", self.b_embedded), ("mid", self.b_mid)) if row is not None]
        for label, row in extra:
            cells.append([label, *(f"{x:.6g}" for x in row)])
        width = max(len(cell) for row in cells for cell in row)
        lines = []
        for i, row in enumerate(cells):
            if i == self.stages:
                lines.append("-" * (width + 1) + "+" + "-" * ((width + 1) * self.stages + 1))
            lines.append(f"{row[0]:>{width}} | " + " ".join(f"{x:>{width}}" for x in row[1:]))
        return "\n".join(lines)
