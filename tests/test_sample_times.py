"""Per-sample times (issue 28): ``t`` of shape (T, batch), each sample over its own times in one
batched solve, equal to a solve of each sample alone (fixed grid and adaptive); gradients by
backpropagation and by the adjoint method; refusals that name the sample."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import torchdiffeq

import odezoo
from odezoo import ODEBlock, SolverSpec

F64 = torch.float64
FIXED = sorted(name for name, fam in odezoo.families().items() if not fam.adaptive)
pytestmark = pytest.mark.filterwarnings("ignore::odezoo.OdezooStepWarning")


class Field(torch.nn.Module):
    """Nonlinear, non-autonomous and bounded; ``t`` arrives with shape (batch, 1) per sample."""

    def __init__(self, dim=3):
        super().__init__()
        torch.manual_seed(0)
        self.lin = torch.nn.Linear(dim, dim).double()

    def forward(self, t, y):
        return torch.tanh(self.lin(y)) * torch.cos(3 * t) + 0.1 * t


def _times(data, count, batch):
    """(T, batch) times: each column sorted, in its own direction, with its own start and end."""
    columns = []
    for _ in range(batch):
        values = sorted(data.draw(st.lists(st.floats(-2, 2).map(lambda x: round(x, 4)), min_size=count,
                                           max_size=count, unique=True)))
        columns.append(values[::-1] if data.draw(st.booleans()) else values)
    return torch.tensor(columns, dtype=F64).T.contiguous()


def _alone(spec, func, y0, t, b):
    """Sample b solved on its own: the reference."""
    params = {k: (v[b] if isinstance(v, torch.Tensor) and v.ndim else v) for k, v in spec.params.items()}
    return SolverSpec(spec.method, params, n_steps=spec.n_steps).solve(func, y0[b:b + 1], t[:, b])[:, 0]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_each_sample_equals_its_own_solve(data):
    name = data.draw(st.sampled_from(FIXED))
    family = odezoo.get_family(name)
    batch, count = data.draw(st.integers(1, 5)), data.draw(st.integers(2, 5))
    t = _times(data, count, batch)
    params = {}
    if family.params and data.draw(st.booleans()):  # per-sample parameters as well
        params = {p: torch.tensor([family.defaults[p]] * batch, dtype=F64) for p in family.params}
    spec = SolverSpec(name, params, n_steps=data.draw(st.sampled_from([None, 1, 3, 6])))
    func = Field()
    y0 = torch.linspace(-1, 1, 3 * batch, dtype=F64).reshape(batch, 3)
    out = spec.solve(func, y0, t)
    assert out.shape == (count, batch, 3)
    for b in range(batch):
        torch.testing.assert_close(out[:, b], _alone(spec, func, y0, t, b), rtol=1e-12, atol=1e-12)


def test_gradients_equal_those_of_solving_each_sample_alone_and_finite_differences():
    func = Field()
    spec = SolverSpec("rk4_uv", {"u": 0.3, "v": 0.6}, n_steps=4)
    t = torch.tensor([[0.0, 1.0, 0.3], [0.4, 0.5, -0.2], [1.1, 0.0, -0.9]], dtype=F64, requires_grad=True)
    y0 = torch.tensor([[0.1, -0.2, 0.3], [0.5, 0.0, -0.4], [-0.3, 0.2, 0.2]], dtype=F64, requires_grad=True)
    weights = torch.linspace(0.5, 1.5, 27, dtype=F64).reshape(3, 3, 3)

    def loss_batched(t, y0):
        return (spec.solve(func, y0, t) * weights).sum()

    def loss_alone(t, y0):
        return sum((spec.solve(func, y0[b:b + 1], t[:, b])[:, 0] * weights[:, b]).sum() for b in range(3))

    grads = torch.autograd.grad(loss_batched(t, y0), (t, y0, func.lin.weight))
    # against each sample alone: y0 and the function's weights (a 1-D t's n-step grid takes its inner
    # points as constants, float(t[0]) .. float(t[-1]); a per-sample grid is differentiable through
    # all of them, so its t-gradient is checked against finite differences below)
    expected = torch.autograd.grad(loss_alone(t, y0), (y0, func.lin.weight))
    for got, want in zip(grads[1:], expected):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    on_output_grid = SolverSpec("rk4_uv", {"u": 0.3, "v": 0.6})  # there both grids are the times themselves
    got = torch.autograd.grad((on_output_grid.solve(func, y0, t) * weights).sum(), t)[0]
    want = torch.autograd.grad(sum((on_output_grid.solve(func, y0[b:b + 1], t[:, b])[:, 0] * weights[:, b]).sum()
                                   for b in range(3)), t)[0]
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    with torch.no_grad():
        for index in [(2, 0), (1, 2)]:
            h = 1e-6
            up, down = t.detach().clone(), t.detach().clone()
            up[index] += h
            down[index] -= h
            fd = (loss_batched(up, y0) - loss_batched(down, y0)) / (2 * h)
            assert math.isclose(float(fd), float(grads[0][index]), rel_tol=1e-6, abs_tol=1e-8)
    assert torch.autograd.gradcheck(lambda y: spec.solve(func, y, t.detach()), (y0,))


def test_odeblock_and_metasolver_take_per_sample_times():
    func = Field()
    meta = odezoo.MetaSolver.fixed(SolverSpec("rk2_u", {"u": 0.6}, n_steps=3))
    block = ODEBlock(func, meta, return_trajectory=True)
    t = torch.tensor([[0.0, 0.2], [0.5, 0.1], [1.5, -0.7]], dtype=F64)
    y0 = torch.ones(2, 3, dtype=F64)
    expected = meta.solve(func, y0, t)
    assert torch.equal(block(y0, t), expected)
    assert torch.equal(ODEBlock(func, meta)(y0, t), expected[-1])


@pytest.mark.parametrize("t,message", [
    (torch.tensor([[0.0, 0.0], [1.0, math.nan]]), r"sample 1: t must hold finite times, but t\[1, 1\] = nan"),
    (torch.tensor([[0.0, 0.0], [1.0, math.inf]]), r"sample 1: t must hold finite times"),
    (torch.tensor([[0.0, 0.0], [1.0, 0.5], [2.0, 0.5]]), r"sample 1: t must be strictly increasing or strictly decr"),
    (torch.tensor([[0.0, 0.0], [1.0, 0.5], [2.0, 0.2]]), r"sample 1: t must be strictly increasing or strictly decr"),
    (torch.zeros(3, 4), r"must have shape \(T, batch\) = \(T, 2\)"),
    (torch.zeros(2, 5), r"t has shape \(2, 5\), batch first; .* pass t.T"),
    (torch.zeros(4, 2, dtype=torch.int64), "floating-point"),
])
def test_bad_per_sample_times_are_refused_naming_the_sample(t, message):
    y0 = torch.ones(2 if t.shape[-1] != 5 else 2, 3)
    if t.shape == (2, 5):
        y0 = torch.ones(2, 3)
        t = torch.zeros(2, 5)
    with pytest.raises(ValueError, match=message):
        odezoo.odeint(Field().float(), y0, t.float() if t.is_floating_point() else t, method="rk2_u",
                      options={"u": 0.5})


@pytest.mark.parametrize("method,options,message", [
    ("rk4", {}, "not one of odezoo's families"),
    ("tsit5", {"jump_t": torch.tensor([0.5])}, r"\['jump_t'\] are not supported"),
    ("tsit5", {"stats": []}, "must be a dict"),
    ("rk2_u", {"step_size": 0.1}, "give n_steps"),
    ("rk2_u", {"perturb": True}, "perturb=False only"),
    ("rk2_u", {"grid_constructor": lambda f, y, t: t}, "grid_constructor of your own"),
])
def test_what_per_sample_times_cannot_do_yet_is_refused_clearly(method, options, message):
    with pytest.raises(ValueError, match=message):
        odezoo.odeint(Field(), torch.ones(2, 3, dtype=F64), torch.tensor([[0.0, 0.0], [1.0, 2.0]], dtype=F64),
                      method=method, options=options)
    with pytest.raises(ValueError, match=message):  # the adjoint's forward pass is odeint's: the same refusals
        odezoo.odeint_adjoint(Field(), torch.ones(2, 3, dtype=F64), torch.tensor([[0.0, 0.0], [1.0, 2.0]], dtype=F64),
                              method=method, options=options)


def test_the_docs_example_runs():
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "per_sample_times.md").read_text()
    namespace = {}
    for code in text.split("```python\n")[1:]:  # every example, in order, in one namespace
        exec(compile(code.split("```", 1)[0], "docs/per_sample_times.md", "exec"), namespace)


ADAPTIVE = sorted(name for name, fam in odezoo.families().items() if fam.adaptive)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_adaptive_each_sample_takes_its_own_steps_as_if_alone(data):
    """Per-sample error control: every sample accepts and rejects the steps it would take alone
    (the same function evaluations, counted per sample), and its states agree with its own solve
    far inside the tolerance."""
    name = data.draw(st.sampled_from(ADAPTIVE))
    batch, count = data.draw(st.integers(1, 4)), data.draw(st.integers(2, 4))
    t = _times(data, count, batch)
    options = {"u": 0.7} if name == "rk2_u_adaptive" else {}
    func = Field()
    y0 = torch.linspace(-1, 1, 3 * batch, dtype=F64).reshape(batch, 3)
    stats = {}
    out = odezoo.odeint(func, y0, t, method=name, rtol=1e-5, atol=1e-7, options={**options, "stats": stats})
    assert out.shape == (count, batch, 3)
    for b in range(batch):
        calls = []

        def counted(time, y):
            calls.append(1)
            return func(time, y)

        alone = odezoo.odeint(counted, y0[b:b + 1], t[:, b], method=name, rtol=1e-5, atol=1e-7, options=options)
        torch.testing.assert_close(out[:, b], alone[:, 0], rtol=1e-8, atol=1e-10)
        assert int(stats["nfe"][b]) == len(calls)
    assert (stats["accepted"] >= 1).all() and (stats["rejected"] >= 0).all()


def test_adaptive_gradients_equal_those_of_solving_each_sample_alone():
    func = Field()
    t = torch.tensor([[0.0, 1.0], [0.7, 0.2], [1.3, -0.5]], dtype=F64)
    y0 = torch.tensor([[0.1, -0.2, 0.3], [0.5, 0.0, -0.4]], dtype=F64, requires_grad=True)
    loss = odezoo.odeint(func, y0, t, method="tsit5", rtol=1e-7, atol=1e-9).square().sum()
    grads = torch.autograd.grad(loss, (y0, func.lin.weight))
    alone = sum(odezoo.odeint(func, y0[b:b + 1], t[:, b], method="tsit5", rtol=1e-7, atol=1e-9).square().sum()
                for b in range(2))
    expected = torch.autograd.grad(alone, (y0, func.lin.weight))
    for got, want in zip(grads, expected):
        torch.testing.assert_close(got, want, rtol=1e-7, atol=1e-9)


def test_the_latent_ode_recipe_runs_both_ways():
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    for flags in ([], ["--adjoint"]):
        result = subprocess.run([sys.executable, str(root / "recipes" / "latent_ode.py"), "--dry-run", *flags],
                                cwd=root, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-2000:]
        rows = [line for line in result.stdout.splitlines() if line.startswith("| per-sample") or
                line.startswith("| merged")]
        assert len(rows) == 2 and all(math.isfinite(float(row.split("|")[2])) for row in rows)


def test_adaptive_max_num_steps_counts_per_output_time_as_torchdiffeq():
    """torchdiffeq allows max_num_steps steps between consecutive output times; so do per-sample times."""
    func = Field()
    y0 = torch.ones(2, 3, dtype=F64)
    dense = torch.linspace(0, 2, 41, dtype=F64)
    t = torch.stack([dense, dense * 0.5], dim=1)  # many output times: few steps between each
    alone = odezoo.odeint(func, y0[:1], dense, method="tsit5", options={"max_num_steps": 3})
    assert torch.isfinite(alone).all()
    assert torch.isfinite(odezoo.odeint(func, y0, t, method="tsit5", options={"max_num_steps": 3})).all()
    sparse = torch.tensor([[0.0, 0.0], [20.0, 10.0]], dtype=F64)
    with pytest.raises(AssertionError, match=r"max_num_steps exceeded .*sample"):
        odezoo.odeint(func, y0, sparse, method="tsit5", rtol=1e-9, atol=1e-11, options={"max_num_steps": 3})


def test_per_sample_times_under_compile_run_eagerly_and_say_so(monkeypatch):
    func = Field()
    block = ODEBlock(func, SolverSpec("rk2_u", n_steps=2))
    t = torch.tensor([[0.0, 0.2], [1.0, 0.9]], dtype=F64)
    y0 = torch.ones(2, 3, dtype=F64)
    expected = block(y0, t)
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)  # what the block sees while traced
    with pytest.warns(odezoo.OdezooCompileWarning, match="per-sample times run through odeint eagerly"):
        assert torch.equal(block(y0, t), expected)


# ---------------------------------------------------------------------------- the adjoint method
def _loss_weights(count, batch, dim=3):
    return torch.linspace(0.5, 1.5, count * batch * dim, dtype=F64).reshape(count, batch, dim)


def _adjoint_loop(func, y0, t, weights, **kwargs):
    """The reference: one ``torchdiffeq.odeint_adjoint`` per sample over its own 1-D times."""
    return sum((torchdiffeq.odeint_adjoint(func, y0[b:b + 1], t[:, b], **kwargs)[:, 0] * weights[:, b]).sum()
               for b in range(y0.shape[0]))


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_adjoint_on_a_fixed_grid_equals_a_loop_of_torchdiffeq_adjoint_solves(data):
    """Forward: odeint's per-sample values, bit for bit.  Backward: each interval on the shared clock
    τ is, step for step, the interval of torchdiffeq's adjoint of each sample alone, so the gradients
    w.r.t. y0, the function's parameters and t equal the per-sample loop's to round-off."""
    name = data.draw(st.sampled_from(FIXED))
    family = odezoo.get_family(name)
    batch, count = data.draw(st.integers(1, 3)), data.draw(st.integers(2, 4))
    t = _times(data, count, batch).requires_grad_(True)
    options = {p: family.defaults[p] for p in family.params}
    n_steps = data.draw(st.sampled_from([None, 3]))
    if n_steps is not None:
        options["grid_constructor"] = odezoo.spec.uniform_grid(n_steps)
    func = Field()
    y0 = torch.linspace(-1, 1, 3 * batch, dtype=F64).reshape(batch, 3).requires_grad_(True)
    weights = _loss_weights(count, batch)
    out = odezoo.odeint_adjoint(func, y0, t, method=name, options=options)
    assert torch.equal(out, odezoo.odeint(func, y0, t, method=name, options=options))
    wrt = (y0, t, func.lin.weight, func.lin.bias)
    got = torch.autograd.grad((out * weights).sum(), wrt)
    want = torch.autograd.grad(_adjoint_loop(func, y0, t, weights, method=name, options=options), wrt)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)


def test_adjoint_gradients_match_finite_differences():
    """Against central differences of the forward solve in float64, with tsit5 at a tight tolerance
    (three times per sample) and with rk4_uv on 40 steps between each sample's two times (with inner
    output times a fixed grid interpolates linearly, whose derivative in t the adjoint does not
    follow: it differs by O(step) there, as torchdiffeq's own adjoint does for a shared t)."""
    func = Field()
    times = torch.tensor([[0.0, 1.0, 0.3], [0.4, 0.5, -0.2], [1.1, 0.0, -0.9]], dtype=F64)
    y0 = torch.tensor([[0.1, -0.2, 0.3], [0.5, 0.0, -0.4], [-0.3, 0.2, 0.2]], dtype=F64, requires_grad=True)
    for method, t, kwargs in [
            ("rk4_uv", times[[0, 2]], {"options": {"u": 0.3, "v": 0.6, "grid_constructor": odezoo.spec.uniform_grid(40)}}),
            ("tsit5", times, {"rtol": 1e-10, "atol": 1e-12})]:
        t = t.clone().requires_grad_(True)
        weights = _loss_weights(t.shape[0], 3)

        def loss(y0, t, solve=odezoo.odeint_adjoint):
            return (solve(func, y0, t, method=method, **kwargs) * weights).sum()

        grads = torch.autograd.grad(loss(y0, t), (y0, t, func.lin.weight))
        with torch.no_grad():
            for which, index in [(0, (1, 2)), (0, (2, 0)), (1, (0, 2)), (1, (1, 0)), (1, (1, 2)), (2, (0, 1))]:
                h = 1e-5
                tensor = (y0, t, func.lin.weight)[which]
                saved = tensor[index].item()
                tensor[index] = saved + h
                up = loss(y0, t, odezoo.odeint)
                tensor[index] = saved - h
                down = loss(y0, t, odezoo.odeint)
                tensor[index] = saved
                fd = float((up - down) / (2 * h))
                assert math.isclose(fd, float(grads[which][index]), rel_tol=1e-6, abs_tol=1e-7), (method, which, index)


def test_adjoint_with_an_adaptive_method_keeps_the_forward_solve_and_gets_gradients_within_tolerance():
    """Adaptive: the forward pass is odeint's per-sample solve itself (same values, same per-sample
    counts).  The backward pass shares each τ step across the batch, so its steps are not those of the
    per-sample loop of torchdiffeq's adjoint; its gradients are as accurate (against a reference of
    torchdiffeq's dopri8 adjoint at rtol 1e-12: within twice the loop's error, plus the tolerance)
    and agree with the loop's within a few times the tolerance, closer as it tightens."""
    func = Field()
    t = torch.tensor([[0.0, 1.0, 0.3], [0.7, 0.2, -0.2], [1.3, -0.5, -2.0]], dtype=F64, requires_grad=True)
    y0 = torch.tensor([[0.1, -0.2, 0.3], [0.5, 0.0, -0.4], [-0.3, 0.2, 0.2]], dtype=F64, requires_grad=True)
    weights = _loss_weights(3, 3)
    wrt = (y0, t, func.lin.weight)
    reference = torch.autograd.grad(_adjoint_loop(func, y0, t, weights, method="dopri8", rtol=1e-12, atol=1e-12), wrt)

    def error(got, want):
        return max(float(((g - w).abs() / (1 + w.abs())).max()) for g, w in zip(got, want))

    gaps = []
    for tol in (1e-5, 1e-7):
        stats, plain = {}, {}
        out = odezoo.odeint_adjoint(func, y0, t, method="tsit5", rtol=tol, atol=tol, options={"stats": stats})
        expected = odezoo.odeint(func, y0, t, method="tsit5", rtol=tol, atol=tol, options={"stats": plain})
        assert torch.equal(out, expected) and all(torch.equal(stats[k], plain[k]) for k in plain)
        got = torch.autograd.grad((out * weights).sum(), wrt)
        loop = torch.autograd.grad(_adjoint_loop(func, y0, t, weights, method="tsit5", rtol=tol, atol=tol), wrt)
        assert error(got, reference) <= 2 * error(loop, reference) + tol
        gaps.append(error(got, loop))
        assert gaps[-1] < 20 * tol
    assert gaps[1] < gaps[0] / 10
    # seminorm: the parameters' adjoint leaves the error norm; the same gradients within the tolerance
    out = odezoo.odeint_adjoint(func, y0, t, method="tsit5", rtol=1e-7, atol=1e-7,
                                adjoint_options={"norm": "seminorm"})
    assert error(torch.autograd.grad((out * weights).sum(), wrt), loop) < 20 * 1e-7


def test_adjoint_through_odeblock_solverspec_and_metasolver():
    func = Field()
    t = torch.tensor([[0.0, 0.2], [0.5, 0.1], [1.5, -0.7]], dtype=F64)
    y0 = torch.ones(2, 3, dtype=F64, requires_grad=True)
    for spec in (SolverSpec("rk2_u", {"u": 0.6}, n_steps=3), SolverSpec("tsit5", rtol=1e-7, atol=1e-9)):
        block = ODEBlock(func, spec, adjoint=True, return_trajectory=True)
        out = block(y0, t)
        assert torch.equal(out, spec.solve(func, y0, t)) and block.nfe > 0
        got = torch.autograd.grad(out.square().sum(), (y0, func.lin.weight))
        via_meta = odezoo.MetaSolver.fixed(spec).solve(func, y0, t, adjoint=True)
        want = torch.autograd.grad(via_meta.square().sum(), (y0, func.lin.weight))
        for g, w in zip(got, want):
            assert torch.equal(g, w)
        alone = sum(torchdiffeq.odeint_adjoint(func, y0[b:b + 1], t[:, b], method=spec.method, options=spec.options(),
                                               rtol=spec.rtol or 1e-7, atol=spec.atol or 1e-9).square().sum()
                    for b in range(2))
        for g, w in zip(got, torch.autograd.grad(alone, (y0, func.lin.weight))):
            torch.testing.assert_close(g, w, rtol=1e-6, atol=1e-8)


def test_adjoint_params_are_taken_as_torchdiffeq_takes_them():
    """A plain function with explicit adjoint_params: those that require a gradient get it (equal to the
    per-sample loop of torchdiffeq's adjoint), the others are left out — with torchdiffeq's warning
    when a norm of one's own would have seen them."""
    lin = Field().lin
    frozen = torch.tensor(0.5, dtype=F64)

    def func(time, y):
        return torch.tanh(lin(y)) * torch.cos(3 * time) + frozen * time

    t = torch.tensor([[0.0, 0.3], [0.6, -0.4], [1.0, -1.2]], dtype=F64)
    y0 = torch.tensor([[0.1, -0.2, 0.3], [0.5, 0.0, -0.4]], dtype=F64, requires_grad=True)
    weights = _loss_weights(3, 2)
    kwargs = {"method": "rk4_uv", "options": {"grid_constructor": odezoo.spec.uniform_grid(2)}}
    out = odezoo.odeint_adjoint(func, y0, t, adjoint_params=(lin.weight, lin.bias, frozen), **kwargs)
    got = torch.autograd.grad((out * weights).sum(), (y0, lin.weight, lin.bias))
    want = torch.autograd.grad(_adjoint_loop(func, y0, t, weights, adjoint_params=(lin.weight, lin.bias), **kwargs),
                               (y0, lin.weight, lin.bias))
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)
    with pytest.warns(UserWarning, match="passed without requiring gradient"):
        odezoo.odeint_adjoint(func, y0, t, adjoint_params=(lin.weight, frozen),
                              adjoint_options={"norm": lambda state: max(x.abs().max() for x in state)}, **kwargs)


@pytest.mark.parametrize("kwargs,message", [
    ({"func": lambda t, y: -y}, r"func must be an nn.Module .*adjoint_params=\(\)"),
    ({"options": {"u": torch.tensor([0.5, 0.6])}}, r"parameter u is a tensor of shape \(2,\); .*Use odeint"),
    ({"options": {"u": torch.tensor(0.5, requires_grad=True)}}, "requires a gradient"),
    ({"method": "tsit5", "options": {"first_step": 0.1}}, r"\['first_step'\] are in units of t.*adjoint_options"),
    ({"adjoint_method": "rk4"}, "pass adjoint_options as well"),
    ({"adjoint_method": "rk5"}, "unknown adjoint_method 'rk5'; choose one of"),
    ({"adjoint_options": {"step_size": 0.1}}, r"adjoint_options \['step_size'\] are not supported"),
    ({"adjoint_options": {"grid_constructor": lambda f, y, t: t}}, r"uniform_grid\(n\)"),
    ({"adjoint_options": {"norm": "max"}}, "'seminorm' or a callable"),
    ({"event_fn": lambda t, y: y.sum()}, "no event_fn"),
    ({"y0": torch.ones(2, 3, dtype=torch.complex128)}, "needs a real state"),
    ({"t": torch.tensor([[0.0, 0.0], [1.0, 0.0]], dtype=F64)}, "sample 1: t must be strictly"),
])
def test_what_the_adjoint_cannot_do_with_per_sample_times_is_refused_before_solving(kwargs, message):
    arguments = {"func": Field(), "y0": torch.ones(2, 3, dtype=F64), "t": torch.tensor([[0.0, 0.0], [1.0, 2.0]],
                                                                                        dtype=F64),
                 "method": "rk2_u", "options": {"u": 0.5}, **kwargs}
    with pytest.raises(ValueError, match=message):
        odezoo.odeint_adjoint(arguments.pop("func"), arguments.pop("y0"), arguments.pop("t"), **arguments)
    if "options" in kwargs and kwargs["options"].get("u") is not None:  # a SolverSpec says so too
        with pytest.raises(ValueError, match="adjoint"):
            SolverSpec("rk2_u", {"u": torch.tensor([0.5, 0.6])}, n_steps=2).solve(
                Field(), torch.ones(2, 3, dtype=F64), torch.tensor([[0.0, 0.0], [1.0, 2.0]], dtype=F64), adjoint=True)
