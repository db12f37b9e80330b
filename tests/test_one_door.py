"""One door (issue 25): every entry checks a solve's inputs through odezoo.inputs, the compiled
path gives the eager path's numbers bit for bit, perturb never evaluates on a grid point, and
no plugin can skip a check.  Each class is tested as a property over random cases."""
from __future__ import annotations

import dataclasses
import math
from fractions import Fraction

import numpy as np
import pytest
import torch
import torchdiffeq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torchdiffeq import odeint_adjoint

import odezoo
from odezoo import MetaSolver, ODEBlock, SolverSpec
from odezoo.direct import DirectSolve, solve_direct

F64 = torch.float64
FIXED = sorted(name for name, fam in odezoo.families().items() if not fam.adaptive)
ADAPTIVE = sorted(name for name, fam in odezoo.families().items() if fam.adaptive)


def field(t, y):
    return torch.sin(3 * t) * y - 0.5 * y * y + torch.cos(t + y)


def tame(t, y):
    """Nonlinear and non-autonomous, and bounded: no blow-up over any interval of the tests."""
    return torch.tanh(y) * torch.cos(3 * t) + 0.1 * t


# ---------------------------------------------------------------------------- numbers
REALS = [lambda x: x, np.float32, np.float64, lambda x: np.array(x), lambda x: Fraction(x).limit_denominator(10 ** 9),
         lambda x: torch.tensor(x, dtype=F64)]
REAL_IDS = ["float", "np.float32", "np.float64", "0-d array", "Fraction", "0-d tensor"]


@pytest.mark.parametrize("make", REALS, ids=REAL_IDS)
@pytest.mark.parametrize("door", ["torchdiffeq.odeint", "odezoo.odeint", "SolverSpec", "tableau"])
def test_every_real_number_is_a_parameter_and_solves_like_its_float(make, door):
    y0, t = torch.tensor([0.3], dtype=F64), torch.tensor([0.0, 1.0], dtype=F64)
    value = make(0.375)  # exact in float32 too
    expected = torchdiffeq.odeint(field, y0, t, method="rk2_u", options={"u": 0.375, "step_size": 0.25})
    if door == "tableau":
        assert odezoo.get_family("rk2_u").tableau(u=value) == odezoo.get_family("rk2_u").tableau(u=0.375)
        return
    if door == "SolverSpec":
        got = SolverSpec("rk2_u", {"u": value}, step_size=0.25).solve(field, y0, t)
    else:
        solve = torchdiffeq.odeint if door == "torchdiffeq.odeint" else odezoo.odeint
        got = solve(field, y0, t, method="rk2_u", options={"u": value, "step_size": 0.25})
    assert torch.equal(got, expected)


BAD_PARAMETERS = [True, np.bool_(False), 0.5 + 0j, "0.5", None, [0.5], math.nan, math.inf, 10 ** 400,
                  torch.tensor(0.5 + 0j), torch.tensor(True), torch.zeros(0), torch.zeros(2, 2)]


@pytest.mark.parametrize("value", BAD_PARAMETERS, ids=repr)
@pytest.mark.parametrize("door", ["torchdiffeq.odeint", "odezoo.odeint", "odeint_adjoint", "SolverSpec", "adaptive"])
def test_bad_parameters_are_a_value_error_naming_the_option_at_every_door(value, door):
    y0, t = torch.ones(2, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64)
    with pytest.raises(ValueError, match=r"\bu\b") as info:
        if door == "SolverSpec":
            SolverSpec("rk2_u", {"u": value}, step_size=0.5)
        elif door == "adaptive":
            torchdiffeq.odeint(field, y0, t, method="rk2_u_adaptive", options={"u": value})
        else:
            solve = {"torchdiffeq.odeint": torchdiffeq.odeint, "odezoo.odeint": odezoo.odeint,
                     "odeint_adjoint": odeint_adjoint}[door]
            kwargs = {"adjoint_params": ()} if door == "odeint_adjoint" else {}
            solve(field, y0, t, method="rk2_u", options={"u": value, "step_size": 0.5}, **kwargs)
    assert "Traceback" not in str(info.value)


@pytest.mark.parametrize("value", [True, "0.1", 0, -0.1, math.nan, math.inf, 1j, [0.1]], ids=repr)
@pytest.mark.parametrize("door", ["odeint", "SolverSpec", "DirectSolve"])
def test_bad_step_sizes_are_refused_with_one_message(value, door):
    y0, t = torch.ones(2, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64)
    with pytest.raises(ValueError, match="step_size must be a positive, finite number"):
        if door == "odeint":
            odezoo.odeint(field, y0, t, method="rk4_uv", options={"step_size": value})
        else:
            DirectSolve(SolverSpec("rk4_uv", step_size=value), t)


@pytest.mark.parametrize("order", [2.7, True, "2", 0, -1, 11, None])
def test_declared_orders_must_be_whole_numbers_in_range(order):
    A, b, c = [[0, 0], [0.5, 0]], [0, 1], [0, 0.5]
    with pytest.raises(ValueError, match="order must be"):
        odezoo.register_tableau("midpoint_copy", A, b, c, order=order)
    with pytest.raises(ValueError, match="order must be"):
        odezoo.SolverFamily(name="x", params=(), defaults={}, order=order, stages=2, formula=lambda: (A, b, c))
    assert "midpoint_copy" not in odezoo.families()


@pytest.mark.parametrize("name", [123, None, "has space", ""])
def test_register_tableau_with_a_bad_name_is_a_value_error(name):
    with pytest.raises(ValueError, match="name must be an identifier"):
        odezoo.register_tableau(name, [[0]], [1], [0], order=1)


def test_whole_floats_and_numpy_integers_are_orders():
    family = odezoo.register_tableau("midpoint_whole", [[0, 0], [0.5, 0]], [0, 1], [0, 0.5], order=np.int64(2))
    try:
        assert family.order == 2 and type(family.order) is int
    finally:
        odezoo.unregister_tableau("midpoint_whole")


# ---------------------------------------------------------------------------- times
def _times_with_a_defect(data):
    n = data.draw(st.integers(2, 7))
    values = sorted(data.draw(st.lists(st.floats(-5, 5), min_size=n, max_size=n, unique=True)))
    if data.draw(st.booleans()):
        values = values[::-1]
    i = data.draw(st.integers(0, n - 1))
    defect = data.draw(st.sampled_from(["nan", "inf", "-inf", "repeat", "swap"]))
    if defect == "repeat":
        i = max(i, 1)
        values[i] = values[i - 1]
    elif defect == "swap":  # needs three times: two swapped are merely reversed
        if n == 2:
            values.append(values[-1] + (1.0 if values[1] > values[0] else -1.0))
        i = max(i, 1)
        values[i], values[i - 1] = values[i - 1], values[i]
    else:
        values[i] = float(defect)
    return values, defect


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_bad_times_get_one_message_from_every_door(data):
    values, defect = _times_with_a_defect(data)
    t = torch.tensor(values, dtype=F64)
    y0 = torch.ones(3, 2, dtype=F64)
    spec = SolverSpec("rk2_u", {"u": 0.4}, n_steps=3)
    messages = []
    for door in ("odezoo.odeint", "ODEBlock", "DirectSolve", "adaptive"):
        with pytest.raises(ValueError) as info:
            if door == "odezoo.odeint":
                odezoo.odeint(field, y0, t, method="rk2_u", options={"step_size": 0.3})
            elif door == "ODEBlock":
                ODEBlock(field, spec, t=t)
            elif door == "DirectSolve":
                solve_direct(spec, field, y0, t)
            else:
                odezoo.odeint(field, y0, t, method="tsit5")
        messages.append(str(info.value).split(": ", 1)[1])
    assert len(set(messages)) == 1, messages
    assert ("finite" in messages[0]) == (defect in ("nan", "inf", "-inf"))


@pytest.mark.parametrize("method", ["rk4_uv", "tsit5"])
@pytest.mark.parametrize("solve", [torchdiffeq.odeint, odezoo.odeint, odeint_adjoint], ids=lambda f: f.__module__)
def test_an_infinite_end_time_is_refused_on_every_path(method, solve):
    kwargs = {"adjoint_params": ()} if solve is odeint_adjoint else {}
    options = {"step_size": 0.1} if method == "rk4_uv" else {}
    with pytest.raises(ValueError, match="finite times"):
        solve(field, torch.ones(2, dtype=F64), torch.tensor([0.0, math.inf], dtype=F64), method=method,
              options=options, **kwargs)


def test_odeblock_keeps_the_dtype_of_t():
    t = torch.tensor([0.0, 0.1 + 1e-12, 1.0], dtype=F64)  # not representable in float32
    block = ODEBlock(field, SolverSpec("rk4_uv", n_steps=4), t=t, return_trajectory=True)
    assert block.t.dtype == F64 and block.t[1].item() == 0.1 + 1e-12
    y0 = torch.ones(2, 1, dtype=F64)
    expected = SolverSpec("rk4_uv", n_steps=4).solve(field, y0, t)
    assert torch.equal(block(y0), expected)
    assert ODEBlock(field, SolverSpec("rk4_uv", n_steps=4), t=(0.0, 0.1 + 1e-12)).t.dtype == F64  # numbers: exact


# ---------------------------------------------------------------------------- compiled = eager
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_the_direct_path_gives_the_eager_numbers_bit_for_bit(data):
    name = data.draw(st.sampled_from(FIXED))
    family = odezoo.get_family(name)
    params = {p: data.draw(st.floats(*family.support[p])) for p in family.params}
    if not family.in_support(params):
        params = dict(family.defaults)
    grid = data.draw(st.sampled_from(["n_steps", "step_size", "output"]))
    spec = SolverSpec(name, params, n_steps=data.draw(st.integers(1, 5)) if grid == "n_steps" else None,
                      step_size=data.draw(st.floats(0.05, 0.7)) if grid == "step_size" else None)
    n = data.draw(st.integers(2, 6))
    values = sorted(data.draw(st.lists(st.floats(-2, 2).map(lambda x: round(x, 3)), min_size=n, max_size=n,
                                       unique=True)))
    if data.draw(st.booleans()):
        values = values[::-1]
    t_dtype, y_dtype = data.draw(st.sampled_from([(F64, F64), (torch.float32, torch.float32), (F64, torch.float32),
                                                   (torch.float32, F64)]))
    t = torch.tensor(values, dtype=t_dtype)
    y0 = torch.linspace(-1, 1, 6, dtype=y_dtype).reshape(3, 2)
    eager = spec.solve(tame, y0, t)
    assert torch.equal(DirectSolve(spec, t)(tame, y0), eager)
    block = ODEBlock(tame, spec, t=t, return_trajectory=True, direct=True)
    assert torch.equal(block(y0), eager)


def test_a_solver_the_compiled_path_cannot_take_runs_eagerly_and_says_so(monkeypatch):
    block = ODEBlock(field, SolverSpec("tsit5"), t=torch.tensor([0.0, 0.5], dtype=F64))
    y0 = torch.ones(2, 1, dtype=F64)
    expected = block(y0)
    # what the block sees while torch.compile traces it (tests/test_compile.py compiles for real)
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    with pytest.warns(odezoo.OdezooCompileWarning, match="tsit5.*runs through odeint eagerly"):
        out = block(y0)
    assert torch.equal(out, expected)


# ---------------------------------------------------------------------------- perturb
def jump(t, x):
    return (t > 0.5).to(x.dtype) * torch.ones_like(x)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_perturb_never_evaluates_on_a_grid_point(inner_nodes, data):
    """dx/dt = (t > 0.5), jump on a grid point: every fixed-grid method, at any point of its
    support, with float, 0-dim tensor (differentiable) and per-sample parameters, gives the
    exact x(1) = 0.5, as torchdiffeq's own perturb test demands."""
    name = data.draw(st.sampled_from(FIXED + [inner_nodes]))
    kind = data.draw(st.sampled_from(["float", "tensor", "per-sample"]))
    x0 = torch.zeros(4, 1, dtype=F64)
    t = torch.tensor([0.0, 1.0], dtype=F64)
    if name == inner_nodes:  # register_tableau: repeated nodes and inner stages at c = 0 and c = 1
        options = {}
    else:
        family = odezoo.get_family(name)
        point = {p: data.draw(st.floats(*family.support[p])) for p in family.params}
        point = point if family.in_support(point) else dict(family.defaults)
        if kind == "tensor":
            options = {p: torch.tensor(v, dtype=F64, requires_grad=True) for p, v in point.items()}
        elif kind == "per-sample":
            options = {p: torch.tensor([v, family.defaults[p], v, family.defaults[p]], dtype=F64)
                       for p, v in point.items()}
        else:
            options = point
    x1 = torchdiffeq.odeint(jump, x0, t, method=name, options={**options, "step_size": 0.25, "perturb": True})[-1]
    torch.testing.assert_close(x1, torch.full_like(x1, 0.5), rtol=0, atol=1e-12)


@pytest.fixture(scope="module")
def inner_nodes():
    """A method with repeated nodes and inner stages at c = 0 and c = 1: 4 stages, nodes (0, 1, 0, 1),
    order 2 (the trapezoid rule twice); registered for this module's tests only."""
    A = [[0, 0, 0, 0], [1, 0, 0, 0], [0.5, -0.5, 0, 0], [0.5, 0, 0.5, 0]]
    odezoo.register_tableau("inner_nodes", A, [0.25, 0.25, 0.25, 0.25], [0, 1, 0, 1], order=2)
    yield "inner_nodes"
    odezoo.unregister_tableau("inner_nodes")


def test_perturb_with_a_per_sample_node_on_the_grid():
    """rk2_u with u = 1 in some samples: its second node is 1 there, so it is taken just before t1."""
    u = torch.tensor([0.5, 1.0, 0.3, 1.0], dtype=F64)
    x1 = torchdiffeq.odeint(jump, torch.zeros(4, 1, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64), method="rk2_u",
                            options={"u": u, "step_size": 0.25, "perturb": True})[-1]
    assert torch.equal(x1, torch.full_like(x1, 0.5))


# ---------------------------------------------------------------------------- entries that skipped checks
def test_loading_a_smoothing_state_whose_current_point_is_outside_the_support_is_refused():
    meta = MetaSolver.smoothing("rk2_u", center={"u": 0.5}, scale=0.05, n_steps=2, seed=0)
    state = meta.state_dict()
    before = meta.current.params
    state["current"] = [SolverSpec("rk2_u", {"u": 3.0}, n_steps=2).to_dict()]  # legal tableau, never drawn
    with pytest.raises(ValueError, match="not a point this configuration draws"):
        meta.load_state_dict(state)
    assert meta.current.params == before


@pytest.mark.parametrize("error", [GeneratorExit, type("PluginsOwnBaseException", (BaseException,), {})])
def test_a_hook_raising_any_base_exception_leaves_odezoo_working(error):
    class Plugin:
        @odezoo.hookimpl
        def odezoo_register_families(self, register):
            raise error("boom")

    with pytest.warns(odezoo.OdezooPluginWarning, match="raised"):
        odezoo.register_plugin(Plugin(), name="raises-base")
    try:
        assert "rk2_u" in odezoo.families()
    finally:
        odezoo.unregister_plugin("raises-base")


def test_a_family_cannot_skip_or_replace_its_checks():
    """A subclass that overrides how it is checked (the way an AdaptiveFamily once skipped the
    order check by returning None) is refused: a family is data."""
    rk2 = odezoo.get_family("rk2_u")

    class Liar(odezoo.SolverFamily):
        def tableau(self, **params):  # claims the classic tableau wherever it is asked
            return rk2.tableau()

    fields = {f.name: getattr(rk2, f.name) for f in dataclasses.fields(rk2) if f.name != "provider"}
    liar = Liar(**{**fields, "name": "rk2_liar", "order": 3})

    class Plugin:
        @odezoo.hookimpl
        def odezoo_register_families(self, register):
            register(liar)

    with pytest.warns(odezoo.OdezooPluginWarning, match="a family is data"):
        odezoo.register_plugin(Plugin(), name="liar")
    try:
        assert "rk2_liar" not in odezoo.families()
    finally:
        odezoo.unregister_plugin("liar")


def test_the_solver_class_follows_from_the_family_data():
    from odezoo._torchdiffeq_bridge import FixedGridODESolver, RKAdaptiveStepsizeODESolver, installed

    for name, family in odezoo.families().items():
        base = RKAdaptiveStepsizeODESolver if family.embedded_order is not None else FixedGridODESolver
        assert issubclass(installed(name), base), name
        assert family.adaptive == (family.embedded_order is not None)


def test_a_kept_per_sample_plan_is_rechecked_after_an_in_place_change():
    """Per-sample plans are kept by the identity of their tensors, and only while those are
    unmodified: an in-place change gives the new values' solution, or their refusal."""
    y0, t = torch.ones(4, 2, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64)
    u = torch.full((4,), 0.5, dtype=F64)

    def solve(values):
        return odezoo.odeint(field, y0, t, method="rk2_u", options={"u": values, "step_size": 0.25})

    first = solve(u)
    assert torch.equal(solve(u), first)
    u[2] = 0.9
    assert torch.equal(solve(u), solve(u.clone())) and not torch.equal(solve(u), first)
    u[1] = 0.0  # on rk2_u's singular set
    with pytest.raises(ValueError, match=r"sample 1.*u != 0"):
        solve(u)


@pytest.mark.parametrize("option,value", [("first_step", True), ("first_step", "0.1"), ("first_step", -0.1),
                                          ("safety", 1j), ("max_num_steps", 2.5), ("max_num_steps", 0),
                                          ("min_step", math.nan), ("max_step", -1.0)])
def test_adaptive_options_go_through_the_door(option, value):
    with pytest.raises(ValueError, match=option):
        odezoo.odeint(field, torch.ones(2, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64), method="tsit5",
                      options={option: value})
    ok = {"first_step": np.float32(0.125), "safety": Fraction(9, 10), "max_num_steps": 1000.0, "min_step": 0,
          "max_step": math.inf}[option]
    odezoo.odeint(field, torch.ones(2, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64), method="tsit5",
                  options={option: ok})


def test_the_direct_path_follows_a_dtype_change_of_the_block():
    """``block.float()`` casts the ``t`` buffer; the compiled path uses the cast times, as eager does."""
    t = torch.tensor([0.0, 0.1 + 1e-12, 0.7], dtype=F64)
    block = ODEBlock(tame, SolverSpec("rk4_uv", n_steps=3), t=t, return_trajectory=True)
    y0 = torch.ones(2, 1)
    block.float()
    assert block.t.dtype == torch.float32
    eager = SolverSpec("rk4_uv", n_steps=3).solve(tame, y0, block.t)
    block.direct = True
    assert torch.equal(block(y0), eager)
