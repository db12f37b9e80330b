import math

import pytest
import torch
from torch import nn

import odezoo
from odezoo import MetaSolver, ODEBlock, SolverSpec, ensemble_predict, using_solver
from problems import ConcatField, forced

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


def test_one_class_per_mode_behind_the_factories():
    spec = SolverSpec("rk2_u", n_steps=2)
    made = {
        odezoo.FixedSolver: MetaSolver.fixed(spec),
        odezoo.SwitchingSolver: MetaSolver.switching([A, B], seed=0),
        odezoo.SmoothingSolver: MetaSolver.smoothing("rk2_u", scale=0.1, n_steps=2, seed=0),
        odezoo.PerSampleSmoothingSolver: MetaSolver.smoothing("rk2_u", scale=0.1, n_steps=2, per_sample=True, seed=0),
        odezoo.EnsembleSolver: MetaSolver.ensemble([A, B]),
    }
    for cls, meta in made.items():
        assert type(meta) is cls and isinstance(meta, MetaSolver)
        assert meta.mode in odezoo.metasolver.MODES and cls.__name__ in repr(meta)
    assert [m.randomized for m in made.values()] == [False, True, True, True, False]
    assert MetaSolver.of(spec).current == spec and MetaSolver.of(made[odezoo.EnsembleSolver]) is made[odezoo.EnsembleSolver]
    with pytest.raises(TypeError, match=r"MetaSolver.fixed\(spec\)"):
        MetaSolver("fixed")
    with pytest.raises(ValueError, match="MetaSolver or a SolverSpec"):
        MetaSolver.of("rk2_u")
    with pytest.raises(ValueError, match="per_sample=True"):
        made[odezoo.SmoothingSolver].per_sample_params(4)
