"""OdezooStepWarning: a method run with neither step_size nor a grid (torchdiffeq #137)."""
import warnings

import pytest
import torch
from torchdiffeq import odeint, odeint_adjoint

import odezoo
from odezoo import MetaSolver, ODEBlock, OdezooStepWarning, SolverSpec

T = torch.tensor([0.0, 0.5, 1.5])


def decay(t, y):
    return -y


class Field(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(2, 2)

    def forward(self, t, y):
        return self.linear(y)


def caught(action):
    """Warnings that ``action`` shows under the default filters, from a fresh registry."""
    with warnings.catch_warnings(record=True) as record:
        warnings.resetwarnings()
        warnings.simplefilter("default")
        action()
    return [w for w in record if issubclass(w.category, OdezooStepWarning)]


def test_is_a_user_warning_exported_from_odezoo():
    assert issubclass(odezoo.OdezooStepWarning, UserWarning) and "OdezooStepWarning" in odezoo.__all__


def test_names_the_step_and_points_at_the_odeint_call():
    def run():
        odeint(decay, torch.ones(2), T, method="rk4_uv")  # the line the warning must name
    shown = caught(run)
    assert len(shown) == 1
    message = str(shown[0].message)
    assert "'rk4_uv'" in message and "largest step 1" in message
    assert "options={'step_size': h}" in message and "grid_constructor" in message
    assert shown[0].filename == __file__
    assert shown[0].lineno == run.__code__.co_firstlineno + 1


def test_warns_once_per_call_site():
    def run():
        for _ in range(3):
            odeint(decay, torch.ones(2), T, method="rk2_u")
        odeint(decay, torch.ones(2), T, method="rk2_u")  # a second call site
    shown = caught(run)
    assert [w.lineno - run.__code__.co_firstlineno for w in shown] == [2, 3]


def test_reversed_times():
    shown = caught(lambda: odeint(decay, torch.ones(2), torch.tensor([2.0, 1.75, 0.0]), method="rk2_u"))
    assert "largest step 1.75" in str(shown[0].message)


@pytest.mark.parametrize("options", [{"step_size": 0.1}, {"grid_constructor": lambda f, y0, t: t}])
def test_silent_with_a_step_or_a_grid(options):
    assert caught(lambda: odeint(decay, torch.ones(2), T, method="rk4_uv", options=options)) == []


def test_torchdiffeq_methods_are_left_alone():
    assert caught(lambda: odeint(decay, torch.ones(2), T, method="rk4")) == []


def test_solver_spec_without_a_grid_warns_at_the_users_line():
    def run():
        SolverSpec("rk2_u").solve(decay, torch.ones(2), T)
    shown = caught(run)
    assert len(shown) == 1 and shown[0].filename == __file__
    assert shown[0].lineno == run.__code__.co_firstlineno + 1


def test_odeint_adjoint_points_at_the_users_line():
    def run():
        odeint_adjoint(Field(), torch.ones(2), T, method="rk2_u")
    shown = caught(run)
    assert shown and shown[0].filename == __file__ and shown[0].lineno == run.__code__.co_firstlineno + 1


def test_silent_for_meta_solvers_and_blocks_with_n_steps():
    def run():
        for meta in (MetaSolver.fixed(SolverSpec("rk4_uv", n_steps=4)),
                     MetaSolver.smoothing("rk2_u", center={"u": 0.5}, n_steps=3, seed=0),
                     MetaSolver.switching([SolverSpec("rk2_u", n_steps=2), SolverSpec("rk3_uv", step_size=0.25)],
                                          seed=0)):
            block = ODEBlock(Field(), meta)
            for _ in range(3):
                meta.resample()
                block(torch.ones(4, 2)).sum().backward()
            with meta.evaluating():
                block(torch.ones(4, 2))
        ODEBlock(Field(), SolverSpec("rk2_u", n_steps=2), adjoint=True)(torch.ones(4, 2)).sum().backward()
    assert caught(run) == []


def test_an_ode_block_without_a_grid_warns():
    assert len(caught(lambda: ODEBlock(Field(), SolverSpec("rk2_u"))(torch.ones(4, 2)))) == 1
