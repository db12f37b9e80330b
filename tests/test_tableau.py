import numpy as np
import pytest

from odezoo import ButcherTableau
from problems import DP_A, DP_B
from odezoo.order import density, order_residuals, rooted_trees

CLASSIC_RK4 = ([[0, 0, 0, 0], [0.5, 0, 0, 0], [0, 0.5, 0, 0], [0, 0, 1, 0]],
               [1 / 6, 1 / 3, 1 / 3, 1 / 6], [0, 0.5, 0.5, 1])


def test_tree_counts_match_oeis_a000081():
    assert [len(rooted_trees(n)) for n in range(1, 9)] == [1, 1, 2, 4, 9, 20, 48, 115]


def test_densities_of_small_trees():
    # single vertex, chain of 2, bushy tree of 3, chain of 3
    assert density(()) == 1
    assert density(((),)) == 2
    assert density(((), ())) == 3
    assert density((((),),)) == 6


def test_order_conditions_of_order_four_written_out():
    # The 8 classic conditions, typed by hand once, agree with the tree-generated ones.
    A, b, c = (np.array(x, dtype=float) for x in CLASSIC_RK4)
    A[2, 1], A[3, 2] = 0.4, 0.9  # perturb: make conditions fail by different amounts
    c = A.sum(axis=1)
    by_hand = sorted([
        b @ c ** 3 - 1 / 4, b @ (c * (A @ c)) - 1 / 8, b @ (A @ c ** 2) - 1 / 12, b @ (A @ (A @ c)) - 1 / 24])
    generated = sorted(r for _, r in order_residuals(A, b, 4))
    np.testing.assert_allclose(generated, by_hand, rtol=0, atol=1e-14)


@pytest.mark.parametrize("A,b,c,order", [
    (CLASSIC_RK4[0], CLASSIC_RK4[1], CLASSIC_RK4[2], 4),
    ([[0, 0], [0.5, 0]], [0, 1], [0, 0.5], 2),
    ([[0]], [1], [0], 1),
    ([[0, 0, 0], [1 / 3, 0, 0], [0, 2 / 3, 0]], [1 / 4, 0, 3 / 4], [0, 1 / 3, 2 / 3], 3),
])
def test_order_of_known_methods(A, b, c, order):
    assert ButcherTableau(A, b, c).order() == order


def test_dormand_prince_is_order_five():
    A, b = DP_A, DP_B
    c = np.sum(A, axis=1)
    assert ButcherTableau(A, b, c).order() == 5


@pytest.mark.parametrize("args,match", [
    (([[0, 1], [0.5, 0]], [0.5, 0.5], [1, 0.5]), "strictly lower triangular"),
    (([[0, 0], [0.5, 0]], [0.5, 0.4], [0, 0.5]), "sum to 1"),
    (([[0, 0], [0.5, 0]], [0.5, 0.5], [0, 0.4]), "row sum"),
    (([[0, 0, 0], [0.5, 0, 0]], [0.5, 0.5], [0, 0.5]), "square"),
    (([[0, 0], [0.5, 0]], [1.0], [0, 0.5]), "length 2"),
    (([[0, 0], [np.nan, 0]], [0.5, 0.5], [0, 0.5]), "non-finite"),
    (([[0, 0], [np.inf, 0]], [0.5, 0.5], [0, np.inf]), "non-finite"),
    ((["a"], [1], [0]), "numeric"),
])
def test_invalid_tableaux_say_which_check_failed(args, match):
    with pytest.raises(ValueError, match=match):
        ButcherTableau(*args)


def test_tableau_is_frozen_and_hashable():
    tab = ButcherTableau(*CLASSIC_RK4)
    with pytest.raises(AttributeError):
        tab.b = None
    with pytest.raises(ValueError):
        tab.A[0, 0] = 1.0
    assert tab == ButcherTableau(*CLASSIC_RK4)
    assert len({tab, ButcherTableau(*CLASSIC_RK4)}) == 1
    assert tab.A.dtype == np.float64


def test_str_shows_every_coefficient():
    text = str(ButcherTableau(*CLASSIC_RK4))
    assert "0.166667" in text and "0.5" in text and "|" in text
    assert len(text.splitlines()) == 6
