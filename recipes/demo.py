"""`make demo`: train the MNIST neural ODE on the embedded digits twice — with a fixed
rk2_u solver and with solver smoothing — then compare clean / FGSM / PGD accuracy and
check solver overfitting.  About 5 to 8 minutes on 2 CPU cores; no network needed.

    python recipes/demo.py [--epochs 6] [--out runs/demo/<time>]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
try:  # the recipes extra, checked before anything else: one line that says what to install
    import odezoo.experiments  # noqa: F401
except ImportError as missing:
    raise SystemExit(f"error: {missing}") from None
import evaluate  # noqa: E402
import train  # noqa: E402

from odezoo.experiments.plots import plot_accuracy_vs_eps, plot_training_curves  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

RUNS = [("fixed", "mnist_rk2_fixed.yaml"), ("smoothing", "mnist_rk2_smoothing.yaml")]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--out", default=None)
    p.add_argument("--test-batches", type=int, default=16, help="test batches (of 32) used for the attacks")
    p.add_argument("--dry-run", action="store_true", help="tiny data and one epoch (for CI)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    out = Path(args.out or ROOT / "runs" / "demo" / time.strftime("%Y%m%d-%H%M%S"))
    started = time.time()
    rows = []
    for label, config in RUNS:
        print(f"\n=== training: {label} ({config}) ===", flush=True)
        run_dir = out / label
        flags = ["--config", str(ROOT / "recipes" / "configs" / config), "--out", str(run_dir),
                 "--epochs", str(args.epochs), "--set", f"eval.max_batches={args.test_batches}"]
        if args.quiet:
            flags.append("--quiet")
        train.main(flags + (["--dry-run"] if args.dry_run else []))
        summary = json.loads((run_dir / "summary.json").read_text())
        rows += [{**r, "solver": f"{label}: {r['solver']}"} for r in summary.get("robustness", [])]
        plot_training_curves(run_dir / "metrics.jsonl", run_dir / "training_curves.png", title=f"MNIST, {label}")
        print(f"--- solver grid for {label} (clean accuracy across u and steps) ---", flush=True)
        evaluate.main([str(run_dir / "best.pt"), "--attacks", "", "--solvers", "rk2_u:u=0.25,0.5,0.75,1.0",
                       "--n-steps", "2,4,8", "--max-batches", "2" if args.dry_run else str(2 * args.test_batches),
                       "--out", str(run_dir / "solver_grid")] + (["--quiet"] if args.quiet else []))

    plot_accuracy_vs_eps(rows, out / "accuracy_vs_eps.png", title="MNIST (embedded digits): fixed vs smoothing")
    table = ["| model | attack | eps | accuracy |", "|---|---|---|---|"]
    table += [f"| {r['solver']} | {r['attack']} | {r['eps']:.3g} | {r['accuracy']:.4f} |" for r in rows]
    (out / "results.md").write_text("\n".join(table) + "\n")
    print("\n" + "\n".join(table))
    print(f"\nwrote {out} in {time.time() - started:.0f}s: per run config.yaml, metrics.jsonl, checkpoint.pt, best.pt, "
          f"summary.json, robustness.json/.csv, training_curves.png, solver_grid/; accuracy_vs_eps.png, results.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
