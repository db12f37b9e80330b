"""Embedded pairs and adaptive families (odezoo/adaptive.py and the built-in pairs).

The proofs that the machinery is right: every pair's coefficients against its order
conditions from rooted trees (not just copied), torchdiffeq's own dopri5 reproduced
exactly through ``register_tableau``, error falling with the tolerance, the empirical
order of both rows on fixed grids, adjoint gradients against finite differences, events,
MetaSolver smoothing over an adaptive family, and a third-party pair loaded from its
entry point.
"""
import math
import time
import tomllib
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torchdiffeq import odeint, odeint_adjoint

import odezoo
from odezoo import ButcherTableau
from odezoo.adaptive import mid_weights
from odezoo.order import density, elementary_weight, rooted_trees, verified_orders
from odezoo.registry import registry
from problems import DP_A, DP_B, DP_BHAT, DP_C, DP_MID, coupled, coupled_exact, riccati, riccati_exact

ROOT = Path(__file__).resolve().parents[1]
BS32_DIR = ROOT / "plugins" / "odezoo-bs32"
F64 = torch.float64


#: name -> (main order, embedded order) of the built-in pairs
PAIRS = {"rk2_u_adaptive": (2, 1), "tsit5": (5, 4), "dop853": (8, 5)}


def adaptive_names():
    return sorted(n for n, f in odezoo.families().items() if getattr(f, "adaptive", False))


class Counter:
    def __init__(self, f):
        self.f, self.n = f, 0

    def __call__(self, t, y):
        self.n += 1
        return self.f(t, y)


@pytest.fixture
def dopri5_registered():
    fam = odezoo.register_tableau("dopri5_odezoo", DP_A, DP_B, DP_C, order=5, b_embedded=DP_BHAT,
                                  embedded_order=4, b_mid=DP_MID)
    yield fam
    odezoo.unregister_tableau("dopri5_odezoo")


def slope(xs, ys):
    xs, ys = [math.log(x) for x in xs], [math.log(y) for y in ys]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


# ---------------------------------------------------------------------------- order conditions
def test_rooted_tree_counts_and_speed_up_to_order_nine():
    assert [len(rooted_trees(p)) for p in range(1, 10)] == [1, 1, 2, 4, 9, 20, 48, 115, 286]
    from odezoo.families import dop853
    start = time.perf_counter()
    tab = ButcherTableau(*dop853.FAMILY.formula())  # fresh: nothing cached
    orders = (tab.order(), tab.embedded_order(), tab.error_order())
    assert time.perf_counter() - start < 1.0
    assert orders == (8, 5, 5)


def residuals(A, b, q):
    """(tree, Φ − 1/γ, Φ of (|A|, |b|) + 1/γ) for every tree with q vertices, computed here on its own."""
    return [(tree, elementary_weight(tree, A, b) - 1 / density(tree),
             elementary_weight(tree, np.abs(A), np.abs(b)) + 1 / density(tree)) for tree in rooted_trees(q)]


def check_pair_structure(tab: ButcherTableau):
    A = tab.A
    assert np.all(np.triu(A) == 0), "explicit: A strictly lower triangular"
    np.testing.assert_allclose(A.sum(axis=1), tab.c, rtol=0, atol=1e-14)  # row sums
    assert math.isclose(math.fsum(tab.b), 1.0, abs_tol=1e-14)
    assert math.isclose(math.fsum(tab.b_embedded), 1.0, abs_tol=1e-14)


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_builtin_pairs_satisfy_their_order_conditions(name):
    fam = odezoo.get_family(name)
    p, p_hat = PAIRS[name]
    assert (fam.order, fam.embedded_order) == (p, p_hat)
    points = [fam.defaults, *fam.members.values()]
    if fam.params:
        points += [{"u": u} for u in np.linspace(0.05, 1.0, 20)]
    for params in points:
        tab = fam.tableau(**params)
        check_pair_structure(tab)
        # every condition of the declared orders holds to round-off, relative to its terms ...
        for q in range(1, p + 1):
            for tree, residual, scale in residuals(tab.A, tab.b, q):
                assert abs(residual) <= 1e-12 * scale, (params, q, tree, residual)
        for q in range(1, p_hat + 1):
            for tree, residual, scale in residuals(tab.A, tab.b_embedded, q):
                assert abs(residual) <= 1e-12 * scale, (params, q, tree, residual)
        # ... and the next order fails by far more than round-off
        worst = max(abs(r) / s for _, r, s in residuals(tab.A, tab.b, p + 1))
        worst_hat = max(abs(r) / s for _, r, s in residuals(tab.A, tab.b_embedded, p_hat + 1))
        assert worst > 1e-6 and worst_hat > 1e-6, params
        assert (tab.order(), tab.embedded_order(), tab.error_order()) == (p, p_hat, p_hat)


def test_tsit5_and_dop853_details():
    from odezoo.families import dop853, tsit5

    t5 = odezoo.get_family("tsit5").tableau()
    assert t5.is_fsal and t5.mid_order() == 4 and t5.stages == 7
    d8 = odezoo.get_family("dop853").tableau()
    assert not d8.is_fsal and d8.stages == 12 and d8.mid_order() == 4
    # DOP853's second (order-3) estimator row, the one torchdiffeq's single c_error cannot use
    bhh = np.zeros(12)
    bhh[[0, 8, 11]] = [0.244094488188976377952755905512, 0.733846688281611857341361741547,
                       0.220588235294117647058823529412e-1]
    assert verified_orders(d8.A, bhh)[0][0] == 3
    # the dense-output weights solve the continuous conditions at theta = 1/2
    assert np.allclose(mid_weights(t5.A), tsit5.B_MID) and np.allclose(mid_weights(d8.A), dop853.B_MID)


def test_dopri5_typed_has_orders_five_four_and_order_four_dense_output():
    tab = ButcherTableau(DP_A, DP_B, DP_C, DP_BHAT, DP_MID)
    assert (tab.order(), tab.embedded_order(), tab.error_order(), tab.mid_order()) == (5, 4, 4, 4)
    assert tab.is_fsal


def test_relative_tolerance_accepts_round_off_and_refuses_real_errors():
    from odezoo.families import dop853

    A, b, c, bh, mid = dop853.FAMILY.formula()
    shaken = [x * (1 + 3e-16) for x in b]  # round-off-size changes keep the orders
    shaken[0] += 1 - math.fsum(shaken)
    assert ButcherTableau(A, shaken, c, bh).order() == 8
    wrong = list(bh)
    wrong[5] += 1e-7
    wrong[0] -= 1e-7  # still sums to 1, but the embedded order drops
    assert ButcherTableau(A, b, c, wrong).embedded_order() < 5


@pytest.mark.parametrize("kwargs,match", [
    (dict(b_embedded=[0.5, 0.6]), "must sum to 1"),
    (dict(b_embedded=[1.0]), "needs length 2"),
    (dict(b_embedded=[0.0, 1.0]), "equals b"),
    (dict(b_embedded=[1.0, float("nan")]), "non-finite"),
    (dict(b_embedded=[1.0, 0.0], b_mid=[0.5, 0.5]), "sum to 1/2"),
])
def test_embedded_tableau_refuses_bad_rows(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ButcherTableau([[0, 0], [1, 0]], [0.0, 1.0] if "equals" in match else [0.5, 0.5], [0, 1], **kwargs)


# ---------------------------------------------------------------------------- register_tableau
def test_registered_dopri5_reproduces_torchdiffeq_dopri5(dopri5_registered):
    y0 = torch.tensor([[0.3, 1.0], [-0.5, 2.0]], dtype=F64)
    t = torch.linspace(0, 3, 7, dtype=F64)
    for rtol, atol in [(1e-4, 1e-6), (1e-8, 1e-10)]:
        ours, theirs = Counter(lambda t, y: torch.sin(3 * t) * y - 0.5 * y * y + torch.cos(t + y)), None
        theirs = Counter(ours.f)
        a = odeint(ours, y0, t, method="dopri5_odezoo", rtol=rtol, atol=atol)
        b = odeint(theirs, y0, t, method="dopri5", rtol=rtol, atol=atol)
        assert ours.n == theirs.n
        torch.testing.assert_close(a, b, rtol=1e-12, atol=0)
    # the same through odeint_adjoint (forward and backward)
    grads = []
    for method in ("dopri5_odezoo", "dopri5"):
        torch.manual_seed(0)
        func = nn.Linear(2, 2).double()
        nn.init.normal_(func.weight)
        out = odeint_adjoint(lambda t, y: torch.tanh(func(y)) * torch.cos(t), y0, t, method=method,
                             adjoint_params=tuple(func.parameters()), rtol=1e-7, atol=1e-9)
        out.sum().backward()
        grads.append(func.weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-12, atol=0)


def test_register_tableau_refusals_are_value_errors_and_leave_nothing_behind():
    before = set(odezoo.families())
    with pytest.raises(ValueError, match="torchdiffeq's own"):
        odezoo.register_tableau("dopri5", DP_A, DP_B, DP_C, 5, DP_BHAT, 4)
    with pytest.raises(ValueError, match="already registered"):
        odezoo.register_tableau("tsit5", DP_A, DP_B, DP_C, 5, DP_BHAT, 4)
    with pytest.raises(ValueError, match="declares order 6 but its (main row|tableau) .* has order 5"):
        odezoo.register_tableau("dp_wrong_order", DP_A, DP_B, DP_C, 6, DP_BHAT, 4)
    with pytest.raises(ValueError, match="declares embedded order 3 but its embedded row .* has order 4"):
        odezoo.register_tableau("dp_wrong_embedded", DP_A, DP_B, DP_C, 5, DP_BHAT, 3)
    with pytest.raises(ValueError, match="b_embedded and embedded_order together"):
        odezoo.register_tableau("dp_half", DP_A, DP_B, DP_C, 5, DP_BHAT)
    with pytest.raises(ValueError, match="b_mid"):
        odezoo.register_tableau("dp_mid_only", DP_A, DP_B, DP_C, 5, b_mid=DP_MID)
    with pytest.raises(ValueError, match="lower triangular"):
        odezoo.register_tableau("dp_implicit", [[0, 1], [1, 0]], [0.5, 0.5], [1, 1], 2, [1, 0], 1)
    assert set(odezoo.families()) == before
    assert not any("dp_" in p for p in odezoo.plugin_problems())
    with pytest.raises(ValueError, match="no tableau of that name"):
        odezoo.unregister_tableau("dp_wrong_order")


def test_register_tableau_fixed_grid_method_and_unregister(solver_table):
    A = [[0, 0, 0, 0], [1 / 3, 0, 0, 0], [-1 / 3, 1, 0, 0], [1, -1, 1, 0]]
    fam = odezoo.register_tableau("three_eighths_copy", A, [1 / 8, 3 / 8, 3 / 8, 1 / 8], [0, 1 / 3, 2 / 3, 1], 4)
    assert not getattr(fam, "adaptive", False) and fam.provider == "register_tableau:three_eighths_copy"
    y0, t = torch.tensor([1.0], dtype=F64), torch.tensor([0.0, 2.0], dtype=F64)
    a = odeint(riccati, y0, t, method="three_eighths_copy", options={"step_size": 0.1})
    b = odeint(riccati, y0, t, method="rk4", options={"step_size": 0.1})
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    odezoo.unregister_tableau("three_eighths_copy")
    assert "three_eighths_copy" not in odezoo.families() and "three_eighths_copy" not in solver_table


# ---------------------------------------------------------------------------- accuracy
TOLERANCES = [1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8, 1e-9]


@pytest.mark.parametrize("name", adaptive_names())
def test_error_falls_with_the_tolerance(name):
    """Global error at t = 2 on a nonlinear, non-autonomous system with a known solution:
    monotone in the tolerance, log-log slope near p/(p̂+1) (error per step, local extrapolation)."""
    fam = odezoo.get_family(name)
    tolerances = TOLERANCES if fam.order >= 3 else TOLERANCES[:5]  # order 2 at 1e-9: 50k evaluations
    y0, t = coupled_exact(0.0), torch.tensor([0.0, 2.0], dtype=F64)
    errors = []
    for tol in tolerances:
        y = odeint(coupled, y0, t, method=name, rtol=tol, atol=tol, options={"step_t": t})
        errors.append(float((y[-1] - coupled_exact(2.0)).abs().max()))
    assert all(e2 < e1 for e1, e2 in zip(errors, errors[1:])), errors
    assert errors[-1] < 30 * tolerances[-1], errors
    s = slope(tolerances, errors)
    assert 0.7 < s < fam.order / (fam.embedded_order + 1) + 0.4, (s, errors)


def riccati_exact_vector(t):
    return torch.tensor([riccati_exact(t)], dtype=F64)


#: nonlinear, non-autonomous problems with known solutions: (f, exact solution as a vector)
FIXED_GRID_PROBLEMS = {"riccati": (riccati, riccati_exact_vector), "coupled": (coupled, coupled_exact)}


def fixed_steps(tab, weights, n, problem, t_end=2.0):
    """The error at ``t_end`` after n equal steps of the method (tab.A, weights, tab.c)."""
    f, exact = FIXED_GRID_PROBLEMS[problem]
    A, c = torch.tensor(tab.A, dtype=F64), torch.tensor(tab.c, dtype=F64)
    w = torch.tensor(weights, dtype=F64)
    y, h = exact(0.0), t_end / n
    for step in range(n):
        t0 = step * h
        ks = []
        for i in range(tab.stages):
            yi = y + h * sum((A[i, j] * ks[j] for j in range(i)), torch.zeros_like(y))
            ks.append(f(torch.tensor(t0, dtype=F64) + c[i] * h, yi))
        y = y + h * sum(wi * k for wi, k in zip(w, ks))
    return float((y - exact(t_end)).abs().max())


@pytest.mark.parametrize("name", sorted(PAIRS) + ["bs32_reference", "dopri5_reference"])
def test_empirical_order_of_both_rows_on_fixed_grids(name):
    """Step each row alone with h, h/2, h/4: the log-log slope is its order.  The grids keep the
    errors between ~1e-4 and ~1e-12 (asymptotic, above round-off); dopri5-class rows have tiny
    principal error coefficients, so the 2-d system shows them pre-asymptotically (slope ~6.3
    for order 5 down to errors of 1e-12) and order-5 rows are measured on the Riccati problem."""
    if name == "bs32_reference":
        tab = ButcherTableau([[0, 0, 0, 0], [0.5, 0, 0, 0], [0, 0.75, 0, 0], [2 / 9, 1 / 3, 4 / 9, 0]],
                              [2 / 9, 1 / 3, 4 / 9, 0], [0, 0.5, 0.75, 1], [7 / 24, 1 / 4, 1 / 3, 1 / 8])
    elif name == "dopri5_reference":
        tab = ButcherTableau(DP_A, DP_B, DP_C, DP_BHAT)
    else:
        tab = odezoo.get_family(name).tableau()
    p, p_hat = tab.order(), tab.embedded_order()
    for weights, order in ((tab.b, p), (tab.b_embedded, p_hat)):
        problem, n0 = ("riccati", 32) if order == 5 else ("coupled", {1: 64, 2: 64, 3: 32, 4: 16}.get(order, 4))
        steps = (n0, 2 * n0, 4 * n0)
        errors = [fixed_steps(tab, weights, n, problem) for n in steps]
        observed = -slope(steps, errors)
        assert abs(observed - order) < 0.45, (name, order, observed, errors)


# ---------------------------------------------------------------------------- torchdiffeq features
class Field(nn.Module):
    def __init__(self):
        super().__init__()
        self.theta = nn.Parameter(torch.tensor([0.7, -0.4], dtype=F64))

    def forward(self, t, y):
        return self.theta[0] * torch.sin(t) * y + self.theta[1] * y * y + torch.cos(t)


@pytest.mark.parametrize("name,options,tol,rtol", [("tsit5", {}, 1e-10, 1e-6), ("dop853", {}, 1e-10, 1e-6),
                                                   ("rk2_u_adaptive", {"u": 0.7}, 1e-5, 1e-2)])
def test_adjoint_gradients_match_central_differences(name, options, tol, rtol):
    func = Field()
    y0 = torch.tensor([0.5, 1.0], dtype=F64)
    t = torch.tensor([0.0, 0.5, 1.5], dtype=F64)
    out = odeint_adjoint(func, y0, t, method=name, options=options, rtol=tol, atol=tol)
    (out ** 2).sum().backward()
    eps = 1e-4
    numeric = []
    with torch.no_grad():
        for i in range(2):
            values = []
            for sign in (1, -1):
                func.theta[i] += sign * eps
                values.append(float((odeint(func, y0, t, method=name, options=options,
                                            rtol=tol / 100, atol=tol / 100) ** 2).sum()))
                func.theta[i] -= sign * eps
            numeric.append((values[0] - values[1]) / (2 * eps))
    np.testing.assert_allclose(func.theta.grad.numpy(), numeric, rtol=rtol)


@pytest.mark.parametrize("name,options", [("tsit5", {}), ("dop853", {}), ("rk2_u_adaptive", {"u": 1.0})])
def test_odeint_event_finds_the_crossing(name, options):
    # y = 1 / (1 + t²) crosses 1/2 at t = 1
    event_t, solution = odeint(riccati, torch.tensor([1.0], dtype=F64), torch.tensor([0.0, 5.0], dtype=F64),
                               method=name, options=options, rtol=1e-8, atol=1e-10,
                               event_fn=lambda t, y: y[0] - 0.5)
    assert abs(float(event_t) - 1.0) < 1e-5
    assert abs(float(solution[-1, 0]) - 0.5) < 1e-5


def test_torchdiffeq_options_work_and_ours_are_checked():
    y0, t = torch.tensor([1.0], dtype=F64), torch.tensor([0.0, 1.0, 2.0], dtype=F64)
    counted = Counter(riccati)
    y = odeint(counted, y0, t, method="tsit5", rtol=1e-6, atol=1e-8,
               options={"first_step": 0.01, "step_t": [0.3], "jump_t": [1.2], "max_step": 0.5})
    torch.testing.assert_close(y[:, 0], riccati_exact(t), rtol=1e-5, atol=1e-6)
    with pytest.raises(AssertionError, match="max_num_steps"):
        odeint(riccati, y0, t, method="dop853", options={"max_num_steps": 2})
    for options, match in [({"step_size": 0.1}, r"unknown option\(s\) \['step_size'\]"),
                           ({"u": 0.0}, "u != 0"),
                           ({"u": torch.tensor([0.5, 0.6])}, "per-sample"),
                           ({"u": torch.tensor(0.5, requires_grad=True)}, "do not differentiate")]:
        with pytest.raises(ValueError, match=match):
            odeint(riccati, y0, t, method="rk2_u_adaptive", options=options)
    # float32 states, as neural ODEs use them
    y32 = odeint(riccati, y0.float(), t.float(), method="tsit5", rtol=1e-5, atol=1e-6)
    assert y32.dtype == torch.float32 and abs(float(y32[-1, 0]) - 0.2) < 1e-4


def test_non_fsal_pairs_cost_s_evaluations_per_step():
    # rk2_u_adaptive (2 stages, not FSAL): f(t1, y1) is reused, so 2 evaluations per step
    steps = []
    counted = Counter(riccati)
    odeint(counted, torch.tensor([1.0], dtype=F64), torch.tensor([0.0, 2.0], dtype=F64),
           method="rk2_u_adaptive", rtol=1e-5, atol=1e-5,
           options={"u": 1.0})
    solver_cls = odezoo._torchdiffeq_bridge.installed("rk2_u_adaptive")
    assert solver_cls.order == 2
    accepted = Counter(riccati)

    class Callbacks(nn.Module):
        def forward(self, t, y):
            return accepted(t, y)

        def callback_step(self, t0, y0, dt):
            steps.append(float(dt))

    odeint(Callbacks(), torch.tensor([1.0], dtype=F64), torch.tensor([0.0, 2.0], dtype=F64),
           method="rk2_u_adaptive", rtol=1e-5, atol=1e-5, options={"u": 1.0})
    # 2 initial evaluations (f0 and the initial-step probe) + 2 per attempted step
    assert accepted.n == 2 + 2 * len(steps) == counted.n


# ---------------------------------------------------------------------------- SolverSpec, MetaSolver
def test_solver_spec_takes_tolerances_for_adaptive_methods():
    spec = odezoo.SolverSpec("rk2_u_adaptive", {"u": 0.7}, rtol=1e-4, atol=1e-6)
    assert spec.adaptive and "adaptive" in spec.label() and "rtol=0.0001" in spec.label()
    assert odezoo.SolverSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(ValueError, match="is an adaptive method.*give rtol/atol"):
        odezoo.SolverSpec("tsit5", step_size=0.1)
    with pytest.raises(ValueError, match="fixed-grid family"):
        odezoo.SolverSpec("rk2_u", {"u": 0.5}, rtol=1e-3)
    with pytest.raises(ValueError, match="non-negative"):
        odezoo.SolverSpec("tsit5", rtol=-1.0)
    y = spec.solve(riccati, torch.tensor([1.0], dtype=F64), torch.tensor([0.0, 2.0], dtype=F64))
    assert abs(float(y[-1, 0]) - 0.2) < 1e-3
    with pytest.raises(ValueError, match="per_sample=False"):
        odezoo.MetaSolver.smoothing("rk2_u_adaptive", per_sample=True, rtol=1e-3)


def test_smoothing_over_rk2_u_adaptive_trains_an_ode_block():
    torch.manual_seed(0)
    meta = odezoo.MetaSolver.smoothing("rk2_u_adaptive", center={"u": 0.6}, distribution="uniform", scale=0.3,
                                       rtol=1e-3, atol=1e-4, seed=0)
    func = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 4))
    block = odezoo.ODEBlock(lambda t, y: func(y), meta)
    head = nn.Linear(4, 1)
    params = list(func.parameters()) + list(head.parameters())
    optimizer = torch.optim.Adam(params, lr=1e-2)
    x = torch.randn(32, 4)
    target = x.sum(dim=1, keepdim=True)
    losses, us = [], []
    for _ in range(8):
        meta.resample()
        us.append(meta.current.params["u"])
        loss = ((head(block(x)) - target) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]
    assert len(set(us)) == len(us) and all(0.3 <= u <= 0.9 for u in us)
    assert "adaptive" in meta.describe() and block.nfe > 0
    with meta.evaluating():
        assert meta.current.params == {"u": 0.6}


# ---------------------------------------------------------------------------- registration
def test_registration_checks_both_orders_across_the_support(solver_table):
    from odezoo.families.rk2_u_adaptive import FAMILY

    def broken(u):  # b̂ = b on a stretch of the support away from defaults and members
        A, b, c, bh = FAMILY.formula(u)
        return A, b, c, (b if 0.7 < u < 0.8 else bh)

    import dataclasses
    bad = dataclasses.replace(FAMILY, name="rk2_u_broken", formula=broken, provider=None)

    class Plugin:
        @odezoo.hookimpl
        def odezoo_register_families(self, register):
            register(bad)

    with pytest.warns(odezoo.OdezooPluginWarning, match="rk2_u_broken.*sampling support.*equals b"):
        odezoo.register_plugin(Plugin(), name="broken-pair")
    try:
        assert "rk2_u_broken" not in odezoo.families()
    finally:
        odezoo.unregister_plugin("broken-pair")


def test_cli_prints_both_rows_and_orders(capsys):
    from odezoo.cli import main

    assert main(["tableau", "tsit5"]) == 0
    out = capsys.readouterr().out
    assert "order 5 (declared 5), 7 stages" in out and "embedded row b^ order 4 (declared 4)" in out
    assert "b^ |" in out and "mid |" in out and "dense output b_mid of order 4" in out
    assert main(["tableau", "rk2_u_adaptive", "--u", "1"]) == 0
    assert "b^ |   1   0" in capsys.readouterr().out
    assert main(["families"]) == 0
    table = capsys.readouterr().out
    assert any(line.split()[:3] == ["dop853", "8(5)", "12"] for line in table.splitlines())


# ---------------------------------------------------------------------------- a third-party pair
class FakeDistribution:
    def __init__(self, name, version, entry_points):
        self.metadata = {"Name": name}
        self.version = version
        self.entry_points = entry_points


@pytest.fixture
def bs32(monkeypatch, solver_table):
    """The example package plugins/odezoo-bs32 loaded through its declared entry point (its
    pyproject.toml, read here), or the installed one when it is pip-installed."""
    if "bs32" in odezoo.families():
        yield odezoo.get_family("bs32")
        return
    project = tomllib.loads((BS32_DIR / "pyproject.toml").read_text())["project"]
    eps = [metadata.EntryPoint(name, value, "odezoo") for name, value in project["entry-points"]["odezoo"].items()]
    monkeypatch.syspath_prepend(str(BS32_DIR))
    monkeypatch.setattr(metadata, "distributions", lambda: [FakeDistribution(project["name"], project["version"], eps)])
    registry.load((), autoload=True)
    try:
        yield odezoo.get_family("bs32")
    finally:
        odezoo.unregister_plugin("bs32")
        assert "bs32" not in odezoo.families()


def test_third_party_pair_works_with_odeint_adjoint_and_metasolver(bs32):
    assert bs32.provider.startswith("odezoo-bs32") and (bs32.order, bs32.embedded_order) == (3, 2)
    y0, t = torch.tensor([1.0], dtype=F64), torch.tensor([0.0, 1.0, 2.0], dtype=F64)
    ours, theirs = Counter(riccati), Counter(riccati)
    a = odeint(ours, y0, t, method="bs32", rtol=1e-6, atol=1e-8)
    b = odeint(theirs, y0, t, method="bosh3", rtol=1e-6, atol=1e-8)
    assert ours.n == theirs.n  # the same pair and controller: the same steps
    torch.testing.assert_close(a[:, 0], riccati_exact(t), rtol=1e-5, atol=1e-6)
    # Only the interpolants differ: bosh3's quartic uses a second-order midpoint, bs32 the cubic
    # Hermite polynomial (third order), so bs32's output times are the more accurate.
    exact = riccati_exact(t)
    assert (a[1:, 0] - exact[1:]).abs().max() < (b[1:, 0] - exact[1:]).abs().max()

    func = Field()
    out = odeint_adjoint(func, torch.tensor([0.5, 1.0], dtype=F64), t, method="bs32", rtol=1e-9, atol=1e-9)
    out.sum().backward()
    assert torch.isfinite(func.theta.grad).all() and func.theta.grad.abs().sum() > 0

    meta = odezoo.MetaSolver.switching([odezoo.SolverSpec("bs32", rtol=1e-5, atol=1e-7),
                                        odezoo.SolverSpec("tsit5", rtol=1e-5, atol=1e-7)], seed=0)
    block = odezoo.ODEBlock(lambda t, y: -y, meta)
    for _ in range(4):
        meta.resample()
        torch.testing.assert_close(block(torch.ones(3, dtype=F64)), torch.full((3,), math.exp(-1), dtype=F64),
                                   rtol=1e-4, atol=1e-5)
