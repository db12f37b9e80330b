import math

import pytest
import torch
from torch import nn

from odezoo import MetaSolver, SolverSpec
from odezoo.experiments.models import Cifar10ODENet, MnistODENet, build_model, count_parameters
from odezoo.experiments.config import meta_solver_from_config, parse_number_list, parse_solver_grid
from odezoo.experiments.io import CheckpointError, load_checkpoint, save_checkpoint
from odezoo.experiments.training import TrainingDiverged, adversarial_batch, check_loss


def test_paper_models_build_and_run_on_unit_images():
    spec = SolverSpec("rk2_u", n_steps=2)
    mnist = MnistODENet(spec)
    assert count_parameters(mnist) == 208_266   # the seed code's ~208k
    assert mnist(torch.rand(3, 1, 28, 28)).shape == (3, 10)
    cifar = Cifar10ODENet(MetaSolver.fixed(spec))
    assert cifar(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    assert cifar.ode1.solver is cifar.ode2.solver
    with pytest.raises(ValueError, match="unknown model"):
        build_model("imagenet", spec)


def test_mnist_model_accepts_per_sample_solvers():
    meta = MetaSolver.smoothing("rk2_u", distribution="uniform", scale=0.3, n_steps=2, per_sample=True, seed=0)
    model = MnistODENet(meta)
    x = torch.rand(4, 1, 28, 28)
    batched = model(x)
    u = meta.per_sample_params(4)["u"]
    for i in range(4):
        with meta.using(SolverSpec("rk2_u", {"u": float(u[i])}, n_steps=2)):
            torch.testing.assert_close(model(x[i:i + 1]), batched[i:i + 1], rtol=1e-4, atol=1e-5)


class Linear(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(16, 3)

    def forward(self, x):
        return self.fc(x.flatten(1))


@pytest.mark.parametrize("kind", ["fgsm", "fgsm_random", "pgd"])
def test_adversarial_training_inputs_stay_in_the_ball_and_raise_the_loss(kind):
    model = Linear()
    x = torch.rand(32, 1, 4, 4)
    y = torch.randint(0, 3, (32,))
    torch.manual_seed(1)
    x_adv = adversarial_batch(model, x, y, kind, eps=0.1)
    assert (x_adv - x).abs().max() <= 0.1 + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    loss = lambda z: nn.functional.cross_entropy(model(z), y)  # noqa: E731
    assert loss(x_adv) > loss(x)
    assert all(p.grad is None for p in model.parameters())
    if kind == "fgsm":   # unclipped pixels move by exactly eps
        inside = (x > 0.1) & (x < 0.9)
        torch.testing.assert_close((x_adv - x).abs()[inside], torch.full_like(x[inside], 0.1))


def test_adversarial_batch_rejects_bad_input():
    with pytest.raises(ValueError, match="unknown adversarial"):
        adversarial_batch(Linear(), torch.rand(2, 16), torch.zeros(2, dtype=torch.long), "cw", 0.1)
    assert adversarial_batch(Linear(), x := torch.rand(2, 16), torch.zeros(2, dtype=torch.long), "none", 0.1) is x


def test_checkpoints_are_atomic_and_corruption_is_refused(tmp_path):
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, {"model": {"w": torch.ones(2)}, "config": {"a": 1}})
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]   # no temporary left behind
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")
    torch.save({"something": 1}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not an odezoo"):
        load_checkpoint(tmp_path / "other.pt")


def test_failed_save_keeps_the_previous_checkpoint(tmp_path):
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, {"model": {}, "config": {"v": 1}})

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        save_checkpoint(path, {"model": {}, "config": {"v": 2}, "bad": Unpicklable()})
    assert load_checkpoint(path)["config"] == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]


@pytest.mark.parametrize("value", [math.nan, math.inf, 1e6])
def test_check_loss_catches_nan_and_explosions(value):
    with pytest.raises(TrainingDiverged, match="kept at runs/x/checkpoint.pt"):
        check_loss(torch.tensor(value), "epoch 1, batch 3", checkpoint="runs/x/checkpoint.pt")
    assert check_loss(torch.tensor(0.5), "here") == 0.5


def test_solver_config_and_grid_parsing():
    meta = meta_solver_from_config({"mode": "smoothing", "method": "rk2_u", "params": {"u": "1/2"},
                                    "n_steps": 8, "distribution": "normal", "scale": 0.0125}, seed=0)
    assert meta.mode == "smoothing" and meta.eval_spec == SolverSpec("rk2_u", {"u": 0.5}, n_steps=8)
    sw = meta_solver_from_config({"mode": "switching", "n_steps": 4, "method": "rk2_u",
                                  "specs": [{"params": {"u": 0.5}}, {"params": {"u": 1.0}}], "probs": [0.5, 0.5]})
    assert [s.params["u"] for s in sw.specs] == [0.5, 1.0] and sw.specs[0].n_steps == 4
    with pytest.raises(ValueError, match="unknown solver mode"):
        meta_solver_from_config({"mode": "magic"})
    grid = parse_solver_grid("rk2_u:u=0.25,0.5,1.0;rk4_u2:u=1/3;euler", n_steps=[1, 8])
    assert len(grid) == 10
    assert grid[0] == SolverSpec("rk2_u", {"u": 0.25}, n_steps=1)
    assert SolverSpec("rk4_u2", {"u": 1 / 3}, n_steps=8) in grid and SolverSpec("euler", n_steps=1) in grid
    assert len(parse_solver_grid("rk4_uv:u=0.2,0.3:v=0.6,0.7")) == 4
    assert parse_number_list("1,2,4", integer=True) == [1, 2, 4]
    with pytest.raises(ValueError, match="u != 0"):
        parse_solver_grid("rk2_u:u=0")
