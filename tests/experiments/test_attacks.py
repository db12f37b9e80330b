"""FGSM / PGD through advertorch on current torch, robustness evaluation, result files.

A tiny MLP trained for about a second on 1,000 embedded MNIST digits is the victim."""
from __future__ import annotations

import csv
import importlib
import json

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from odezoo.experiments import attacks as rob
from odezoo.experiments import evaluation as ev
from odezoo.experiments import io as eio

EPS = 0.1


@pytest.fixture
def batch(digits):
    _, _, xt, yt = digits
    return xt[:64], yt[:64]


def accuracy(model, x, y):
    with torch.no_grad():
        return float((model(x).argmax(-1) == y).float().mean())


# --------------------------------------------------------------------------- shim

def test_shim_makes_advertorch_importable():
    module = rob.import_advertorch()
    attacks = importlib.import_module("advertorch.attacks")
    assert module.__name__ == "advertorch" and hasattr(attacks, "LinfPGDAttack")
    gradcheck_module = importlib.import_module("torch.autograd.gradcheck")
    assert callable(gradcheck_module.zero_gradients)
    assert callable(torch.autograd.gradcheck) and torch.autograd.gradcheck is not gradcheck_module  # not clobbered


def test_shim_is_idempotent():
    rob.import_advertorch()
    first = importlib.import_module("torch.autograd.gradcheck").zero_gradients
    rob.import_advertorch()
    assert importlib.import_module("torch.autograd.gradcheck").zero_gradients is first


def test_zero_gradients_semantics():
    a, b, c = (torch.ones(3, requires_grad=True) for _ in range(3))
    (a.sum() * 2 + b.sum()).backward()
    rob.zero_gradients(a)
    assert torch.equal(a.grad, torch.zeros(3)) and torch.equal(b.grad, torch.ones(3))
    rob.zero_gradients([b, (c,)])  # nested iterables; c.grad stays None
    assert torch.equal(b.grad, torch.zeros(3)) and c.grad is None


def test_zero_gradients_correct_inside_fab():
    """FAB (the shimmed caller) computes per-class input gradients: for a linear model they
    are the weight rows, which only holds if zero_gradients really zeroes between classes."""
    adv = rob.import_advertorch()
    torch.manual_seed(0)
    linear = nn.Linear(12, 4)
    net = nn.Sequential(nn.Flatten(), linear)
    x = torch.rand(3, 1, 3, 4)
    labels = torch.tensor([0, 1, 2])
    fab = adv.attacks.LinfFABAttack(net, n_iter=1)
    fab.device = x.device
    _, dg = fab.get_diff_logits_grads_batch(x, labels)
    w = linear.weight.detach()
    expected = (w[None, :, :] - w[labels][:, None, :]).reshape(3, 4, 1, 3, 4)
    assert torch.allclose(dg, expected, atol=1e-6)


def test_attacks_work_under_no_grad(model, batch):
    """advertorch alone fails inside torch.no_grad ("does not require grad"); fgsm/pgd enable grad."""
    x, y = batch
    with torch.no_grad():
        x_fgsm = rob.fgsm(model, x, y, EPS)
        x_pgd = rob.pgd(model, x, y, EPS, seed=0)
    assert (x_fgsm - x).abs().max() > 0 and (x_pgd - x).abs().max() > 0


@pytest.mark.parametrize("eps", [np.float32(EPS), torch.tensor(EPS), np.float64(EPS)])
def test_eps_types_are_coerced(model, batch, eps):
    """advertorch asserts a Python float (bare AssertionError) and len()s tensors (0-d TypeError)."""
    x, y = batch
    assert torch.allclose(rob.fgsm(model, x, y, eps), rob.fgsm(model, x, y, float(eps)))
    assert torch.allclose(rob.pgd(model, x, y, eps, seed=1), rob.pgd(model, x, y, float(eps), seed=1))
    assert torch.equal(rob.pgd(model, x, y, 0, seed=1), x)  # int eps


def test_missing_input_gradient_is_explained(batch):
    class Detaching(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(784, 10)

        def forward(self, x):
            return self.lin(x.detach().flatten(1))

    x, y = batch
    for attack in (rob.fgsm, rob.pgd):
        with pytest.raises(RuntimeError, match="no gradient"):
            attack(Detaching(), x, y, EPS)


# --------------------------------------------------------------------------- attack geometry

def test_fgsm_perturbation_is_exactly_eps(model, batch):
    x, y = batch
    x_adv = rob.fgsm(model, x, y, EPS)
    assert float(x_adv.min()) >= 0 and float(x_adv.max()) <= 1
    delta = x_adv - x
    assert float(delta.abs().max()) == pytest.approx(EPS, abs=1e-6)
    unclipped = (x_adv > 0) & (x_adv < 1)
    assert unclipped.float().mean() > 0.1
    assert torch.allclose(delta[unclipped].abs(), torch.full_like(delta[unclipped], EPS), atol=1e-6)


def test_pgd_stays_in_eps_ball_and_box(model, batch):
    x, y = batch
    for restarts in (1, 3):
        x_adv = rob.pgd(model, x, y, EPS, step_size=0.03, n_iter=10, restarts=restarts, seed=0)
        assert float((x_adv - x).abs().max()) <= EPS + 1e-6
        assert float(x_adv.min()) >= 0 and float(x_adv.max()) <= 1


def test_attack_strength_ordering(model, batch):
    x, y = batch
    clean = accuracy(model, x, y)
    acc_fgsm = accuracy(model, rob.fgsm(model, x, y, EPS), y)
    acc_pgd = accuracy(model, rob.pgd(model, x, y, EPS, step_size=EPS / 4, n_iter=10, seed=0), y)
    assert clean > 0.8
    assert acc_pgd <= acc_fgsm <= clean
    assert acc_fgsm < clean  # the attack does something


def test_true_labels_are_used(model, batch, monkeypatch):
    """Give labels that differ from the prediction: the result must be FGSM w.r.t. those
    labels (advertorch with y=None would attack the predicted ones)."""
    x, _ = batch
    with torch.no_grad():
        predicted = model(x).argmax(-1)
    labels = (predicted + 1) % 10
    x_adv = rob.fgsm(model, x, labels, EPS)

    x_req = x.clone().requires_grad_(True)
    nn.functional.cross_entropy(model(x_req), labels, reduction="sum").backward()
    assert torch.equal(x_adv, (x + EPS * x_req.grad.sign()).clamp(0, 1))
    loss = lambda z: float(nn.functional.cross_entropy(model(z), labels))  # noqa: E731
    with torch.no_grad():
        assert loss(rob.pgd(model, x, labels, EPS, seed=0)) > loss(x) and loss(x_adv) > loss(x)

    adv = rob.import_advertorch()
    seen = []
    for cls in (adv.attacks.GradientSignAttack, adv.attacks.LinfPGDAttack):
        original = cls.perturb
        monkeypatch.setattr(cls, "perturb", lambda self, xx, yy=None, _o=original: (seen.append(yy), _o(self, xx, yy))[1])
    rob.fgsm(model, x, labels, EPS)
    rob.pgd(model, x, labels, EPS, restarts=2)
    assert len(seen) in (2, 3) and all(s is not None for s in seen)
    assert torch.equal(seen[0], labels) and torch.equal(seen[1], labels)
    if len(seen) == 3:  # the second restart attacks only the examples the first did not fool, with their labels
        assert seen[2].numel() < labels.numel()
        assert all(int((labels == c).sum()) >= int((seen[2] == c).sum()) for c in range(10))


def test_missing_or_bad_labels_and_pixels(model, batch):
    x, y = batch
    with pytest.raises(TypeError, match="true labels"):
        rob.fgsm(model, x, None, EPS)
    with pytest.raises(ValueError, match="int64"):
        rob.pgd(model, x, y.float(), EPS)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        rob.fgsm(model, (x - 0.13) / 0.31, y, EPS)
    with pytest.raises(ValueError, match="eps"):
        rob.fgsm(model, x, y, -0.1)
    with pytest.raises(ValueError, match="restarts"):
        rob.pgd(model, x, y, EPS, restarts=0)


# --------------------------------------------------------------------------- model state

class Recorder(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner, self.modes, self.fail = inner, [], False

    def forward(self, x):
        self.modes.append((self.training, any(p.requires_grad for p in self.parameters())))
        if self.fail:
            raise RuntimeError("boom")
        return self.inner(x)


def test_training_flag_and_requires_grad_restored(model, batch):
    x, y = batch
    rec = Recorder(model).train()
    model[1].weight.requires_grad_(False)  # a frozen parameter stays frozen, the rest trainable
    before = {n: p.requires_grad for n, p in rec.named_parameters()}
    rob.fgsm(rec, x, y, EPS)
    rob.pgd(rec, x, y, EPS, n_iter=2, restarts=2)
    ev.evaluate_robustness(rec, [(x, y)], eps_list=(EPS,), pgd_kwargs={"n_iter": 2})
    assert rec.modes and all(mode == (False, False) for mode in rec.modes)  # eval, no param grads inside
    assert rec.training and all(m.training for m in rec.modules())
    assert {n: p.requires_grad for n, p in rec.named_parameters()} == before
    assert all(p.grad is None for p in rec.parameters())
    rec.fail = True
    with pytest.raises(RuntimeError, match="boom"):
        rob.fgsm(rec, x, y, EPS)
    assert rec.training and {n: p.requires_grad for n, p in rec.named_parameters()} == before


# --------------------------------------------------------------------------- restarts, seeds

def test_pgd_seed_repeatable_and_global_rng_untouched(model, batch):
    x, y = batch
    state = torch.get_rng_state()
    a = rob.pgd(model, x, y, EPS, seed=5)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a, rob.pgd(model, x, y, EPS, seed=5))
    assert not torch.equal(a, rob.pgd(model, x, y, EPS, seed=6))


def test_restarts_never_help_the_model(model, digits):
    _, _, x, y = digits
    kwargs = {"step_size": 0.01, "n_iter": 3}  # weak attack: restarts have room to add
    with torch.no_grad():
        one = model(rob.pgd(model, x, y, EPS, restarts=1, seed=0, **kwargs)).argmax(-1) != y
        many = model(rob.pgd(model, x, y, EPS, restarts=4, seed=0, **kwargs)).argmax(-1) != y
    assert bool((many | ~one).all()), "an example fooled with 1 restart must stay fooled with more"
    assert many.float().mean() >= one.float().mean()


# --------------------------------------------------------------------------- evaluation

def test_evaluate_robustness(model, digits):
    _, _, x, y = digits
    loader = DataLoader(TensorDataset(x, y), batch_size=50)
    result = ev.evaluate_robustness(model, loader, eps_list=(0.05, EPS),
                                     pgd_kwargs={"step_size": 0.025, "n_iter": 8, "seed": 0})
    assert result.n_examples == 200
    assert result.clean_accuracy == pytest.approx(accuracy(model, x, y))
    for eps in (0.05, EPS):
        fgsm_acc, pgd_acc = result.robust_accuracy_of("fgsm", eps), result.robust_accuracy_of("pgd", eps)
        assert pgd_acc <= fgsm_acc <= result.clean_accuracy
        assert result.worst_case[eps] <= min(fgsm_acc, pgd_acc)
    assert result.robust_accuracy_of("pgd", EPS) <= result.robust_accuracy_of("pgd", 0.05)
    with pytest.raises(KeyError, match="evaluated"):
        result.robust_accuracy_of("pgd", 0.3)
    short = ev.evaluate_robustness(model, loader, attacks=("fgsm",), eps_list=(EPS,), max_batches=2)
    assert short.n_examples == 100 and short.worst_case == {}


def test_seeded_evaluation_is_reproducible_with_distinct_starts_per_batch(model, digits, monkeypatch):
    _, _, x, y = digits
    loader = DataLoader(TensorDataset(x, y), batch_size=50)
    kwargs = dict(attacks=("pgd",), eps_list=(EPS,), pgd_kwargs={"step_size": 0.025, "n_iter": 3, "seed": 7})
    first = ev.evaluate_robustness(model, loader, **kwargs)
    assert ev.evaluate_robustness(model, loader, **kwargs) == first
    seeds = []
    real_pgd = rob.pgd
    monkeypatch.setattr(ev, "pgd", lambda *a, **k: seeds.append(k["seed"]) or real_pgd(*a, **k))
    ev.evaluate_robustness(model, loader, **kwargs)
    assert seeds == [7, 8, 9, 10]


def test_evaluate_robustness_rejects_bad_arguments(model, batch):
    with pytest.raises(ValueError, match="choose from"):
        ev.evaluate_robustness(model, [batch], attacks=("cw",))
    with pytest.raises(ValueError, match="no examples"):
        ev.evaluate_robustness(model, [batch], max_batches=0)


def test_eot_model_averages_and_calls_hook():
    calls = []

    class Counter(nn.Module):
        def forward(self, x):
            return x * len(calls)

    eot = rob.EOTModel(Counter(), samples=3, before_forward=lambda: calls.append(1))
    out = eot(torch.ones(2, 2))
    assert len(calls) == 3 and torch.allclose(out, torch.full((2, 2), 2.0))  # mean of 1, 2, 3
    with pytest.raises(ValueError, match="eot"):
        rob.EOTModel(Counter(), samples=0)


def test_eot_evaluation(model, batch):
    x, y = batch
    calls = []
    kwargs = {"eps_list": (EPS,), "pgd_kwargs": {"n_iter": 3, "seed": 0}}
    plain = ev.evaluate_robustness(model, [(x, y)], **kwargs)
    eot = ev.evaluate_robustness(model, [(x, y)], eot_samples=2, before_batch=lambda: calls.append(1), **kwargs)
    # a deterministic model: averaging identical logits changes nothing
    assert eot.accuracy == plain.accuracy and eot.clean_accuracy == plain.clean_accuracy and eot.eot_samples == 2
    # 1 clean prediction + per attack: 1 prediction + attack forwards (FGSM 1, PGD 3) x 2 samples
    assert len(calls) == 1 + (1 + 1 * 2) + (1 + 3 * 2)


# --------------------------------------------------------------------------- tables, files

def test_results_table_and_files(model, batch, tmp_path):
    result = ev.evaluate_robustness(model, [batch], eps_list=(EPS,), pgd_kwargs={"n_iter": 2})
    rows = ev.results_table(result, label="rk2_u(u=0.5)")
    assert rows[0] == {"solver": "rk2_u(u=0.5)", "attack": "clean", "eps": 0.0, "accuracy": result.clean_accuracy}
    assert {(r["attack"], r["eps"]) for r in rows[1:]} == {("fgsm", EPS), ("pgd", EPS)}
    both = ev.results_table({"a": result, "b": result}, include_worst_case=True)
    assert len(both) == 8 and {r["solver"] for r in both} == {"a", "b"} and any(r["attack"] == "worst" for r in both)

    rows.append({"solver": "x", "attack": "pgd", "eps": torch.tensor(0.2), "accuracy": np.float32(0.5),
                 "params": {"u": 0.5}})
    eio.save_json(tmp_path / "out" / "r.json", rows)
    eio.save_csv(tmp_path / "out" / "r.csv", rows)
    assert json.loads((tmp_path / "out" / "r.json").read_text())[-1]["eps"] == pytest.approx(0.2)
    with open(tmp_path / "out" / "r.csv", newline="") as f:
        read = list(csv.DictReader(f))
    assert len(read) == len(rows) and read[0]["attack"] == "clean" and json.loads(read[-1]["params"]) == {"u": 0.5}
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["r.csv", "r.json"]  # no temp files left


def test_failed_save_keeps_old_file(tmp_path):
    path = tmp_path / "r.json"
    eio.save_json(path, [{"a": 1}])
    with pytest.raises(TypeError):
        eio.save_json(path, [{"a": object()}])
    assert json.loads(path.read_text()) == [{"a": 1}] and [p.name for p in tmp_path.iterdir()] == ["r.json"]
