"""The verified order: a tolerance relative to each condition's terms, undecidable points
refused, the order checked across the sampling support, one validation path for floats and
tensors, any numeric type in formulas."""
import dataclasses
import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from torchdiffeq import odeint

import odezoo
from odezoo import ButcherTableau
from odezoo.cli import main
from odezoo.order import density, rooted_trees, verified_orders
MAX_CHECKED_ORDER = 6  # the exact reference computes orders up to this
from odezoo.families.rk2_u import FAMILY as RK2
from odezoo.families.rk4_u2 import FAMILY as RK4U2
from odezoo.families.rk4_uv import formula as rk4_uv_formula
from problems import forced


# ---------------------------------------------------------------------------- exact reference
def exact_order(A, b, max_order=MAX_CHECKED_ORDER):
    """The order of a rational tableau, with Fractions (no rounding at all)."""
    A = [[Fraction(x) for x in row] for row in A]
    b = [Fraction(x) for x in b]
    s = len(b)

    def weights(tree):
        w = [Fraction(1)] * s
        for child in tree:
            inner = weights(child)
            w = [w[i] * sum(A[i][j] * inner[j] for j in range(s)) for i in range(s)]
        return w

    order = 0
    for p in range(1, max_order + 1):
        for tree in rooted_trees(p):
            if sum(bi * wi for bi, wi in zip(b, weights(tree))) != Fraction(1, density(tree)):
                return order
        order = p
    return order


def rational_rk4_uv(u, v):
    return rk4_uv_formula(Fraction(u), Fraction(v))


def floats(A, b, c):
    return [[float(x) for x in row] for row in A], [float(x) for x in b], [float(x) for x in c]


rationals = st.fractions(min_value=Fraction(-3), max_value=Fraction(3), max_denominator=50)


@settings(max_examples=60, deadline=None)
@given(u=rationals, v=rationals, delta=st.one_of(st.just(Fraction(0)), st.fractions(
    min_value=Fraction(1, 10 ** 6), max_value=Fraction(1), max_denominator=10 ** 7)), which=st.integers(0, 3))
def test_float_order_equals_exact_order_of_rational_tableaux(u, v, delta, which):
    """The float64 check reports the exact order of the rational tableau (members of rk4_uv,
    possibly with a weight moved by ``delta``), or refuses to decide — never a wrong order."""
    assume(u not in (0, Fraction(1, 2), 1) and v not in (0, 1) and u != v and 6 * u * v - 4 * u - 4 * v + 3 != 0)
    A, b, c = rational_rk4_uv(u, v)
    b = list(b)
    b[which] += delta
    b[(which + 1) % 4] -= delta  # Σb stays 1: a consistent method of lower order
    truth = exact_order(A, b)
    tableau = ButcherTableau(*floats(A, b, c))
    try:
        assert tableau.order() == truth
    except ValueError as error:
        assert "cannot be decided" in str(error)


@settings(max_examples=200, deadline=None)
@given(exponent=st.floats(-300, 300), sign=st.sampled_from([-1.0, 1.0]))
def test_two_stage_methods_never_report_more_than_order_two(exponent, sign):
    """The red-team case: huge (or tiny) coefficients inflated the order of rk2_u up to 6."""
    u = sign * 10.0 ** exponent
    A, b, c = [[0.0, 0.0], [u, 0.0]], [1 - 1 / (2 * u), 1 / (2 * u)], [0.0, u]
    try:
        tableau = ButcherTableau(A, b, c)
    except ValueError:
        return  # e.g. 1/(2u) overflows
    try:
        assert tableau.order() == 2
    except ValueError as error:
        assert "cannot be decided" in str(error)


@settings(max_examples=150, deadline=None)
@given(s=st.integers(1, 5), data=st.data())
def test_explicit_methods_never_exceed_their_stage_count(s, data):
    """An explicit s-stage method has order ≤ s (bᵀA^s·1 = 0 ≠ 1/(s+1)!), at any scale."""
    scale = 10.0 ** data.draw(st.floats(-5, 200))
    entries = st.floats(-1, 1, allow_nan=False)
    A = [[data.draw(entries) * scale if j < i else 0.0 for j in range(s)] for i in range(s)]
    b = [data.draw(entries) * scale for _ in range(s - 1)]
    b.append(1.0 - math.fsum(b))
    c = [math.fsum(row) for row in A]
    try:
        tableau = ButcherTableau(A, b, c)
    except ValueError:
        return
    try:
        assert tableau.order() <= s
    except ValueError as error:
        assert "cannot be decided" in str(error)


@pytest.mark.parametrize("u", [1e3, 1e5, 1e8, 1e150, -1e7])
def test_red_team_points_of_rk2_u(u):
    assert odezoo.get_family("rk2_u").tableau(u=u).order() == 2


@pytest.mark.parametrize("u", [1e9, 1e12])
def test_undecidable_points_are_a_value_error_naming_the_cause(u):
    """At u = 1e12 the order-2 condition's terms are ~1e12 times its target, so the tolerance
    (ORDER_RTOL of the terms) is larger than the target: the tableau as computed meets every
    condition to float64 rounding and is order 4, but a weight moved by a relative 1e-14 —
    beyond rounding, within the tolerance — cannot be told from a method that holds, and is
    refused rather than given an order.  At u = 1e9 the same move is decided."""
    tableau = odezoo.get_family("rk4_u2").tableau(u=u)
    assert tableau.order() == 4
    b = tableau.b.copy()
    b[1] *= 1 + 1e-14
    b[0] += 1 - math.fsum(b)
    moved = ButcherTableau(tableau.A, b, tableau.c)
    if u < 1e10:
        assert moved.order() == 4  # the move is within ORDER_RESOLUTION of the target: decided, holds
    else:
        with pytest.raises(ValueError, match="cannot be decided in float64"):
            moved.order()


def test_batched_and_single_checks_agree():
    family = odezoo.get_family("rk4_uv")
    rng = np.random.default_rng(0)
    tableaux = [family.tableau(u=float(u), v=float(v))
                for u, v in rng.uniform(0.05, 0.95, (40, 2)) if family.in_support({"u": u, "v": v})]
    orders, undecided = verified_orders(np.stack([t.A for t in tableaux]), np.stack([t.b for t in tableaux]), 6)
    assert not undecided.any()
    assert orders.tolist() == [t.order() for t in tableaux] == [4] * len(tableaux)


def test_cli_overflow_is_a_clear_error_not_a_traceback(capsys):
    assert main(["tableau", "rk2_u", "--u", "1e300"]) == 0  # decided: order 2
    assert "order 2 (declared 2)" in capsys.readouterr().out
    assert main(["tableau", "rk4_u2", "--u", "1e300"]) == 2
    assert "cannot be decided" in capsys.readouterr().err
    assert main(["tableau", "rk2_u", "--u", "1e400"]) == 2
    assert "too large" in capsys.readouterr().err


def test_tableau_rejects_python_numbers_beyond_float64():
    with pytest.raises(ValueError, match="too large for float64"):
        ButcherTableau([[0, 0], [10 ** 400, 0]], [0.5, 0.5], [0, 10 ** 400])
    with pytest.raises(ValueError, match="too large for float64|non-finite"):
        ButcherTableau([[0, 0, 0], [1e308, 0, 0], [1.7e308, 1.7e308, 0]], [0.5, 0.25, 0.25], [0, 1e308, 1e308])


# ---------------------------------------------------------------------------- across the support
def _register(family):
    """Register ``family`` through an inline plugin; (plugin, warning messages)."""
    class Plugin:
        @odezoo.hookimpl
        def odezoo_register_families(self, register):
            register(family)

    plugin = Plugin()
    with pytest.warns() as record:
        import warnings
        warnings.warn("marker", UserWarning)  # pytest.warns needs at least one warning
        odezoo.register_plugin(plugin, name=f"test-{family.name}")
    return plugin, [str(w.message) for w in record if issubclass(w.category, odezoo.OdezooPluginWarning)]


def only_at_default(u):
    # order 2 only where b2·c2 = u/2 = 1/2, i.e. at u = 1
    return [[0.0, 0.0], [0.5, 0.0]], [1 - u, u], [0.0, 0.5]


def breaks_near_the_edge(u):
    # rk2_u, except that the weights move by 0.1 where u > 0.9
    shift = (u > 0.9) * 0.1
    return [[0.0, 0.0], [u, 0.0]], [1 - 1 / (2 * u) - shift, 1 / (2 * u) + shift], [0.0, u]


@pytest.mark.parametrize("formula,defaults,support,point", [
    (only_at_default, {"u": 1.0}, {"u": (0.5, 1.5)}, "u=0.5"),
    (breaks_near_the_edge, {"u": 0.5}, {"u": (0.05, 1.0)}, "u=0.9"),
])
def test_family_whose_order_holds_only_somewhere_is_refused(formula, defaults, support, point, solver_table):
    fam = dataclasses.replace(RK2, name="rk2_partly", formula=formula, defaults=defaults, support=support,
                              constraints=(), members={}, provider=None)
    assert fam.tableau().order() == 2  # the old check (defaults only) accepted it
    plugin, messages = _register(fam)
    try:
        assert "rk2_partly" not in odezoo.families()
        [message] = messages
        assert "sampling support" in message and "has order 1" in message and point in message
    finally:
        odezoo.unregister_plugin(plugin)


def test_support_verification_covers_unbounded_supports(solver_table):
    unbounded = dataclasses.replace(RK2, name="rk2_unbounded", support={}, members={}, provider=None)
    points = odezoo.family.support_points(unbounded)
    us = [p["u"] for p in points]
    assert len(us) > 50 and min(us) < -5 and max(us) > 5 and all(abs(u) >= 0.05 for u in us)
    plugin, messages = _register(unbounded)
    try:
        assert messages == [] and "rk2_unbounded" in odezoo.families()
    finally:
        odezoo.unregister_plugin(plugin)


def test_builtin_families_pass_the_support_verification():
    from odezoo.registry import verify_family

    for name, fam in odezoo.families().items():
        assert verify_family(fam) is None, name


# ---------------------------------------------------------------------------- one validation path
def inconsistent_above(u):
    # rk2_u whose node c2 stops matching the row sum of A where u > 0.8
    return [[0.0, 0.0], [u, 0.0]], [1 - 1 / (2 * u), 1 / (2 * u)], [0.0, u + (u > 0.8) * 0.25]


@pytest.fixture
def inconsistent_family(solver_table):
    fam = dataclasses.replace(RK2, name="rk2_inconsistent", formula=inconsistent_above,
                              support={"u": (0.1, 0.7)}, members={}, provider=None)
    plugin, messages = _register(fam)
    assert messages == []
    yield odezoo.get_family("rk2_inconsistent")
    odezoo.unregister_plugin(plugin)


def run(method, y0, **params):
    return odeint(forced, y0, torch.tensor([0.0, 0.5], dtype=y0.dtype), method=method,
                  options={"step_size": 0.25, **params})


def test_tensor_parameters_get_the_tableau_checks_of_floats(inconsistent_family):
    y0 = torch.zeros(3, dtype=torch.float64)
    with pytest.raises(ValueError, match="row sum"):
        run("rk2_inconsistent", y0, u=0.9)
    with pytest.raises(ValueError, match=r"sample 2.*row sum"):
        run("rk2_inconsistent", y0, u=torch.tensor([0.5, 0.6, 0.9], dtype=torch.float64))
    with pytest.raises(ValueError, match="row sum"):
        run("rk2_inconsistent", y0, u=torch.tensor(0.9, dtype=torch.float64, requires_grad=True))
    assert torch.isfinite(run("rk2_inconsistent", y0, u=torch.tensor([0.5, 0.6, 0.7]))).all()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.lists(st.sampled_from([0.3, 0.5, 0.79, 0.81, 0.95, 1e-7, float("inf")]), min_size=1, max_size=6))
def test_per_sample_check_fails_exactly_where_a_float_check_fails(inconsistent_family, values):
    """Property: a per-sample tensor is refused iff some sample is refused as a float, and the
    error names one such sample with the reason the float path gives for it."""
    import re

    y0 = torch.zeros(len(values), dtype=torch.float64)
    float_errors = []
    for u in values:
        try:
            run("rk2_inconsistent", y0[:1], u=u)
            float_errors.append(None)
        except ValueError as error:
            float_errors.append(str(error))
    try:
        run("rk2_inconsistent", y0, u=torch.tensor(values, dtype=torch.float64))
        batched = None
    except ValueError as error:
        batched = str(error)
    if all(e is None for e in float_errors):
        assert batched is None
        return
    assert batched is not None
    k = int(re.search(r"sample (\d+)", batched).group(1))
    assert float_errors[k] is not None
    for reason in ("row sum", "constraint", "finite"):
        assert (reason in batched) == (reason in float_errors[k])


# ---------------------------------------------------------------------------- numeric types
def rk2_with_ints(u):
    return [[0, 0], [u, 0]], [1 - 1 / (2 * u), 1 / (2 * u)], [0, u]


def rk4_u2_with_mixed_constants(u):
    a32 = 1 / (6 * u)
    sixth = Fraction(1, 6)
    A = [[0, 0, 0, 0],
         [np.float32(0.5), 0, 0, 0],  # NumPy float32 *arithmetic* would round to float32
         [np.float64(0.5) - a32, a32, np.int64(0), 0],
         [1 - (1 - 3 * u) - 3 * u, 1 - 3 * u, 3 * u, 0]]
    b = [sixth, np.float64(2 / 3) - u, u, sixth]
    c = [0, Fraction(1, 2), np.float32(0.5), True]
    return A, b, c


@pytest.mark.parametrize("formula,reference", [(rk2_with_ints, "rk2_u"), (rk4_u2_with_mixed_constants, "rk4_u2")])
def test_formulas_with_ints_numpy_scalars_and_fractions_work_for_every_parameter_kind(formula, reference,
                                                                                        solver_table):
    base = RK2 if reference == "rk2_u" else RK4U2
    fam = dataclasses.replace(base, name=f"{reference}_types", formula=formula, provider=None)
    plugin, messages = _register(fam)
    try:
        assert messages == []
        y0 = torch.linspace(-0.5, 0.5, 4, dtype=torch.float64)
        us = torch.tensor([0.3, 0.45, 0.6, 0.9], dtype=torch.float64)
        for kind in ("float", "per-sample", "grad", "float32"):
            if kind == "float":
                ours, ref = run(fam.name, y0, u=0.45), run(reference, y0, u=0.45)
            elif kind == "per-sample":
                ours, ref = run(fam.name, y0, u=us), run(reference, y0, u=us)
            elif kind == "grad":
                u = torch.tensor(0.45, dtype=torch.float64, requires_grad=True)
                ours, ref = run(fam.name, y0, u=u), run(reference, y0, u=0.45)
                (grad,) = torch.autograd.grad(ours.sum(), u)
                assert torch.isfinite(grad)
            else:
                ours, ref = run(fam.name, y0.float(), u=us.float()), run(reference, y0.float(), u=us.float())
            assert (ours - ref).abs().max() < 1e-6 if kind == "float32" else 1e-12, kind
    finally:
        odezoo.unregister_plugin(plugin)


def test_fraction_arithmetic_with_differentiable_parameters_is_a_clear_error(solver_table):
    def fraction_times_u(u):
        return [[0, 0], [u, 0]], [1 - Fraction(1, 2) / u, Fraction(1, 2) / u], [0, u]

    fam = dataclasses.replace(RK2, name="rk2_fraction", formula=fraction_times_u, provider=None)
    plugin, messages = _register(fam)
    try:
        assert messages == []
        y0 = torch.zeros(2, dtype=torch.float64)
        run("rk2_fraction", y0, u=torch.tensor([0.4, 0.6], dtype=torch.float64))  # per-sample: fine
        with pytest.raises(ValueError, match="rk2_fraction.*gradient.*TypeError"):
            run("rk2_fraction", y0, u=torch.tensor(0.5, dtype=torch.float64, requires_grad=True))
    finally:
        odezoo.unregister_plugin(plugin)
