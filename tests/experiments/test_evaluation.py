"""Stronger evaluation: FGSM, PGD configurations, AutoAttack (torchattacks), noise, worst case.

A tiny MLP trained for a fraction of a second on 1,000 embedded MNIST digits is the victim;
AutoAttack runs with few iterations to stay fast."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from odezoo.experiments import attacks as rob
from odezoo.experiments import evaluation as se
from odezoo.experiments import io as eio

pytest.importorskip("torchattacks")

EPS = 0.1
PGD, PGD_STRONG, AA = "pgd-7x2.5eps/7", "pgd-20x2.5eps/20-5r", "autoattack-standard-10it-50q"
ATTACKS = ("fgsm", PGD, PGD_STRONG, AA, "square-50q", "noise-uniform")


@pytest.fixture(scope="module")
def standard(trained, loader):
    return se.strong_robustness(trained, loader, EPS, attacks=ATTACKS)


def test_all_attacks_run_and_are_named(standard, digits):
    result = standard
    assert result.attacks == ATTACKS  # keyed by their registry names, in the order given
    assert result.n_examples == 120 and torch.equal(result.labels, digits[3][:120])
    assert all(ok.dtype == torch.bool and ok.shape == (120,) for ok in result.correct.values())
    assert "7 steps of 2.5ε/7, one random start" in result.descriptions[PGD]
    assert "20 steps of 2.5ε/20, 5 random restarts" in result.descriptions[PGD_STRONG]
    assert "APGD-CE → APGD-T (9 target classes) → FAB-T (9 target classes) → Square (50 queries), 10 iterations" \
        in result.descriptions[AA]
    assert list(result.stages) == ["apgd-ce", "apgd-t", "fab-t", "square"]
    assert set(result.seconds) == set(result.attacks)


def test_worst_case_is_per_example_minimum(standard):
    result = standard
    worst = result.worst
    for name, ok in result.correct.items():
        assert not bool((worst & ~ok).any()), f"an example counted robust was fooled by {name}"
        assert result.worst_accuracy <= result.accuracy[name]
    assert not bool((worst & ~result.clean).any())
    expected = result.clean & torch.stack(list(result.correct.values())).all(0)
    assert torch.equal(worst, expected)
    assert result.accuracy["worst"] == pytest.approx(int(expected.sum()) / 120)


def test_autoattack_is_a_cascade_below_clean(standard):
    result = standard
    aa = result.correct[AA]
    assert not bool((aa & ~result.clean).any())
    assert result.accuracy[AA] <= result.clean_accuracy
    assert result.clean_accuracy > 0.8 and result.accuracy[AA] < 0.5 * result.clean_accuracy
    assert not bool((result.correct["square-50q"] & ~result.clean).any())  # Square starts from the correct ones
    stages = list(result.stages.values())
    for earlier, later in zip(stages, stages[1:]):  # survivors only shrink
        assert not bool((later & ~earlier).any())
    assert torch.equal(stages[-1], aa)
    assert result.accuracy["noise-uniform"] >= result.accuracy[PGD]  # an ordinary model: attacks beat noise


def test_fast_variant(model, loader):
    result = se.strong_robustness(model, loader, EPS, attacks=[PGD, "autoattack-fast-10it"])
    assert result.attacks == (PGD, "autoattack-fast-10it")
    assert list(result.stages) == ["apgd-ce", "apgd-dlr"]
    assert "APGD-CE → APGD-DLR (untargeted), 10 iterations each" in result.descriptions["autoattack-fast-10it"]
    assert result.accuracy["autoattack-fast-10it"] <= result.clean_accuracy
    assert result.accuracy["autoattack-fast-10it"] <= result.accuracy[PGD] + 0.05


def test_seeded_repeatable_and_global_rng_untouched(model, loader):
    state = torch.get_rng_state()
    kwargs = dict(attacks=["pgd-3x2.5eps/3-2r", "autoattack-fast-10it", "square-20q", "noise-uniform-2draws"])
    a = se.strong_robustness(model, loader, EPS, seed=3, **kwargs)
    assert torch.equal(torch.get_rng_state(), state)
    b = se.strong_robustness(model, loader, EPS, seed=3, **kwargs)
    assert all(torch.equal(a.correct[k], b.correct[k]) for k in a.correct)


def test_model_state_restored(model, loader):
    model.train()
    model[1].weight.requires_grad_(False)
    before = {n: p.requires_grad for n, p in model.named_parameters()}
    modes = []
    model.register_forward_pre_hook(lambda m, _: modes.append((m.training, any(p.requires_grad for p in
                                                                               m.parameters()))))
    se.strong_robustness(model, loader[:1], EPS, attacks=["pgd-2x2.5eps/2", "autoattack-fast-10it", "square-20q"])
    assert modes and all(mode == (False, False) for mode in modes)
    assert model.training and {n: p.requires_grad for n, p in model.named_parameters()} == before
    assert all(p.grad is None for p in model.parameters())


def test_step_size_and_config_validation(model, loader):
    one = loader[:1]
    fixed = se.strong_robustness(model, one, EPS, attacks=["fgsm", "pgd-4x0.02", "pgd-8x0.02"])
    assert fixed.attacks == ("fgsm", "pgd-4x0.02", "pgd-8x0.02") and "4 steps of 0.02" in fixed.descriptions["pgd-4x0.02"]
    assert rob.pgd_step_size(0.3, 40) == pytest.approx(0.01875)
    with pytest.raises(ValueError, match="listed twice"):
        se.strong_robustness(model, one, EPS, attacks=["fgsm", "fgsm"])
    with pytest.raises(ValueError, match="no attack is named"):
        se.strong_robustness(model, one, EPS, attacks=["autoattack-plus"])
    with pytest.raises(ValueError, match="no examples"):
        se.strong_robustness(model, one, EPS, max_batches=0, attacks=["fgsm"])
    with pytest.raises(TypeError, match="true labels"):
        se.strong_robustness(model, [(one[0][0], None)], EPS, attacks=["fgsm"])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        se.strong_robustness(model, [(one[0][0] * 2 - 1, one[0][1])], EPS, attacks=["fgsm"])


def test_rows_match_results_table(standard, model, loader, tmp_path):
    other = se.strong_robustness(model, loader, 0.2, attacks=["fgsm", "pgd-5x2.5eps/5"])
    rows = se.strong_results_table([standard, other], label="rk2_u")
    assert rows[0] == {"solver": "rk2_u", "attack": "clean", "eps": 0.0, "accuracy": standard.clean_accuracy}
    assert all(set(r) == {"solver", "attack", "eps", "accuracy"} for r in rows)
    assert {(r["attack"], r["eps"]) for r in rows if r["attack"] == "worst"} == {("worst", EPS), ("worst", 0.2)}
    lookup = {(r["attack"], r["eps"]): r["accuracy"] for r in rows}
    assert lookup[(AA, EPS)] == standard.accuracy[AA]
    assert lookup[("worst", EPS)] == standard.worst_accuracy
    both = se.strong_results_table({"a": standard, "b": [standard]})
    assert {r["solver"] for r in both} == {"a", "b"}
    converted = se.to_robustness_result([standard, other])
    assert converted.robust_accuracy_of("pgd-5x2.5eps/5", 0.2) == other.accuracy["pgd-5x2.5eps/5"]
    eio.save_csv(tmp_path / "strong.csv", rows)
    assert (tmp_path / "strong.csv").read_text().startswith("solver,attack,eps,accuracy")
