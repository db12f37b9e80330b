"""recipes/reproduce.py: every experiment end to end on tiny data (--dry-run), one protocol per
experiment, shipped data, and the report rebuilt from those files alone."""
import argparse
import csv
import json
import math
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

from odezoo.experiments import report  # noqa: E402
from odezoo.experiments.commands import reproduce  # noqa: E402

pytest.importorskip("torchattacks")


@pytest.fixture(scope="module")
def dry_run_all(tmp_path_factory):
    out = tmp_path_factory.mktemp("reproduce")
    assert reproduce.main(["all", "--dry-run", "--out", str(out), "--device", "cpu"]) == 0
    return out


def read(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize("name", reproduce.EXPERIMENTS)
def test_every_model_of_every_arm_gets_the_same_protocol(dry_run_all, name):
    folder = dry_run_all / "results" / name
    protocol = json.loads((folder / "protocol.json").read_text())
    names = [a["name"] for a in protocol["attacks"]]
    rows = read(folder / "per_seed.csv")
    assert {"experiment", "arm", "seed", "attack", "eps", "n_examples", "accuracy", "train_seconds"} <= set(rows[0])
    models = {(r["arm"], r["seed"]) for r in rows}
    assert {s for _, s in models} == {"0", "1"} and len({a for a, _ in models}) >= 2
    for arm, seed in models:
        mine = [r for r in rows if (r["arm"], r["seed"]) == (arm, seed)]
        assert {r["attack"] for r in mine} == set(names) | {"clean", "worst"}
        assert len({r["test_images"] for r in mine}) == 1
        assert all(0 <= float(r["accuracy"]) <= 1 and float(r["train_seconds"]) > 0 for r in mine)
    for seed in ("0", "1"):  # arms sharing a seed are attacked on the same test images
        assert len({r["test_images"] for r in rows if r["seed"] == seed}) == 1
    aa = [r for r in rows if r["attack"].startswith(("autoattack-standard", "square-"))]
    assert aa and all(int(r["n_examples"]) == 8 for r in aa)  # the query-heavy attacks on the smaller count
    assert all(int(r["n_examples"]) == 16 for r in rows if r["attack"] == "clean")
    summary = (folder / "summary.md").read_text()
    assert "dry run: not a result" in summary and protocol["full_name"] == "strong-v2"
    for attack in names:
        assert f"`{attack}`" in summary
    assert (folder / f"{name}.png").stat().st_size > 1000
    checks = read(folder / "checks.csv")
    assert {r["check"] for r in checks} >= {"gradient-free-weaker", "input-gradients"}
    cross = read(folder / "crosscheck.csv")  # one model per experiment: the reference arm (if run), first seed
    setup = json.loads((folder / "setup.json").read_text())
    labels = [a["label"] for a in setup["arms"]]
    assert {(r["arm"], r["seed"]) for r in cross} == {(setup["reference"] if setup["reference"] in labels
                                                       else labels[0], "0")}
    assert {r["library"] for r in cross} == {"advertorch", "torchattacks", "odezoo", "pyautoattack"}
    assert all(float(r["max_pixel_difference_to_advertorch"]) <= 1e-6 for r in cross if r["check"].startswith("pgd"))


def test_protocol_printed_before_training(tmp_path, capsys):
    reproduce.main(["fig5", "--dry-run", "--out", str(tmp_path), "--device", "cpu"])
    out = capsys.readouterr().out
    assert out.index("Protocol `strong-v2`") < out.index("epoch 1/1")
    assert "autoattack-standard-3it-10q" in out
    assert "= 4 models (in-process: one job at a time)" in out
    done = [line for line in out.splitlines() if line.startswith("[")]
    assert [line.split("]")[0] for line in done] == ["[1/4", "[2/4", "[3/4", "[4/4"]
    assert all("min so far, about" in line and "min left" in line for line in done[:-1])
    assert "left" not in done[-1]


def test_report_from_the_shipped_files_alone(dry_run_all, tmp_path):
    """Copy only the shipped files to a fresh folder (no runs/), rebuild: identical tables."""
    fresh = tmp_path / "results"
    for name in reproduce.EXPERIMENTS:
        src = dry_run_all / "results" / name
        (fresh / name).mkdir(parents=True)
        for file in report.SHIPPED_INPUTS:
            if (src / file).exists():
                shutil.copy(src / file, fresh / name / file)
    page = tmp_path / "results.md"
    page.write_text("# Results\n\nprose\n<!-- generated:start -->\nold\n<!-- generated:end -->\ntail\n")
    assert reproduce.main(["report", "--results", str(fresh), "--page", str(page)]) == 0
    for name in reproduce.EXPERIMENTS:
        assert (fresh / name / "summary.md").read_text() == (dry_run_all / "results" / name / "summary.md").read_text()
        assert (fresh / name / "summary.csv").read_text() == (dry_run_all / "results" / name / "summary.csv").read_text()
        assert (fresh / name / f"{name}.png").exists()
    text = page.read_text()
    assert text.startswith("# Results\n\nprose\n") and text.endswith("tail\n") and "\nold\n" not in text
    for name in reproduce.EXPERIMENTS:
        assert f"![{name}](results/{name}/{name}.png)" in text


def test_tables_are_honest(dry_run_all):
    text = (dry_run_all / "results" / "table1" / "summary.md").read_text()
    assert "Stand-in data" in text and "33.02 ± 1.08" in text and "32.78 ± 0.65" in text
    assert "normal σ=0.0125, drawn per batch" in text  # the distribution, σ and when it was drawn
    assert "MDE" in text and "ratio to `standard`" in text
    assert "deployed-solver-randomized" in text
    fig5 = (dry_run_all / "results" / "fig5" / "summary.md").read_text()
    assert "rk4_u2 1 step" in fig5 and "euler 1 step" in fig5 and "solver steps 4" not in fig5
    fig3b = (dry_run_all / "results" / "fig3b" / "summary.md").read_text()
    assert "**validation** accuracy" in fig3b
    assert {r["split"] for r in read(dry_run_all / "results" / "fig3b" / "per_epoch.csv")} == {"validation"}
    for name in ("fig4", "fig5"):  # accuracy against ε: which arm is best at each ε, and is it established
        assert "#### Best arm at each ε" in (dry_run_all / "results" / name / "summary.md").read_text()
    assert "Best arm" not in text
    setup = json.loads((dry_run_all / "results" / "fig4" / "setup.json").read_text())
    assert setup["stand_in"] and "CIFAR-10" not in setup["data"].replace("(not CIFAR-10)", "")


def test_rerun_reuses_trained_models(dry_run_all, capsys):
    """A rerun starts no job for a finished model, so its progress count and time estimate
    cover only what it runs, and its summary says how many models its wall time covers."""
    reproduce.main(["fig5", "--dry-run", "--out", str(dry_run_all), "--device", "cpu"])
    out = capsys.readouterr().out
    assert "epoch 1/1" not in out
    assert "reusing 4 of 4 models an earlier run finished under this protocol; running 0" in out
    assert not [line for line in out.splitlines() if line.startswith("[")]
    setup = json.loads((dry_run_all / "results" / "fig5" / "setup.json").read_text())
    assert (setup["models"], setup["models_run"]) == (4, 0)
    summary = (dry_run_all / "results" / "fig5" / "summary.md").read_text()
    assert "it ran none of the 4 models: an earlier run had finished them all" in summary


def test_a_dry_run_has_its_own_runs_folder():
    """The real runs' folder never receives a dry run's tiny models (which would then be reused
    as theirs) unless --out sends them there, and then the settings check refuses them."""
    def folder(*argv):
        return reproduce.runs_folder(argparse.Namespace(**{"out": None, "scale": "small", "dry_run": False,
                                                           **dict(argv)}))
    # relative to where the command runs (an installed odezoo has no repository folder to write into)
    assert folder() == Path("runs") / "reproduce" / "small"
    assert folder(("dry_run", True)) == Path("runs") / "reproduce" / "small-dry-run"
    assert folder(("scale", "paper"), ("dry_run", True)) == Path("runs") / "reproduce" / "paper-dry-run"
    assert folder(("out", "/x"), ("dry_run", True)) == Path("/x")


def files(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def test_a_model_trained_with_other_settings_is_never_reused_or_overwritten(dry_run_all, tmp_path, capsys):
    """The class of the defect: a stored model or result stands in for another configuration's
    (a dry run pointed at real runs, a changed recipe).  Every such run fails its job with the
    differences and is left byte for byte as it was; the other runs are reused."""
    out = tmp_path / "out"
    shutil.copytree(dry_run_all / "fig5", out / "fig5")
    runs = out / "fig5" / "runs"
    stale = runs / "euler_1_step_seed1"
    config = stale / "config.yaml"
    for key, value in (("epochs", "epochs: 3"), ("optimizer.lr", "  lr: 0.5"), ("seed", "seed: 7")):
        shutil.copytree(dry_run_all / "fig5" / "runs" / stale.name, stale, dirs_exist_ok=True)
        lines = config.read_text().splitlines()
        head = value.split(":")[0]
        lines = [value if line.split(":")[0] == head else line for line in lines]
        config.write_text("\n".join(lines) + "\n")  # this run was trained with other settings
        before = {run.name: files(run) for run in runs.iterdir() if run.is_dir()}
        args = ["fig5", "--dry-run", "--out", str(out), "--device", "cpu", "--no-checks"]
        assert reproduce.main(args) == 1
        captured = capsys.readouterr()
        text = captured.out + captured.err
        assert "fig5: 1 of 4 models failed; nothing shipped" in text
        assert f"{stale} holds a finished run trained with other settings ({key}: " in text
        assert "epoch 1/1" not in text  # nothing retrained
        after = {run.name: files(run) for run in runs.iterdir() if run.is_dir()}
        assert after[stale.name] == before[stale.name]
        assert reproduce.main(args + ["--collect"]) == 0  # collecting never takes it either
        assert "missing: fig5/euler_1_step_seed1" in capsys.readouterr().out


def test_another_protocol_keeps_the_first_protocols_results(dry_run_all, tmp_path, capsys):
    out = tmp_path / "out"
    shutil.copytree(dry_run_all / "fig5", out / "fig5")
    runs = out / "fig5" / "runs"
    first = {p: p.read_bytes() for p in runs.glob("*/protocol_result*.json")}
    assert len(first) == 4
    assert reproduce.main(["fig5", "--dry-run", "--out", str(out), "--device", "cpu", "--no-checks",
                           "--protocol", "paper"]) == 0
    assert "epoch 1/1" not in capsys.readouterr().out  # the models are reused, only evaluated again
    assert all(p.read_bytes() == data for p, data in first.items())
    assert len(list(runs.glob("*/protocol_result*.json"))) == 8


def test_paper_scale_needs_data(capsys):
    with pytest.raises(SystemExit):
        reproduce.main(["table1", "--scale", "paper"])
    assert "--data-dir" in capsys.readouterr().err


def test_missing_optional_dependency_stops_before_training(monkeypatch, tmp_path):
    real = reproduce.importlib.util.find_spec
    monkeypatch.setattr(reproduce.importlib.util, "find_spec", lambda m: None if m == "torchattacks" else real(m))
    with pytest.raises(SystemExit, match=r"pip install 'odezoo\[attacks\]'"):
        reproduce.main(["table1", "--dry-run", "--out", str(tmp_path), "--device", "cpu"])
    assert not (tmp_path / "table1" / "runs").exists()
    # the paper protocol needs no torchattacks
    monkeypatch.setattr(reproduce.importlib.util, "find_spec", lambda m: None if m == "advertorch" else real(m))
    with pytest.raises(SystemExit, match=r"pip install 'odezoo\[recipes\]'"):
        reproduce.main(["table1", "--dry-run", "--protocol", "paper", "--out", str(tmp_path), "--device", "cpu"])


def test_a_failed_model_ships_nothing_and_a_rerun_does_only_what_is_missing(tmp_path, capsys):
    """Every model is an idempotent job: a failure is reported with the others finished, nothing
    ships; --collect ships what finished and names what is missing; the rerun runs only it."""
    out = tmp_path / "reproduce"
    blocked = out / "fig5" / "runs" / "euler_1_step_seed1"  # a file where the run folder must go
    blocked.parent.mkdir(parents=True)
    blocked.write_text("not a folder")
    args = ["fig5", "--dry-run", "--out", str(out), "--device", "cpu", "--no-checks"]
    assert reproduce.main(args) == 1
    text = capsys.readouterr().out
    assert "fig5: 1 of 4 models failed; nothing shipped" in text
    assert "  fig5/euler_1_step_seed1: " in text
    shipped = out / "results" / "fig5"
    assert not (shipped / "per_seed.csv").exists()

    assert reproduce.main(args + ["--collect"]) == 0
    assert "collecting 3 of 4 models; missing: fig5/euler_1_step_seed1" in capsys.readouterr().out
    assert "**Incomplete.** 1 model(s)" in (shipped / "summary.md").read_text()
    assert "gathered with `--collect`" in (shipped / "summary.md").read_text()  # no wall time of its own
    setup = json.loads((shipped / "setup.json").read_text())
    assert setup["wall_minutes"] is None and setup["launcher"] is None and setup["threads"] is None
    assert "in-process" not in (shipped / "summary.md").read_text()  # the collecting command's launcher, not the models'
    assert len({(r["arm"], r["seed"]) for r in read(shipped / "per_seed.csv")}) == 3
    stamps = {p: p.stat().st_mtime_ns for p in (out / "fig5" / "runs").glob("*/protocol_result*.json")}
    assert len(stamps) == 3

    blocked.unlink()
    assert reproduce.main(args) == 0
    text = capsys.readouterr().out
    assert [line for line in text.splitlines() if line.startswith("--- fig5:")] == ["--- fig5: euler 1 step, seed 1"]
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())
    assert len({(r["arm"], r["seed"]) for r in read(shipped / "per_seed.csv")}) == 4
    assert "Incomplete" not in (shipped / "summary.md").read_text()
    assert "reusing 3 of 4 models an earlier run finished under this protocol; running 1" in text
    assert [line.split(":")[0] for line in text.splitlines() if line.startswith("[")] == ["[1/1] done"]
    summary = (shipped / "summary.md").read_text()
    assert "min, for the 1 of 4 models it ran (" in summary
    assert "the other 3 were finished by an earlier run, reused and not counted in it" in summary


def test_a_seeds_arms_are_queued_side_by_side(tmp_path, monkeypatch):
    """Seed-major order: with parallel jobs, the arms of one seed train at the same time under
    the same load, so the per-seed cost ratios compare like with like."""
    import odezoo.experiments.sweep as sweep

    queued = []

    def fake_run_jobs(jobs, launcher, progress=None):
        queued.extend(job.name for job in jobs)
        return [sweep.Outcome(job.name, "failed", error="not run") for job in jobs]

    monkeypatch.setattr(sweep, "run_jobs", fake_run_jobs)
    assert reproduce.main(["table2", "--dry-run", "--out", str(tmp_path), "--device", "cpu"]) == 1
    assert queued == ["table2/standard_seed0", "table2/smoothing_seed0",
                      "table2/standard_seed1", "table2/smoothing_seed1"]


@pytest.mark.parametrize("setup, expected", [
    ({"job_order": "seed-major", "parallel_jobs": 2}, "queued side by side"),     # 2 arms, 2 jobs
    ({"job_order": "seed-major", "launcher": "local: 2 jobs at once, 1 torch thread each"}, "queued side by side"),
    ({"job_order": "seed-major", "parallel_jobs": 2, "arms": 6}, "each arm trained beside its neighbours"),
    ({"job_order": "seed-major", "launcher": "local: 3 jobs at once"}, "queued side by side"),
    ({"job_order": "seed-major", "launcher": "in-process: one job at a time"}, "one job at a time"),
    ({"job_order": "seed-major", "parallel_jobs": 1}, "one job at a time"),
    ({}, "every seed of one arm queued before the next arm"),
])
def test_the_cost_note_says_which_arms_trained_under_the_same_load(setup, expected):
    arms = [f"arm{i}" for i in range(setup.pop("arms", 2))]
    from odezoo.experiments import report

    assert expected in report._load_note(setup, arms)


def test_a_killed_evaluation_resumes_from_the_attacks_it_finished(tmp_path, capsys, monkeypatch):
    """A job killed during its model's evaluation (the end of a session) keeps the attack × ε it
    finished; the rerun computes only the rest, ships, and leaves no partial file behind."""
    from odezoo.experiments import protocol as pr

    real, state = pr.strong_robustness, {"calls": 0, "killed": False}

    def killed_once_at_the_third(*args, **kwargs):
        state["calls"] += 1
        if state["calls"] == 3 and not state["killed"]:
            state["killed"] = True
            raise RuntimeError("killed")
        return real(*args, **kwargs)

    monkeypatch.setattr(pr, "strong_robustness", killed_once_at_the_third)
    out = tmp_path / "reproduce"
    args = ["fig5", "--dry-run", "--out", str(out), "--device", "cpu", "--no-checks"]
    assert reproduce.main(args) == 1
    partial = list((out / "fig5" / "runs").glob("*/protocol_partial-*.pt"))
    assert len(partial) == 1  # the killed model's two finished attack × ε
    state["calls"] = 0
    assert reproduce.main(args) == 0
    protocol = json.loads((out / "results" / "fig5" / "protocol.json").read_text())
    per_model = len(protocol["attacks"]) * len(protocol["eps"])
    assert state["calls"] == per_model - 2
    assert not list((out / "fig5" / "runs").glob("*/protocol_partial-*"))
    # its evaluation time includes the two attack × ε the killed job spent time on; the others kept none
    kept = {p.parent.name: json.loads(p.read_text())["eval_seconds_kept"]
            for p in (out / "fig5" / "runs").glob("*/protocol_result-*.json")}
    assert len(kept) == 4 and kept.pop(partial[0].parent.name) > 0 and set(kept.values()) == {0.0}
    capsys.readouterr()


def _rows(accuracy):
    """per_seed rows from {(arm, attack, eps): [accuracy per seed]}."""
    return [{"arm": arm, "seed": seed, "attack": attack, "eps": eps, "accuracy": value}
            for (arm, attack, eps), values in accuracy.items() for seed, value in enumerate(values)]


def _protocol(*kinds, eps=(0.1, 0.2)):
    """A protocol stand-in holding real registry attacks (a fake attack would drift from `Attack`)."""
    from odezoo.experiments.attack_registry import Attack

    attacks = [Attack(kind=k, samples=1) if k == "noise" else Attack(kind=k) for k in kinds]
    return argparse.Namespace(attacks=attacks, eps=eps)


def test_best_arm_per_eps_says_whether_the_ranking_is_established():
    from odezoo.experiments import report

    _ranking_section = report._ranking_section
    protocol = _protocol("fgsm", "noise")
    steady = {("a", "fgsm", e): [0.60, 0.62, 0.61] for e in (0.1, 0.2)}
    steady.update({("b", "fgsm", e): [0.50, 0.51, 0.52] for e in (0.1, 0.2)})
    steady.update({(arm, "noise-uniform", e): [0.9, 0.9, 0.9] for arm in "ab" for e in (0.1, 0.2)})
    text = "\n".join(_ranking_section(protocol, _rows(steady), ["a", "b"]))
    assert "* `fgsm`: the best arm is `a` at every ε; its lead over the runner-up lies beyond the 95% " \
           "interval at 2 of 2 ε." in text
    assert "| `fgsm` | 0.1 | a | 61.00 | b (51.00) | +10.00 * |" in text
    assert "noise-uniform" not in text  # a sanity baseline, not an attack to rank arms by
    assert "* `worst`" not in text  # no rows for it

    noisy = {("a", "fgsm", 0.1): [0.70, 0.40, 0.62], ("b", "fgsm", 0.1): [0.50, 0.60, 0.52],
             ("a", "fgsm", 0.2): [0.30, 0.30, 0.30], ("b", "fgsm", 0.2): [0.32, 0.32, 0.33],
             ("c", "fgsm", 0.2): [0.30, 0.30, 0.30]}
    text = "\n".join(_ranking_section(protocol, _rows(noisy), ["a", "b", "c"]))
    assert "the best arm changes with ε: `a` at 0.1; `b` at 0.2; its lead over the runner-up lies beyond the " \
           "95% interval at 1 of 2 ε." in text
    assert "| `fgsm` | 0.1 | a | 57.33 | b (54.00) | +3.33 | ±" in text  # inside its interval: no `*`

    tie = {(arm, "fgsm", e): [0.0, 0.0] for arm in "ab" for e in (0.1, 0.2)}
    tie[("a", "fgsm", 0.1)] = [0.02, 0.03]
    text = "\n".join(_ranking_section(protocol, _rows(tie), ["a", "b"]))
    assert "| `fgsm` | 0.2 | tie: a, b | 0.00 |" in text
    assert "only ε = 0.1 has a single best arm, `a` (1 ε tied)" in text


# ----------------------------------------------------------------------------- experiments as data
def test_every_experiment_is_one_declarative_file_that_loads():
    names = reproduce.experiment_names()
    assert names == reproduce.EXPERIMENTS and len(names) >= 7
    assert sorted(p.stem for p in reproduce.EXPERIMENTS_DIR.glob("*.yaml")) == list(names)
    for name in names:
        experiment = reproduce.load_experiment(name)
        for scale in ("small", "paper"):
            for dry_run in (False, True):
                arms = experiment.arms_for(scale, dry_run, "batch")
                assert arms and len({a.run_name for a in arms}) == len(arms), (name, scale, dry_run)
        assert experiment.reference in {a.label for a in experiment.arms_for("small", False, "batch")} | {None}


def test_the_tables_smoothing_arm_follows_the_flag_and_a_dry_run_shrinks_tracking():
    table = reproduce.load_experiment("table1")
    assert [a.resample for a in table.arms_for("small", False, "epoch")] == ["epoch", "epoch"]
    assert [a.resample for a in table.arms_for("small", False, "batch")] == ["epoch", "batch"]
    fig3b = reproduce.load_experiment("fig3b")
    assert {a.track["max_batches"] for a in fig3b.arms_for("small", False, "batch")} == {8}
    assert {a.track["max_batches"] for a in fig3b.arms_for("small", True, "batch")} == {1}
    assert fig3b.arms_for("small", False, "batch")[0].track["max_batches"] == 8  # the dry run changed a copy


EXAMPLE = """\
title: "MNIST: two u"
data: mnist
eps: [0.3, 8/255]
reference: u=1
x_axis: u
seeds: 3
paper: not in the paper.
arms:
  - {label: u=0.5, solver: {mode: fixed, method: rk2_u, params: {u: 1/2}}}
  - {label: u=1, solver: {mode: fixed, method: rk2_u, params: {u: 1}}, adversarial: {kind: fgsm_random, eps: 8/255}}
dry_run:
  arms: [u=1]
"""


def test_adding_an_experiment_is_one_file(tmp_path):
    (tmp_path / "two_u.yaml").write_text(EXAMPLE)
    assert reproduce.experiment_names(tmp_path) == ("two_u",)
    experiment = reproduce.load_experiment("two_u", tmp_path)
    assert experiment.eps == (0.3, 8 / 255)
    arms = experiment.arms_for("paper", False, "batch")
    assert arms[0].solver["params"] == {"u": 0.5} and arms[1].adversarial["eps"] == 8 / 255
    assert [a.label for a in experiment.arms_for("small", True, "batch")] == ["u=1"]


@pytest.mark.parametrize("change, expected", [
    (("reference: u=1", "reference: u=2"), "the reference arm 'u=2' is not among"),
    (("  arms: [u=1]", "  arms: [u=3]"), "dry_run.arms (small) must name some of the arms"),
    (("label: u=0.5", "label: u=1"), "arm labels repeat"),
    (("seeds: 3", "seeds: 1"), "seeds must be a whole number >= 2"),
    (("title:", "titel:"), "unknown key(s) ['titel']"),
    (("data: mnist", "data: mnist\ndata: cifar"), "the key 'data' appears twice"),
    (("eps: [0.3, 8/255]", "eps: [abc]"), "not a number"),
])
def test_a_bad_experiment_file_is_refused_naming_it(refused_experiment, change, expected):
    refused_experiment(EXAMPLE.replace(*change), expected)


@pytest.mark.parametrize("name", ["fig3a", "fig4"])
def test_a_partial_collect_draws_the_figure_without_the_arms_that_have_no_model_yet(tmp_path, name):
    """`--collect` ships what has finished: arms the setup lists but no model has finished yet
    get no point in the figure (the u-axis and the ε-axis figures), rather than a crash."""
    import csv

    from odezoo.experiments.report import build_report

    folder = tmp_path / name
    shutil.copytree(Path(__file__).resolve().parents[2] / "docs" / "results" / name, folder)
    rows = list(csv.DictReader((folder / "per_seed.csv").open()))
    keep = rows[0]["arm"]
    with (folder / "per_seed.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(r for r in rows if r["arm"] == keep)
    (folder / f"{name}.png").unlink()
    text = build_report(folder, reproduce.experiment(name).paper)
    assert (folder / f"{name}.png").stat().st_size > 1000 and keep in text
