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

__all__ = ["rooted_trees", "density", "elementary_weight", "order_residuals", "verified_orders",
           "ORDER_RTOL", "ORDER_RESOLUTION"]

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
#: A condition holds when |Φ(t) − 1/γ(t)| <= ORDER_RTOL · (Φ_abs(t) + 1/γ(t)), where Φ_abs is
#: the elementary weight of (|A|, |b|): the sum of the absolute values of Φ's terms, which
#: bounds how far rounding (in the coefficients and in evaluating Φ) can move Φ.  Evaluating Φ
#: costs at most ~30 roundings (≈ 3e-15 relative to Φ_abs); on the built-in families, near
#: their singular sets too, conditions that hold stay below 1.3e-13.
ORDER_RTOL = 1e-12
#: A condition is decidable when that tolerance is at most this fraction of 1/γ(t): beyond it
#: float64 cannot tell a condition that holds from one missed by a relative ORDER_RESOLUTION.
ORDER_RESOLUTION = 1e-2


def _batched_weights(tree: Tree, A: np.ndarray, memo: dict) -> np.ndarray:
    """Stage weights w(t) of ``tree`` for a batch of tableaux ``A`` of shape (n, s, s)."""
    weights = memo.get(tree)
    if weights is None:
        weights = np.ones(A.shape[:2])
        for child in tree:
            weights = weights * np.einsum("nij,nj->ni", A, _batched_weights(child, A, memo))
        memo[tree] = weights
    return weights


def verified_orders(A, b, max_order: int) -> tuple[np.ndarray, np.ndarray]:
    """The order of each tableau of a batch, and where it cannot be decided in float64.

    ``A`` has shape (n, s, s) or (s, s), ``b`` (n, s) or (s,).  Returns ``(orders,
    undecided)``, integer arrays of shape (n,): ``orders[k]`` is the highest p ≤ ``max_order``
    such that every rooted tree with at most p vertices satisfies its condition
    |Φ(t) − 1/γ(t)| <= ORDER_RTOL · (Φ_abs(t) + 1/γ(t)) (see ``ORDER_RTOL``).  Where the
    answer depends on a condition that is met only within a tolerance larger than
    ``ORDER_RESOLUTION / γ(t)``, or where an elementary weight overflows, ``undecided[k]`` is
    the number of vertices p of that condition (0 otherwise) and ``orders[k]`` is p − 1, a
    lower bound.  A condition that fails by more than its tolerance is decided however
    large the coefficients are: a failure is never reported as undecided.
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
                target = 1.0 / density(tree)
                phi = np.einsum("ni,ni->n", b, _batched_weights(tree, A, memo))
                phi_abs = np.einsum("ni,ni->n", absb, _batched_weights(tree, absA, memo_abs))
                tol = ORDER_RTOL * (phi_abs + target)
                residual = np.abs(phi - target)
                fails |= residual > tol  # False for NaN and for inf tolerances
                unsure |= ~(np.isfinite(phi) & (tol <= ORDER_RESOLUTION * target))
            failing = active & fails
            orders[failing] = p - 1
            stuck = active & ~fails & unsure
            orders[stuck] = p - 1
            undecided[stuck] = p
            active &= ~(fails | unsure)
            orders[active] = p
    return orders, undecided
