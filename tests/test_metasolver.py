import math

import pytest
import torch
from torch import nn

import odezoo
from odezoo import MetaSolver, ODEBlock, SolverSpec, ensemble_predict, using_solver
from problems import forced

A = SolverSpec("rk2_u", {"u": 0.5}, n_steps=8)
B = SolverSpec("rk2_u", {"u": 1.0}, n_steps=8)


def test_readme_constructors():
    meta = MetaSolver.smoothing("rk2_u", center={"u": 0.5}, distribution="normal", scale=0.0125, n_steps=8, seed=0)
    assert meta.current.method == "rk2_u" and meta.current.n_steps == 8
    assert MetaSolver.switching([A, B], probs=[0.6, 0.4], seed=0).current in (A, B)
    ens = MetaSolver.ensemble([SolverSpec("rk4_u2", {"u": 1 / 3}, n_steps=4),
                               SolverSpec("rk4_uv", {"u": 0.3, "v": 0.6}, n_steps=4)], weights=[0.5, 0.5])
    assert len(ens.current) == 2
    assert MetaSolver.fixed(SolverSpec("rk4_uv", {"u": 0.3, "v": 0.6}, step_size=0.25)).current.step_size == 0.25


def test_solver_spec_validates_early():
    with pytest.raises(ValueError, match="u != 0"):
        SolverSpec("rk2_u", {"u": 0.0})
    with pytest.raises(ValueError, match="unknown method 'rk9'"):
        SolverSpec("rk9")
    with pytest.raises(ValueError, match="not both"):
        SolverSpec("rk2_u", step_size=0.1, n_steps=4)
    with pytest.raises(ValueError, match="takes no parameters"):
        SolverSpec("euler", {"u": 1.0})
    with pytest.raises(ValueError, match="n_steps must be a positive integer"):
        SolverSpec("euler", n_steps=0)
    assert SolverSpec("euler", n_steps=10).label() == "euler(10 steps)"


def test_n_steps_gives_exactly_that_many_steps():
    block = ODEBlock(lambda t, y: -y, SolverSpec("rk4_u2", n_steps=3))
    block(torch.ones(2))
    assert block.nfe == 3 * 4


def test_switching_frequencies_match_probs():
    meta = MetaSolver.switching([A, B], probs=[0.6, 0.4], seed=1)
    n = 3000
    hits = sum(meta.resample() == A for _ in range(n))
    assert abs(hits - 0.6 * n) < 4 * math.sqrt(n * 0.6 * 0.4)


@pytest.mark.parametrize("probs", [[0.5], [0.7, 0.7], [-0.1, 1.1], [float("nan"), 1.0], [0.0, 0.0]])
def test_invalid_probabilities(probs):
    with pytest.raises(ValueError, match="probs"):
        MetaSolver.switching([A, B], probs=probs)


@pytest.mark.parametrize("weights", [[1.0], [0.6, 0.6], [1.5, -0.5]])
def test_invalid_ensemble_weights(weights):
    with pytest.raises(ValueError, match="weights"):
        MetaSolver.ensemble([A, B], weights=weights)


def test_ensemble_output_is_exactly_the_weighted_sum():
    y0 = torch.linspace(-0.5, 0.5, 4, dtype=torch.float64)
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    specs = [A, B, SolverSpec("rk4_uv", {"u": 0.3, "v": 0.6}, n_steps=4)]
    weights = [0.2, 0.3, 0.5]
    out = MetaSolver.ensemble(specs, weights).solve(forced, y0, t)
    members = [s.solve(forced, y0, t) for s in specs]
    expected = weights[0] * members[0] + weights[1] * members[1] + weights[2] * members[2]
    assert torch.equal(out, expected)
    assert (members[0] - members[2]).abs().max() > 1e-4


def test_state_dict_round_trip_reproduces_next_draws():
    meta = MetaSolver.smoothing("rk4_uv", distribution="cauchy", scale=0.05, n_steps=2, seed=3)
    for _ in range(5):
        meta.resample()
    state = meta.state_dict()
    expected = [meta.resample() for _ in range(10)]
    resumed = MetaSolver.smoothing("rk4_uv", distribution="cauchy", scale=0.05, n_steps=2, seed=99)
    resumed.load_state_dict(state)
    assert [resumed.resample() for _ in range(10)] == expected
    assert resumed.history == meta.history


def test_state_dict_survives_torch_save_with_weights_only(tmp_path):
    meta = MetaSolver.switching([A, B], seed=0)
    torch.save(meta.state_dict(), tmp_path / "m.pt")
    state = torch.load(tmp_path / "m.pt", weights_only=True)
    other = MetaSolver.switching([A, B], seed=5)
    other.load_state_dict(state)
    assert [other.resample() for _ in range(5)] == [meta.resample() for _ in range(5)]
    with pytest.raises(ValueError, match="mode"):
        MetaSolver.fixed(A).load_state_dict(state)


class ConcatField(nn.Module):
    """ConcatConv-style: appends t as a feature, so per-sample t must broadcast."""

    def __init__(self, dim=3):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.w = nn.Parameter(torch.randn(dim + 1, dim, generator=g, dtype=torch.float64) * 0.5)

    def forward(self, t, y):
        tt = torch.ones_like(y[:, :1]) * t
        return torch.tanh(torch.cat([y, tt], dim=1) @ self.w)


def test_per_sample_smoothing_equals_solving_each_sample_alone():
    meta = MetaSolver.smoothing("rk2_u", distribution="uniform", scale=0.4, n_steps=4, per_sample=True, seed=0)
    func = ConcatField()
    y0 = torch.randn(6, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    out = meta.solve(func, y0, t)
    u = meta.per_sample_params(6)["u"]
    assert len(set(u.tolist())) == 6
    for i in range(6):
        alone = SolverSpec("rk2_u", {"u": float(u[i])}, n_steps=4).solve(func, y0[i:i + 1], t)
        assert (out[:, i:i + 1] - alone).abs().max() < 1e-12
    assert torch.equal(meta.solve(func, y0, t), out)       # same round -> same draws
    meta.resample()
    assert not torch.equal(meta.per_sample_params(6)["u"], u)


def test_evaluating_uses_the_center_and_history_logs_draws():
    meta = MetaSolver.smoothing("rk2_u", distribution="normal", scale=0.1, n_steps=2, seed=0)
    drawn = [meta.resample().params["u"] for _ in range(3)]
    assert len(set(drawn)) == 3
    with meta.evaluating():
        assert meta.current.params == {"u": 0.5} and not meta.randomized
    assert meta.current.params["u"] == drawn[-1] and meta.randomized
    assert [h["solvers"][0]["params"]["u"] for h in meta.history[1:]] == drawn
    assert [h["round"] for h in meta.history] == [0, 1, 2, 3]


def test_switching_evaluates_with_the_most_probable_solver():
    meta = MetaSolver.switching([A, B], probs=[0.3, 0.7], seed=0)
    with meta.evaluating():
        assert meta.current == B


def make_model(solver, shared=True):
    torch.manual_seed(0)
    second = solver if shared else MetaSolver.fixed(SolverSpec("rk2_u", n_steps=2))
    return nn.Sequential(nn.Linear(2, 8), ODEBlock(ConcatField(8).float(), solver),
                         ODEBlock(ConcatField(8).float(), second), nn.Linear(8, 2))


def two_moons(n=256, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    angle = torch.rand(n, generator=g) * math.pi
    x = torch.stack([torch.cos(angle), torch.sin(angle)], 1)
    x = torch.where(y[:, None] == 1, torch.stack([1 - x[:, 0], 0.5 - x[:, 1]], 1), x)
    return x + 0.1 * torch.randn(n, 2, generator=g), y


@pytest.mark.parametrize("mode", ["fixed", "switching", "smoothing", "smoothing_per_sample", "ensemble"])
def test_odeblock_trains_in_every_mode(mode):
    solver = {
        "fixed": lambda: MetaSolver.fixed(SolverSpec("rk2_u", n_steps=2)),
        "switching": lambda: MetaSolver.switching([SolverSpec("rk2_u", {"u": 0.5}, n_steps=2),
                                                   SolverSpec("rk2_u", {"u": 1.0}, n_steps=2)], seed=0),
        "smoothing": lambda: MetaSolver.smoothing("rk2_u", distribution="normal", scale=0.1, n_steps=2, seed=0),
        "smoothing_per_sample": lambda: MetaSolver.smoothing("rk2_u", distribution="normal", scale=0.1,
                                                             n_steps=2, per_sample=True, seed=0),
        "ensemble": lambda: MetaSolver.ensemble([SolverSpec("rk2_u", {"u": 0.5}, n_steps=2),
                                                 SolverSpec("rk2_u", {"u": 1.0}, n_steps=2)]),
    }[mode]()
    model = make_model(solver)
    x, y = two_moons()
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    losses = []
    for step in range(40):
        solver.resample()
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.6 * sum(losses[:5]) / 5, losses
    distinct = len({str(h["solvers"]) for h in solver.history})
    assert distinct == {"switching": 2, "smoothing": 41}.get(mode, 1)


def test_shared_and_separate_meta_solvers_and_nfe():
    meta = MetaSolver.fixed(SolverSpec("rk4_u2", n_steps=3))
    model = make_model(meta, shared=True)
    model(torch.randn(4, 2))
    blocks = odezoo.solver_blocks(model)
    assert blocks[0].solver is blocks[1].solver and [b.nfe for b in blocks] == [12, 12]
    separate = make_model(meta, shared=False)
    separate(torch.randn(4, 2))
    assert [b.nfe for b in odezoo.solver_blocks(separate)] == [12, 4]
    assert "rk4_u2" in repr(model)


def test_odeblock_adjoint_matches_direct_gradients():
    torch.manual_seed(0)
    func = ConcatField(3)
    x = torch.randn(5, 3, dtype=torch.float64)
    grads = []
    for adjoint in (False, True):
        block = ODEBlock(func, SolverSpec("rk4_uv", {"u": 0.3, "v": 0.6}, n_steps=20), adjoint=adjoint)
        func.zero_grad()
        block(x).square().sum().backward()
        grads.append(func.w.grad.clone())
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-6, atol=1e-8)


def test_using_solver_and_ensemble_of_models_for_free():
    meta = MetaSolver.smoothing("rk2_u", distribution="normal", scale=0.05, n_steps=2, seed=0)
    model = make_model(meta)
    x = torch.randn(8, 2)
    specs = [SolverSpec("rk2_u", {"u": u}, n_steps=2) for u in (0.3, 0.6, 1.0)]
    probs = ensemble_predict(model, x, specs)
    singles = []
    for spec in specs:
        with using_solver(model, spec):
            singles.append(torch.softmax(model(x), -1))
    torch.testing.assert_close(probs, sum(singles) / 3)
    torch.testing.assert_close(probs.sum(-1), torch.ones(8))
    assert meta.randomized  # the override ended with the block


def test_unseeded_meta_solver_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    MetaSolver.smoothing("rk2_u", distribution="normal", scale=0.1)
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("make", [
    lambda seed: MetaSolver.smoothing("rk2_u", distribution="normal", scale=0.1, n_steps=2, seed=seed),
    lambda seed: MetaSolver.smoothing("rk2_u", distribution="normal", scale=0.1, n_steps=2, seed=seed,
                                      per_sample=True),
    lambda seed: MetaSolver.switching([A, B], probs=[0.3, 0.7], seed=seed),
])
def test_resuming_mid_block_continues_the_same_sequence(make):
    # Draws come DRAW_BLOCK rounds at a time; save at rounds inside, at the end of and
    # past the first block and check every resumed run continues exactly.
    from odezoo.metasolver import DRAW_BLOCK
    meta = make(7)
    states, draws = {}, []
    for round_ in range(1, 3 * DRAW_BLOCK):
        if round_ in (5, DRAW_BLOCK - 1, DRAW_BLOCK, DRAW_BLOCK + 3):
            states[round_] = (meta.state_dict(), len(draws))
        meta.resample()
        draws.append((meta.current, meta.history[-1].get("per_sample_seed")))
    assert len({repr(d) for d in draws}) > 1  # really random
    for round_, (state, done) in states.items():
        resumed = make(12345)
        resumed.load_state_dict(state)
        again = []
        for _ in range(len(draws) - done):
            resumed.resample()
            again.append((resumed.current, resumed.history[-1].get("per_sample_seed")))
        assert again == draws[done:], round_
