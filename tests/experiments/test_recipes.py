"""End-to-end recipe runs on tiny data (--dry-run): every config, resume, failures, DDP."""
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
RECIPES = ROOT / "recipes"
CONFIGS = sorted((RECIPES / "configs").glob("*.yaml"))

from odezoo.experiments.commands import train  # noqa: E402


def write_fake_cifar10(root: Path, n_train=100, n_test=40):
    """A tiny CIFAR-10 in torchvision's on-disk format (random pixels)."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    per_batch = n_train // 5
    for name, n in [*[(f"data_batch_{i}", per_batch) for i in range(1, 6)], ("test_batch", n_test)]:
        batch = {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), "labels": [int(v) for v in rng.integers(0, 10, n)]}
        with open(folder / name, "wb") as handle:
            pickle.dump(batch, handle)
    with open(folder / "batches.meta", "wb") as handle:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)]}, handle)
    return root


@pytest.fixture
def fake_cifar(tmp_path, monkeypatch):
    import torchvision

    # torchvision checks the real archive's md5 sums; the fake files cannot match them.
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "_check_integrity", lambda self: True)
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *args, **kwargs: True)
    return write_fake_cifar10(tmp_path / "data")


@pytest.mark.parametrize("config", CONFIGS, ids=[c.stem for c in CONFIGS])
def test_every_config_runs_with_dry_run(config, tmp_path, fake_cifar):
    """Each config trains, tests and attacks (every attack of its eval) end to end.  Batches of
    8 rather than the dry run's 16: a CIFAR-10 network's dry run spent 11 s training and 17 s
    attacking of its 34 s on 16 images per batch."""
    text = config.read_text()
    args = ["--config", str(config), "--dry-run", "--batch-size", "8", "--out", str(tmp_path / "run"), "--quiet",
            "--device", "cpu"]
    if "dataset: cifar10" in text or "dataset: mnist\n" in text:
        if "dataset: mnist\n" in text:
            args += ["--set", "dataset=mnist-embedded"]   # no full MNIST offline; same code path after loading
        else:
            args += ["--data-dir", str(fake_cifar)]
    assert train.main(args) == 0
    run = tmp_path / "run"
    summary = json.loads((run / "summary.json").read_text())
    assert 0 <= summary["test_acc"] <= 1
    assert {r["attack"].split("-")[0] for r in summary["robustness"]} >= {"clean", "fgsm", "pgd"}
    assert all(r["n_images"] >= 1 and r["setting"] for r in summary["robustness"])
    assert (run / "robustness.csv").exists() and (run / "config.yaml").exists()
    assert json.loads((run / "solver_history.json").read_text())[0]["solvers"]
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 1
    assert json.loads((run / "metrics.jsonl").read_text())["train_examples"] == 16  # two batches of 8


def run_processes(cmd, env, timeout=300):
    """Run a (torchrun) command.  On a 2-core machine whose cores were busy with experiment
    jobs, a gloo rank died of SIGABRT before its first epoch 3 times in one session (twice in
    one full-suite run, once alone; never reproduced on demand, not even under artificial
    load).  Such a run is retried once; any failure shows the whole output, so a defect that
    repeats still fails and can be read."""
    for attempt in (1, 2):
        result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, cwd=ROOT)
        if result.returncode == 0 or attempt == 2 or "SIGABRT" not in result.stderr \
                or "epoch 1/" in result.stdout:
            break
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-8000:]
    return result


def run_train(tmp_path, *extra, out="run"):
    return train.main(["--config", str(RECIPES / "configs" / "mnist_rk2_smoothing.yaml"), "--dry-run", "--no-eval",
                       "--quiet", "--out", str(tmp_path / out), "--device", "cpu",
                       "--set", "adversarial.kind=fgsm_random", "--set", "adversarial.eps=0.1", *extra])


def test_resume_gives_the_same_final_metrics(tmp_path):
    run_train(tmp_path, "--epochs", "3", out="full")
    run_train(tmp_path, "--epochs", "3", "--stop-after", "1", out="split")
    assert len((tmp_path / "split" / "metrics.jsonl").read_text().splitlines()) == 1
    run_train(tmp_path, "--epochs", "3", "--resume", out="split")
    full = (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()
    split = (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()
    strip = lambda lines: [{k: v for k, v in json.loads(x).items() if k not in ("seconds", "_chain")}  # noqa: E731
                           for x in lines]
    assert strip(full) == strip(split)
    a = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "split" / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_existing_run_is_not_overwritten(tmp_path, capsys):
    run_train(tmp_path)
    with pytest.raises(SystemExit):
        run_train(tmp_path)
    assert "already holds a run" in capsys.readouterr().err


def test_diverging_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, capsys):
    run_train(tmp_path, "--epochs", "1")
    before = (tmp_path / "run" / "checkpoint.pt").read_bytes()
    with pytest.raises(SystemExit) as info:
        run_train(tmp_path, "--epochs", "2", "--resume", "--set", "loss_limit=0.001")
    assert info.value.code == 3
    err = capsys.readouterr().err
    assert "training diverged at epoch 2, batch 1" in err and "checkpoint.pt" in err
    assert (tmp_path / "run" / "checkpoint.pt").read_bytes() == before


def test_corrupt_checkpoint_is_refused(tmp_path, capsys):
    run_train(tmp_path, "--epochs", "1")
    ckpt = tmp_path / "run" / "checkpoint.pt"
    ckpt.write_bytes(b"not a checkpoint")
    with pytest.raises(SystemExit):
        run_train(tmp_path, "--epochs", "2", "--resume")
    assert "is corrupt" in capsys.readouterr().err


def test_missing_dataset_says_what_to_run(tmp_path, capsys):
    with pytest.raises(SystemExit):
        train.main(["--config", str(RECIPES / "configs" / "cifar10_rk2_standard.yaml"), "--dry-run",
                    "--data-dir", str(tmp_path / "empty"), "--out", str(tmp_path / "run"), "--quiet"])
    assert "--download" in capsys.readouterr().err


def test_evaluate_recipe_grid_and_plots(tmp_path):
    from odezoo.experiments.commands import evaluate

    run_train(tmp_path, "--epochs", "1")
    rows = evaluate.main([str(tmp_path / "run" / "best.pt"), "--attacks", "fgsm,pgd", "--eps", "0.1,0.3",
                          "--solvers", "rk2_u:u=0.5,1.0;euler", "--n-steps", "1,2", "--max-batches", "1",
                          "--pgd-steps", "2", "--eot", "2", "--out", str(tmp_path / "eval")])
    solvers = {r["solver"] for r in rows}
    assert len(solvers) == 6 + 1  # 3 methods x 2 step counts + the randomized (EOT) row set
    pgd = "pgd-2x2.5eps/2"  # --pgd-steps 2, the config's "auto" step: every table names the attack in full
    fixed = [r for r in rows if r["method"] != "randomized"]
    assert {(r["attack"], r["eps"]) for r in fixed} == {("clean", 0.0), ("fgsm", 0.1), ("fgsm", 0.3), (pgd, 0.1),
                                                        (pgd, 0.3), ("worst", 0.1), ("worst", 0.3)}
    eot = {r["attack"] for r in rows if r["method"] == "randomized"}
    assert eot == {"clean", "fgsm-eot2", f"{pgd}-eot2", "worst"}  # the randomized solver, attacked with EOT
    assert all(r["n_images"] == 16 for r in rows)  # the one results schema: every accuracy with its images
    assert all(r["ci_low"] <= r["accuracy"] <= r["ci_high"] for r in rows)
    for name in ("results.json", "results.csv", "accuracy_vs_eps.png", "solver_grid.png", "accuracy_vs_u.png"):
        assert (tmp_path / "eval" / name).stat().st_size > 0


def test_demo_dry_run(tmp_path):
    from odezoo.experiments.commands import demo

    assert demo.main(["--dry-run", "--epochs", "1", "--threads", "1", "--out", str(tmp_path / "demo")]) == 0
    table = (tmp_path / "demo" / "results.md").read_text()
    assert "fixed" in table and "smoothing" in table and "pgd" in table and "(32 images)" in table
    assert (tmp_path / "demo" / "accuracy_vs_eps.png").exists()


def test_the_demo_ends_with_one_sentence_on_what_it_shows_and_how_sure_it_is():
    from odezoo.experiments.commands.demo import conclusion
    from odezoo.experiments.results import schema_row

    def row(model, eps, acc):
        return schema_row(model=model, solver="rk2_u", attack="pgd-10x2.5eps/10", eps=eps, n_images=256, accuracy=acc)
    rows = [row("fixed", 0.1, 0.50), row("smoothing", 0.1, 0.53), row("fixed", 0.3, 0.0), row("smoothing", 0.3, 0.01)]
    text = conclusion(rows, 3)
    assert text.count(".") >= 1 and "\n" not in text
    assert "one training seed" in text and "256 test digits" in text and "ε=0.1" in text  # the informative ε
    assert "3.0 points higher" in text and "intervals overlap" in text and "cannot tell" in text
    far = [row("fixed", 0.1, 0.30), row("smoothing", 0.1, 0.70)]
    assert "do not overlap, but with one training seed this is not yet evidence" in conclusion(far, 3)
    clean = [schema_row(model=m, solver="rk2_u", attack="clean", eps=0, n_images=256, accuracy=a)
             for m, a in (("fixed", 0.84), ("smoothing", 0.826))]
    same = [row("fixed", 0.1, 0.5), row("smoothing", 0.1, 0.5)]
    text = conclusion(clean + same, 2)
    assert "(2 epochs, clean accuracy 84% and 83%)" in text and "is the same as the fixed-solver model's" in text


def test_every_recipe_has_a_dry_run(tmp_path):
    from odezoo.experiments.commands import evaluate

    run_train(tmp_path, "--epochs", "1")
    rows = evaluate.main([str(tmp_path / "run" / "best.pt"), "--dry-run", "--out", str(tmp_path / "eval")])
    assert {r["attack"] for r in rows} == {"clean", "fgsm", "pgd-2x2.5eps/2", "worst"}
    assert len({r["eps"] for r in rows}) == 2
    for script in sorted(RECIPES.glob("*.py")):
        result = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=120)
        assert result.returncode == 0 and "--dry-run" in result.stdout, script.name


def test_evaluate_runs_every_named_attack_autoattack_included(tmp_path, capsys):
    from odezoo.experiments.commands import evaluate

    pytest.importorskip("torchattacks")
    run_train(tmp_path, "--epochs", "1")
    best = str(tmp_path / "run" / "best.pt")
    rows = evaluate.main([best, "--attacks", "autoattack,pgd-50x2.5eps/50-5r,noise-uniform-8draws", "--eps", "0.1",
                          "--dry-run", "--out", str(tmp_path / "eval")])
    # --dry-run cuts every attack by the registry's one rule (Attack.shrunk), and the name says so
    assert {r["attack"] for r in rows} == {"clean", "autoattack-standard-3it-10q", "pgd-3x2.5eps/3-2r",
                                           "noise-uniform-2draws", "worst"}
    out = capsys.readouterr().out
    assert "Protocol" in out and "APGD-CE → APGD-T" in out and "trained with rk2_u(8 steps)" in out
    rows = evaluate.main([best, "--protocol", "strong-fast", "--eps", "0.1", "--dry-run", "--quiet",
                          "--out", str(tmp_path / "eval2")])
    assert {"autoattack-fast-3it", "square-10q"} <= {r["attack"] for r in rows}
    with pytest.raises(SystemExit):
        evaluate.main([best, "--attacks", "autoatack", "--out", str(tmp_path / "eval3")])
    assert "did you mean 'autoattack'" in capsys.readouterr().err


def epoch_loss_args(out, world):
    """One epoch on 64 digits with lr 1e-30 (the weights stay put), so the logged epoch loss
    is the mean loss of the initial model over every training digit, however they are batched."""
    batch = 32 // world  # the same global batch size
    return ["--config", str(RECIPES / "configs" / "mnist_rk2_fixed.yaml"), "--epochs", "1",
            "--batch-size", str(batch), "--set", "subset=64", "--set", "optimizer.lr=1e-30", "--set", "schedule=null",
            "--set", "solver.n_steps=2", "--no-eval", "--quiet", "--device", "cpu", "--out", str(out)]


def torchrun(world: int, script: str) -> list[str]:
    return [str(Path(sys.executable).parent / "torchrun"), "--standalone", f"--nproc_per_node={world}",
            str(RECIPES / script)]


def test_ddp_logs_global_metrics_equal_to_one_process(tmp_path, capsys):
    """The one-process run is this process (one thread, as each rank), the two-process run torchrun."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    logs = {}
    for world in (1, 2):
        args = epoch_loss_args(tmp_path / f"w{world}", world)
        if world == 1:
            assert train.main(args) == 0
            stdout = capsys.readouterr().out
        else:
            stdout = run_processes(torchrun(world, "train.py") + args, env).stdout
        logs[world] = json.loads((tmp_path / f"w{world}" / "metrics.jsonl").read_text().splitlines()[0])
        assert f"batch {32 // world} per rank, 32 global" in stdout
        summary = json.loads((tmp_path / f"w{world}" / "summary.json").read_text())
        assert summary["global_batch_size"] == 32 and summary["batch_size_per_rank"] == 32 // world
    assert logs[1]["train_examples"] == logs[2]["train_examples"] == 64 and logs[2]["world_size"] == 2
    assert logs[2]["train_loss"] == pytest.approx(logs[1]["train_loss"], rel=1e-5)
    assert logs[2]["train_acc"] == logs[1]["train_acc"]
    assert logs[2]["val_acc"] == logs[1]["val_acc"]  # rank 0 validates on the whole split


def test_bf16_training_keeps_the_ode_state_float32(tmp_path):
    from odezoo import ODEBlock, SolverSpec
    from odezoo.experiments.models import MnistODEFunc

    block = ODEBlock(MnistODEFunc(8), SolverSpec("rk2_u", n_steps=2))
    x = torch.randn(2, 8, 6, 6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert block.func(torch.tensor(0.0), x).dtype == torch.bfloat16  # the function runs in bf16 ...
        assert block(x).dtype == torch.float32                            # ... the state sums stay float32
    run_train(tmp_path, "--precision", "bf16")
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["precision"] == "bf16"


def test_resumed_ddp_run_continues_exactly(tmp_path):
    """2 gloo processes, FGSM-random adversarial training (per-rank random starts) and a solver
    drawn per batch: 2 epochs straight, and 1 epoch + --resume, give the same metrics and the
    same weights, bit for bit — every rank restores its own RNG state.  The straight run's ranks
    agree on the final weights (checked by gathering them)."""
    import torch

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    base = [str(Path(sys.executable).parent / "torchrun"), "--standalone", "--nproc_per_node=2",
            str(RECIPES / "train.py"), "--config", str(RECIPES / "configs" / "mnist_rk2_smoothing.yaml"),
            "--epochs", "2", "--batch-size", "16", "--set", "subset=64", "--set", "solver.n_steps=2",
            "--set", "adversarial={kind: fgsm_random, eps: 0.3}", "--resample", "batch", "--no-eval", "--quiet",
            "--device", "cpu"]
    straight = run_processes(base + ["--out", str(tmp_path / "straight")], env)
    summary = json.loads((tmp_path / "straight" / "summary.json").read_text())
    assert summary["ddp_world_size"] == 2 and summary["ddp_weights_agree"] is True
    assert "2 ranks agree" in straight.stdout
    for extra in (["--out", str(tmp_path / "split"), "--stop-after", "1"], ["--out", str(tmp_path / "split"), "--resume"]):
        result = run_processes(base + extra, env)
    assert "resumed from" in result.stdout and "after epoch 1" in result.stdout

    def metrics(name):
        lines = (tmp_path / name / "metrics.jsonl").read_text().splitlines()
        return [{k: v for k, v in json.loads(line).items() if k not in ("seconds", "time", "_chain")}
                for line in lines]

    assert len(metrics("straight")) == 2 and metrics("split") == metrics("straight")
    a = torch.load(tmp_path / "straight" / "checkpoint.pt", weights_only=False)["model"]
    b = torch.load(tmp_path / "split" / "checkpoint.pt", weights_only=False)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_sharded_evaluation_over_two_processes_equals_one_process(tmp_path):
    """torchrun evaluate.py with 2 gloo processes: each attacks every other batch with the
    random starts that batch has in one process (here: this process, one thread as each rank);
    the gathered results are the same."""
    from odezoo.experiments.commands import evaluate

    run_train(tmp_path, "--epochs", "1")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = [str(tmp_path / "run" / "best.pt"), "--attacks", "fgsm,pgd,noise-uniform-8draws", "--pgd-steps", "1",
            "--eps", "0.3,0.6", "--max-batches", "3", "--batch-size", "8", "--quiet", "--device", "cpu"]
    evaluate.main(args + ["--out", str(tmp_path / "eval1")])
    result = run_processes(torchrun(2, "evaluate.py") + args + ["--out", str(tmp_path / "eval2")], env)
    results = {world: json.loads((tmp_path / f"eval{world}" / "results.json").read_text()) for world in (1, 2)}
    assert "sharded over 2 processes" in result.stdout
    assert len(results[1]) == 1 + 2 * 4 and all(r["n_images"] == 24 for r in results[1])
    assert results[2] == results[1]
