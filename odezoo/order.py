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

__all__ = ["rooted_trees", "density", "elementary_weight", "order_residuals"]

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
