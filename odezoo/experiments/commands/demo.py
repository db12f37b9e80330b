"""``odezoo demo`` (``make demo``): train the MNIST neural ODE on the embedded digits twice —
with a fixed rk2_u solver and with solver smoothing — then compare clean, FGSM and PGD accuracy
on the same test images and check solver overfitting on a grid of solvers (clean accuracy on
those images).

    odezoo demo              # the default budget: 2 epochs, 192 attacked images (README: measured times)
    odezoo demo --long       # 8 epochs per model and 512 attacked images: about 3 times as long

Six phases (train, attack, solver grid — for each model); after each one the demo prints how
long it took, the time so far and an estimate of the time left for the whole demo, from what
it has measured on this machine.  It ends with one plain sentence on what its table shows and
how sure it is.  No network is needed.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

from odezoo.experiments.commands import evaluate, train
from odezoo.experiments.config import fail
from odezoo.experiments.io import RunFolderBusy, read_jsonl, run_folder_lock, save_csv, save_json
from odezoo.experiments.plots import plot_accuracy_vs_eps, plot_training_curves
from odezoo.experiments.results import format_table

CONFIGS = Path(__file__).resolve().parents[3] / "recipes" / "configs"
RUNS = (("fixed", "mnist_rk2_fixed.yaml"), ("smoothing", "mnist_rk2_smoothing.yaml"))
#: (epochs, test batches of 32 attacked) by default and with --long.  The default keeps `make demo`
#: (set-up included) well inside 10 minutes on 2 cores at a load of 3: training is two thirds of
#: the demo's time, the attacks a quarter (README: the measured times, phase by phase).
DEFAULT_BUDGET, LONG_BUDGET = (2, 6), (8, 16)
BATCH = 32
EPS = (0.1, 0.3)
ATTACKS = "fgsm,pgd"
GRID = "rk2_u:u=0.25,0.5,0.75,1.0"
GRID_STEPS = "2,4,8"
#: the training images of one epoch (the embedded digits' training split)
TRAIN_IMAGES = 3500
#: image passes relative to one training pass of one image, used before a phase has been timed:
#: an attacked image costs one clean pass plus, per ε, one FGSM and 10 PGD gradient passes;
#: a solver-grid image costs one forward pass (about a third of a training pass) per solver,
#: at 2/4/8 steps against training's 8.
ATTACK_PASSES = 1 + len(EPS) * (1 + 10)
GRID_PASSES = 4 * (2 + 4 + 8) / 8 / 3


def main(argv=None) -> int:
    """``odezoo demo ARGV`` as a function (argv: the flags, without ``demo``)."""
    from odezoo_cli import parse

    return run(parse("demo", argv))


def idle_threads() -> int:
    """Torch threads for a machine others may be using: the cores the 1-minute load average
    leaves idle, at least one.  On 2 cores at a load of 5, two threads made a training epoch
    take over 9 minutes (the threads wait on each other); one thread took about a minute."""
    cores = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except (OSError, AttributeError):
        return cores
    return max(1, min(cores, cores - int(load + 0.5)))


def _minutes(seconds: float) -> str:
    seconds = max(0, round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s"


class Clock:
    """The demo's phases with their estimated costs; the estimates are rescaled from what has
    been measured (seconds per training epoch, per attacked image, per grid image)."""

    def __init__(self, epochs: int, attacked: int, grid_images: int):
        self.started = time.time()
        self.epochs, self.attacked, self.grid_images = epochs, attacked, grid_images
        self.epoch_seconds = None    # measured on the first model
        self.attack_seconds = None
        self.grid_seconds = None
        self.phases = [(label, kind) for label, _ in RUNS for kind in ("train", "attack", "grid")]
        self.done = 0

    def estimate(self, kind: str) -> float:
        epoch = self.epoch_seconds or 20.0  # an idle 2-core machine, until the first model is trained
        if kind == "train":
            return epoch * self.epochs + 8
        if kind == "attack":
            return self.attack_seconds or epoch * self.attacked * ATTACK_PASSES / TRAIN_IMAGES + 3
        return self.grid_seconds or epoch * self.grid_images * GRID_PASSES / TRAIN_IMAGES + 3

    def start(self, label: str, kind: str, what: str) -> float:
        left = sum(self.estimate(k) for _, k in self.phases[self.done:])
        print(f"\n=== phase {self.done + 1}/{len(self.phases)}: {what} — {_minutes(time.time() - self.started)} so "
              f"far, about {_minutes(left)} left for the whole demo ===", flush=True)
        return time.time()

    def finish(self, kind: str, began: float, epoch_seconds: float | None = None) -> None:
        seconds = time.time() - began
        if kind == "train" and self.epoch_seconds is None and epoch_seconds:
            self.epoch_seconds = epoch_seconds
        elif kind == "attack" and self.attack_seconds is None:
            self.attack_seconds = seconds
        elif kind == "grid" and self.grid_seconds is None:
            self.grid_seconds = seconds
        self.done += 1
        left = sum(self.estimate(k) for _, k in self.phases[self.done:])
        tail = f", about {_minutes(left)} left" if self.done < len(self.phases) else ""
        print(f"--- phase {self.done}/{len(self.phases)} done in {_minutes(seconds)} "
              f"({_minutes(time.time() - self.started)} so far{tail})", flush=True)


def conclusion(rows: list[dict], epochs: int) -> str:
    """One plain sentence: what the table shows (smoothing vs fixed under PGD, at the ε where the
    fixed model's accuracy is farthest from 0 and 1, so the comparison can show something) and
    how sure it is (one seed, how long and how well the models were trained, the number of
    images, the 95% intervals)."""
    pgd = [r for r in rows if r["attack"].startswith("pgd")]
    by_eps = {e: {r["model"]: r for r in pgd if r["eps"] == e} for e in sorted({r["eps"] for r in pgd})}
    usable = {e: p for e, p in by_eps.items() if "fixed" in p and "smoothing" in p}
    if not usable:
        return "The table lists each model's accuracy with its image count and 95% interval."
    largest = max(usable, key=lambda e: (min(usable[e]["fixed"]["accuracy"], 1 - usable[e]["fixed"]["accuracy"]), e))
    fixed, smooth = usable[largest]["fixed"], usable[largest]["smoothing"]
    diff = 100 * (smooth["accuracy"] - fixed["accuracy"])
    half = 100 * max(fixed["ci_high"] - fixed["ci_low"], smooth["ci_high"] - smooth["ci_low"]) / 2
    overlap = not (fixed["ci_high"] < smooth["ci_low"] or smooth["ci_high"] < fixed["ci_low"])
    verdict = ("the two 95% intervals overlap, so this run cannot tell whether smoothing helps" if overlap else
               "the 95% intervals over the images do not overlap, but with one training seed this is not yet "
               "evidence that smoothing helps")
    direction = "higher" if diff > 0 else "lower"
    compared = f"{abs(diff):.1f} points {direction} than" if round(diff, 1) else "the same as"
    clean = {r["model"]: r["accuracy"] for r in rows if r["attack"] == "clean"}
    trained = f"{epochs} epochs"
    if "fixed" in clean and "smoothing" in clean:
        trained += f", clean accuracy {100 * clean['fixed']:.0f}% and {100 * clean['smoothing']:.0f}%"
    return (f"With one training seed each ({trained}) and the same {fixed['n_images']:,} test digits, the "
            f"solver-smoothing model's PGD accuracy at ε={largest:g} is {compared} the fixed-solver model's "
            f"(each ±{half:.0f} points at 95% over the images); {verdict} — the paper's comparison needs several "
            f"seeds (odezoo reproduce table1).")


def run(args) -> int:
    """Carry out ``odezoo demo`` with parsed ``args``."""
    epochs, batches = LONG_BUDGET if args.long else DEFAULT_BUDGET
    epochs = args.epochs or epochs
    batches = args.max_batches or batches
    if args.dry_run:
        epochs, batches = 1, 1
    out = Path(args.out or Path("runs") / "demo" / time.strftime("%Y%m%d-%H%M%S"))
    import torch

    threads = args.threads or idle_threads()
    torch.set_num_threads(threads)
    print(f"torch uses {threads} thread{'s' if threads > 1 else ''} ({os.cpu_count()} cores, load "
          f"{os.getloadavg()[0]:.1f}; --threads N to choose)", flush=True)
    try:
        with run_folder_lock(out, "odezoo demo"):
            return _demo(args, out, epochs, batches)
    except RunFolderBusy as busy:
        fail(str(busy))


def _demo(args, out: Path, epochs: int, batches: int) -> int:
    attacked = batches * BATCH
    clock = Clock(epochs, attacked, attacked)
    print(f"odezoo demo: 2 models × {epochs} epochs on the 3,500 embedded MNIST training digits, then clean, FGSM "
          f"and PGD at ε {', '.join(f'{e:g}' for e in EPS)} on the same {attacked:,} test digits, and a solver grid "
          f"on them. Output: {out}"
          + ("" if args.long or args.dry_run else "\nThe longer version: odezoo demo --long (8 epochs, 512 attacked "
                                                  "digits) or make demo DEMO_FLAGS=--long."), flush=True)
    quiet = ["--quiet"] if args.quiet else []
    rows = []
    for label, config in RUNS:
        run_dir = out / label
        began = clock.start(label, "train", f"training the {label}-solver model ({config}, {epochs} epochs)")
        train.main(["--config", str(CONFIGS / config), "--out", str(run_dir), "--epochs", str(epochs), "--no-eval",
                    *quiet, *(["--dry-run"] if args.dry_run else [])])
        seconds = [r["seconds"] for r in read_jsonl(run_dir / "metrics.jsonl")]
        clock.finish("train", began, sum(seconds) / len(seconds) if seconds else None)
        plot_training_curves(run_dir / "metrics.jsonl", run_dir / "training_curves.png", title=f"MNIST, {label}")

        began = clock.start(label, "attack", f"clean, FGSM and PGD accuracy of the {label}-solver model")
        result = evaluate.main([str(run_dir / "best.pt"), "--attacks", ATTACKS, "--eps", ",".join(map(str, EPS)),
                                "--max-batches", str(batches), "--batch-size", str(BATCH), "--out",
                                str(run_dir / "eval"), "--quiet", *(["--dry-run"] if args.dry_run else [])])
        rows += [{**r, "model": label} for r in result]
        clock.finish("attack", began)

        began = clock.start(label, "grid", f"solver grid of the {label}-solver model (clean accuracy across u and "
                                           f"steps: does it work only with its training solver?)")
        evaluate.main([str(run_dir / "best.pt"), "--attacks", "", "--solvers", GRID, "--n-steps", GRID_STEPS,
                       "--max-batches", str(batches), "--batch-size", str(BATCH), "--out",
                       str(run_dir / "solver_grid"), "--quiet"])
        clock.finish("grid", began)

    plot_accuracy_vs_eps([{**r, "solver": f"{r['model']}: {r['solver']}"} for r in rows], out / "accuracy_vs_eps.png", title="MNIST (embedded digits): fixed vs smoothing")
    save_json(out / "results.json", rows)
    save_csv(out / "results.csv", rows)
    table = format_table(rows)
    sentence = conclusion(rows, epochs)
    (out / "results.md").write_text(table + "\n\n" + sentence + "\n", encoding="utf-8")
    print("\n" + table + "\n\n" + sentence)
    print(f"\nwrote {out} in {_minutes(time.time() - clock.started)}: results.md/.csv/.json, accuracy_vs_eps.png; "
          f"per model a run folder (config.yaml, metrics.jsonl, best.pt, summary.json, training_curves.png), "
          f"eval/ and solver_grid/ (solver_grid.png)."
          + ("" if args.long else " The longer version: odezoo demo --long."), flush=True)
    return 0
