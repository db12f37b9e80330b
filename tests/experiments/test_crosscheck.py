"""The attack libraries agree on shared images: PGD (advertorch, torchattacks, odezoo's own) and
standard AutoAttack (torchattacks' components vs the authors' pyautoattack)."""
from __future__ import annotations

import pytest
import torch

from odezoo.experiments.crosscheck import autoattack_agreement, pgd_agreement, reference_pgd

pytest.importorskip("torchattacks")


@pytest.mark.parametrize("eps,step,steps", [(0.1, 0.02, 5), (8 / 255, 2 / 255, 7), (0.3, 0.05, 3)])
def test_three_pgd_implementations_give_the_same_images(trained, loader, eps, step, steps):
    x, y = loader[0]
    out = pgd_agreement(trained, x[:40], y[:40], eps, step, steps)
    for key, value in out.items():
        if key.startswith("max_diff"):
            assert value <= 1e-6, (key, value)  # the same steps, up to float rounding
    accuracies = {out[k] for k in out if k.startswith("accuracy_")}
    assert len(accuracies) == 1
    assert out["accuracy_odezoo"] < float((trained(x[:40]).argmax(-1) == y[:40]).float().mean())  # it attacks


def test_reference_pgd_stays_in_the_ball_and_box(trained, loader):
    x, y = loader[0]
    x_adv = reference_pgd(trained, x[:8], y[:8], 0.1, 0.03, 5)
    assert float((x_adv - x[:8]).abs().max()) <= 0.1 + 1e-7 and 0 <= float(x_adv.min()) and float(x_adv.max()) <= 1


def test_autoattack_implementations_agree_on_a_small_budget(trained, loader):
    pytest.importorskip("pyautoattack")
    x, y = loader[0]
    out = autoattack_agreement(trained, x[:30], y[:30], 0.1, steps=5, square_queries=20, seed=0)
    assert out["n_images"] == 30 and out["attack"] == "autoattack-standard-5it-20q"
    for name in ("torchattacks", "reference"):
        assert 0 <= out[f"accuracy_{name}"] <= out["clean"]
    diff = out["accuracy_torchattacks"] - out["accuracy_reference"]
    assert diff == pytest.approx(out["difference"])
    assert abs(diff) <= out["difference_ci95"] + 0.1  # same attack, different random streams


def test_a_given_torchattacks_result_is_used_as_is(trained, loader):
    pytest.importorskip("pyautoattack")
    x, y = loader[0]
    none_robust = torch.zeros(20, dtype=torch.bool)
    out = autoattack_agreement(trained, x[:20], y[:20], 0.1, steps=3, square_queries=10,
                               torchattacks_correct=none_robust)
    assert out["accuracy_torchattacks"] == 0 and out["only_reference_fooled"] == 0
    assert out["only_torchattacks_fooled"] == round(out["accuracy_reference"] * 20)
