"""Conformance: every registered method behaves like torchdiffeq's own methods of its kind.

Every method odezoo registers — each built-in family, the example plugins' families (``rk3_w``,
``bs32``, when installed) and methods made here with :func:`odezoo.register_tableau` (a fixed-grid
one, a fixed-grid one with inner stages at c = 0 and c = 1, an adaptive pair) — runs through the same
behaviour tests, chosen by its kind (a torchdiffeq ``FixedGridODESolver`` or an adaptive solver).
Where a test only encodes torchdiffeq's documented behaviour, torchdiffeq's own methods run through
it as controls (ids ``torchdiffeq:<method>``), which shows the test asks for what torchdiffeq does.

The tests are written from torchdiffeq 0.2.5's documented behaviour and its published test suite
(tests/odeint_tests.py, gradient_tests.py, event_tests.py): convergence order, decreasing ``t``,
non-uniform output times, grid options, ``perturb`` with a jump on a grid point, float32/float64,
``odeint_adjoint`` gradients, callbacks, events, adaptive options; then what odezoo adds on top:
``ODEBlock``'s compiled path gives the eager numbers and refuses what the eager path refuses, an
infinite end time is refused everywhere, and the options door takes real numbers and refuses the rest.
Test ids name the method.
"""
from __future__ import annotations

import fractions
import math
import warnings

import numpy as np
import pytest
import torch
import torchdiffeq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn
from torchdiffeq._impl.odeint import SOLVERS
from torchdiffeq._impl.solvers import FixedGridODESolver

import odezoo
from odezoo import ODEBlock, SolverSpec
from problems import ConcatField, coupled, coupled_exact, riccati, sample_params

F64 = torch.float64

# ----------------------------------------------------------------------------- the methods
# Tableaux registered by this module (see the ``registered_tableaux`` fixture).
TABLEAUX = {
    # Ralston's third-order method: an ordinary fixed-grid tableau.
    "conformance_ralston3": dict(A=[[0, 0, 0], [1 / 2, 0, 0], [0, 3 / 4, 0]], b=[2 / 9, 1 / 3, 4 / 9],
                                 c=[0, 1 / 2, 3 / 4], order=3),
    # Second order, nodes c = (0, 1, 0, 1/2): an inner stage at c = 1 and an inner stage at c = 0, both
    # with nonzero weight, so perturb must move both off the grid points (issue 25, item 3).
    "conformance_edge": dict(A=[[0, 0, 0, 0], [1, 0, 0, 0], [1, -1, 0, 0], [1 / 4, 1 / 4, 0, 0]],
                             b=[1 / 8, 1 / 4, 1 / 8, 1 / 2], c=[0, 1, 0, 1 / 2], order=2),
    # A 3(2) pair that is not FSAL: Ralston's third-order row with the midpoint rule as embedded row.
    "conformance_rk32": dict(A=[[0, 0, 0], [1 / 2, 0, 0], [0, 3 / 4, 0]], b=[2 / 9, 1 / 3, 4 / 9],
                             c=[0, 1 / 2, 3 / 4], order=3, b_embedded=[0, 1, 0], embedded_order=2),
}
TABLEAU_FIXED = ("conformance_ralston3", "conformance_edge")
TABLEAU_ADAPTIVE = ("conformance_rk32",)


def _is_fixed(method: str) -> bool:
    return issubclass(SOLVERS[method], FixedGridODESolver)


BUILTIN = sorted(odezoo.families())  # built-in families and installed plugins' families
FIXED = [m for m in BUILTIN if _is_fixed(m)] + list(TABLEAU_FIXED)
ADAPTIVE = [m for m in BUILTIN if not _is_fixed(m)] + list(TABLEAU_ADAPTIVE)
METHODS = FIXED + ADAPTIVE
PARAMETERIZED = [m for m in BUILTIN if odezoo.families()[m].params]  # families with solver parameters
# torchdiffeq's own methods, run as controls through the tests that encode torchdiffeq's behaviour.
FIXED_CONTROLS = ["torchdiffeq:rk4", "torchdiffeq:midpoint"]
ADAPTIVE_CONTROLS = ["torchdiffeq:dopri5", "torchdiffeq:bosh3"]
CONTROL_ORDER = {"rk4": 4, "midpoint": 2, "dopri5": 5, "bosh3": 3}


@pytest.fixture(scope="module", autouse=True)
def registered_tableaux():
    """Register this module's tableaux for the module's tests; unregister them afterwards.  A
    refusal is kept and reported by every test of that method (the others still run)."""
    refused = {}
    done = []
    for name, spec in TABLEAUX.items():
        try:
            odezoo.register_tableau(name, **spec)
            done.append(name)
        except Exception as error:  # noqa: BLE001 - reported by the tests of this method
            refused[name] = f"{type(error).__name__}: {error}"
    yield refused
    for name in done:
        odezoo.unregister_tableau(name)


@pytest.fixture
def method(request, registered_tableaux):
    """The torchdiffeq method name of the parametrized ``method_id``."""
    name = request.param
    if name in registered_tableaux:
        pytest.fail(f"odezoo.register_tableau({name!r}) was refused: {registered_tableaux[name]}")
    return name.split(":", 1)[1] if name.startswith("torchdiffeq:") else name


def _method_params(ids):
    return pytest.mark.parametrize("method", ids, ids=ids, indirect=True)


def family(method):
    return odezoo.families()[method]


def order_of(method) -> int:
    return CONTROL_ORDER[method] if method in CONTROL_ORDER else family(method).order


def params_of(method) -> tuple:
    return () if method in CONTROL_ORDER else family(method).params


def _points(name, count=2, seed=0):
    """(label, params) at which to test ``name``: its defaults, then seeded points of its support."""
    if name in TABLEAUX or name.startswith("torchdiffeq:"):
        return [("defaults", {})]
    fam = odezoo.families()[name]
    points = [("defaults", {})]
    if fam.params:
        points += [(f"support{i}", p) for i, p in enumerate(sample_params(fam, count, seed=seed + 7))]
    return points


def _point_cases(methods, count=2):
    return [pytest.param(m, params, id=f"{m}-{label}") for m in methods for label, params in _points(m, count)]


def _method_point_params(methods, count=2):
    cases = _point_cases(methods, count)
    return pytest.mark.parametrize("method,params", cases, indirect=["method"])


def _max_err(a, b) -> float:
    return float((torch.as_tensor(a) - torch.as_tensor(b)).abs().max())


def _solve(method, f, y0, t, params=None, step_size=None, **kwargs):
    options = dict(params or {})
    if step_size is not None:
        options["step_size"] = step_size
    options.update(kwargs.pop("options", {}))
    return torchdiffeq.odeint(f, y0, t, method=method, options=options, **kwargs)


def coupled_per_sample(t, y):
    """:func:`coupled` for a batch of states (batch, 2) whose stage times may differ per sample
    (then ``t`` has shape (batch, 1))."""
    return coupled(t[..., 0] if t.ndim == y.ndim else t, y)


def _y0_coupled(t0=0.0):
    return coupled_exact(t0).reshape(2).clone()


def _reference_rk(method, params, f, y0, grid):
    """An explicit Runge–Kutta solve on ``grid`` from the family's published tableau, in float64."""
    tab = family(method).tableau(**params)
    A, b, c = (np.asarray(x, dtype=np.float64) for x in (tab.A, tab.b, tab.c))
    y = y0
    for t0, t1 in zip(grid[:-1].tolist(), grid[1:].tolist()):
        h = t1 - t0
        ks = []
        for i in range(len(c)):
            yi = y
            for j in range(i):
                if A[i, j] != 0:
                    yi = yi + h * float(A[i, j]) * ks[j]
            ks.append(f(torch.tensor(t0 + float(c[i]) * h, dtype=F64), yi))
        y = y + h * sum(float(b[i]) * ks[i] for i in range(len(c)))
    return y


# ----------------------------------------------------------------------------- discovery
def test_every_family_is_classified_and_tested():
    """Every registered family is a torchdiffeq method of one kind and is in this module's lists;
    the example plugins' families are registered when their packages are installed."""
    families = odezoo.families()
    for name in families:
        assert name in SOLVERS, f"{name} is registered with odezoo but not with torchdiffeq"
        assert name in METHODS, f"{name} is not covered by the conformance suite"
        adaptive = not _is_fixed(name)
        assert adaptive == (name in ADAPTIVE)
    for package, name in (("odezoo_rk3w", "rk3_w"), ("odezoo_bs32", "bs32")):
        try:
            __import__(package)
        except ImportError:
            continue
        assert name in families, f"{package} is installed but {name!r} is not registered"


@_method_params(list(TABLEAUX))
def test_register_tableau_kind(method):
    fixed = method in TABLEAU_FIXED
    assert method in odezoo.families()
    assert _is_fixed(method) == fixed
    assert family(method).order == TABLEAUX[method]["order"]


# ----------------------------------------------------------------------------- fixed grid: order
@_method_point_params(FIXED)
def test_fixed_convergence_order(method, params):
    """Empirical order on a nonlinear, non-autonomous problem with a known solution equals the
    declared order (a linear autonomous problem cannot see most order conditions)."""
    p = order_of(method)
    steps = (8, 16, 32) if p >= 4 else (64, 128, 256)
    t = torch.tensor([0.0, 2.0], dtype=F64)
    errors = []
    for n in steps:
        y = _solve(method, coupled, _y0_coupled(), t, params, step_size=2.0 / n)
        errors.append(_max_err(y[-1], coupled_exact(2.0)))
    slopes = [math.log2(e0 / e1) for e0, e1 in zip(errors, errors[1:])]
    assert abs(slopes[-1] - p) < 0.35, f"{method} {params}: errors {errors}, local slopes {slopes}, order {p}"


@_method_point_params(FIXED)
def test_fixed_matches_reference_runge_kutta(method, params):
    """A solve equals an explicit Runge–Kutta solve with the family's own tableau on the same grid
    (the stages, nodes and weights the solver uses are the published ones), including a
    non-uniform grid from ``grid_constructor``."""
    y0 = _y0_coupled()
    t = torch.tensor([0.0, 1.0], dtype=F64)
    uniform = torch.linspace(0, 1, 9, dtype=F64)
    y = _solve(method, coupled, y0, t, params, step_size=1 / 8)
    assert _max_err(y[-1], _reference_rk(method, params, coupled, y0, uniform)) < 1e-13
    grid = torch.tensor([0.0, 0.1, 0.3, 0.35, 0.7, 1.0], dtype=F64)
    calls = []

    def constructor(func, y0_, t_):
        calls.append(t_.clone())
        return grid
    y = _solve(method, coupled, y0, t, params, options={"grid_constructor": constructor})
    assert calls and torch.equal(calls[0], t)
    assert _max_err(y[-1], _reference_rk(method, params, coupled, y0, grid)) < 1e-13


@_method_params([m for m in FIXED if m in PARAMETERIZED])
def test_fixed_per_sample_parameters_equal_scalar_solves(method):
    """Per-sample parameters (shape (batch,)) and 0-dim tensor parameters give, sample by sample,
    the scalar-parameter solve."""
    names = params_of(method)
    points = [p for _, p in _points(method, count=3)][1:]
    t = torch.tensor([0.0, 1.0], dtype=F64)
    y0 = _y0_coupled().expand(len(points), 2).clone()
    batch = {n: torch.tensor([p[n] for p in points], dtype=F64) for n in names}
    y = _solve(method, coupled_per_sample, y0, t, batch, step_size=0.125)
    for i, point in enumerate(points):
        scalar = _solve(method, coupled, y0[i], t, point, step_size=0.125)
        tensor0 = _solve(method, coupled, y0[i], t, {n: torch.tensor(v, dtype=F64) for n, v in point.items()},
                         step_size=0.125)
        assert _max_err(y[-1, i], scalar[-1]) < 1e-13, f"sample {i} at {point}"
        assert _max_err(tensor0[-1], scalar[-1]) < 1e-13, f"0-dim tensors at {point}"


# ----------------------------------------------------------------------------- adaptive: accuracy
@_method_point_params(ADAPTIVE, count=1)
def test_adaptive_error_decreases_with_rtol(method, params):
    t = torch.tensor([0.0, 1.0], dtype=F64)
    errors = []
    tols = (1e-3, 1e-5, 1e-7) if order_of(method) >= 3 else (1e-3, 1e-4, 1e-5)
    for tol in tols:
        y = _solve(method, coupled, _y0_coupled(), t, params, rtol=tol, atol=tol)
        errors.append(_max_err(y[-1], coupled_exact(1.0)))
    assert errors[0] > errors[1] > errors[2], f"{method}: errors {errors} at rtol {tols}"
    assert errors[2] < 100 * tols[2]


@_method_point_params(ADAPTIVE, count=0)
def test_adaptive_global_error_small_at_tight_rtol(method, params):
    # A short interval: a second-order pair needs ~10^4 steps per unit time at rtol = 1e-8.
    t = torch.tensor([0.0, 0.1, 0.25] if order_of(method) >= 3 else [0.0, 0.05, 0.1], dtype=F64)
    y = _solve(method, coupled, _y0_coupled(), t, params, rtol=1e-8, atol=1e-8)
    assert _max_err(y, coupled_exact(t)) < 1e-6


# ----------------------------------------------------------------------------- reversed / non-uniform t
def _time_reversed(f):
    return lambda s, y: -f(-s, y)


def _step(method):
    return 1 / 16 if order_of(method) >= 3 else 1 / 64


def _fixed_tol(method):
    return 20 * _step(method) ** order_of(method)


def _adaptive_rtol(method):
    """A tight tolerance that stays fast: a pair of order p needs ~(1/rtol)^(1/p) steps."""
    p = order_of(method)
    return 1e-9 if p >= 5 else 1e-6 if p >= 3 else 1e-5


def _adaptive_accuracy(method):
    p = order_of(method)  # bosh3's quartic interpolant is only second order
    return 1e-6 if p >= 5 else 1e-3


LOOSE = dict(rtol=1e-4, atol=1e-4)  # for adaptive solves whose accuracy a test does not look at


@_method_params(FIXED + FIXED_CONTROLS + ADAPTIVE + ADAPTIVE_CONTROLS)
def test_decreasing_t_is_the_time_reversed_problem(method):
    """odeint over a decreasing ``t`` equals, to round-off, odeint of the time-reversed problem
    g(s, y) = -f(-s, y) over -t (torchdiffeq's definition), is accurate, and solving back to the
    start recovers the initial state."""
    fixed = _is_fixed(method)
    rtol = None if fixed else _adaptive_rtol(method)
    kw = dict(step_size=_step(method)) if fixed else dict(rtol=rtol, atol=rtol)
    tol = _fixed_tol(method) if fixed else _adaptive_accuracy(method)
    t = torch.linspace(1, 0, 5, dtype=F64)
    y1 = coupled_exact(1.0).reshape(2)
    back = _solve(method, coupled, y1, t, **kw)
    reversed_problem = _solve(method, _time_reversed(coupled), y1, -t, **kw)
    assert back.shape == (5, 2)
    assert _max_err(back, reversed_problem) < 1e-12
    assert _max_err(back, coupled_exact(t)) < tol
    forward = _solve(method, coupled, _y0_coupled(), torch.tensor([0.0, 1.0], dtype=F64), **kw)
    there_and_back = _solve(method, coupled, forward[-1], torch.tensor([1.0, 0.0], dtype=F64), **kw)
    assert _max_err(there_and_back[-1], _y0_coupled()) < 2 * tol


@_method_params(FIXED + FIXED_CONTROLS)
def test_fixed_non_uniform_output_times(method):
    """Output times are interpolated on a grid that depends only on t[0] and t[-1]: the final state
    equals the two-point solve's, an output time on a grid point equals the solve that ends there,
    and cubic interpolation is accurate in between."""
    h = 1 / 32
    t = torch.tensor([0.0, 0.13, 0.25, 0.4, 0.41, 1.0], dtype=F64)
    y = _solve(method, coupled, _y0_coupled(), t, step_size=h)
    assert y.shape == (6, 2)
    two = _solve(method, coupled, _y0_coupled(), t[[0, -1]], step_size=h)
    assert _max_err(y[-1], two[-1]) < 1e-14
    quarter = _solve(method, coupled, _y0_coupled(), t[[0, 2]], step_size=h)
    assert _max_err(y[2], quarter[-1]) < 1e-14
    assert _max_err(y[0], _y0_coupled()) == 0
    cubic = _solve(method, coupled, _y0_coupled(), t, step_size=h, options={"interp": "cubic"})
    assert _max_err(cubic[[0, 2, 5]], y[[0, 2, 5]]) < 1e-14
    assert _max_err(cubic, coupled_exact(t)) < max(20 * h ** order_of(method), 1e-6)
    assert _max_err(y, coupled_exact(t)) < 1e-3  # linear interpolation: O(h^2)
    # Without step_size or grid_constructor the grid is the output times (torchdiffeq's default).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        on_outputs = _solve(method, coupled, _y0_coupled(), t)
    explicit = _solve(method, coupled, _y0_coupled(), t, options={"grid_constructor": lambda f, y0, t_: t_})
    assert _max_err(on_outputs, explicit) < 1e-14


@_method_params(ADAPTIVE + ADAPTIVE_CONTROLS)
def test_adaptive_non_uniform_output_times(method):
    t = torch.tensor([0.0, 0.13, 0.25, 0.4, 0.41, 1.0], dtype=F64)
    rtol, tol = _adaptive_rtol(method), _adaptive_accuracy(method)
    y = _solve(method, coupled, _y0_coupled(), t, rtol=rtol, atol=rtol)
    assert y.shape == (6, 2)
    assert _max_err(y[0], _y0_coupled()) == 0
    assert _max_err(y, coupled_exact(t)) < tol
    back = _solve(method, coupled, coupled_exact(1.0).reshape(2), t.flip(0), rtol=rtol, atol=rtol)
    assert _max_err(back, coupled_exact(t.flip(0))) < tol


@_method_params(METHODS + FIXED_CONTROLS + ADAPTIVE_CONTROLS)
def test_single_time_point_returns_y0(method):
    """torchdiffeq's TestNoIntegration: a one-element ``t`` returns ``y0`` (with a time dimension)."""
    y0 = _y0_coupled()
    kw = dict(step_size=0.1) if _is_fixed(method) else {}
    y = _solve(method, coupled, y0, torch.tensor([0.5], dtype=F64), **kw)
    assert y.shape == (1, 2) and _max_err(y[0], y0) == 0


# ----------------------------------------------------------------------------- perturb
GRID = (0.0, 0.25, 0.5, 0.75, 1.0)


def _perturb_cases():
    cases = []
    for m in FIXED + FIXED_CONTROLS:
        if m.startswith("torchdiffeq:") or not odezoo.families().get(m) or not odezoo.families()[m].params:
            cases.append(pytest.param(m, "none", {}, id=f"{m}"))
            continue
        points = _points(m)
        for label, params in points:
            full = {**odezoo.families()[m].defaults, **params}
            cases.append(pytest.param(m, "float", full, id=f"{m}-{label}-float"))
            cases.append(pytest.param(m, "tensor0", full, id=f"{m}-{label}-tensor0"))
        batch = {n: [{**odezoo.families()[m].defaults, **p}[n] for _, p in points]
                 for n in odezoo.families()[m].params}
        cases.append(pytest.param(m, "per_sample", batch, id=f"{m}-per_sample"))
    return cases


@pytest.mark.parametrize("method,kind,values", _perturb_cases(), indirect=["method"])
def test_perturb_never_evaluates_on_a_grid_point(method, kind, values):
    """torchdiffeq's perturb contract (TestDiscontinuities.test_odeint_perturb): with
    ``perturb=True`` no right-hand-side evaluation falls exactly on a grid point, so a jump on a
    grid point is integrated exactly: dx/dt = [t > 0.5] (and [t >= 0.5]) with step 0.25 on [0, 1]
    gives x(1) = 0.5 — at the defaults and other points of the support, with float, 0-dim tensor
    and per-sample parameters, forward and in the adjoint's backward pass."""
    batch = 3 if kind == "per_sample" else 1
    if kind == "float":
        params = dict(values)
    elif kind == "tensor0":
        params = {n: torch.tensor(v, dtype=F64) for n, v in values.items()}
    elif kind == "per_sample":
        params = {n: torch.tensor(v, dtype=F64) for n, v in values.items()}
    else:
        params = {}
    t = torch.tensor([0.0, 1.0], dtype=F64)
    options = {**params, "step_size": 0.25, "perturb": True}
    for strict in (True, False):
        times = []

        def jump(t_, y):
            times.extend(torch.as_tensor(t_).reshape(-1).tolist())
            on = (t_ > 0.5) if strict else (t_ >= 0.5)
            return torch.as_tensor(on, dtype=y.dtype) * torch.ones_like(y)
        x = torchdiffeq.odeint(jump, torch.zeros(batch, 1, dtype=F64), t, method=method, options=options)
        on_grid = sorted({s for s in times if s in GRID})
        exact = _max_err(x[-1], torch.full((batch, 1), 0.5, dtype=F64)) < 1e-6
        assert exact and not on_grid, (
            f"perturb=True: f evaluated exactly on grid points {on_grid}; dx/dt = [t {'>' if strict else '>='} "
            f"0.5] gives x(1) = {x[-1].reshape(-1).tolist()}, exact 0.5")
    if kind in ("float", "none"):  # the adjoint cannot take per-sample parameters; floats suffice
        times = []

        def smooth(t_, y):
            times.extend(torch.as_tensor(t_).reshape(-1).tolist())
            return -y
        x0 = torch.tensor([1.0, 2.0], dtype=F64, requires_grad=True)
        xs = torchdiffeq.odeint_adjoint(smooth, x0, t, method=method, options=options, adjoint_params=())
        times.clear()
        xs.sum().backward()
        on_grid = sorted({s for s in times if s in GRID})
        assert not on_grid, f"backward pass evaluated f exactly on grid points {on_grid} with perturb=True"


@_method_params(FIXED + FIXED_CONTROLS)
def test_without_perturb_grid_points_are_evaluated(method):
    """The converse half of torchdiffeq's perturb test: without it, f is evaluated at t0 of each step."""
    times = []

    def f(t_, y):
        times.append(float(t_))
        return -y
    _solve(method, f, torch.tensor([1.0, 2.0], dtype=F64), torch.tensor([0.0, 1.0], dtype=F64), step_size=0.5)
    assert 0.0 in times and 0.5 in times


# ----------------------------------------------------------------------------- dtypes
@_method_params(METHODS + FIXED_CONTROLS + ADAPTIVE_CONTROLS)
@pytest.mark.parametrize("t_dtype", [torch.float32, torch.float64], ids=["t32", "t64"])
@pytest.mark.parametrize("y_dtype", [torch.float32, torch.float64], ids=["y32", "y64"])
def test_dtypes(method, y_dtype, t_dtype):
    """The output has y0's dtype; f sees t in y's real dtype (as torchdiffeq's wrapper casts it);
    float32 and float64 states give the same solution to float32 accuracy."""
    fixed = _is_fixed(method)
    kw = dict(step_size=0.125) if fixed else LOOSE
    seen = set()

    def f(t_, y):
        seen.add((t_.dtype, y.dtype))
        return coupled(t_, y)
    y0 = _y0_coupled().to(y_dtype)
    t = torch.tensor([0.0, 0.5, 1.0], dtype=t_dtype)
    y = _solve(method, f, y0, t, **kw)
    assert y.dtype == y_dtype and y.shape == (3, 2)
    assert seen == {(y_dtype, y_dtype)}, f"f called with (t dtype, y dtype) {seen}"
    reference = _solve(method, coupled, _y0_coupled(), t.to(F64), **kw)
    # float32 times: torchdiffeq computes stage times in t's dtype (t0 + c*dt rounded to float32)
    tol = 1e-4 if y_dtype == torch.float32 else 1e-7 if t_dtype == torch.float32 else 1e-12
    if not fixed and y_dtype == torch.float32:
        tol = 1e-3  # float32 round-off moves the step decisions
    assert _max_err(y.to(F64), reference) < tol


# ----------------------------------------------------------------------------- gradients
def _grad_problem():
    torch.manual_seed(0)
    func = ConcatField(3)
    y0 = torch.randn(2, 3, dtype=F64, generator=torch.Generator().manual_seed(1))
    return func, y0


FD_ENTRIES = (0, 3, 5)


def _fd(fn, x, eps):
    """Central finite differences of the scalar fn() w.r.t. a few entries of x (modified in place)."""
    grad = torch.zeros_like(x)
    flat, gflat = x.data.view(-1), grad.view(-1)
    for i in FD_ENTRIES:
        old = float(flat[i])
        flat[i] = old + eps
        plus = float(fn())
        flat[i] = old - eps
        minus = float(fn())
        flat[i] = old
        gflat[i] = (plus - minus) / (2 * eps)
    return grad


@_method_params(METHODS + FIXED_CONTROLS + ADAPTIVE_CONTROLS)
def test_adjoint_gradients(method):
    """Gradients w.r.t. y0 and the function's parameters: odeint's backpropagation equals finite
    differences of odeint, and odeint_adjoint's equal odeint's (to the adjoint's discretization
    error on a fixed grid, to the tolerance for adaptive methods)."""
    fixed = _is_fixed(method)
    rtol = None if fixed else _adaptive_rtol(method)
    kw = dict(options={"step_size": 0.05}) if fixed else dict(rtol=rtol, atol=rtol)
    func, y0 = _grad_problem()
    t = torch.tensor([0.0, 0.3, 0.6], dtype=F64)
    weights = torch.linspace(-1, 1, 3 * 2 * 3, dtype=F64).reshape(3, 2, 3)

    def loss(integrate, y0_):
        return (integrate(func, y0_, t, method=method, **kw) * weights).sum()

    y0_leaf = y0.clone().requires_grad_(True)
    func.zero_grad()
    loss(torchdiffeq.odeint, y0_leaf).backward()
    bp_y0, bp_w = y0_leaf.grad.clone(), func.w.grad.clone()

    # adaptive: step decisions move with the perturbation, so a larger step and tolerance
    eps, rtol_fd = (1e-6, 1e-6) if fixed else (1e-4, 1e-3)
    with torch.no_grad():
        fd_y0 = _fd(lambda: loss(torchdiffeq.odeint, y0), y0, eps)
        fd_w = _fd(lambda: loss(torchdiffeq.odeint, y0), func.w, eps)
    for bp, fd in ((bp_y0, fd_y0), (bp_w, fd_w)):
        picked = torch.tensor(FD_ENTRIES)
        assert _max_err(bp.reshape(-1)[picked], fd.reshape(-1)[picked]) < rtol_fd * (1 + float(fd.abs().max()))

    y0_leaf = y0.clone().requires_grad_(True)
    func.zero_grad()
    loss(torchdiffeq.odeint_adjoint, y0_leaf).backward()
    tol = (50 * 0.05 ** order_of(method)) if fixed else 1e4 * rtol
    assert _max_err(y0_leaf.grad, bp_y0) < tol * (1 + float(bp_y0.abs().max()))
    assert _max_err(func.w.grad, bp_w) < tol * (1 + float(bp_w.abs().max()))


@_method_params([m for m in FIXED if m in PARAMETERIZED])
def test_gradient_wrt_solver_parameters(method):
    """A 0-dim tensor parameter is differentiable through odeint: backprop equals finite differences."""
    names = params_of(method)
    fam = family(method)
    t = torch.tensor([0.0, 1.0], dtype=F64)
    for name in names:
        value = torch.tensor(fam.defaults[name], dtype=F64, requires_grad=True)
        y = _solve(method, coupled, _y0_coupled(), t, {name: value}, step_size=0.25)
        (grad,) = torch.autograd.grad(y[-1].sum(), value)
        eps = 1e-6
        plus = _solve(method, coupled, _y0_coupled(), t, {name: fam.defaults[name] + eps}, step_size=0.25)
        minus = _solve(method, coupled, _y0_coupled(), t, {name: fam.defaults[name] - eps}, step_size=0.25)
        fd = float((plus[-1].sum() - minus[-1].sum()) / (2 * eps))
        assert abs(float(grad) - fd) < 1e-6 * (1 + abs(fd)), f"d/d{name}: backprop {float(grad)}, FD {fd}"


# ----------------------------------------------------------------------------- callbacks
class _CallbackField(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 2).double()
        self.counts = {}

    def forward(self, t, y):
        return torch.tanh(self.lin(y)) * (1 + t)

    def _count(self, name):
        def callback(t0, y0, dt):
            self.counts[name] = self.counts.get(name, 0) + 1
        return callback


@_method_params(FIXED + FIXED_CONTROLS)
def test_fixed_callbacks(method):
    """callback_step once per step forward, callback_step_adjoint once per step backward; an
    adaptive-only callback on a fixed-grid method warns (torchdiffeq's TestCallbacks)."""
    f = _CallbackField()
    starts = []
    f.callback_step = lambda t0, y0, dt: starts.append(float(t0))
    f.callback_step_adjoint = f._count("step_adjoint")
    x0 = torch.tensor([1.0, 2.0], dtype=F64)
    xs = torchdiffeq.odeint_adjoint(f, x0, torch.tensor([0.0, 1.0], dtype=F64), method=method,
                                    options={"step_size": 0.1})
    assert len(starts) == 10 and starts[0] == 0.0 and abs(starts[-1] - 0.9) < 1e-12
    xs.sum().backward()
    assert f.counts.get("step_adjoint") == 10
    plain = _CallbackField()
    plain.callback_accept_step = lambda t0, y0, dt: None
    with pytest.warns(Warning, match="callback"):
        torchdiffeq.odeint(plain, x0, torch.tensor([0.0, 1.0], dtype=F64), method=method, options={"step_size": 0.5})


@_method_params(ADAPTIVE + ADAPTIVE_CONTROLS)
def test_adaptive_callbacks(method):
    f = _CallbackField()
    for name in ("step", "accept_step", "reject_step", "step_adjoint", "accept_step_adjoint",
                 "reject_step_adjoint"):
        setattr(f, f"callback_{name}", f._count(name))
    x0 = torch.tensor([1.0, 2.0], dtype=F64)
    xs = torchdiffeq.odeint_adjoint(f, x0, torch.tensor([0.0, 1.0], dtype=F64), method=method, **LOOSE)
    c = f.counts
    assert c.get("step", 0) > 0
    assert c.get("accept_step", 0) > 0 and c.get("accept_step", 0) + c.get("reject_step", 0) == c["step"]
    xs.sum().backward()
    assert c.get("step_adjoint", 0) > 0
    assert c.get("accept_step_adjoint", 0) + c.get("reject_step_adjoint", 0) == c["step_adjoint"]


# ----------------------------------------------------------------------------- events
@_method_params(METHODS + FIXED_CONTROLS + ADAPTIVE_CONTROLS)
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_event_handling(method, reverse):
    """event_fn as torchdiffeq defines it: y' = -2ty², y(0) = 1 reaches y = 1/2 at t = 1; solving
    from t = 0 forward (or from t = 2 backward) stops there and returns (event time, states)."""
    fixed = _is_fixed(method)
    options = {"step_size": 0.01, "interp": "cubic"} if fixed else {}
    tols = {} if fixed or order_of(method) >= 3 else dict(rtol=1e-5, atol=1e-5)  # else torchdiffeq's defaults
    if reverse:
        t, y0 = torch.tensor([2.0, 0.0], dtype=F64), torch.tensor([0.2], dtype=F64)
    else:
        t, y0 = torch.tensor([0.0, 2.0], dtype=F64), torch.tensor([1.0], dtype=F64)
    t_event, ys = torchdiffeq.odeint(riccati, y0, t, method=method, options=options,
                                     event_fn=lambda t_, y: (y - 0.5).sum(), **tols)
    assert abs(float(t_event) - 1.0) < 1e-4, f"event at t = {float(t_event)}, exact 1"
    assert abs(float(ys[-1, 0]) - 0.5) < 1e-4


# ----------------------------------------------------------------------------- adaptive options
class _Jump:
    def __init__(self, strict=True):
        self.times = []
        self.strict = strict

    def __call__(self, t, y):
        self.times.append(float(t))
        on = (t > 0.5) if self.strict else (t >= 0.5)
        return torch.ones_like(y) * on.to(y.dtype)


@_method_params(ADAPTIVE + ADAPTIVE_CONTROLS)
def test_adaptive_jump_t(method):
    """With jump_t at a discontinuity f is never evaluated exactly on it, so dx/dt = [t > 0.5]
    (and [t >= 0.5]) integrates exactly to x(1) = 0.5, in fewer evaluations than without."""
    t = torch.tensor([0.0, 1.0], dtype=F64)
    for strict in (True, False):
        with_jump = _Jump(strict)
        x = _solve(method, with_jump, torch.zeros(1, dtype=F64), t, rtol=1e-6, atol=1e-6,
                   options={"jump_t": torch.tensor([0.5], dtype=F64)})
        assert 0.5 not in with_jump.times
        assert abs(float(x[-1, 0]) - 0.5) < 1e-8, f"x(1) = {float(x[-1, 0])} with jump_t, exact 0.5"
        without = _Jump(strict)
        _solve(method, without, torch.zeros(1, dtype=F64), t, rtol=1e-6, atol=1e-6)
        assert len(with_jump.times) < len(without.times)


@_method_params(ADAPTIVE + ADAPTIVE_CONTROLS)
def test_adaptive_step_t_first_step_max_step(method):
    t = torch.tensor([0.0, 1.0], dtype=F64)
    f = _CallbackField()
    steps = []
    f.callback_step = lambda t0, y0, dt: steps.append((float(t0), float(dt)))
    x0 = torch.tensor([1.0, 2.0], dtype=F64)
    _solve(method, f, x0, t, options={"step_t": torch.tensor([0.37], dtype=F64), "first_step": 0.01,
                                      "max_step": 0.2}, **LOOSE)
    assert steps[0] == (0.0, pytest.approx(0.01, rel=1e-12)), "first_step is the first step tried"
    assert 0.37 in [t0 for t0, _ in steps], "a step ends exactly on step_t"
    assert max(dt for _, dt in steps) <= 0.2 + 1e-15, "max_step bounds every step"


@_method_params(ADAPTIVE + ADAPTIVE_CONTROLS)
def test_adaptive_max_num_steps(method):
    with pytest.raises(AssertionError, match="max_num_steps"):
        _solve(method, coupled, _y0_coupled(), torch.tensor([0.0, 1.0], dtype=F64), rtol=1e-12, atol=1e-12,
               options={"max_num_steps": 3})


@_method_params(ADAPTIVE + ADAPTIVE_CONTROLS)
def test_adaptive_norm_option(method):
    called = []

    def norm(x):
        called.append(x.shape)
        return x.abs().max()
    _solve(method, coupled, _y0_coupled(), torch.tensor([0.0, 1.0], dtype=F64), options={"norm": norm}, **LOOSE)
    assert called


# ----------------------------------------------------------------------------- compiled = eager
def _outcome(make, x):
    """('ok', result) or ('error', type name, message): what building and running a block gives."""
    try:
        return ("ok", make()(x))
    except Exception as error:  # noqa: BLE001 - compared between the two paths
        return ("error", type(error).__name__, str(error))


T_CASES = {
    "increasing2": [0.0, 1.0],
    "increasing5": [0.0, 0.25, 0.5, 0.75, 1.0],
    "decreasing5": [1.0, 0.75, 0.5, 0.25, 0.0],
    "nonuniform": [0.0, 0.1, 0.45, 0.5, 1.3],
    "nonuniform_decreasing": [1.3, 0.5, 0.45, 0.1, 0.0],
}
BAD_T = {
    "nan": [0.0, float("nan"), 1.0],
    "inf": [0.0, float("inf")],
    "minus_inf": [0.0, float("-inf")],
    "repeated": [0.0, 0.5, 0.5, 1.0],
    "non_monotone": [0.0, 0.6, 0.3, 1.0],
    "one_element": [0.5],
}


def _compiled_cases():
    return [pytest.param(m, params, id=f"{m}-{label}") for m in FIXED for label, params in _points(m, count=0)]


@pytest.mark.parametrize("method,params", _compiled_cases(), indirect=["method"])
@pytest.mark.parametrize("t_case", list(T_CASES))
def test_compiled_path_equals_eager(method, params, t_case):
    """ODEBlock(direct=True) — the path torch.compile takes — gives the eager ODEBlock's numbers, for
    the final state and the whole trajectory, for every t the eager path accepts."""
    func, _ = _grad_problem()
    x = torch.randn(4, 3, dtype=F64, generator=torch.Generator().manual_seed(2))
    spec = SolverSpec(method, params, n_steps=3)
    t = torch.tensor(T_CASES[t_case], dtype=F64)
    for trajectory in (False, True):
        eager = ODEBlock(func, spec, t=t, direct=False, return_trajectory=trajectory)(x)
        direct = ODEBlock(func, spec, t=t, direct=True, return_trajectory=trajectory)(x)
        assert direct.shape == eager.shape
        assert _max_err(direct, eager) < 1e-12, f"return_trajectory={trajectory}: direct path differs"
    reference = torchdiffeq.odeint(func, x, t, method=method, options=spec.options())
    assert _max_err(ODEBlock(func, spec, t=t, return_trajectory=True)(x), reference) < 1e-12, \
        "ODEBlock differs from torchdiffeq.odeint with the same (float64) t"


@pytest.mark.parametrize("method,params", _compiled_cases(), indirect=["method"])
@pytest.mark.parametrize("t_case", list(BAD_T))
def test_compiled_path_refuses_what_eager_refuses(method, params, t_case):
    """NaN or infinite times, repeated or non-monotone times, a one-element t: the eager block
    refuses them, and the direct path refuses them with the same error."""
    func, _ = _grad_problem()
    x = torch.randn(4, 3, dtype=F64, generator=torch.Generator().manual_seed(2))
    spec = SolverSpec(method, params, n_steps=3)
    t = torch.tensor(BAD_T[t_case], dtype=F64)
    eager = _outcome(lambda: ODEBlock(func, spec, t=t, direct=False), x)
    direct = _outcome(lambda: ODEBlock(func, spec, t=t, direct=True), x)
    assert eager[0] == "error", f"the eager ODEBlock accepted t = {t.tolist()} and returned {eager[1]}"
    assert direct[0] == "error", f"the direct path accepted t = {t.tolist()} and returned {direct[1]}"
    assert direct == eager


@_method_params(FIXED)
def test_odeblock_keeps_the_dtype_of_t(method):
    """A float64 t reaches the solver unrounded, on the eager and the direct path."""
    func, x = _grad_problem()
    t = torch.tensor([0.0, 1 / 3, 0.7 + 1e-12], dtype=F64)
    spec = SolverSpec(method, n_steps=2)
    reference = torchdiffeq.odeint(func, x, t, method=method, options=spec.options())
    for direct in (False, True):
        got = ODEBlock(func, spec, t=t, direct=direct, return_trajectory=True)(x)
        assert _max_err(got, reference) < 1e-14, f"direct={direct}"


# ----------------------------------------------------------------------------- t = [0, inf]
def _inf_paths(method):
    fixed = _is_fixed(method)
    options = {"step_size": 0.1} if fixed else {"max_num_steps": 10}
    paths = {
        "torchdiffeq.odeint": lambda f, y, t: torchdiffeq.odeint(f, y, t, method=method, options=options),
        "odezoo.odeint": lambda f, y, t: odezoo.odeint(f, y, t, method=method, options=options),
        "odeint_adjoint": lambda f, y, t: torchdiffeq.odeint_adjoint(f, y, t, method=method, options=options),
    }
    if fixed:
        spec = SolverSpec(method, step_size=0.1)
        nspec = SolverSpec(method, n_steps=4)
        paths["SolverSpec.solve"] = lambda f, y, t: spec.solve(f, y, t)
        paths["ODEBlock"] = lambda f, y, t: ODEBlock(f, nspec, t=t, direct=False)(y)
        paths["ODEBlock(direct=True)"] = lambda f, y, t: ODEBlock(f, nspec, t=t, direct=True)(y)
    return paths


@_method_params(METHODS)
@pytest.mark.parametrize("t_values", [[0.0, float("inf")], [0.0, 0.5, float("inf")], [float("-inf"), 0.0]],
                         ids=["0_inf", "0_half_inf", "minus_inf_0"])
def test_infinite_time_is_refused_on_every_path(method, t_values):
    func, x = _grad_problem()
    t = torch.tensor(t_values, dtype=F64)
    silent = []
    for name, path in _inf_paths(method).items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out = path(func, x, t)
        except (ValueError, TypeError, AssertionError) as error:
            if not any(word in str(error).lower() for word in ("finite", "inf")):
                silent.append(f"{name}: refused, but the message does not say why: {error!r}")
            continue
        except Exception as error:  # noqa: BLE001
            silent.append(f"{name}: {type(error).__name__} from inside: {error}")
            continue
        silent.append(f"{name}: returned {'NaN' if torch.isnan(out).any() else 'numbers'} for t = {t_values}")
    assert not silent, "; ".join(silent)


# ----------------------------------------------------------------------------- options door


def _param_solve(method, name, value):
    fixed = _is_fixed(method)
    kw = dict(step_size=0.5) if fixed else dict(rtol=1e-3, atol=1e-3)
    return _solve(method, coupled, _y0_coupled(), torch.tensor([0.0, 1.0], dtype=F64), {name: value}, **kw)


def _integer_point(fam, name):
    """An integer value of ``name`` inside the support (others at their defaults), or None."""
    low, high = fam.support[name]
    for k in range(math.ceil(low), math.floor(high) + 1):
        if fam.in_support({**fam.defaults, name: float(k)}):
            return k
    return None


@_method_params(PARAMETERIZED)
def test_real_numbers_are_accepted_as_parameters(method):
    """Any real number works where a float does (docs/guarantees.md): NumPy scalars, Fraction,
    0-d arrays, 0-dim real tensors — each solving like its float value."""
    fam = family(method)
    for name in fam.params:
        d = fam.defaults[name]
        expected = _param_solve(method, name, d)
        for value in (np.float64(d), fractions.Fraction(d), np.array(d), torch.tensor(d, dtype=F64)):
            got = _param_solve(method, name, value)
            assert _max_err(got, expected) < 1e-15, f"{name}={value!r} ({type(value).__name__})"
        as32 = np.float32(d)
        assert _max_err(_param_solve(method, name, as32), _param_solve(method, name, float(as32))) < 1e-15
        k = _integer_point(fam, name)
        if k is not None:
            got = _param_solve(method, name, np.int64(k))
            assert _max_err(got, _param_solve(method, name, float(k))) < 1e-15


BAD_VALUES = {
    "bool": True,
    "bool_tensor": torch.tensor(True),
    "complex": 0.5 + 0.1j,
    "complex_tensor": torch.tensor(0.5 + 0.1j),
    "text": "0.5",
    "nan": float("nan"),
    "inf": float("inf"),
    "huge_int": 10 ** 400,
    "none": None,
}


@_method_params(PARAMETERIZED)
@pytest.mark.parametrize("bad", list(BAD_VALUES))
def test_non_real_parameters_are_refused(method, bad):
    """bool, complex, text, non-finite and too large values are refused with a ValueError that names
    the option (not an OverflowError or RuntimeError from deep inside, nor silently used)."""
    name = family(method).params[0]
    with pytest.raises(ValueError, match=rf"\b{name}\b"):
        _param_solve(method, name, BAD_VALUES[bad])


@_method_params(FIXED)
@pytest.mark.parametrize("bad", [True, "0.1", 0, -0.1, float("nan"), float("inf"), 0.1 + 0j],
                         ids=["true", "text", "zero", "negative", "nan", "inf", "complex"])
def test_bad_step_size_is_refused(method, bad):
    with pytest.raises(ValueError, match="step_size"):
        _solve(method, coupled, _y0_coupled(), torch.tensor([0.0, 1.0], dtype=F64), step_size=bad)


@_method_params([m for m in PARAMETERIZED if _is_fixed(m)])
def test_empty_per_sample_batch_is_refused(method):
    name = family(method).params[0]
    with pytest.raises(ValueError, match=rf"\b{name}\b"):
        _solve(method, coupled, torch.zeros(0, 2, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64),
               {name: torch.zeros(0, dtype=F64)}, step_size=0.25)


def test_register_tableau_refuses_non_tableaux():
    with pytest.raises(ValueError):
        odezoo.register_tableau(123, [[0]], [1], [0], order=1)
    with pytest.raises(ValueError):
        odezoo.register_tableau("conformance_bad_order", [[0, 0], [1, 0]], [0.5, 0.5], [0, 1], order=2.7)
    assert "conformance_bad_order" not in odezoo.families()


_REAL_KINDS = st.sampled_from(["float", "np.float64", "np.float32", "Fraction", "array0", "tensor0", "tensor0_f32"])


def _wrap(kind, value):
    return {"float": float, "np.float64": np.float64, "np.float32": np.float32,
            "Fraction": fractions.Fraction, "array0": np.array,
            "tensor0": lambda v: torch.tensor(v, dtype=F64),
            "tensor0_f32": lambda v: torch.tensor(v, dtype=torch.float32)}[kind](value)


@_method_params(PARAMETERIZED)
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_property_real_parameters_solve_like_their_float(method, data):
    fam = family(method)
    name = data.draw(st.sampled_from(fam.params), label="parameter")
    low, high = fam.support[name]
    value = data.draw(st.floats(low, high), label="value")
    if not fam.in_support({**fam.defaults, name: value}):
        return
    kind = data.draw(_REAL_KINDS, label="kind")
    wrapped = _wrap(kind, value)
    as_float = float(wrapped)
    assert _max_err(_param_solve(method, name, wrapped), _param_solve(method, name, as_float)) < 1e-15


@_method_params(PARAMETERIZED)
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_property_non_real_parameters_are_refused(method, data):
    fam = family(method)
    name = data.draw(st.sampled_from(fam.params), label="parameter")
    bad = data.draw(st.one_of(
        st.booleans(),
        st.complex_numbers(allow_nan=False, allow_infinity=False).filter(lambda z: z.imag != 0),
        st.text(max_size=5),
        st.sampled_from([float("nan"), float("inf"), float("-inf")]),
        st.integers(min_value=10 ** 309, max_value=10 ** 400),
        st.booleans().map(torch.tensor),
    ), label="value")
    with pytest.raises(ValueError, match=rf"\b{name}\b"):
        _param_solve(method, name, bad)
