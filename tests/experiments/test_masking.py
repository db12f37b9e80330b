"""Gradient-masking checks: an ordinary MLP passes; masked toy models are flagged.

Victim: a tiny MLP trained for a fraction of a second on 1,000 embedded MNIST digits;
checks run on 120 test digits."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from odezoo.experiments.masking import CHECKS, Check, format_checks, gradient_masking_checks

EPS_LIST = (0.1, 0.3)


@pytest.fixture
def mlp(trained):
    return trained


class Quantized(nn.Module):
    """Rounds the input to 5 grey levels: torch.round has a zero gradient everywhere."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(torch.round(x * 4) / 4)


class Saturated(nn.Module):
    """Logits × 1000: the softmax saturates, so CE gradients vanish on confident examples."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x) * 1000


class AlwaysDropout(nn.Module):
    """Dropout on the input that stays active in eval mode (a randomized defence)."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(nn.functional.dropout(x, 0.2, training=True))


class Detached(nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x.detach())


def by_name(checks):
    return {check.name: check for check in checks}


def test_ordinary_model_passes_everything(mlp, loader):
    checks = gradient_masking_checks(mlp, loader, EPS_LIST)
    assert [c.name for c in checks] == list(CHECKS)
    assert all(c.passed for c in checks), format_checks(checks)
    text = format_checks(checks)
    assert text.splitlines()[0].startswith("PASS  deterministic-forward: ")
    assert len(text.splitlines()) == len(CHECKS)
    found = by_name(checks)
    assert found["reaches-chance"].values["accuracy"] <= 0.15
    curve = found["monotonic-in-eps"].values["curve"]
    assert [e for e, _ in curve] == [0.0, 0.1, 0.3, 0.5]


def test_quantized_input_is_flagged(mlp, loader):
    found = by_name(gradient_masking_checks(Quantized(mlp), loader, EPS_LIST))
    assert found["deterministic-forward"].passed
    assert found["input-gradients"].status == "warn"
    assert found["input-gradients"].values["zero_fraction"] == 1.0
    assert found["noise-weaker-than-attacks"].status == "warn" or found["iterative-beats-single-step"].status == "warn"
    assert found["noise-weaker-than-attacks"].status == "warn"  # FGSM does nothing, noise fools
    assert found["reaches-chance"].status == "warn"
    assert str(found["input-gradients"]).startswith("WARN  input-gradients: ")


def test_saturated_logits_are_flagged(mlp, loader):
    found = by_name(gradient_masking_checks(Saturated(mlp), loader, EPS_LIST,
                                            only=("input-gradients", "noise-weaker-than-attacks")))
    assert list(found) == ["input-gradients", "noise-weaker-than-attacks"]
    assert found["input-gradients"].status == "warn" and found["input-gradients"].values["zero_fraction"] > 0.5
    assert found["noise-weaker-than-attacks"].status == "warn"


def test_randomized_forward_is_flagged(mlp, loader):
    checks = gradient_masking_checks(AlwaysDropout(mlp), loader, EPS_LIST,
                                     only=("deterministic-forward", "input-gradients"))
    found = by_name(checks)
    assert found["deterministic-forward"].status == "warn" and "EOT" in found["deterministic-forward"].detail
    assert found["input-gradients"].passed
    assert by_name(gradient_masking_checks(mlp, loader, EPS_LIST, only=("deterministic-forward",)))[
        "deterministic-forward"].passed


def test_missing_gradient_warns_without_attacking(mlp, loader):
    checks = gradient_masking_checks(Detached(mlp), loader, EPS_LIST)
    assert [c.status for c in checks] == ["pass"] + ["warn"] * (len(CHECKS) - 1)
    assert all("not run" in c.detail for c in checks[2:])


def test_model_state_restored(mlp, loader):
    import copy

    model = copy.deepcopy(mlp).train()
    gradient_masking_checks(model, loader[:1], (0.1,), pgd_steps=3, restarts=1)
    assert model.training and all(p.requires_grad and p.grad is None for p in model.parameters())


def test_thresholds_and_validation(mlp, loader):
    strict = by_name(gradient_masking_checks(mlp, loader, EPS_LIST, only=("reaches-chance",), chance_factor=0.0,
                                             large_eps=0.05))
    assert strict["reaches-chance"].status == "warn" and "eps 0.05" in strict["reaches-chance"].detail
    with pytest.raises(ValueError, match="unknown check"):
        gradient_masking_checks(mlp, loader, EPS_LIST, only=("gradients",))
    with pytest.raises(ValueError, match="at least one eps"):
        gradient_masking_checks(mlp, loader, ())
    with pytest.raises(ValueError, match="no examples"):
        gradient_masking_checks(mlp, loader, EPS_LIST, max_batches=0)
    with pytest.raises(ValueError, match="status"):
        Check("x", "fail", "")
    assert format_checks([Check("a", "pass", "ok"), Check("b", "warn", "bad")]) == "PASS  a: ok\nWARN  b: bad"


def test_fgsm_accuracy_rising_with_eps_is_flagged():
    # What FGSM-trained models show (docs/results.md, fig3b): PGD falls, FGSM rises with eps.
    from odezoo.experiments.masking import monotonic_check
    pgd = [(0.0, 0.95), (0.1, 0.60), (0.3, 0.05)]
    fgsm = [(0.0, 0.95), (0.1, 0.70), (0.3, 0.80)]
    check = monotonic_check({"FGSM": fgsm, "PGD-20": pgd}, tol=0.02)
    assert check.status == "warn" and check.values["worst"] == "FGSM"
    assert "FGSM accuracy rises by 10.0 pp" in check.detail
    assert check.values["curve"] == pgd
    assert monotonic_check({"FGSM": pgd, "PGD-20": pgd}, tol=0.02).passed


# --------------------------------------------------------------------------- realistic masked models

class Tempered(nn.Module):
    """Logits × 10, as a defensively distilled network answers at temperature 1: confident
    examples' softmax saturates, so their CE gradient underflows (FGSM weakens)."""

    def __init__(self, net, factor=10.0):
        super().__init__()
        self.net, self.factor = net, factor

    def forward(self, x):
        return self.net(x) * self.factor


def test_tempered_logits_are_flagged_per_example(mlp, loader):
    check = by_name(gradient_masking_checks(Tempered(mlp), loader, EPS_LIST, only=("input-gradients",)))[
        "input-gradients"]
    values = check.values
    # the former criteria (mean |grad| > 1e-10, at most 5% exactly-zero examples) pass this model ...
    assert values["mean_abs"] > 1e-10 and values["zero_fraction"] <= 0.05
    # ... the per-example one does not
    assert check.status == "warn" and values["vanishing_fraction"] > 0.2
    mild = by_name(gradient_masking_checks(Tempered(mlp, 1.0), loader, EPS_LIST, only=("input-gradients",)))
    assert mild["input-gradients"].passed


class Dynamics(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(10, 10)

    def forward(self, t, y):
        return torch.tanh(self.linear(y))


class TinyODENet(nn.Module):
    """The MLP's logits through an ODE block (the library's ODEBlock and MetaSolver)."""

    def __init__(self, net, meta):
        super().__init__()
        from odezoo import ODEBlock

        self.net = net
        self.block = ODEBlock(Dynamics(), meta)

    def forward(self, x):
        return self.block(self.net(x))


def test_stochastic_solver_without_eot_is_flagged(mlp, loader):
    """A smoothing solver attacked as deployed (a fresh draw per forward) with one pass per
    gradient: under ``meta.evaluating()`` the check passes by construction; on the randomized
    solver it warns, and passes once the attacks use EOT."""
    from odezoo import MetaSolver

    torch.manual_seed(0)
    meta = MetaSolver.smoothing("rk2_u", center={"u": 0.5}, distribution="uniform", scale=0.45, n_steps=2, seed=0)
    model = TinyODENet(mlp, meta)
    small = [(loader[0][0][:20], loader[0][1][:20])]
    with meta.evaluating():
        assert by_name(gradient_masking_checks(model, small, (0.1,), only=("deterministic-forward",)))[
            "deterministic-forward"].passed
    deployed = by_name(gradient_masking_checks(model, small, (0.1,), before_forward=meta.resample,
                                               only=("deterministic-forward",)))["deterministic-forward"]
    assert deployed.status == "warn" and "EOT" in deployed.detail and deployed.values["max_abs_diff"] > 0
    with_eot = gradient_masking_checks(model, small, (0.1,), before_forward=meta.resample, eot_samples=3,
                                       pgd_steps=2, restarts=1, noise_samples=2,
                                       only=("deterministic-forward", "iterative-beats-single-step"))
    assert [c.status for c in with_eot] == ["pass", "pass"], format_checks(with_eot)
    assert "EOT over 3" in with_eot[0].detail


def test_large_eps_defaults_to_twice_the_largest_eps(mlp, loader):
    found = by_name(gradient_masking_checks(mlp, loader, (0.05, 0.1), only=("reaches-chance", "monotonic-in-eps")))
    assert "eps 0.2" in found["reaches-chance"].detail
    assert [e for e, _ in found["monotonic-in-eps"].values["curve"]] == [0.0, 0.05, 0.1, 0.2]


def test_noise_uses_several_draws(mlp, loader):
    check = gradient_masking_checks(mlp, loader, (0.1,), only=("noise-weaker-than-attacks",))[0]
    assert "worst of 8 draw(s)" in check.detail


def test_an_attack_above_clean_accuracy_warns_and_only_on_the_same_images():
    """Label leaking: FGSM leaving an FGSM-trained model *more* accurate than on clean images
    (fig3b version 1, u=0.25 seed 1: 92.2 % against 90.7 %) warns; an attack on fewer images, or
    within the tolerance, does not."""
    from odezoo.experiments.masking import attacks_above_clean_check

    leak = attacks_above_clean_check((0.907, 1000), {("fgsm", 0.3): (0.922, 1000), ("pgd-7x2/255", 0.3): (0.7, 1000)})
    assert leak.status == "warn" and "fgsm at eps 0.3: 92.2%" in leak.detail and "pgd" not in leak.detail
    assert leak.values["over"] == {("fgsm", 0.3): pytest.approx(0.015)}
    fine = attacks_above_clean_check((0.907, 1000), {("fgsm", 0.3): (0.911, 1000),  # + 0.4 points: within 0.5
                                                     ("autoattack-standard", 0.3): (0.95, 500)})  # other images
    assert fine.status == "pass" and "highest: fgsm at eps 0.3, 91.1%" in fine.detail
    assert attacks_above_clean_check((0.9, 1000), {("square-1000q", 0.3): (0.95, 500)}).status == "pass"


def test_the_report_checks_every_models_accuracies_from_per_seed_rows():
    from odezoo.experiments.attack_registry import Attack
    from odezoo.experiments.report import checks_from_accuracies

    class Protocol:
        attacks = (Attack(kind="fgsm"), Attack(kind="noise", samples=8))

    rows = [{"arm": arm, "seed": 0, "attack": attack, "eps": eps, "accuracy": acc, "n_examples": 1000}
            for arm, values in (("a", (0.9, 0.95, 0.99, 0.5)), ("b", (0.9, 0.6, 0.99, 0.5)))
            for (attack, eps), acc in zip((("clean", 0.0), ("fgsm", 0.1), ("noise-uniform-8draws", 0.1),
                                           ("worst", 0.1)), values)]
    checks = checks_from_accuracies(rows, Protocol)
    assert [(c["arm"], c["status"], c["source"]) for c in checks] == [("a", "warn", "per_seed.csv"),
                                                                      ("b", "pass", "per_seed.csv")]
    assert "noise" not in checks[1]["detail"]  # the noise baseline and `worst` are not attacks to compare
