"""Evaluate a trained model across solvers and step counts, clean and under attack.

    python recipes/evaluate.py runs/<run>/best.pt --attacks fgsm,pgd --eps 0.1,0.2,0.3 \\
           --solvers "rk2_u:u=0.25,0.5,1.0;rk4_u2:u=1/3" --n-steps 1,2,4,8

Without --solvers the model is evaluated with its training (evaluation) solver only.  A
grid of solvers is the paper's solver-overfitting check: a model that only works with the
solver it was trained with shows up as one bright cell in solver_grid.png.

Writes to --out (default <run>/eval): results.json and results.csv (solver × attack × eps →
accuracy, with clean accuracy as attack "clean"), accuracy_vs_eps.png, and for a grid
solver_grid.png and accuracy_vs_<param>.png.
"""
from __future__ import annotations

import argparse
import difflib
from pathlib import Path

import torch

from odezoo import using_solver
from odezoo.experiments.attacks import ATTACKS
from odezoo.experiments.config import (ConfigError, fail, meta_solver_from_config, non_negative_int, parse_number_list,
                                       parse_solver_grid, positive_int, validate_config)
from odezoo.experiments.data import get_datasets, make_loaders
from odezoo.experiments.evaluation import robustness_rows
from odezoo.experiments.io import CheckpointError, load_checkpoint, save_csv, save_json
from odezoo.experiments.models import build_model
from odezoo.experiments.plots import plot_accuracy_vs_eps, plot_accuracy_vs_param, plot_solver_grid, solver_label
from odezoo.experiments.training import resolve_device


def flag(check):
    """An argparse type from a config check, so a flag gets the config's message."""
    def convert(text):
        try:
            return check(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None
    convert.__name__ = check.__name__
    return convert


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="best.pt or checkpoint.pt written by recipes/train.py")
    p.add_argument("--attacks", default="fgsm,pgd", help="comma list of fgsm, pgd (empty: clean only)")
    p.add_argument("--eps", default=None, help="comma list in pixel units, fractions allowed (default: the config's)")
    p.add_argument("--solvers", default=None, help='e.g. "rk2_u:u=0.25,0.5,1.0;rk4_u2:u=1/3;euler"')
    p.add_argument("--n-steps", default=None, help="comma list of step counts for --solvers (default: training's)")
    p.add_argument("--pgd-steps", type=flag(positive_int), default=None)
    p.add_argument("--pgd-step-size", default=None, help='pixel units, e.g. 2/255, or "auto" = 2.5·eps/steps')
    p.add_argument("--pgd-restarts", type=flag(positive_int), default=1)
    p.add_argument("--eot", type=flag(non_negative_int), default=0,
                   help="also attack the randomized training solver with expectation over N solver draws")
    p.add_argument("--max-batches", type=flag(positive_int), default=None,
                   help="evaluate only the first N test batches")
    p.add_argument("--batch-size", type=flag(positive_int), default=None)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default=None)
    p.add_argument("--seed", type=flag(non_negative_int), default=0)
    p.add_argument("--dry-run", action="store_true",
                   help="one test batch, the first eps, 2 PGD steps: checks the whole path in seconds (for CI)")
    args = p.parse_args(argv)
    if args.dry_run:
        args.max_batches, args.pgd_steps = 1, 2
    return args


def evaluate_specs(model, loader, specs, attacks, eps, pgd, device, max_batches, seed):
    """Rows for every solver in ``specs``, each forced into all ODE blocks of ``model``."""
    rows = []
    for spec in specs:
        torch.manual_seed(seed)
        with using_solver(model, spec):
            new = robustness_rows(model, loader, spec.label(), attacks, eps, device=device, max_batches=max_batches,
                                  **pgd)
        rows += [{**r, "method": spec.method, "params": dict(spec.params), "n_steps": spec.n_steps} for r in new]
        print(f"  {spec.label():<40} " + "  ".join(
            f"{r['attack']}{'' if r['attack'] == 'clean' else '@%.3g' % r['eps']} {r['accuracy']:.4f}" for r in new),
            flush=True)
    return rows


def main(argv=None):
    args = parse_args(argv)
    try:
        state = load_checkpoint(args.checkpoint)
    except CheckpointError as error:
        fail(str(error))
    try:
        cfg = validate_config(state["config"], where=f"in {args.checkpoint}")
        meta = meta_solver_from_config(cfg["solver"], seed=cfg["seed"])
    except ConfigError as error:
        fail(str(error))
    saved_identity = state.get("meta_solver_identity") or (state.get("meta_solver") or {}).get("identity")
    if saved_identity is not None and saved_identity != meta.identity():
        fail(f"{args.checkpoint}: the solver its config describes ({meta.describe()}) is not the one the model was "
             f"trained with ({saved_identity}); the checkpoint is inconsistent. Evaluate another checkpoint of the run.")
    try:
        device = resolve_device(args.device)
    except ValueError as error:
        fail(str(error))
    ev = cfg["eval"]
    attacks = tuple(a.strip() for a in args.attacks.split(",") if a.strip())
    unknown = [a for a in attacks if a not in ATTACKS]
    if unknown:
        close = difflib.get_close_matches(unknown[0], ATTACKS, n=1)
        fail(f"--attacks: unknown attack {unknown[0]!r}{f' (did you mean {close[0]!r}?)' if close else ''}; "
             f"choose from {', '.join(ATTACKS)} (empty: clean accuracy only)")
    try:
        eps = parse_number_list(args.eps) if args.eps is not None else list(ev["eps"])
    except ValueError as error:
        fail(f"--eps: {error}")
    if any(e < 0 for e in eps) or (attacks and not eps):
        fail(f"--eps: give one or more eps >= 0 in pixel units (e.g. 0.1,0.3 or 8/255), got {args.eps!r}")
    if args.dry_run:
        eps = eps[:1]
    step = args.pgd_step_size if args.pgd_step_size is not None else ev["pgd_step_size"]
    try:
        step = step if step == "auto" else parse_number_list(str(step))[0]
        if step != "auto" and step <= 0:
            raise ValueError(f"must be positive, got {step!r}")
    except (ValueError, IndexError) as error:
        fail(f"--pgd-step-size: {error} (a number in pixel units such as 2/255, or auto)")
    pgd = {"pgd_steps": args.pgd_steps if args.pgd_steps is not None else ev["pgd_steps"],
           "restarts": args.pgd_restarts, "pgd_step_size": step}

    model = build_model(cfg["model"], meta, **cfg.get("model_kwargs", {})).to(device)
    model.load_state_dict(state["model"])
    model.eval()
    try:
        splits = get_datasets(cfg["dataset"], data_dir=args.data_dir if args.data_dir is not None else
                              cfg.get("data_dir"), seed=cfg["seed"])
    except (FileNotFoundError, ValueError) as error:
        fail(str(error))
    batch_size = args.batch_size if args.batch_size is not None else cfg["batch_size"]
    _, _, test_loader = make_loaders(splits, batch_size=batch_size, seed=cfg["seed"], subset=cfg.get("subset"))

    train_spec = meta.eval_spec or (meta.current if meta.mode != "ensemble" else None)
    if args.solvers:
        default_steps = [train_spec.n_steps] if train_spec is not None and train_spec.n_steps else [8]
        try:
            steps = [positive_int(n) for n in parse_number_list(args.n_steps, integer=True)] \
                if args.n_steps is not None else default_steps
        except ValueError as error:
            fail(f"--n-steps: {error} (step counts are whole numbers >= 1, e.g. 1,2,4,8)")
        try:
            specs = parse_solver_grid(args.solvers, steps)
        except ValueError as error:
            fail(f"--solvers: {error}")
    else:
        specs = [train_spec] if train_spec is not None else []

    out = Path(args.out or Path(args.checkpoint).parent / "eval")
    out.mkdir(parents=True, exist_ok=True)
    print(f"evaluating {args.checkpoint} (trained with {meta.describe()}) on {len(specs)} solver(s); "
          f"attacks {attacks or 'none'} at eps {eps}")
    rows = evaluate_specs(model, test_loader, specs, attacks, eps, pgd, device, args.max_batches,
                          args.seed) if specs else []
    if meta.mode == "ensemble":
        rows += [{**r, "method": "ensemble", "params": {}, "n_steps": None} for r in robustness_rows(
            model, test_loader, f"ensemble: {meta.describe()}", attacks, eps, device=device,
            max_batches=args.max_batches, **pgd)]
    if args.eot and meta.randomized:
        label = f"randomized {meta.mode} (EOT {args.eot})"
        rows += [{**r, "method": "randomized", "params": {}, "n_steps": None} for r in robustness_rows(
            model, test_loader, label, attacks, eps, device=device, max_batches=args.max_batches,
            eot_samples=args.eot, before_batch=meta.resample, **pgd)]

    save_json(out / "results.json", rows)
    save_csv(out / "results.csv", [{**r, "params": ";".join(f"{k}={v:.6g}" for k, v in r["params"].items())}
                                    for r in rows])
    plot_accuracy_vs_eps(rows, out / "accuracy_vs_eps.png", title=f"{cfg['name']}: accuracy vs ε")
    if len(specs) > 1:
        train_cell = None
        if train_spec is not None:
            train_cell = (solver_label({"solver": "", "method": train_spec.method, "params": train_spec.params}),
                          train_spec.n_steps)
        attack = "pgd" if "pgd" in attacks else (attacks[0] if attacks else "clean")
        plot_solver_grid(rows, out / "solver_grid.png", attack=attack, eps=max(eps) if eps else None,
                         train_solver=train_cell)
        params = sorted({p for s in specs for p in s.params})
        for param in params:
            plot_accuracy_vs_param(rows, out / f"accuracy_vs_{param}.png", param=param)
    print(f"wrote {out}/results.json, results.csv and plots")
    return rows


if __name__ == "__main__":
    main()
