import math

import numpy as np
import pytest
import torch

import odezoo
from problems import convergence_slope, sample_params

BUILTINS = ["rk2_u", "rk3_uv", "rk4_u1", "rk4_u2", "rk4_u3", "rk4_uv"]

#: fixed-grid families (adaptive ones take rtol/atol, not step_size: tests/test_adaptive.py)
FIXED_GRID = sorted(name for name, fam in odezoo.families().items() if not getattr(fam, "adaptive", False))


def test_builtins_are_registered_with_their_declared_shape():
    fams = odezoo.families()
    for name in BUILTINS:
        fam = fams[name]
        assert fam.provider == "odezoo (built-in)"
        assert fam.tableau().stages == fam.stages == fam.order
    assert odezoo.get_family("rk4_uv").params == ("u", "v")
    assert odezoo.get_family("rk4_uv").defaults == {"u": 1 / 3, "v": 2 / 3}


def test_unknown_family_lists_known_names():
    with pytest.raises(ValueError, match="rk2_u.*rk4_uv"):
        odezoo.get_family("rk5_magic")


@pytest.mark.parametrize("name", BUILTINS)
def test_order_conditions_hold_inside_the_support(name):
    fam = odezoo.get_family(name)
    for params in sample_params(fam, 150, seed=1):
        tab = fam.tableau(**params)
        for p in range(1, fam.order + 1):
            scale = max(1.0, np.abs(tab.A).max(), np.abs(tab.b).max()) ** 3
            assert tab.order_residual(p) < 1e-11 * scale, (params, p)
        assert tab.order() == fam.order, params


@pytest.mark.parametrize("name", BUILTINS)
def test_classic_members_and_defaults(name):
    fam = odezoo.get_family(name)
    for params in [fam.defaults, *fam.members.values()]:
        assert fam.tableau(**params).order() == fam.order


@pytest.mark.parametrize("name", FIXED_GRID)
def test_empirical_convergence_order(name):
    """log-log slope of the error on a nonlinear, non-autonomous problem ~ declared order,
    for every registered family, third-party ones included (adaptive families: tests/test_adaptive.py)."""
    fam = odezoo.get_family(name)
    points = [fam.defaults, *sample_params(fam, 2, seed=7)]
    for params in points:
        slope, errors = convergence_slope(name, params)
        assert abs(slope - fam.order) < 0.3, (params, slope, errors)


def test_known_tableaux():
    rk2 = odezoo.get_family("rk2_u")
    np.testing.assert_allclose(rk2.tableau(u=1.0).b, [0.5, 0.5])
    np.testing.assert_allclose(rk2.tableau(u=2 / 3).b, [0.25, 0.75])
    rk4 = odezoo.get_family("rk4_u2").tableau(u=1 / 3)
    np.testing.assert_allclose(rk4.A, [[0, 0, 0, 0], [0.5, 0, 0, 0], [0, 0.5, 0, 0], [0, 0, 1, 0]], atol=1e-15)
    np.testing.assert_allclose(rk4.b, [1 / 6, 1 / 3, 1 / 3, 1 / 6])
    three_eighths = odezoo.get_family("rk4_uv").tableau(u=1 / 3, v=2 / 3)
    np.testing.assert_allclose(three_eighths.b, [1 / 8, 3 / 8, 3 / 8, 1 / 8])
    np.testing.assert_allclose(three_eighths.A[3], [1, -1, 1, 0], atol=1e-14)
    kutta3 = odezoo.get_family("rk3_uv").tableau(u=0.5, v=1.0)
    np.testing.assert_allclose(kutta3.A[2], [-1, 2, 0], atol=1e-15)
    np.testing.assert_allclose(kutta3.b, [1 / 6, 2 / 3, 1 / 6])


SINGULAR = [
    ("rk2_u", {"u": 0.0}, "u != 0"),
    ("rk2_u", {"u": 1e-12}, "u != 0"),
    ("rk3_uv", {"u": 0.0, "v": 0.5}, "u != 0"),
    ("rk3_uv", {"u": 0.4, "v": 0.0}, "v != 0"),
    ("rk3_uv", {"u": 0.4, "v": 0.4}, "u != v"),
    ("rk3_uv", {"u": 2 / 3, "v": 0.9}, "u != 2/3"),
    ("rk3_uv", {"u": 0.2 + 1e-15, "v": 0.2}, "u != v"),
    ("rk4_u1", {"u": 0.0}, "u != 0"),
    ("rk4_u2", {"u": -0.0}, "u != 0"),
    ("rk4_u3", {"u": 3e-9}, "u != 0"),
    ("rk4_uv", {"u": 0.0, "v": 0.6}, "u != 0"),
    ("rk4_uv", {"u": 0.5, "v": 0.6}, "u != 1/2"),
    ("rk4_uv", {"u": 1.0, "v": 0.6}, "u != 1"),
    ("rk4_uv", {"u": 0.3, "v": 0.0}, "v != 0"),
    ("rk4_uv", {"u": 0.3, "v": 1.0}, "v != 1"),
    ("rk4_uv", {"u": 0.3, "v": 0.3}, "u != v"),
    ("rk4_uv", {"u": 0.25, "v": 0.8}, "D = 6uv"),
    ("rk4_uv", {"u": 0.25, "v": 0.8 + 1e-12}, "D = 6uv"),
    # another point of the D = 0 curve: v = (3 - 4u) / (4 - 6u)
    ("rk4_uv", {"u": 0.1, "v": (3 - 0.4) / (4 - 0.6)}, "D = 6uv"),
]


@pytest.mark.parametrize("name,params,constraint", SINGULAR)
def test_singular_points_are_refused_by_name(name, params, constraint):
    fam = odezoo.get_family(name)
    with pytest.raises(ValueError) as info:
        fam.tableau(**params)
    message = str(info.value)
    assert name in message and constraint in message
    for p in params:
        assert f"{p}=" in message


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_parameters_are_refused(bad):
    with pytest.raises(ValueError, match="rk2_u: parameter u must be a finite"):
        odezoo.get_family("rk2_u").tableau(u=bad)


def test_unknown_and_missing_parameter_names():
    fam = odezoo.get_family("rk4_uv")
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['w'\].*\['u', 'v'\]"):
        fam.tableau(u=0.3, w=0.1)
    assert fam.tableau(u=0.3) == fam.tableau(u=0.3, v=2 / 3)


@pytest.mark.parametrize("name", BUILTINS)
def test_near_singular_but_feasible_is_finite(name):
    """Feasible points just outside the singular tolerance still give finite tableaux."""
    fam = odezoo.get_family(name)
    for params in sample_params(fam, 300, seed=3):
        tab = fam.tableau(**params)
        assert np.isfinite(tab.A).all() and np.isfinite(tab.b).all()


def test_support_excludes_neighbourhoods_of_singular_sets():
    fam = odezoo.get_family("rk4_uv")
    assert fam.in_support(fam.defaults)
    assert not fam.in_support({"u": 0.49, "v": 0.7})      # near u = 1/2
    assert not fam.in_support({"u": 0.25, "v": 0.79})     # near D = 0
    assert not odezoo.get_family("rk2_u").in_support({"u": 1.5})
