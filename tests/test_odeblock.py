"""ODEBlock: training in every MetaSolver mode, shared solvers, nfe, adjoint, solver overrides."""
import math

import pytest
import torch
from torch import nn

import odezoo
from odezoo import MetaSolver, ODEBlock, SolverSpec, ensemble_predict, using_solver
from problems import ConcatField


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
