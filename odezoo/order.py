"""Runge–Kutta order conditions generated from rooted trees (Butcher's theory).

A method with coefficients (A, b, c = A·1) has order p exactly when, for every rooted
tree t with at most p vertices, its elementary weight Φ(t) equals 1/γ(t) (the tree's
density).  Trees are built recursively, so the conditions of any order come from the same
few lines instead of a hand-typed list.
"""
from __future__ import annotations

from functools import lru_cache
from itertools import combinations_with_replacement

import numpy as np

__all__ = ["rooted_trees", "density", "elementary_weight", "order_residuals", "verified_orders", "dense_weights",
           "ORDER_RTOL", "ORDER_RESOLUTION", "ORDER_ROUNDING", "MAX_ORDER"]

# A rooted tree is the sorted tuple of its root's subtrees; () is the single vertex.
Tree = tuple


def _size(tree: Tree) -> int:
    return 1 + sum(_size(child) for child in tree)


def _partitions(total: int, smallest: int = 1):
    """Integer partitions of ``total`` as non-decreasing tuples."""
    if total == 0:
        yield ()
        return
    for first in range(smallest, total + 1):
        for rest in _partitions(total - first, first):
            yield (first,) + rest


@lru_cache(maxsize=None)
def rooted_trees(order: int) -> tuple[Tree, ...]:
    """All distinct rooted trees with ``order`` vertices (1, 1, 2, 4, 9, 20, 48, ...)."""
    if order < 1:
        raise ValueError(f"a rooted tree has at least one vertex, got order={order}")
    if order == 1:
        return ((),)
    trees: set[Tree] = set()
    for sizes in _partitions(order - 1):
        # group equal sizes so that children of equal size are chosen as multisets
        groups: dict[int, int] = {}
        for size in sizes:
            groups[size] = groups.get(size, 0) + 1
        choices = [list(combinations_with_replacement(rooted_trees(size), count))
                   for size, count in groups.items()]
        for combo in _product(choices):
            children = tuple(sorted(child for group in combo for child in group))
            trees.add(children)
    return tuple(sorted(trees, key=repr))


def _product(lists):
    if not lists:
        yield ()
        return
    for head in lists[0]:
        for tail in _product(lists[1:]):
            yield (head,) + tail


@lru_cache(maxsize=None)
def density(tree: Tree) -> int:
    """γ(t) = |t| · Π γ(children)."""
    value = _size(tree)
    for child in tree:
        value *= density(child)
    return value


def _stage_weights(tree: Tree, A: np.ndarray) -> np.ndarray:
    """Vector whose i-th entry is the tree's weight at stage i: Π_children (A·w(child))_i."""
    weights = np.ones(A.shape[0])
    for child in tree:
        weights = weights * (A @ _stage_weights(child, A))
    return weights


def elementary_weight(tree: Tree, A: np.ndarray, b: np.ndarray) -> float:
    """Φ(t) = bᵀ · w(t)."""
    return float(b @ _stage_weights(tree, A))


def order_residuals(A: np.ndarray, b: np.ndarray, order: int) -> list[tuple[Tree, float]]:
    """(tree, Φ(t) − 1/γ(t)) for every tree with exactly ``order`` vertices."""
    return [(tree, elementary_weight(tree, A, b) - 1.0 / density(tree))
            for tree in rooted_trees(order)]


# ---------------------------------------------------------------------------- the order check
#: The one tolerance policy, for every weight row of every tableau (a method's ``b``, an
#: embedded ``b̂``, an error estimate ``b − b̂``, dense-output weights at θ):
#: a condition holds when |Φ(t) − target| <= ORDER_RTOL · (Φ_abs(t) + θ^|t|/γ(t)), where Φ_abs
#: is the elementary weight of (|A|, |b|): the sum of the absolute values of Φ's terms, which
#: bounds how far rounding (in the coefficients and in evaluating Φ) can move Φ.  Evaluating Φ
#: costs at most a few dozen roundings (≈ 1e-14 relative to Φ_abs for 9-vertex trees); on the
#: built-in families, near their singular sets too, conditions that hold stay below 1.3e-13,
#: and published 16-digit pairs (Tsitouras 5(4), DOP853) below 5e-13.
ORDER_RTOL = 1e-12
#: A condition that holds is decided when that tolerance is at most this fraction of θ^|t|/γ(t)
#: (float64 can then tell it from one missed by a relative ORDER_RESOLUTION) ...
ORDER_RESOLUTION = 1e-2
#: ... or when its residual is at the level of float64 rounding of its terms, |Φ − target| <=
#: ORDER_ROUNDING · (Φ_abs + θ^|t|/γ): the tableau then meets the condition as exactly as float64
#: can state it (what a published tableau rounded to float64 does: DOP853's conditions of 6 to 8
#: vertices cancel terms 1e10 to 1e14 times the target, with residuals below 1e-17 of Φ_abs),
#: and a tableau that misses it by more than rounding is told apart.  Near a family's singular
#: sets, where the formula's own rounding leaves residuals up to ~1e-13, such conditions stay
#: undecided and the order check says so.
ORDER_ROUNDING = 1e-15
#: Orders are computed up to this many tree vertices (DOP853-class pairs need 8, and 9 to see
#: that they stop).
MAX_ORDER = 10


def _batched_weights(tree: Tree, A: np.ndarray, memo: dict) -> np.ndarray:
    """Stage weights w(t) of ``tree`` for a batch of tableaux ``A`` of shape (n, s, s)."""
    weights = memo.get(tree)
    if weights is None:
        weights = np.ones(A.shape[:2])
        for child in tree:
            weights = weights * np.einsum("nij,nj->ni", A, _batched_weights(child, A, memo))
        memo[tree] = weights
    return weights


def verified_orders(A, b, max_order: int = MAX_ORDER, *, theta: float = 1.0,
                    target: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """The order of a weight row of each tableau of a batch, and where float64 cannot decide it.

    ``A`` has shape (n, s, s) or (s, s), ``b`` (n, s) or (s,).  Returns ``(orders,
    undecided)``, integer arrays of shape (n,): ``orders[k]`` is the highest p ≤ ``max_order``
    such that every rooted tree t with at most p vertices satisfies Φ(t) = θ^|t|/γ(t) (with
    ``target=False``: Φ(t) = 0, the conditions an error estimate ``b − b̂`` must meet) within
    the tolerance of ``ORDER_RTOL``.  ``theta`` ≠ 1 checks dense-output weights at the point
    θ of the step.  Where the answer depends on a condition that is met only within a
    tolerance larger than ``ORDER_RESOLUTION · θ^|t|/γ(t)`` and not to float64 rounding
    (``ORDER_ROUNDING``), or where an elementary weight overflows, ``undecided[k]`` is the number of vertices p of that condition (0 otherwise)
    and ``orders[k]`` is p − 1, a lower bound.  A condition that fails by more than its
    tolerance is decided however large the coefficients are: a failure is never reported as
    undecided.  This is the one order engine: tableaux, families and their registration all
    come here.
    """
    A = np.asarray(A, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if A.ndim == 2:
        A, b = A[None], b[None]
    n = A.shape[0]
    orders = np.zeros(n, dtype=int)
    undecided = np.zeros(n, dtype=int)
    active = np.ones(n, dtype=bool)
    memo, memo_abs = {}, {}
    absA, absb = np.abs(A), np.abs(b)
    with np.errstate(all="ignore"):
        for p in range(1, max_order + 1):
            if not active.any():
                break
            fails = np.zeros(n, dtype=bool)
            unsure = np.zeros(n, dtype=bool)
            for tree in rooted_trees(p):
                scale = theta ** p / density(tree)
                goal = scale if target else 0.0
                phi = np.einsum("ni,ni->n", b, _batched_weights(tree, A, memo))
                phi_abs = np.einsum("ni,ni->n", absb, _batched_weights(tree, absA, memo_abs))
                tol = ORDER_RTOL * (phi_abs + scale)
                residual = np.abs(phi - goal)
                fails |= residual > tol  # False for NaN and for inf tolerances
                unsure |= ~(np.isfinite(phi) & ((tol <= ORDER_RESOLUTION * scale)
                                                | (residual <= ORDER_ROUNDING * (phi_abs + scale))))
            failing = active & fails
            orders[failing] = p - 1
            stuck = active & ~fails & unsure
            orders[stuck] = p - 1
            undecided[stuck] = p
            active &= ~(fails | unsure)
            orders[active] = p
    return orders, undecided


def dense_weights(A, order: int = 4, theta: float = 0.5) -> list[float]:
    """Dense-output weights at ``theta`` from the order conditions: the smallest ``b(θ)`` with
    ``Σ b_i(θ) Φ_i(t) = θ^|t|/γ(t)`` for every tree with ≤ ``order`` vertices (least squares).
    ``ValueError`` if the stages cannot satisfy them.  For pairs without a published
    interpolant that fits torchdiffeq's quartic (e.g. DOP853, whose own needs extra stages)."""
    A = np.asarray(A, dtype=np.float64)
    rows, rhs = [], []
    for p in range(1, order + 1):
        for tree in rooted_trees(p):
            rows.append(_stage_weights(tree, A))
            rhs.append(theta ** p / density(tree))
    weights, *_ = np.linalg.lstsq(np.array(rows), np.array(rhs), rcond=None)
    reached, _ = verified_orders(A, weights, order, theta=theta)
    if int(reached[0]) < order:
        raise ValueError(f"no dense-output weights of order {order} at theta={theta} exist for these stages")
    return [float(x) for x in weights]
