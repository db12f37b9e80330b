"""torch.compile of a model with an ODEBlock: one graph, no recompiles per call, eager's numbers.

Graphs are compiled with the "eager" / "aot_eager" backends (what dynamo captures is the
same; inductor's code generation would only make the test slow).  benchmarks/run.py times
inductor."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import odezoo
from odezoo import MetaSolver, ODEBlock, SolverSpec
from odezoo.direct import direct_solvable, solve_direct
from problems import ConcatField


class Field(nn.Module):
    def __init__(self, dim=8):
        super().__init__()
        self.lin = nn.Linear(dim, dim)

    def forward(self, t, y):
        return torch.tanh(self.lin(y)) * (1 + t)


def make_model(solver, dim=8):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, dim), ODEBlock(Field(dim), solver), nn.Linear(dim, 2))


SPECS = [SolverSpec("rk2_u", {"u": 0.3}, n_steps=4), SolverSpec("rk4_uv", {"u": 0.3, "v": 0.6}, n_steps=3),
         SolverSpec("rk3_uv", n_steps=2), SolverSpec("rk4_u1", {"u": 0.2}, n_steps=5)]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.label())
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_direct_path_equals_odeint(spec, dtype):
    func = ConcatField(3).to(dtype)
    y0 = torch.randn(5, 3, dtype=dtype, generator=torch.Generator().manual_seed(1))
    for t in (torch.tensor([0.0, 1.0]), torch.tensor([0.2, 0.5, 0.7, 1.4]), torch.tensor([1.0, 0.0])):
        t = t.to(dtype)
        expected = spec.solve(func, y0, t)
        got = solve_direct(spec, func, y0, t)
        tol = dict(rtol=1e-12, atol=1e-12) if dtype == torch.float64 else dict(rtol=2e-6, atol=2e-6)
        torch.testing.assert_close(got, expected, **tol)


def test_direct_path_covers_only_fixed_family_solvers():
    assert all(direct_solvable(s) for s in SPECS)
    assert direct_solvable(SolverSpec("rk2_u", step_size=0.1)) and direct_solvable(SolverSpec("rk2_u"))
    assert not direct_solvable(SolverSpec("tsit5"))
    assert not direct_solvable(SolverSpec("midpoint", n_steps=2))
    assert not direct_solvable(SolverSpec("rk2_u", {"u": torch.full((4,), 0.5)}, n_steps=2))
    assert not direct_solvable(SolverSpec("rk2_u", {"u": torch.tensor(0.5, requires_grad=True)}, n_steps=2))
    block = ODEBlock(Field(), MetaSolver.smoothing("rk2_u", scale=0.1, n_steps=2, per_sample=True, seed=0),
                     direct=True)
    with pytest.raises(ValueError, match="direct=True"):
        block(torch.randn(3, 8))


def counting_backend():
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    return backend, graphs


def test_compiled_model_has_no_graph_breaks_and_matches_eager():
    model = make_model(SolverSpec("rk4_uv", {"u": 0.3, "v": 0.6}, n_steps=4))
    x = torch.randn(16, 4)
    explanation = torch._dynamo.explain(model)(x)
    assert explanation.graph_break_count == 0, [str(b.reason)[:200] for b in explanation.break_reasons]
    assert explanation.graph_count == 1
    eager = model(x)
    block = model[1]
    assert block.nfe == 16  # 4 stages x 4 steps, counted in eager mode
    compiled = torch.compile(model, backend="aot_eager")
    torch.testing.assert_close(compiled(x), eager, rtol=1e-5, atol=1e-6)
    eager.sum().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    compiled(x).sum().backward()
    for got, want in zip((p.grad for p in model.parameters()), grads):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_no_recompile_per_call_and_a_solver_change_recompiles_once():
    torch._dynamo.reset()
    meta = MetaSolver.switching([SolverSpec("rk2_u", {"u": 0.5}, n_steps=2),
                                 SolverSpec("rk2_u", {"u": 1.0}, n_steps=2)], seed=0)
    model = make_model(SolverSpec("rk2_u", {"u": 0.5}, n_steps=2))
    backend, graphs = counting_backend()
    compiled = torch.compile(model, backend=backend)
    x = torch.randn(8, 4)
    for _ in range(6):
        compiled(x)
    assert len(graphs) == 1
    # swapping in a switching solver: each distinct solver compiles once, then calls reuse it
    model[1].solver = meta
    seen = set()
    for _ in range(12):
        meta.resample()
        seen.add(meta.current.params["u"])
        with torch.no_grad():
            torch.testing.assert_close(compiled(x), model(x), rtol=1e-5, atol=1e-6)
    assert seen == {0.5, 1.0} and len(graphs) <= 3


def test_paper_mnist_model_compiles_without_breaks():
    pytest.importorskip("odezoo.experiments")
    from odezoo.experiments.models import MnistODENet

    model = MnistODENet(SolverSpec("rk2_u", {"u": 0.5}, n_steps=2)).eval()
    x = torch.rand(2, 1, 28, 28)
    explanation = torch._dynamo.explain(model)(x)
    assert explanation.graph_break_count == 0, [str(b.reason)[:200] for b in explanation.break_reasons]
    with torch.no_grad():
        torch.testing.assert_close(torch.compile(model, backend="eager")(x), model(x), rtol=1e-5, atol=1e-5)
