"""odezoo.odeint: the short front end for odezoo's fixed-grid families gives torchdiffeq.odeint's
results bit for bit, takes the short path only when nothing would differ, and falls back to
torchdiffeq for everything else; the prepared grid is reused by value and never when it was
modified in place."""
from __future__ import annotations

import pytest
import torch
import torchdiffeq
from hypothesis import given, settings
from hypothesis import strategies as st

import odezoo
from odezoo import SolverSpec
from odezoo import stepper, timegrid

FIXED = [name for name in odezoo.families() if not SolverSpec(name).adaptive]


class F(torch.nn.Module):
    def __init__(self, dim=3):
        super().__init__()
        torch.manual_seed(0)
        self.lin = torch.nn.Linear(dim + 1, dim)

    def forward(self, t, y):
        tt = t.expand(*y.shape[:-1], 1).to(y.dtype)
        return torch.tanh(self.lin(torch.cat([y, tt], -1)))


def both(func, y0, t, **kwargs):
    return odezoo.odeint(func, y0, t, **kwargs), torchdiffeq.odeint(func, y0, t, **kwargs)


@pytest.fixture
def no_torchdiffeq_front_end(monkeypatch):
    """Fail if the short path falls back to torchdiffeq.odeint."""
    def refuse(*args, **kwargs):
        raise AssertionError("took torchdiffeq's front end")
    monkeypatch.setattr(torchdiffeq, "odeint", refuse)


@pytest.mark.parametrize("method", FIXED)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_every_fixed_family_matches_torchdiffeq_bit_for_bit(method, dtype):
    func = F().to(dtype)
    y0 = torch.randn(4, 3, dtype=dtype, generator=torch.Generator().manual_seed(1))
    for t in (torch.tensor([0.0, 1.0], dtype=dtype), torch.tensor([0.0, 0.3, 0.35, 1.0, 1.7], dtype=dtype)):
        for options in ({"step_size": 0.125}, SolverSpec(method, n_steps=5).options(), {"step_size": 0.3}):
            ours, theirs = both(func, y0, t, method=method, options=options)
            assert ours.dtype == theirs.dtype and torch.equal(ours, theirs), (method, options, t)


@settings(max_examples=40, deadline=None)
@given(times=st.lists(st.floats(-3, 3, allow_nan=False), min_size=2, max_size=6, unique=True),
       step=st.floats(0.01, 2.0), u=st.floats(0.05, 1.0), float64=st.booleans())
def test_random_grids_and_parameters_match_torchdiffeq(times, step, u, float64):
    dtype = torch.float64 if float64 else torch.float32
    t = torch.tensor(sorted(times), dtype=dtype)
    if not bool((t[1:] > t[:-1]).all()) or float(t[-1] - t[0]) / step > 400:
        return  # equal after rounding to float32, or too many steps for a quick property
    func = F().to(dtype)
    y0 = torch.randn(2, 3, dtype=dtype, generator=torch.Generator().manual_seed(2))
    outcomes = []
    for solve in (odezoo.odeint, torchdiffeq.odeint):
        try:
            outcomes.append(solve(func, y0, t, method="rk2_u", options={"u": u, "step_size": step}))
        except ValueError as error:  # e.g. a gap far below the step: torchdiffeq's grid misses t[0]
            outcomes.append(str(error))
    ours, theirs = outcomes
    assert (ours == theirs) if isinstance(ours, str) else (isinstance(theirs, torch.Tensor) and torch.equal(ours, theirs))


REAL_ODEINT = torchdiffeq.odeint


def test_the_short_path_is_taken_and_gradients_match(no_torchdiffeq_front_end):
    func = F().double()
    y0 = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    u = torch.tensor(0.4, dtype=torch.float64, requires_grad=True)
    per_sample = torch.linspace(0.3, 0.9, 4, dtype=torch.float64)
    t = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
    out = odezoo.odeint(func, y0, t, method="rk4_u2", options={"u": u, "step_size": 0.1})
    grads = torch.autograd.grad(out.square().sum(), [y0, u, *func.parameters()])
    odezoo.odeint(func, y0, t, method="rk2_u", options={"u": per_sample, "step_size": 0.1})
    odezoo.odeint(func, y0, t, method="rk2_u", options={"u": 0.5, "interp": "linear", "perturb": False,
                                                        **SolverSpec("rk2_u", n_steps=3).options()})
    SolverSpec("rk3_uv", n_steps=4).solve(func, y0, t)  # SolverSpec and ODEBlock take it too
    torch.autograd.gradcheck(lambda y, a: odezoo.odeint(func, y, t, method="rk4_u2",
                                                        options={"u": a, "step_size": 0.25}),
                             (y0.detach()[:1].requires_grad_(), u))
    theirs = REAL_ODEINT(func, y0, t, method="rk4_u2", options={"u": u, "step_size": 0.1})
    assert torch.equal(out, theirs)
    expected = torch.autograd.grad(theirs.square().sum(), [y0, u, *func.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(grads, expected))


@pytest.mark.parametrize("case", ["decreasing t", "tuple state", "perturb", "cubic", "own grid", "torchdiffeq method",
                                  "t needs grad", "adaptive family", "event", "repeated time", "t on 1 point"])
def test_everything_else_goes_to_torchdiffeq_unchanged(case, monkeypatch):
    func = F().double()
    y0 = torch.randn(4, 3, dtype=torch.float64)
    t = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
    kwargs = {"method": "rk2_u", "options": {"u": 0.5, "step_size": 0.25}}
    if case == "decreasing t":
        t = t.flip(0)
    elif case == "tuple state":
        y0 = (y0, y0[:, :1])
        func = lambda t, y: (-y[0], y[1] * 0.5)  # noqa: E731
    elif case == "perturb":
        kwargs["options"]["perturb"] = True
    elif case == "cubic":
        kwargs["options"]["interp"] = "cubic"
    elif case == "own grid":
        kwargs["options"] = {"u": 0.5, "grid_constructor": lambda f, y, t: torch.linspace(0, 1, 5).to(t)}
    elif case == "torchdiffeq method":
        kwargs = {"method": "midpoint", "options": {"step_size": 0.25}}
    elif case == "t needs grad":
        t = t.clone().requires_grad_()
    elif case == "adaptive family":
        kwargs = {"method": "tsit5"}
    elif case == "event":
        t = t[[0, -1]]
        kwargs["event_fn"] = lambda t, y: t - 0.6
    elif case == "t on 1 point":
        t = t[:1]
    calls = []
    real = torchdiffeq.odeint
    monkeypatch.setattr(torchdiffeq, "odeint", lambda *a, **k: calls.append(1) or real(*a, **k))
    if case == "repeated time":
        t = torch.tensor([0.0, 0.5, 0.5], dtype=torch.float64)
        with pytest.raises(ValueError, match="strictly increasing or strictly decreasing, but t.1. = 0.5 and t.2. = 0.5"):
            odezoo.odeint(func, y0, t, **kwargs)  # the one door refuses it before torchdiffeq runs
        assert calls == []
        return
    ours = odezoo.odeint(func, y0, t, **kwargs)
    theirs = real(func, y0, t, **kwargs)
    assert calls == [1]
    for a, b in zip(ours if isinstance(ours, tuple) else (ours,), theirs if isinstance(theirs, tuple) else (theirs,)):
        assert torch.equal(a, b)


def test_errors_are_the_solvers_own():
    with pytest.raises(ValueError, match="unknown option"):
        odezoo.odeint(F(), torch.zeros(1, 3), torch.tensor([0.0, 1.0]), method="rk2_u", options={"uu": 0.5})
    with pytest.raises(ValueError, match="Invalid method"):
        odezoo.odeint(F(), torch.zeros(1, 3), torch.tensor([0.0, 1.0]), method="rk2_v")


def test_callbacks_see_the_same_steps():
    seen = {"ours": [], "theirs": []}
    func = F().double()
    y0 = torch.randn(2, 3, dtype=torch.float64)
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    for who, solve in (("ours", odezoo.odeint), ("theirs", torchdiffeq.odeint)):
        func.callback_step = lambda t0, y, dt, who=who: seen[who].append((float(t0), float(dt), y.sum().item()))
        solve(func, y0, t, method="rk3_uv", options={"step_size": 0.25})
    assert len(seen["ours"]) == 4 and seen["ours"] == seen["theirs"]


def test_the_prepared_grid_is_reused_by_value_and_rebuilt_after_an_in_place_change():
    timegrid.GRIDS.clear()
    func = F().double()
    y0 = torch.randn(2, 3, dtype=torch.float64)
    options = {"u": 0.5, "step_size": 0.25}
    first = odezoo.odeint(func, y0, torch.tensor([0.0, 1.0], dtype=torch.float64), method="rk2_u", options=options)
    assert len(timegrid.GRIDS) == 1
    again = odezoo.odeint(func, y0, torch.tensor([0.0, 1.0], dtype=torch.float64), method="rk2_u", options=options)
    assert len(timegrid.GRIDS) == 1 and torch.equal(first, again)  # a new tensor, equal values: reused

    def vandal(t, y):  # a function that writes into the time it is given
        out = func(t, y)
        t.add_(1.0)
        return out

    odezoo.odeint(vandal, y0, torch.tensor([0.0, 1.0], dtype=torch.float64), method="rk2_u", options=options)
    after = odezoo.odeint(func, y0, torch.tensor([0.0, 1.0], dtype=torch.float64), method="rk2_u", options=options)
    assert torch.equal(after, first)
    timegrid.GRIDS.clear()
    fresh = torchdiffeq.odeint(func, y0, torch.tensor([0.0, 1.0], dtype=torch.float64), method="rk2_u",
                               options=options)
    assert torch.equal(fresh, first)
    for k in range(80):  # bounded: least recently used grids go
        odezoo.odeint(func, y0, torch.tensor([0.0, 1.0 + k], dtype=torch.float64), method="rk2_u", options=options)
    assert len(timegrid.GRIDS) == timegrid.GRID_CACHE_SIZE


def test_a_new_node_every_solve_reuses_the_grid_and_gives_torchdiffeqs_answer():
    """Smoothing draws a new u (a new node) for every solve: the grid is prepared once, each
    node's column of stage times is computed for it, and the answer is torchdiffeq's, also
    after a function wrote into a stage time it was handed."""
    timegrid.GRIDS.clear()
    func = F().double()
    y0 = torch.randn(2, 3, dtype=torch.float64)
    t = torch.tensor([0.0, 0.3, 1.0], dtype=torch.float64)
    generator = torch.Generator().manual_seed(0)
    us = (0.3 + 0.6 * torch.rand(40, generator=generator, dtype=torch.float64)).tolist()
    expected = []  # each from a fresh grid (torchdiffeq's odeint with rk2_u runs odezoo's stepper too)
    for u in us:
        timegrid.GRIDS.clear()
        expected.append(torchdiffeq.odeint(func, y0, t, method="rk2_u", options={"u": u, "step_size": 0.125}))
    timegrid.GRIDS.clear()
    for k, u in enumerate(us):
        options = {"u": u, "step_size": 0.125}
        if k == 20:
            calls = []

            def vandal(s, y):  # writes into the second stage's times (the column of node u)
                out = func(s, y)
                calls.append(None)
                if len(calls) % 2 == 0:
                    s.add_(0.25)
                return out
            odezoo.odeint(vandal, y0, t, method="rk2_u", options=options)
        assert torch.equal(odezoo.odeint(func, y0, t, method="rk2_u", options=options), expected[k]), (k, u)
    assert len(timegrid.GRIDS) == 1
    (grid,) = timegrid.GRIDS.values()
    assert len(grid.columns) == timegrid.COLUMN_CACHE_SIZE  # bounded: the oldest nodes go

