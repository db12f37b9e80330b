"""The attack registry: one name per attack setting, read back into the same attack; every kind
runs through one contract; adding a kind is one entry."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from odezoo.experiments import evaluation as ev
from odezoo.experiments.attack_registry import ATTACK_KINDS, Attack, AttackKind, register_attack_kind
from odezoo.experiments.protocol import PROTOCOLS, resolve_attacks
from odezoo.experiments.results import attack_setting

pytest.importorskip("torchattacks")

attacks = st.one_of(
    st.just(Attack("fgsm")),
    st.builds(lambda steps, size, restarts: Attack("pgd", steps=steps, step_size=size, restarts=restarts),
              st.integers(1, 200), st.sampled_from([2 / 255, 0.01, 0.3, "eps/4", "2.5*eps/steps", "eps", "3*eps/10"]),
              st.integers(1, 9)),
    st.builds(lambda version, steps, q: Attack("autoattack", version=version, steps=steps, square_queries=q),
              st.sampled_from(["standard", "fast"]), st.integers(1, 300), st.integers(1, 9000)),
    st.builds(lambda q: Attack("square", square_queries=q), st.integers(1, 9000)),
    st.builds(lambda n: Attack("noise", samples=n), st.integers(1, 20)),
).flatmap(lambda a: st.integers(1, 9).map(
    lambda eot: Attack(**{**{k: v for k, v in a.to_dict().items() if k != "name"}, "eot_samples": eot})))


@settings(max_examples=60, deadline=None)
@given(attacks)
def test_every_name_reads_back_into_an_attack_with_that_name_and_the_same_step(attack):
    again = Attack.from_name(attack.name)
    assert again.name == attack.name and again.kind == attack.kind
    for eps in (0.1, 8 / 255):
        if attack.kind == "pgd":
            assert again.step_size_for(eps) == pytest.approx(attack.step_size_for(eps))
    assert attack_setting(attack.name) == attack.setting()
    assert Attack.from_dict(attack.to_dict()) == attack


def test_the_protocols_use_registry_names_only():
    for protocol in PROTOCOLS.values():
        for attack in protocol.attacks:
            assert Attack.from_name(attack.name) == attack
            assert resolve_attacks([attack.name]) == [attack]


@pytest.mark.parametrize("name", ["pgd-7", "pgd-7x", "square", "square-q", "autoattack-plus", "cw-10", "fgsm-eot0",
                                  "pgd-0x2/255", "noise-uniform-0draws"])
def test_names_no_kind_reads_are_refused(name):
    with pytest.raises(ValueError, match="no attack is named"):
        Attack.from_name(name)
    with pytest.raises(ValueError, match="unknown attack"):
        resolve_attacks([name])


def test_a_new_kind_is_one_entry(trained, loader, monkeypatch):
    """Register a kind (here: predict on the clean input with every pixel inverted) and it runs
    through strong_robustness and gets its name read back, with no other change."""
    import re

    def run(attack, batch):
        return batch.predict(1 - batch.x) & batch.clean, {}

    kind = AttackKind("invert", name=lambda a: "invert", pattern=re.compile("invert"), fields=lambda m: {},
                      setting=lambda a: "every pixel inverted", describe=lambda a: "inverted images",
                      run=run, gradient_based=False, package="torch")
    monkeypatch.setitem(ATTACK_KINDS, "invert", kind)
    assert Attack.from_name("invert") == Attack("invert")
    result = ev.strong_robustness(trained, loader[:1], 0.1, attacks=["invert", "fgsm"])
    assert result.attacks == ("invert", "fgsm") and result.descriptions["invert"] == "inverted images"
    with pytest.raises(ValueError, match="already registered"):
        register_attack_kind(kind)


def test_square_is_gradient_free_and_beats_a_masked_model(loader):
    """A model whose softmax saturates (logits × 10⁴) has an exactly zero cross-entropy gradient
    on the examples it gets right, so PGD stays at its random start: a masked model.  Square,
    which only queries the logits, still finds its errors — the sign a protocol reads."""

    class Saturated(torch.nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.linear = torch.nn.Linear(784, 10)

        def forward(self, x):
            return 1e4 * self.linear(x.flatten(1))

    x, _ = loader[0]
    model = Saturated().eval()
    y = model(x).argmax(-1)  # labels the model gets right, so every example starts correct
    result = ev.strong_robustness(model, [(x, y)], 0.05, attacks=["pgd-10x2.5eps/10", "square-300q"])
    pgd, square = result.accuracy["pgd-10x2.5eps/10"], result.accuracy["square-300q"]
    assert pgd >= 0.7, pgd  # no gradient: only the random start moves the input
    assert square <= pgd - 0.3, (square, pgd)
    assert not Attack("square").gradient_based and Attack("square").query_heavy


def test_the_gradient_free_check_reads_a_protocols_results():
    from odezoo.experiments.masking import gradient_free_check

    attacks = [Attack("fgsm"), Attack("pgd", steps=7, step_size=2 / 255), Attack("square", square_queries=100),
               Attack("noise", samples=2)]
    t, f = True, False
    honest = {("fgsm", 0.1): torch.tensor([t, f, f, t]), ("pgd-7x2/255", 0.1): torch.tensor([f, f, f, t]),
              ("square-100q", 0.1): torch.tensor([f, f, f, t]), ("noise-uniform-2draws", 0.1): torch.tensor([t] * 4)}
    check = gradient_free_check(honest, attacks)
    assert check.passed and "0 of 4" in check.detail
    masked = {**honest, ("square-100q", 0.1): torch.tensor([f, f, f, f])}  # Square fools one PGD and FGSM missed
    check = gradient_free_check(masked, attacks)
    assert not check.passed and "1 of 4 (25.0%)" in check.detail
    assert check.values["fractions"][("square-100q", 0.1)] == 0.25
    assert not gradient_free_check(honest, attacks[:2]).passed  # no gradient-free attack: it says so

    # standard AutoAttack ends with Square: it cannot stand for the gradient attacks, or every
    # example Square fools would already be fooled "by a gradient attack" and the check could not fire
    standard = Attack("autoattack", version="standard")
    assert standard.gradient_based and not standard.only_gradients
    assert Attack("autoattack", version="fast").only_gradients and attacks[1].only_gradients
    with_aa = {**masked, (standard.name, 0.1): torch.tensor([f, f, f, f])}
    check = gradient_free_check(with_aa, attacks + [standard])
    assert not check.passed and "1 of 4 (25.0%)" in check.detail
