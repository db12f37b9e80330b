"""Checkpoints and run folders: digests checked on load, non-finite weights never saved or
evaluated, append-only logs that survive a torn line, resumes that cannot change the run
behind the run folder's back, and config.yaml written once."""
import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from odezoo.experiments import io as eio
from odezoo.experiments.io import CheckpointError, load_checkpoint, save_checkpoint

ROOT = Path(__file__).resolve().parents[2]

from odezoo.experiments.commands import evaluate  # noqa: E402
from odezoo.experiments.commands import train, train_loop  # noqa: E402

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                         HealthCheck.function_scoped_fixture])
CONFIG = str(ROOT / "recipes" / "configs" / "mnist_rk2_fixed.yaml")


# --------------------------------------------------------------------------- checkpoints
def sample_state():
    g = torch.Generator().manual_seed(0)
    return {"model": {"w": torch.randn(64, 64, generator=g), "b": torch.randn(64, generator=g)},
            "config": {"name": "x", "lr": 0.1}, "epoch": 3, "meta_solver": {"round": 2, "history": [{"a": 1.5}]}}


def equal(a, b):
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(equal(x, y) for x, y in zip(a, b))
    return a == b


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "c.pt"
    save_checkpoint(path, sample_state())
    return path.read_bytes()


@FAST
@given(where=st.floats(0.02, 0.98), junk=st.binary(min_size=1, max_size=16))
def test_bytes_overwritten_anywhere_never_load_as_other_weights(saved, tmp_path_factory, where, junk):
    data = bytearray(saved)
    offset = int(where * (len(data) - len(junk)))
    data[offset:offset + len(junk)] = junk
    path = tmp_path_factory.mktemp("bad") / "c.pt"
    path.write_bytes(bytes(data))
    try:
        state = load_checkpoint(path)
    except CheckpointError as error:
        assert "corrupt" in str(error) or "digest" in str(error) or "not an odezoo" in str(error)
    else:  # the damage missed everything that matters (e.g. zip padding): the contents are intact
        assert equal(state, sample_state())


def test_digest_is_stored_checked_and_stripped(tmp_path):
    path = tmp_path / "c.pt"
    save_checkpoint(path, sample_state())
    raw = torch.load(path, weights_only=True)
    assert raw[eio.INTEGRITY_KEY]["algorithm"] == "sha256"
    assert equal(load_checkpoint(path), sample_state())
    raw["model"]["w"][3, 4] += 1.0   # re-saved with the old digest: refused
    torch.save(raw, path)
    with pytest.raises(CheckpointError, match="do not match the sha256 digest"):
        load_checkpoint(path)
    del raw[eio.INTEGRITY_KEY]
    torch.save(raw, path)
    with pytest.raises(CheckpointError, match="no integrity digest.*verify=False"):
        load_checkpoint(path)
    assert load_checkpoint(path, verify=False)["epoch"] == 3


def test_non_finite_weights_are_never_saved_or_loaded(tmp_path):
    state = sample_state()
    state["model"]["w"][0, 0] = float("nan")
    with pytest.raises(CheckpointError, match=r"NaN or inf \(w\)"):
        save_checkpoint(tmp_path / "c.pt", state)
    assert not (tmp_path / "c.pt").exists()
    save_checkpoint(tmp_path / "c.pt", state, allow_nonfinite=True)
    with pytest.raises(CheckpointError, match="non-finite model weights"):
        load_checkpoint(tmp_path / "c.pt")
    assert load_checkpoint(tmp_path / "c.pt", allow_nonfinite=True)["model"]["w"].isnan().any()


RECORDS = st.lists(st.dictionaries(st.sampled_from(["epoch", "loss", "note"]),
                                   st.one_of(st.integers(), st.floats(allow_nan=False), st.text(max_size=5)),
                                   min_size=1), min_size=1, max_size=4)


@FAST
@given(records=RECORDS, cut=st.floats(0.0, 0.99), new=st.dictionaries(st.just("epoch"), st.integers(), min_size=1))
def test_a_torn_last_line_never_damages_the_log(tmp_path_factory, records, cut, new):
    log = tmp_path_factory.mktemp("log") / "m.jsonl"
    for record in records[:-1]:
        eio.append_jsonl(log, record)
    last = json.dumps(records[-1]) + "\n"
    with open(log, "a") as handle:   # an append interrupted part-way
        handle.write(last[:max(1, int(cut * (len(last) - 1)))])
    assert eio.read_jsonl(log) == records[:-1]
    eio.append_jsonl(log, new)
    assert eio.read_jsonl(log) == records[:-1] + [new]
    assert log.read_text().endswith("\n")


# --------------------------------------------------------------------------- run folders
def run(out, *extra, config=CONFIG):
    return train.main(["--config", config, "--dry-run", "--no-eval", "--quiet", "--device", "cpu",
                       "--out", str(out), *extra])


def trained(tmp_path_factory, name, *extra):
    out = tmp_path_factory.mktemp("runs") / name
    assert run(out, *extra) == 0
    return out


def copy_of(run_folder, tmp_path):
    """A test's own copy of a module's run (each test may change its folder)."""
    out = tmp_path / run_folder.name
    shutil.copytree(run_folder, out)
    return out


@pytest.fixture(scope="module")
def one_epoch(tmp_path_factory):
    """A run stopped after epoch 1 of 2 (resumable)."""
    return trained(tmp_path_factory, "base", "--epochs", "2", "--stop-after", "1")


@pytest.fixture
def folder(one_epoch, tmp_path):
    return copy_of(one_epoch, tmp_path)


def files(out):
    return {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}


@pytest.mark.parametrize("change", [["--set", "solver.params.u=1.0"], ["--set", "optimizer.lr=0.01"],
                                    ["--set", "adversarial.kind=fgsm"], ["--seed", "3"], ["--batch-size", "8"]])
def test_a_resume_that_changes_the_run_is_refused_and_touches_nothing(folder, change, capsys):
    before = files(folder)
    with pytest.raises(SystemExit) as info:
        run(folder, "--epochs", "2", "--resume", *change)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "cannot resume" in err and "--out NEW_DIR" in err and "--allow-config-change" in err
    assert files(folder) == before


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    return trained(tmp_path_factory, "finished")


@pytest.fixture
def finished(finished_run, tmp_path):
    return copy_of(finished_run, tmp_path)


@pytest.mark.parametrize("change, key", [(["--epochs", "2"], "epochs"), (["--seed", "3"], "seed"),
                                         (["--batch-size", "8"], "batch_size"),
                                         (["--set", "solver.params.u=1.0"], "solver.params.u"),
                                         (["--set", "optimizer.lr=0.01"], "optimizer.lr"),
                                         (["--set", "adversarial.kind=fgsm"], "adversarial.kind"),
                                         (["--set", "resample=batch"], "resample"),
                                         (["--precision", "bf16"], "precision")])
def test_a_finished_run_is_never_reused_for_other_settings(finished, change, key, capsys):
    """--reuse-finished (sweeps, reproduce.py): a finished run stands in only for its own config."""
    before = files(finished)
    for resume in ([], ["--resume"]):
        with pytest.raises(SystemExit) as info:
            run(finished, "--reuse-finished", *resume, *change)
        assert info.value.code == 2
        err = capsys.readouterr().err
        assert f"holds a finished run trained with other settings ({key}: " in err and "--out NEW_DIR" in err
        assert files(finished) == before


@pytest.mark.parametrize("same", [[], ["--device", "cpu"], ["--set", "num_workers=0"], ["--set", "loss_limit=50"],
                                  ["--set", "eval.pgd_steps=3"], ["--data-dir", "/nowhere"]])
def test_a_finished_run_with_the_same_settings_is_reused_untouched(finished, same, capsys):
    before = files(finished)
    assert run(finished, "--reuse-finished", "--resume", *same) == 0
    assert "finished with the same settings; reused" in capsys.readouterr().out
    assert files(finished) == before


def test_a_changed_model_is_refused_even_when_changes_are_allowed(folder, capsys):
    with pytest.raises(SystemExit):
        run(folder, "--epochs", "2", "--resume", "--allow-config-change", "--set", "model_kwargs.channels=16")
    assert "belong to another model" in capsys.readouterr().err


def test_an_allowed_change_is_recorded_and_the_folder_stays_consistent(folder):
    config_before = (folder / "config.yaml").read_bytes()
    assert run(folder, "--epochs", "2", "--resume", "--allow-config-change", "--set", "solver.params.u=1.0") == 0
    assert (folder / "config.yaml").read_bytes() == config_before     # written once, by the start
    (record,) = eio.read_jsonl(folder / "resumes.jsonl")
    assert record["changes"] == {"solver.params.u": [0.5, 1.0]} and record["restarted_fresh"] == ["solver"]
    metrics = eio.read_jsonl(folder / "metrics.jsonl")
    assert [m["epoch"] for m in metrics] == [1, 2]
    assert [m["solver"][0]["params"]["u"] for m in metrics] == [0.5, 1.0]
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["config_changes"] == [{"after_epoch": 1, "changes": {"solver.params.u": [0.5, 1.0]}}]
    best = load_checkpoint(folder / "best.pt")   # best.pt's config and solver agree, whichever epoch won
    u = best["config"]["solver"]["params"]["u"]
    assert best["meta_solver_identity"]["specs"][0]["params"]["u"] == u
    assert summary["solver"] == f"rk2_u(u={u:.4g}; 8 steps)"


def test_a_plain_resume_keeps_config_yaml_and_survives_a_torn_metrics_line(folder):
    config_before = (folder / "config.yaml").read_bytes()
    with open(folder / "metrics.jsonl", "a") as handle:
        handle.write('{"epoch": 2, "train_lo')
    assert run(folder, "--epochs", "2", "--resume") == 0
    assert (folder / "config.yaml").read_bytes() == config_before
    assert [m["epoch"] for m in eio.read_jsonl(folder / "metrics.jsonl")] == [1, 2]
    (record,) = eio.read_jsonl(folder / "resumes.jsonl")
    assert record["changes"] == {} and record["after_epoch"] == 1


def test_a_crash_in_the_first_save_leaves_no_duplicate_line(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    real = train_loop.save_checkpoint

    def crash_on_checkpoint(path, state, **kwargs):
        if Path(path).name == "checkpoint.pt":
            raise KeyboardInterrupt("power cut")
        return real(path, state, **kwargs)

    monkeypatch.setattr(train_loop, "save_checkpoint", crash_on_checkpoint)
    with pytest.raises(KeyboardInterrupt):
        run(out, "--epochs", "1")
    assert len(eio.read_jsonl(out / "metrics.jsonl")) == 1 and not (out / "checkpoint.pt").exists()
    monkeypatch.setattr(train_loop, "save_checkpoint", real)
    with pytest.raises(SystemExit):   # another config cannot take over the interrupted run's folder
        run(out, "--epochs", "1", "--set", "solver.params.u=1.0")
    assert "never finished its first epoch" in capsys.readouterr().err
    assert run(out, "--epochs", "1") == 0   # the same config restarts it
    assert [m["epoch"] for m in eio.read_jsonl(out / "metrics.jsonl")] == [1]


# --------------------------------------------------------------------------- epochs from 1
def test_epochs_count_from_one_in_every_file_and_a_resume_continues_at_k_plus_1(folder, capsys):
    """The folder was stopped after epoch 1 of 2: every file says 1; resumes train 2, then 3."""
    assert [m["epoch"] for m in eio.read_jsonl(folder / "metrics.jsonl")] == [1]
    assert load_checkpoint(folder / "checkpoint.pt")["epoch"] == 1 == load_checkpoint(folder / "best.pt")["epoch"]
    capsys.readouterr()
    assert run(folder, "--epochs", "3", "--resume", "--stop-after", "2") == 0
    out = capsys.readouterr().out
    assert "after epoch 1 with changes epochs: 2 in the run, 3 now" in out and "stopping after epoch 2 as asked" in out
    assert "epoch 2/3: loss" in out and "epoch 1/3" not in out and "epoch 3/3" not in out
    assert load_checkpoint(folder / "checkpoint.pt")["epoch"] == 2
    assert run(folder, "--epochs", "3", "--resume") == 0
    out = capsys.readouterr().out
    metrics = eio.read_jsonl(folder / "metrics.jsonl")
    assert [m["epoch"] for m in metrics] == [1, 2, 3] and "epoch 3/3: loss" in out
    assert [r["after_epoch"] for r in eio.read_jsonl(folder / "resumes.jsonl")] == [1, 2]
    best, summary = load_checkpoint(folder / "best.pt"), train.read_summary(folder / "summary.json")
    first_best = next(m["epoch"] for m in metrics if m["val_acc"] == max(m["val_acc"] for m in metrics))
    assert summary["best_epoch"] == best["epoch"] == first_best and f"best epoch {first_best}: validation" in out
    assert load_checkpoint(folder / "checkpoint.pt")["epoch"] == 3


def as_written_before_epochs_counted_from_one(out):
    """Rewrite a run folder as odezoo wrote it when epochs counted from 0 (sealed, as then)."""
    records = eio.read_jsonl(out / "metrics.jsonl")
    for name in ("metrics.jsonl", "metrics.jsonl.seal"):
        (out / name).unlink()
    for record in records:
        eio.append_jsonl(out / "metrics.jsonl", {**record, "epoch": record["epoch"] - 1})
    for name in ("checkpoint.pt", "best.pt"):
        if (out / name).exists():
            state = load_checkpoint(out / name)
            save_checkpoint(out / name, {**state, "epoch": state["epoch"] - 1})


def test_a_run_folder_counting_epochs_from_0_is_refused_naming_its_log(folder, finished, tmp_path, capsys):
    from odezoo.experiments.plots import plot_training_curves

    as_written_before_epochs_counted_from_one(folder)   # stopped after its first epoch
    as_written_before_epochs_counted_from_one(finished)
    for out, flags in ((folder, ["--epochs", "2", "--resume"]), (finished, ["--reuse-finished"]),
                       (finished, ["--reuse-finished", "--resume"])):
        before = files(out)
        with pytest.raises(SystemExit) as info:
            run(out, *flags)
        assert info.value.code == 2, flags
        err = capsys.readouterr().err
        assert f"{out / 'metrics.jsonl'} counts epochs from 0" in err and "--out NEW_DIR" in err, (flags, err)
        assert files(out) == before
    with pytest.raises(eio.FormatError, match="counts epochs from 0"):
        plot_training_curves(folder / "metrics.jsonl", tmp_path / "curves.png")
    assert not (tmp_path / "curves.png").exists()


def test_a_resume_whose_log_lacks_the_checkpoints_epoch_is_refused(folder, capsys):
    (folder / "metrics.jsonl").unlink()
    (folder / "metrics.jsonl.seal").unlink()
    before = files(folder)
    with pytest.raises(SystemExit):
        run(folder, "--epochs", "2", "--resume")
    assert "records no epoch 1 although" in capsys.readouterr().err and files(folder) == before


def test_an_old_interrupted_first_epoch_is_cleared_by_the_same_config(finished, tmp_path):
    """Leftovers of a first epoch that never reached its checkpoint, logged from 0: the same
    command starts the run again, and its log counts from 1."""
    out = tmp_path / "restart"
    out.mkdir()
    shutil.copy(finished / "config.yaml", out / "config.yaml")
    eio.append_jsonl(out / "metrics.jsonl", {"epoch": 0, "val_acc": 0.1})
    assert run(out) == 0
    assert [m["epoch"] for m in eio.read_jsonl(out / "metrics.jsonl")] == [1]


def test_weights_that_turn_nan_on_an_epochs_last_step_are_never_saved(folder, monkeypatch, capsys):
    before = files(folder)
    real = train_loop.make_optimizer

    def poisoned(cfg, params):
        optimizer = real(cfg, params)

        def last_step_breaks(optimizer, args, kwargs):
            if poisoned.calls == 1:   # the second (last) dry-run step of the epoch: the loss was finite
                with torch.no_grad():
                    optimizer.param_groups[0]["params"][0].fill_(float("nan"))
            poisoned.calls += 1
        optimizer.register_step_post_hook(last_step_breaks)
        return optimizer

    poisoned.calls = 0
    monkeypatch.setattr(train_loop, "make_optimizer", poisoned)
    with pytest.raises(SystemExit) as info:
        run(folder, "--epochs", "2", "--resume")
    assert info.value.code == 3
    err = capsys.readouterr().err
    assert "weights became NaN or inf" in err and "last good checkpoint" in err
    after = files(folder)
    assert after.pop("resumes.jsonl") and after.pop("resumes.jsonl.seal")  # the resume itself is recorded
    assert after == before   # no metrics line, no best.pt, no checkpoint.pt of the NaN epoch


def test_evaluate_refuses_damaged_inconsistent_or_non_finite_checkpoints(folder, capsys):
    best = folder / "best.pt"
    state = load_checkpoint(best)
    args = [str(best), "--attacks", "", "--max-batches", "1", "--out", str(folder / "eval")]

    nan = {**state, "model": {k: v.clone() for k, v in state["model"].items()}}
    next(v for v in nan["model"].values() if v.is_floating_point()).fill_(float("nan"))
    save_checkpoint(best, nan, allow_nonfinite=True)
    with pytest.raises(SystemExit):
        evaluate.main(args)
    assert "non-finite model weights" in capsys.readouterr().err

    other = {**state, "config": {**state["config"], "solver": {**state["config"]["solver"], "params": {"u": 1.0}}}}
    save_checkpoint(best, other)   # a valid digest, but the config's solver is not the one that trained
    with pytest.raises(SystemExit):
        evaluate.main(args)
    assert "inconsistent" in capsys.readouterr().err

    save_checkpoint(best, state)
    data = bytearray(best.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 8] = b"\x00\xff" * 4
    best.write_bytes(bytes(data))
    with pytest.raises(SystemExit):
        evaluate.main(args)
    assert "corrupt" in capsys.readouterr().err
