"""The torchdiffeq bridge: exact cross-checks, gradients, per-sample parameters, errors."""
import pytest
import torch
from torchdiffeq import odeint, odeint_adjoint

import odezoo
from problems import forced, sample_params

Y0 = torch.linspace(-0.5, 0.8, 5, dtype=torch.float64)
T = torch.tensor([0.0, 0.3, 0.75, 1.5], dtype=torch.float64)

#: fixed-grid families (adaptive ones take rtol/atol, not step_size: tests/test_adaptive.py)
FIXED_GRID = sorted(name for name, fam in odezoo.families().items() if not getattr(fam, "adaptive", False))


@pytest.fixture(autouse=True)
def float64_by_default():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def solve(method, **options):
    return odeint(forced, Y0, T, method=method, options={"step_size": 0.05, **options})


def classic_rk4(f, y0, t, h):
    ys, y, t0 = [y0], y0, float(t[0])
    n = round((float(t[-1]) - t0) / h)
    for i in range(n):
        s = torch.tensor(t0 + i * h)
        k1 = f(s, y)
        k2 = f(s + h / 2, y + h / 2 * k1)
        k3 = f(s + h / 2, y + h / 2 * k2)
        k4 = f(s + h, y + h * k3)
        y = y + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        ys.append(y)
    return ys


@pytest.mark.parametrize("method,params,builtin", [
    ("rk2_u", {"u": 0.5}, "midpoint"),
    ("rk3_uv", {"u": 1 / 3, "v": 2 / 3}, "heun3"),
    ("rk4_uv", {"u": 1 / 3, "v": 2 / 3}, "rk4"),
    ("rk2_u", {"u": 1.0}, "heun2"),
])
def test_matches_torchdiffeq_builtin_exactly(method, params, builtin):
    ours = solve(method, **params)
    theirs = solve(builtin)
    assert (ours - theirs).abs().max() < 1e-12
    assert (ours[-1] - Y0).abs().max() > 0.1  # the problem really moves


@pytest.mark.parametrize("interp", ["linear", "cubic"])
def test_matches_builtin_with_interpolation_and_perturb(interp):
    t = torch.tensor([0.0, 0.13, 0.4, 1.01, 1.5])
    ours = odeint(forced, Y0, t, method="rk4_uv", options={"step_size": 0.1, "interp": interp, "perturb": True})
    theirs = odeint(forced, Y0, t, method="rk4", options={"step_size": 0.1, "interp": interp, "perturb": True})
    assert (ours - theirs).abs().max() < 1e-12


def test_grid_constructor_and_reversed_time():
    grid = lambda f, y0, t: torch.linspace(float(t[0]), float(t[-1]), 17)  # noqa: E731
    ours = odeint(forced, Y0, T, method="rk2_u", options={"u": 0.5, "grid_constructor": grid})
    theirs = odeint(forced, Y0, T, method="midpoint", options={"grid_constructor": grid})
    assert (ours - theirs).abs().max() < 1e-12
    back = odeint(forced, Y0, torch.tensor([1.0, 0.0]), method="rk3_uv", options={"step_size": 0.1})
    back_ref = odeint(forced, Y0, torch.tensor([1.0, 0.0]), method="heun3", options={"step_size": 0.1})
    assert (back - back_ref).abs().max() < 1e-12


def test_rk4_u2_at_one_third_is_classic_rk4():
    t = torch.tensor([0.0, 1.0])
    ours = odeint(forced, Y0, t, method="rk4_u2", options={"u": 1 / 3, "step_size": 0.1})
    theirs = classic_rk4(forced, Y0, t, 0.1)[-1]
    assert (ours[-1] - theirs).abs().max() < 1e-12


def test_readme_example():
    f = lambda t, y: torch.cos(t) * y  # noqa: E731
    y0 = torch.ones(3)
    t = torch.linspace(0.0, 2.0, 5)
    y = odeint(f, y0, t, method="rk4_uv", options={"u": 0.3, "v": 0.6, "step_size": 0.05})
    torch.testing.assert_close(y[:, 0], torch.exp(torch.sin(t)), rtol=1e-6, atol=1e-6)


def test_members_of_a_family_differ_on_nonlinear_problems():
    a, b = solve("rk2_u", u=0.5), solve("rk2_u", u=1.0)
    assert (a - b).abs().max() > 1e-5


def test_float32_state():
    y = odeint(forced, Y0.float(), T.float(), method="rk4_uv", options={"u": 0.3, "v": 0.6, "step_size": 0.05})
    assert y.dtype == torch.float32
    ref = solve("rk4_uv", u=0.3, v=0.6)
    assert (y.double() - ref).abs().max() < 1e-5


class Field(torch.nn.Module):
    def __init__(self, dim=4):
        super().__init__()
        torch.manual_seed(0)
        self.lin = torch.nn.Linear(dim + 1, dim)

    def forward(self, t, y):
        tt = torch.ones_like(y[..., :1]) * t
        return torch.tanh(self.lin(torch.cat([y, tt], dim=-1)))


def test_adjoint_gradients_equal_odeint_gradients():
    func = Field()
    y0 = torch.randn(3, 4, generator=torch.Generator().manual_seed(1), requires_grad=True)
    t = torch.tensor([0.0, 1.0])
    options = {"u": 0.3, "v": 0.6, "step_size": 0.01}
    grads = []
    for integrate in (odeint, odeint_adjoint):
        func.zero_grad()
        y0.grad = None
        integrate(func, y0, t, method="rk4_uv", options=options)[-1].pow(2).sum().backward()
        grads.append([y0.grad.clone()] + [p.grad.clone() for p in func.parameters()])
    for direct, adjoint in zip(*grads):
        torch.testing.assert_close(adjoint, direct, rtol=1e-7, atol=1e-9)


def test_gradcheck_through_odeint_wrt_state_and_parameter():
    y0 = torch.tensor([0.3, -0.2], requires_grad=True)
    u = torch.tensor(0.4, requires_grad=True)
    v = torch.tensor(0.7, requires_grad=True)
    t = torch.tensor([0.0, 0.5, 1.0])

    def run(y0, u, v):
        return odeint(forced, y0, t, method="rk4_uv", options={"u": u, "v": v, "step_size": 0.25})

    assert torch.autograd.gradcheck(run, (y0, u, v))


def test_gradcheck_through_odeint_adjoint():
    func = Field(dim=2)
    y0 = torch.tensor([[0.3, -0.2]], requires_grad=True)
    t = torch.tensor([0.0, 0.5])
    assert torch.autograd.gradcheck(
        lambda y: odeint_adjoint(func, y, t, method="rk2_u", options={"u": 0.5, "step_size": 0.125}), (y0,))


def test_derivative_wrt_u_matches_finite_differences():
    t = torch.tensor([0.0, 1.0])
    u = torch.tensor(0.4, requires_grad=True)
    out = odeint(forced, Y0, t, method="rk2_u", options={"u": u, "step_size": 0.2})[-1].sum()
    (grad,) = torch.autograd.grad(out, u)
    h = 1e-6
    plus = odeint(forced, Y0, t, method="rk2_u", options={"u": 0.4 + h, "step_size": 0.2})[-1].sum()
    minus = odeint(forced, Y0, t, method="rk2_u", options={"u": 0.4 - h, "step_size": 0.2})[-1].sum()
    fd = (plus - minus) / (2 * h)
    assert abs(float(grad)) > 1e-4
    assert abs(float(grad) - float(fd)) < 1e-7


@pytest.mark.parametrize("method,params", [
    ("rk2_u", {"u": torch.tensor([0.3, 0.5, 0.8, 1.0])}),
    ("rk4_u2", {"u": torch.tensor([0.2, 1 / 3, 0.5, 0.9])}),
    ("rk4_uv", {"u": torch.tensor([0.2, 0.3, 0.35, 0.7]), "v": torch.tensor([0.6, 0.6, 0.9, 0.2])}),
    ("rk3_uv", {"u": torch.tensor([0.3, 0.4, 0.5, 0.6]), "v": 0.9}),
], ids=["rk2_u", "rk4_u2", "rk4_uv", "rk3_uv"])
def test_per_sample_parameters_equal_solving_each_sample_alone(method, params):
    func = Field()
    y0 = torch.randn(4, 4, generator=torch.Generator().manual_seed(2))
    t = torch.tensor([0.0, 0.5, 1.0])
    batched = odeint(func, y0, t, method=method, options={**params, "step_size": 0.125})
    for i in range(4):
        alone = {k: (float(v[i]) if isinstance(v, torch.Tensor) else v) for k, v in params.items()}
        single = odeint(func, y0[i:i + 1], t, method=method, options={**alone, "step_size": 0.125})
        assert (batched[:, i:i + 1] - single).abs().max() < 1e-12


def test_per_sample_time_is_broadcastable_only_where_nodes_move():
    seen = []

    def record(t, y):
        seen.append(tuple(t.shape))
        return -y

    y0 = torch.ones(3, 2)
    odeint(record, y0, torch.tensor([0.0, 1.0]), method="rk2_u", options={"u": torch.tensor([0.3, 0.5, 1.0]), "step_size": 1.0})
    assert seen == [(), (3, 1)]
    seen.clear()
    odeint(record, y0, torch.tensor([0.0, 1.0]), method="rk4_u2", options={"u": torch.tensor([0.3, 0.5, 1.0]), "step_size": 1.0})
    assert seen == [(), (), (), ()]


@pytest.mark.parametrize("name", FIXED_GRID)
def test_no_nan_for_feasible_parameters(name):
    fam = odezoo.get_family(name)
    for params in sample_params(fam, 25, seed=11):
        y = solve(name, **params)
        assert torch.isfinite(y).all(), params


@pytest.mark.parametrize("options,match", [
    ({"u": 0.0}, "rk2_u.*u != 0"),
    ({"u": float("nan")}, "must be a finite"),
    ({"u": torch.tensor([0.5, 0.0, 0.5, 0.5, 0.5])}, r"sample 1"),
    ({"U": 0.5}, r"unknown option\(s\) \['U'\]"),
    ({"step_size": 0.0}, "step_size must be a positive"),
    ({"step_size": -0.1}, "step_size must be a positive"),
    ({"interp": "quadratic"}, "interp must be"),
    ({"u": torch.tensor([0.5, 0.6])}, r"dim 0 of y0"),
    ({"u": torch.ones(2, 2)}, r"shape \(batch,\)"),
    ({"u": "half"}, "must be a number"),
])
def test_bad_options_raise_value_error(options, match):
    opts = {"step_size": 0.1, **options}
    with pytest.raises(ValueError, match=match):
        odeint(forced, Y0, T, method="rk2_u", options=opts)


def test_unknown_method_is_a_value_error_listing_ours():
    with pytest.raises(ValueError, match="rk4_uv"):
        odeint(forced, Y0, T, method="rk4_vu")


class Recorder(torch.nn.Module):
    """``forced`` that records every time it is called with and every step callback."""

    def __init__(self):
        super().__init__()
        self.times, self.steps = [], []

    def forward(self, t, y):
        self.times.append((t.dtype, float(t)))
        return forced(t, y)

    def callback_step(self, t0, y0, dt):
        self.steps.append((float(t0), float(dt)))


@pytest.mark.parametrize("perturb", [False, True])
def test_function_sees_the_same_times_and_callbacks_as_builtin(perturb):
    # float32 state on a float64 time grid: torchdiffeq casts t to the state's dtype
    t = torch.tensor([0.0, 0.35, 1.0], dtype=torch.float64)
    y0 = Y0.float()
    calls = {}
    for method, params in (("rk4_uv", {"u": 1 / 3, "v": 2 / 3}), ("rk4", {})):
        func = Recorder()
        y = odeint(func, y0, t, method=method, options={"step_size": 0.1, "perturb": perturb, **params})
        calls[method] = (func.times, func.steps, y)
    ours, theirs = calls["rk4_uv"], calls["rk4"]
    assert ours[0] == theirs[0] and all(dtype == torch.float32 for dtype, _ in ours[0])
    assert ours[1] == theirs[1] and len(ours[1]) == 10
    # rk4 sums its stages in another order: equal up to float32 rounding
    assert (ours[2] - theirs[2]).abs().max() < 1e-6


def test_tuple_state_matches_builtin():
    def f(t, state):
        y, z = state
        return forced(t, y), -z * torch.sin(t)
    state = (Y0, torch.ones(2))
    ours = odeint(f, state, T, method="rk2_u", options={"u": 0.5, "step_size": 0.05})
    theirs = odeint(f, state, T, method="midpoint", options={"step_size": 0.05})
    for a, b in zip(ours, theirs):
        assert (a - b).abs().max() < 1e-12


class WithCallback:
    """``func`` with a (no-op) ``callback_step``: a solve with a callback takes the general stepping
    path, so comparing against it checks the straight-line path the common case takes."""

    def __init__(self, func):
        self.func, self.times = func, []

    def __call__(self, t, y):
        self.times.append((t.dtype, float(t)))
        return self.func(t, y)

    def callback_step(self, t0, y0, dt):
        pass


class Plain(WithCallback):
    callback_step = None


@pytest.mark.parametrize("name", FIXED_GRID)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_straight_line_steps_equal_the_general_path_bit_for_bit(name, dtype):
    from odezoo import stepper

    t = torch.tensor([0.0, 0.13, 0.4, 1.01, 1.5], dtype=dtype)  # outputs between grid points: interpolation
    y0 = Y0.to(dtype)
    for params in sample_params(odezoo.get_family(name), 2, seed=3):
        before = stepper._straight_line_step.cache_info()
        plain, general = Plain(forced), WithCallback(forced)
        fast = odezoo.odeint(plain, y0, t, method=name, options={**params, "step_size": 0.1})
        after = stepper._straight_line_step.cache_info()
        assert after.hits + after.misses > before.hits + before.misses  # the straight-line path ran
        slow = odezoo.odeint(general, y0, t, method=name, options={**params, "step_size": 0.1})
        assert torch.equal(fast, slow) and plain.times == general.times
        assert len(plain.times) > 10


def test_straight_line_steps_cast_times_like_torchdiffeq_when_the_function_changes_dtype():
    """A function that returns float64 for a float32 state promotes the stages; each call then gets
    its time in the promoted dtype, as torchdiffeq's wrapper gives it (the general path)."""
    def widening(t, y):
        return forced(t.double(), y.double()) * (1 + 0 * t.double())

    t = torch.tensor([0.0, 0.7, 1.5], dtype=torch.float32)
    y0 = Y0.float()
    plain, general = Plain(widening), WithCallback(widening)
    fast = odezoo.odeint(plain, y0, t, method="rk4_uv", options={"u": 0.3, "v": 0.6, "step_size": 0.1})
    slow = odezoo.odeint(general, y0, t, method="rk4_uv", options={"u": 0.3, "v": 0.6, "step_size": 0.1})
    builtin = odeint(Plain(widening), y0, t, method="rk4_uv", options={"u": 0.3, "v": 0.6, "step_size": 0.1})
    assert torch.equal(fast, slow) and torch.equal(fast, builtin)
    assert plain.times == general.times
    assert {dtype for dtype, _ in plain.times} == {torch.float32, torch.float64}  # promoted after step 1's first stage
