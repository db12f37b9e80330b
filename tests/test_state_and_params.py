"""MetaSolver states are checked as a whole before anything changes; values are validated
where they enter (SolverSpec, the MetaSolver factories, distributions); bad input gets a
message that says what to do."""
import copy
import math
from fractions import Fraction

import numpy as np
import pytest
import torch
import torchdiffeq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from odezoo import MetaSolver, ODEBlock, SolverSpec
from odezoo.metasolver import DRAW_BLOCK
from odezoo.sampling import Choice, draw, make_distribution
from odezoo.registry import registry
from problems import ConcatField, forced

A = SolverSpec("rk2_u", {"u": 0.5}, n_steps=4)
B = SolverSpec("rk2_u", {"u": 1.0}, n_steps=4)
C = SolverSpec("rk4_uv", {"u": 0.3, "v": 0.6}, n_steps=2)
T = torch.tensor([0.0, 1.0], dtype=torch.float64)
Y0 = torch.linspace(-0.5, 0.5, 3, dtype=torch.float64)
FAST = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def snapshot(meta):
    """Everything load_state_dict may change."""
    generator = getattr(meta, "generator", None)
    return (meta.round, copy.deepcopy(meta.history), list(meta._current),
            None if generator is None else generator.get_state().clone(),
            getattr(meta, "_block_pos", None), getattr(meta, "_round_seed", None), meta.identity())


def same(a, b):
    return all(torch.equal(x, y) if isinstance(x, torch.Tensor) else x == y for x, y in zip(a, b))


# --------------------------------------------------------------------------- class 4: states
def smoothing(method="rk2_u", center=None, kind="normal", scale=0.05, n_steps=2, per_sample=False, seed=0):
    return MetaSolver.smoothing(method, center=center, distribution=kind, scale=scale, n_steps=n_steps,
                                per_sample=per_sample, seed=seed)


SMOOTHING_EDITS = {
    "family": dict(method="rk4_uv"),
    "center": dict(center={"u": 0.6}),
    "kind": dict(kind="uniform"),
    "scale": dict(scale=0.1),
    "n_steps": dict(n_steps=3),
    "per_sample": dict(per_sample=True),
}


@FAST
@given(edits=st.sets(st.sampled_from(sorted(SMOOTHING_EDITS)), min_size=1), rounds=st.integers(0, 2 * DRAW_BLOCK))
def test_a_smoothing_state_of_another_configuration_is_refused_and_changes_nothing(edits, rounds):
    saved = smoothing()
    for _ in range(rounds):
        saved.resample()
    state = saved.state_dict()
    kwargs = {}
    for edit in edits:
        kwargs.update(SMOOTHING_EDITS[edit])
    if kwargs.get("method") == "rk4_uv" and "center" in kwargs:
        kwargs["center"] = {"u": 0.3, "v": 0.6}
    other = smoothing(**kwargs, seed=5)
    other.resample()
    before = snapshot(other)
    with pytest.raises(ValueError) as info:
        other.load_state_dict(state)
    message = str(info.value)
    assert "another solver configuration" in message or "mode" in message
    assert same(snapshot(other), before)


@FAST
@given(which=st.sampled_from(["specs", "probs", "eval_spec", "weights", "members", "fixed"]))
def test_switching_ensemble_and_fixed_states_of_other_configurations_are_refused(which):
    if which in ("specs", "probs", "eval_spec"):
        saved = MetaSolver.switching([A, B], probs=[0.5, 0.5], seed=0)
        other = {"specs": lambda: MetaSolver.switching([A, C], probs=[0.5, 0.5], seed=0),
                 "probs": lambda: MetaSolver.switching([A, B], probs=[0.3, 0.7], seed=0),
                 "eval_spec": lambda: MetaSolver.switching([A, B], probs=[0.5, 0.5], seed=0, eval_spec=B)}[which]()
    elif which in ("weights", "members"):
        saved = MetaSolver.ensemble([A, B], weights=[0.5, 0.5])
        other = MetaSolver.ensemble([A, B], weights=[0.2, 0.8]) if which == "weights" else MetaSolver.ensemble([A, C])
    else:
        saved, other = MetaSolver.fixed(A), MetaSolver.fixed(B)
    before = snapshot(other)
    with pytest.raises(ValueError, match=which if which not in ("members", "fixed") else "specs"):
        other.load_state_dict(saved.state_dict())
    assert same(snapshot(other), before)


def test_the_same_configuration_loads_whatever_the_seed(tmp_path):
    meta = smoothing("rk4_uv", center={"u": Fraction(1, 3), "v": np.float32(0.625)}, kind="cauchy", seed=1)
    for _ in range(5):
        meta.resample()
    torch.save(meta.state_dict(), tmp_path / "m.pt")
    state = torch.load(tmp_path / "m.pt", weights_only=True)
    assert state["identity"] == meta.identity() and state["identity"]["center"]["u"] == 1 / 3
    resumed = smoothing("rk4_uv", center={"u": 1 / 3, "v": 0.625}, kind="cauchy", seed=99)
    assert resumed.fingerprint() == meta.fingerprint() != smoothing(seed=1).fingerprint()
    resumed.load_state_dict(state)
    assert [resumed.resample() for _ in range(5)] == [meta.resample() for _ in range(5)]


def _corruptions():
    def generator_dtype(s): s["generator"] = s["generator"].float()
    def generator_size(s): s["generator"] = s["generator"][:10]
    def generator_missing(s): del s["generator"]
    def round_negative(s): s["round"] = -1
    def round_text(s): s["round"] = "3"
    def round_bool(s): s["round"] = True
    def current_empty(s): s["current"] = []
    def current_text(s): s["current"] = "rk2_u"
    def current_bad_spec(s): s["current"] = [{"method": "rk2_u", "params": {"u": 0.0}}]
    def current_unknown(s): s["current"] = [{"method": "rk9"}]
    def current_foreign(s): s["current"] = [C.to_dict()]
    def block_pos_big(s): s["block_pos"] = DRAW_BLOCK + 1
    def block_pos_float(s): s["block_pos"] = 1.5
    def history_text(s): s["history"] = "nope"
    def history_items(s): s["history"] = [1, 2]
    def round_seed_text(s): s["round_seed"] = "seed"
    def identity_edit(s): s["identity"] = {**s["identity"], "n_steps": 99}
    def not_a_dict(s): return [1, 2]
    return [generator_dtype, generator_size, generator_missing, round_negative, round_text, round_bool,
            current_empty, current_text, current_bad_spec, current_unknown, current_foreign, block_pos_big,
            block_pos_float, history_text, history_items, round_seed_text, identity_edit, not_a_dict]


@FAST
@given(corrupt=st.sampled_from(_corruptions()), per_sample=st.booleans(), rounds=st.integers(1, 70))
def test_a_corrupt_state_is_refused_and_leaves_the_solver_as_it_was(corrupt, per_sample, rounds):
    saved = smoothing(per_sample=per_sample, seed=0)
    for _ in range(rounds):
        saved.resample()
    state = copy.deepcopy(saved.state_dict())
    if per_sample and corrupt.__name__ == "current_foreign":
        state["current"] = [A.to_dict()]
    replaced = corrupt(state)
    state = replaced if replaced is not None else state
    if corrupt.__name__ == "round_seed_text" and not per_sample:
        return  # plain smoothing has no round seed to corrupt
    target = smoothing(per_sample=per_sample, seed=3)
    target.resample()
    before = snapshot(target)
    with pytest.raises(ValueError, match="MetaSolver.load_state_dict"):
        target.load_state_dict(state)
    assert same(snapshot(target), before)
    target.resample()  # still works


def test_old_states_without_identity_load_only_where_they_can_be_checked():
    fixed = MetaSolver.fixed(A).state_dict()
    del fixed["identity"]
    MetaSolver.fixed(A).load_state_dict(fixed)
    with pytest.raises(ValueError, match="does not belong"):
        MetaSolver.fixed(B).load_state_dict(fixed)
    old = smoothing(seed=0).state_dict()
    del old["identity"]
    target = smoothing(seed=1)
    with pytest.raises(ValueError, match=r"no 'identity'.*center and distribution.*strict=False"):
        target.load_state_dict(old)
    target.load_state_dict(old, strict=False)   # an explicit choice
    switching = MetaSolver.switching([A, B], seed=0).state_dict()
    del switching["identity"]
    with pytest.raises(ValueError, match="probabilities"):
        MetaSolver.switching([A, B], seed=0).load_state_dict(switching)


# --------------------------------------------------------------------------- class 7: parameters
REAL_SCALARS = st.one_of(
    st.sampled_from([np.float16, np.float32, np.float64]).flatmap(
        lambda t: st.floats(0.25, 1.0, width=16 if t is np.float16 else 32 if t is np.float32 else 64).map(t)),
    st.sampled_from([np.int8, np.int16, np.int32, np.int64, np.uint8, int]).map(lambda t: t(1)),
    st.fractions(Fraction(1, 4), Fraction(1)),
    st.floats(0.25, 1.0).map(lambda v: np.array(v)),
)


@FAST
@given(value=REAL_SCALARS)
def test_every_real_scalar_is_a_parameter_and_solves_like_its_float(value):
    spec = SolverSpec("rk2_u", {"u": value}, n_steps=2)
    assert type(spec.params["u"]) is float and spec.params["u"] == float(value)
    assert spec == SolverSpec("rk2_u", {"u": float(value)}, n_steps=2)
    assert torch.equal(spec.solve(forced, Y0, T), SolverSpec("rk2_u", {"u": float(value)}, n_steps=2).solve(forced, Y0, T))
    meta = MetaSolver.smoothing("rk2_u", center={"u": value}, scale=0.01, n_steps=2, seed=0)
    assert meta.center == {"u": float(value)}


BAD_PARAMETERS = [("0.5", "got the text '0.5'"), (b"0.5", "got the text"), (True, "real number"),
                  (np.bool_(True), "real number"), (0.5 + 1j, "complex"), (np.complex64(1), "complex"),
                  (torch.tensor([0.5 + 1j]), "complex"), (None, "real number or a tensor"),
                  ([0.5], "real number or a tensor"), (torch.ones(2, 2), "shape")]


@pytest.mark.parametrize("value,message", BAD_PARAMETERS, ids=[repr(v) for v, _ in BAD_PARAMETERS])
def test_bad_parameters_are_refused_at_every_door_with_one_message(value, message):
    with pytest.raises(ValueError, match=message) as spec_error:
        SolverSpec("rk2_u", {"u": value})
    core = str(spec_error.value).split(": ", 1)[1]
    assert core.startswith("parameter u")
    if not isinstance(value, torch.Tensor) or value.ndim == 0:
        with pytest.raises(ValueError) as center_error:
            MetaSolver.smoothing("rk2_u", center={"u": value}, scale=0.1, n_steps=2)
        assert str(center_error.value).endswith(core) and "center" in str(center_error.value)
        with pytest.raises(ValueError) as choice_error:
            Choice([{"u": value}])
        assert str(choice_error.value).endswith(core)


@pytest.mark.parametrize("n_steps", [2.5, "8", "abc", True, 0, -3, float("nan")])
def test_n_steps_must_be_a_positive_integer_everywhere(n_steps):
    with pytest.raises(ValueError, match="n_steps must be a positive integer"):
        SolverSpec("rk2_u", n_steps=n_steps)
    with pytest.raises(ValueError, match="n_steps must be a positive integer"):
        MetaSolver.smoothing("rk2_u", scale=0.1, n_steps=n_steps)


def test_whole_numbers_of_any_type_are_step_counts():
    assert SolverSpec("rk2_u", n_steps=8.0).n_steps == 8 and type(SolverSpec("rk2_u", n_steps=np.int64(3)).n_steps) is int
    assert SolverSpec("rk2_u", step_size=np.float32(0.25)).step_size == 0.25


@pytest.mark.parametrize("step_size", ["0.1", 0, -0.5, float("inf"), True])
def test_step_size_must_be_positive_and_finite(step_size):
    with pytest.raises(ValueError, match="step_size must be a positive, finite number"):
        SolverSpec("euler", step_size=step_size)


def test_adaptive_methods_take_no_grid_and_are_not_labelled_with_steps():
    with pytest.raises(ValueError, match="dopri5 is an adaptive method"):
        SolverSpec("dopri5", n_steps=2)
    with pytest.raises(ValueError, match="adaptive"):
        SolverSpec("bosh3", step_size=0.1)
    assert SolverSpec("dopri5").label() == "dopri5(adaptive)"
    assert SolverSpec("euler").label() == "euler(output grid)"


def test_factory_flags_are_checked():
    with pytest.raises(ValueError, match="per_sample must be True or False"):
        MetaSolver.smoothing("rk2_u", scale=0.1, per_sample="false")
    with pytest.raises(ValueError, match="seed must be a non-negative integer"):
        MetaSolver.switching([A, B], seed="0")
    with pytest.raises(ValueError, match="list of SolverSpecs"):
        MetaSolver.switching(A)
    with pytest.raises(ValueError, match="spec 1 must be a SolverSpec"):
        MetaSolver.ensemble([A, "rk2_u"])
    with pytest.raises(ValueError, match="eval_spec must be a SolverSpec"):
        MetaSolver.switching([A, B], eval_spec="rk2_u")


# --------------------------------------------------------------------------- class 8: messages
def test_per_sample_parameters_of_different_lengths_say_so():
    with pytest.raises(ValueError, match=r"same length.*'u': 3, 'v': 4"):
        SolverSpec("rk4_uv", {"u": torch.full((3,), 0.3, dtype=torch.float64),
                              "v": torch.full((4,), 0.6, dtype=torch.float64)})


def test_per_sample_parameters_need_a_batch_of_their_length():
    spec = SolverSpec("rk2_u", {"u": torch.full((3,), 0.5, dtype=torch.float64)}, n_steps=2)
    with pytest.raises(ValueError, match="no batch dimension"):
        spec.solve(forced, torch.tensor(1.0, dtype=torch.float64), T)
    with pytest.raises(ValueError, match="hold 3 values but y0 has a batch of 4"):
        spec.solve(forced, torch.ones(4, dtype=torch.float64), T)
    meta = smoothing(per_sample=True)
    with pytest.raises(ValueError, match="no batch dimension"):
        meta.solve(forced, torch.tensor(1.0, dtype=torch.float64), T)


def test_adjoint_with_per_sample_parameters_is_refused_before_any_backward():
    func = torch.nn.Linear(3, 3).double()
    meta = smoothing(per_sample=True)
    with pytest.raises(ValueError, match="adjoint"):
        ODEBlock(func, meta, adjoint=True)
    with pytest.raises(ValueError, match="adjoint"):
        meta.solve(lambda t, y: func(y), torch.ones(2, 3, dtype=torch.float64), T, adjoint=True)
    spec = SolverSpec("rk2_u", {"u": torch.full((2,), 0.5, dtype=torch.float64)}, n_steps=2)
    with pytest.raises(ValueError, match="adjoint"):
        spec.solve(lambda t, y: func(y), torch.ones(2, 3, dtype=torch.float64), T, adjoint=True)


def test_choice_missing_a_parameter_names_it():
    with pytest.raises(ValueError, match=r"missing \['v'\]"):
        MetaSolver.smoothing("rk4_uv", distribution=Choice([{"u": 0.3}]), n_steps=2)
    with pytest.raises(ValueError, match=r"unknown \['w'\]"):
        make_distribution(Choice([{"u": 0.3, "w": 1.0}]), family=registry.get("rk2_u"))
    with pytest.raises(ValueError, match="same parameters"):
        Choice([{"u": 0.3}, {"v": 0.5}])


class Returns:
    def __init__(self, make):
        self.make = make

    def sample_raw(self, center, n, generator):
        return self.make(n)


@pytest.mark.parametrize("make,message", [
    (lambda n: [0.5] * n, "returned a list"),
    (lambda n: {"u": torch.full((n + 1,), 0.5)}, r"shape \(4,\)"),
    (lambda n: {"v": torch.full((n,), 0.5)}, r"no values for \['u'\]"),
    (lambda n: {"u": torch.full((n,), 0.5 + 1j)}, "dtype"),
    (lambda n: {"u": "0.5"}, "dtype|returned"),
    (lambda n: {"u": torch.full((n, 2), 0.5)}, "shape"),
])
def test_a_bad_sample_raw_is_named(make, message):
    family = registry.get("rk2_u")
    with pytest.raises(ValueError, match=r"Returns.sample_raw\(center, n=3, generator\) must return") as info:
        draw(family, Returns(make), {"u": 0.5}, 3, torch.Generator().manual_seed(0))
    assert __import__("re").search(message, str(info.value))
    # a list or array of the right length is fine
    out = draw(family, Returns(lambda n: {"u": np.full(n, 0.5)}), {"u": 0.5}, 3, torch.Generator())
    assert out["u"].dtype == torch.float64 and out["u"].shape == (3,)


def test_meta_solver_cannot_be_built_directly():
    with pytest.raises(TypeError, match=r"MetaSolver.fixed\(spec\).*switching.*smoothing.*ensemble"):
        MetaSolver("fixed")


def test_a_grid_that_misses_the_end_times_is_a_value_error():
    with pytest.raises(ValueError, match="must start and end at the integration times"):
        torchdiffeq.odeint(ConcatField(), Y0, T, method="rk2_u",
                           options={"grid_constructor": lambda f, y, t: torch.linspace(0, 0.5, 3, dtype=t.dtype)})


# --------------------------------------------------------------------------- class 7: recipe flags
@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    """An untrained MNIST model saved as train.py saves best.pt (no training needed)."""
    pytest.importorskip("odezoo.experiments", reason="needs the recipes extra")
    from odezoo.experiments.config import DEFAULTS, meta_solver_from_config, validate_config
    from odezoo.experiments.io import save_checkpoint
    from odezoo.experiments.models import build_model

    cfg = validate_config({**DEFAULTS, "subset": 32, "batch_size": 16, "eval": {**DEFAULTS["eval"], "eps": [0.1]}})
    meta = meta_solver_from_config(cfg["solver"], seed=0)
    torch.manual_seed(0)
    model = build_model(cfg["model"], meta)
    path = tmp_path_factory.mktemp("run") / "best.pt"
    save_checkpoint(path, {"model": model.state_dict(), "config": cfg, "epoch": 1, "val_acc": 0.1,
                           "meta_solver_identity": meta.identity()})
    return path


def _evaluate():
    import sys
    from pathlib import Path

    from odezoo.experiments.commands import evaluate
    return evaluate


@pytest.mark.parametrize("flags,message", [
    (["--batch-size", "0"], "--batch-size: must be a positive integer, got '0'"),
    (["--pgd-steps", "0"], "--pgd-steps: must be a positive integer, got '0'"),
    (["--max-batches", "-1"], "--max-batches: must be a positive integer"),
    (["--eot", "1.5"], "--eot: must be a non-negative integer"),
    (["--solvers", "rk2_u:u=0.5", "--n-steps", "2.5"], "--n-steps: expected whole numbers, got [2.5]"),
    (["--solvers", "rk2_u:u=0.5", "--n-steps", "0"], "--n-steps: must be a positive integer, got 0"),
    (["--solvers", "rk2_u:u=0"], "--solvers: rk2_u"),
    (["--attacks", "fgsm,pdg"], "unknown attack 'pdg' (did you mean 'pgd'?)"),
    (["--eps", "abc"], "--eps: not a number: 'abc'"),
    (["--eps", "-0.1"], "--eps: give one or more eps > 0"),
    (["--eps", "0"], "--eps: give one or more eps > 0"),  # clean accuracy is always reported
    (["--attacks", "pgdd"], "--attacks: unknown attack 'pgdd' (did you mean 'pgd'?)"),
    (["--pgd-step-size", "0"], "--pgd-step-size: must be positive"),
])
def test_evaluate_flags_are_checked_not_replaced(tiny_checkpoint, flags, message, capsys):
    evaluate = _evaluate()
    with pytest.raises(SystemExit) as info:
        evaluate.main([str(tiny_checkpoint), *flags, "--out", str(tiny_checkpoint.parent / "eval")])
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_adaptive_methods_in_a_solver_grid_are_evaluated_once_and_labelled_adaptive(tiny_checkpoint):
    from odezoo.experiments.config import parse_solver_grid

    grid = parse_solver_grid("dopri5;euler;rk2_u:u=0.5", n_steps=[1, 2])
    assert [s.label() for s in grid] == ["dopri5(adaptive)", "euler(1 steps)", "euler(2 steps)",
                                         "rk2_u(u=0.5; 1 steps)", "rk2_u(u=0.5; 2 steps)"]
    rows = _evaluate().main([str(tiny_checkpoint), "--attacks", "", "--solvers", "dopri5;euler", "--n-steps", "2",
                             "--max-batches", "1", "--batch-size", "8", "--out", str(tiny_checkpoint.parent / "e")])
    assert {(r["solver"], r["n_steps"]) for r in rows} == {("dopri5(adaptive)", None), ("euler(2 steps)", 2)}
