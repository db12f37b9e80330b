"""Named attacks and protocols: names, JSON, one protocol run through strong_robustness."""
from __future__ import annotations

import json

import pytest
import torch

from odezoo.experiments import evaluation as ev
from odezoo.experiments.io import IntegrityError
from odezoo.experiments.protocol import (PROTOCOLS, Attack, Protocol, eps_label, evaluate_protocol, get_protocol,
                                         take_examples)

pytest.importorskip("torchattacks")


def test_names_state_steps_step_size_and_restarts():
    names = {
        Attack("fgsm"): "fgsm",
        Attack("pgd", steps=7, step_size=2 / 255): "pgd-7x2/255",
        Attack("pgd", steps=7, step_size="2/255"): "pgd-7x2/255",
        Attack("pgd", steps=7, step_size="eps/4"): "pgd-7xeps/4",
        Attack("pgd", steps=20, step_size="2.5*eps/steps"): "pgd-20x2.5eps/20",
        Attack("pgd", steps=50, step_size="2.5*eps/steps", restarts=5): "pgd-50x2.5eps/50-5r",
        Attack("pgd", steps=10, step_size=0.01): "pgd-10x0.01",
        Attack("autoattack"): "autoattack-standard",
        Attack("autoattack", version="fast"): "autoattack-fast",
        Attack("autoattack", steps=10, square_queries=50): "autoattack-standard-10it-50q",
        Attack("noise"): "noise-uniform",
        Attack("noise", samples=8): "noise-uniform-8draws",
        Attack("pgd", steps=7, step_size=2 / 255, eot_samples=4): "pgd-7x2/255-eot4",
    }
    for attack, name in names.items():
        assert attack.name == name
    assert len({a.name for a in names}) == len(set(names.values()))
    assert Attack("pgd", steps=20, step_size="2.5*eps/steps").step_size_for(0.3) == pytest.approx(0.0375)
    assert Attack("pgd", steps=7, step_size="eps/4").step_size_for(8 / 255) == pytest.approx(2 / 255)
    assert Attack("pgd", steps=7, step_size=2 / 255).step_size_for(0.3) == pytest.approx(2 / 255)
    assert "not AutoAttack" in Attack("autoattack", version="fast").describe()
    assert [eps_label(e) for e in (8 / 255, 0.3, 0.2, 0)] == ["8/255", "0.3", "0.2", "0"]


def test_attack_validation():
    with pytest.raises(ValueError, match="kind"):
        Attack("cw")
    with pytest.raises(ValueError, match="steps"):
        Attack("pgd", step_size=0.01)
    with pytest.raises(ValueError, match="step_size"):
        Attack("pgd", steps=7)
    with pytest.raises(ValueError, match="version"):
        Attack("autoattack", version="plus")
    with pytest.raises(ValueError, match="restarts"):
        Attack("pgd", steps=7, step_size=0.01, restarts=0)


def test_named_protocols_and_json_round_trip(tmp_path):
    assert PROTOCOLS["paper"].attack_names == ("fgsm", "pgd-7x2/255", "square-1000q")
    strong = PROTOCOLS["strong"].attack_names
    assert strong == ("fgsm", "pgd-7x2/255", "pgd-50x2.5eps/50-5r", "autoattack-standard", "square-5000q",
                      "noise-uniform-8draws")
    assert "autoattack-fast" in PROTOCOLS["strong-fast"].attack_names and "CPU-cheap" in PROTOCOLS["strong-fast"].note
    for protocol in PROTOCOLS.values():  # every protocol carries a gradient-free attack, so masking shows
        assert any(a.gradient_free for a in protocol.attacks), protocol.full_name
    p = get_protocol("strong", eps=[2 / 255, 8 / 255], n_examples=1000, n_autoattack=500)
    assert p.full_name == "strong-v2" and p.eps == (2 / 255, 8 / 255)
    path = p.save(tmp_path / "protocol.json")
    data = json.loads(path.read_text())
    assert [a["name"] for a in data["attacks"]] == list(strong) and data["n_autoattack"] == 500
    assert Protocol.load(path) == p
    text = p.describe(1000)
    assert "strong-v2" in text and "the first 1,000 test images (AutoAttack and Square: the first 500)" in text
    assert "`pgd-50x2.5eps/50-5r`" in text
    data["attacks"][1]["steps"] = 8  # settings that no longer match the name are refused
    with pytest.raises(ValueError, match="does not match"):
        Protocol.from_dict(data)
    with pytest.raises(ValueError, match="twice"):
        Protocol("x", 1, (Attack("fgsm"), Attack("fgsm")))
    with pytest.raises(ValueError, match="unknown protocol"):
        get_protocol("weak")


def test_take_examples_cuts_exactly(loader):
    batches = take_examples(loader, 70)
    assert [len(y) for _, y in batches] == [60, 10]
    assert sum(len(y) for _, y in take_examples(loader, None)) == 120


TINY = Protocol("tiny", 1, (Attack("fgsm"), Attack("pgd", steps=3, step_size="2.5*eps/steps"),
                            Attack("autoattack", steps=5, square_queries=20), Attack("square", square_queries=30),
                            Attack("noise", samples=2)),
                eps=(0.05, 0.1), n_examples=100, n_autoattack=40)


@pytest.fixture(scope="module")
def tiny_result(trained, loader):
    return evaluate_protocol(trained, loader, TINY)


def test_evaluate_protocol_counts_names_and_worst_case(tiny_result):
    r = tiny_result
    assert r.n_examples == 100 and r.labels.shape == (100,)
    assert r.n_of("autoattack-standard-5it-20q", 0.1) == 40 and r.n_of("pgd-3x2.5eps/3", 0.1) == 100
    rows = r.rows(arm="mlp", seed=0)
    assert rows[0] == {"arm": "mlp", "seed": 0, "protocol": "tiny-v1", "attack": "clean", "eps": 0.0,
                       "n_examples": 100, "accuracy": r.accuracy("clean")}
    names = [row["attack"] for row in rows if row["eps"] == 0.1]
    assert names == ["fgsm", "pgd-3x2.5eps/3", "autoattack-standard-5it-20q", "square-30q", "noise-uniform-2draws",
                     "worst"]
    assert r.n_of("square-30q", 0.1) == 40  # query-heavy: on the smaller count, like AutoAttack
    for eps in TINY.eps:
        worst = r.worst(eps)
        assert worst.numel() == 40  # over the examples every attack ran on
        for (name, e), ok in r.correct.items():
            if e == eps:
                assert not bool((worst & ~ok[:40]).any())
        assert r.accuracy("worst", eps) <= min(r.accuracy(a, eps) for a in TINY.attack_names)
    assert set(r.stages[("autoattack-standard-5it-20q", 0.1)]) == {"apgd-ce", "apgd-t", "fab-t", "square"}
    assert len(r.fingerprint) == 12


def test_evaluate_protocol_reuses_strong_robustness(tiny_result, trained, loader):
    """Same seed, same images: the protocol's PGD equals strong_robustness' own."""
    direct = ev.strong_robustness(trained, take_examples(loader, 100), 0.1, attacks=["fgsm", "pgd-3x2.5eps/3"],
                                  seed=0)
    assert torch.equal(direct.correct["pgd-3x2.5eps/3"], tiny_result.correct[("pgd-3x2.5eps/3", 0.1)])
    assert torch.equal(direct.correct["fgsm"], tiny_result.correct[("fgsm", 0.1)])
    assert torch.equal(direct.clean, tiny_result.clean)


def test_protocol_needs_eps(trained, loader):
    with pytest.raises(ValueError, match="no eps"):
        evaluate_protocol(trained, loader, PROTOCOLS["paper"])


class Chaotic(torch.nn.Module):
    """Predictions that jump with the smallest change of the input: whether an example survives
    noise or a random PGD start depends on the exact random draw, so on the seed it got."""

    def forward(self, x):
        s = x.flatten(1).sum(1, keepdim=True)
        return torch.cat([torch.sin(997.0 * s), torch.cos(991.0 * s)], 1)


def test_a_sharded_evaluation_gets_each_batch_its_own_seed_and_gathers_in_order(monkeypatch):
    """Simulate 2 ranks in one process (the real 2-process run is in test_recipes): each rank
    attacks every other batch; merged, the per-example results equal one process's exactly."""
    from odezoo.experiments import protocol as pr

    torch.manual_seed(0)
    batches = [(torch.rand(5, 1, 4, 4), torch.randint(0, 2, (5,))) for _ in range(5)]
    protocol = Protocol("shard", 1, (Attack("noise", samples=1), Attack("pgd", steps=1, step_size=0.2)),
                        eps=(0.3,), n_examples=23, n_autoattack=None, n_checks=None, seed=7)
    whole = evaluate_protocol(Chaotic(), batches, protocol)
    assert 0 < whole.accuracy("noise-uniform", 0.3) < whole.accuracy("clean")  # the draws matter

    parts = {1: []}
    monkeypatch.setattr(pr, "_shard", lambda sharded: (1, 2))
    monkeypatch.setattr(pr, "_gather", lambda mine: parts[1].append(mine) or mine)
    evaluate_protocol(Chaotic(), batches, protocol, sharded=True)
    others = iter(parts[1])

    def gather(mine):
        other = next(others)
        return {"batches": sorted(mine["batches"] + other["batches"], key=lambda b: b[0]),
                "seconds": mine["seconds"] + other["seconds"], "stages": mine["stages"] or other["stages"]}

    monkeypatch.setattr(pr, "_shard", lambda sharded: (0, 2))
    monkeypatch.setattr(pr, "_gather", gather)
    merged = evaluate_protocol(Chaotic(), batches, protocol, sharded=True)
    assert merged.correct.keys() == whole.correct.keys()
    for key in whole.correct:
        assert torch.equal(merged.correct[key], whole.correct[key]), key
    assert merged.rows() == whole.rows()


def test_sharded_needs_a_process_group(trained, loader):
    with pytest.raises(ValueError, match="needs torch.distributed"):
        evaluate_protocol(trained, loader, get_protocol("paper", eps=(0.1,), n_examples=8), sharded=True)


class Weighted(Chaotic):
    """Chaotic, with its frequency as a weight (so its state_dict, and a stored evaluation's
    identity, changes when the weight does)."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(997.0))

    def forward(self, x):
        s = x.flatten(1).sum(1, keepdim=True)
        return torch.cat([torch.sin(self.w * s), torch.cos(991.0 * s)], 1)


def resumable_case():
    torch.manual_seed(0)
    batches = [(torch.rand(5, 1, 4, 4), torch.randint(0, 2, (5,))) for _ in range(5)]
    protocol = Protocol("resume", 1, (Attack("noise", samples=1), Attack("pgd", steps=1, step_size=0.2),
                                      Attack("fgsm")),
                        eps=(0.2, 0.3), n_examples=23, n_autoattack=None, n_checks=None, seed=7)
    return batches, protocol


def counting(monkeypatch):
    from odezoo.experiments import protocol as pr

    calls, real = [], pr.strong_robustness
    monkeypatch.setattr(pr, "strong_robustness", lambda *a, **k: calls.append(1) or real(*a, **k))
    return calls


def test_an_interrupted_evaluation_resumes_where_it_stopped_with_the_same_result(tmp_path, monkeypatch):
    """A long evaluation killed after 3 of its 6 attack × ε keeps those 3; the rerun computes only
    the other 3 and returns exactly what one uninterrupted evaluation returns (each attack × ε is
    seeded on its own, and this model's survival depends on the exact random draws)."""
    batches, protocol = resumable_case()
    model = Weighted()
    whole = evaluate_protocol(model, batches, protocol)
    assert 0 < whole.accuracy("noise-uniform", 0.3) < whole.accuracy("clean")  # the draws matter

    class Killed(Exception):
        pass

    seen = []

    def killed_after_three(message):
        seen.append(message)
        if len(seen) == 3:
            raise Killed

    store = tmp_path / "partial.pt"
    with pytest.raises(Killed):
        evaluate_protocol(model, batches, protocol, progress=killed_after_three, store=store, store_key={"run": 1})
    calls, messages = counting(monkeypatch), []
    resumed = evaluate_protocol(model, batches, protocol, progress=messages.append, store=store, store_key={"run": 1})
    assert len(calls) == 3 and sum("kept from an interrupted evaluation" in m for m in messages) == 3
    assert resumed.correct.keys() == whole.correct.keys()
    for key in whole.correct:
        assert torch.equal(resumed.correct[key], whole.correct[key]), key
    assert resumed.rows() == whole.rows() and resumed.fingerprint == whole.fingerprint
    # the cost of the whole evaluation counts the attacks the interrupted run finished
    assert whole.kept == () and whole.kept_seconds == 0.0
    assert resumed.kept == tuple(list(whole.correct)[:3])
    assert resumed.kept_seconds == sum(resumed.seconds[key] for key in list(whole.correct)[:3]) > 0


@pytest.mark.parametrize("change", ["nothing", "weights", "store_key", "protocol", "images", "torn file"])
def test_a_stored_evaluation_is_reused_only_for_the_same_model_protocol_images_and_key(tmp_path, monkeypatch,
                                                                                        change):
    batches, protocol = resumable_case()
    model = Weighted()
    store = tmp_path / "partial.pt"
    evaluate_protocol(model, batches, protocol, store=store, store_key={"run": 1})  # keeps all 6
    key = {"run": 1}
    if change == "weights":
        with torch.no_grad():
            model.w += 1.0
    elif change == "store_key":
        key = {"run": 2}
    elif change == "protocol":
        protocol = protocol.replace(seed=8)
    elif change == "images":
        batches = [(x.flip(0), y.flip(0)) for x, y in batches]
    elif change == "torn file":  # written atomically, so only damage or an edit can tear it: refused, named
        store.write_bytes(store.read_bytes()[:100])
        with pytest.raises(IntegrityError, match="partial.pt .a partial evaluation. does not load"):
            evaluate_protocol(model, batches, protocol, store=store, store_key=key)
        store.unlink()  # what the message says to do
    calls = counting(monkeypatch)
    again = evaluate_protocol(model, batches, protocol, store=store, store_key=key)
    assert len(calls) == (0 if change == "nothing" else 6)
    fresh = evaluate_protocol(model, batches, protocol)  # never another evaluation's numbers
    assert again.rows() == fresh.rows()
