"""``odezoo evaluate``: a trained model across solvers and step counts, clean and under attack.

    odezoo evaluate runs/<run>/best.pt --attacks fgsm,pgd --eps 0.1,0.2,0.3 \\
           --solvers "rk2_u:u=0.25,0.5,1.0;rk4_u2:u=1/3" --n-steps 1,2,4,8
    odezoo evaluate runs/<run>/best.pt --attacks autoattack-standard,pgd-50x2.5eps/50-5r --eps 0.1
    odezoo evaluate runs/<run>/best.pt --protocol strong --eps 0.1,0.3

Attacks are named as every table names them (odezoo.experiments.protocol): fgsm,
pgd-7x2/255, pgd-50x2.5eps/50-5r, autoattack-standard (alias autoattack), autoattack-fast,
noise-uniform-8draws, ...; a bare ``pgd`` is built from --pgd-steps/--pgd-step-size/
--pgd-restarts and reported under its full name.  --protocol runs a whole named protocol.

Without --solvers the model is evaluated with its training (evaluation) solver only.  A
grid of solvers is the paper's solver-overfitting check: a model that only works with the
solver it was trained with shows up as one bright cell in solver_grid.png.

Under torchrun (``torchrun --nproc_per_node=N -m odezoo evaluate ...``) each process attacks
every N-th test batch, with the random starts that batch has in a one-process run, and the
per-example results are gathered: the numbers are those of one process (randomized solvers
with --eot draw per process, so that row differs); rank 0 writes the files.

Writes to --out (default <run>/eval): results.json and results.csv (the one results schema of
[`odezoo.experiments.results`][odezoo.experiments.results]: model, solver, attack, setting, ε, images, accuracy,
interval;
clean accuracy as attack "clean" and the per-example worst case over the attacks as "worst", all
on the same images), accuracy_vs_eps.png, and for a grid solver_grid.png and accuracy_vs_<param>.png.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import os
from pathlib import Path

import torch

from odezoo import using_solver
from odezoo.experiments.attacks import correct_predictions
from odezoo.experiments.config import (ConfigError, fail, meta_solver_from_config, parse_number_list,
                                       parse_solver_grid, positive_int, validate_config)
from odezoo.experiments.data import get_datasets, make_loaders
from odezoo.experiments.io import (CheckpointError, RunFolderBusy, load_checkpoint, run_folder_lock, save_csv,
                                   save_json)
from odezoo.experiments.models import build_model
from odezoo.experiments.plots import plot_accuracy_vs_eps, plot_accuracy_vs_param, plot_solver_grid, solver_label
from odezoo.experiments.protocol import PROTOCOLS, Protocol, evaluate_protocol, resolve_attacks, take_examples
from odezoo.experiments.results import format_table, from_protocol_rows
from odezoo.experiments.training import setup_distributed


def main(argv=None):
    """``odezoo evaluate ARGV`` as a function (argv: the arguments, without ``evaluate``)."""
    from odezoo_cli import parse

    return run(parse("evaluate", argv))


def evaluate_model(model, loader, protocol, device, label, extra, progress, before_batch=None, sharded=False):
    """Rows of one evaluation of ``model`` under ``protocol`` (full attack names, counts);
    ``sharded``: under torchrun, each rank attacks its share of the batches (same results)."""
    result = evaluate_protocol(model, loader, protocol, device=device, before_batch=before_batch,
                               progress=lambda message: progress.update(1), sharded=sharded)
    rows = result.rows(solver=label, **extra)
    shown = [r for r in rows if r["attack"] in ("clean", "worst") or len(protocol.attacks) == 1]
    progress.write(f"  {label:<40} " + "  ".join(
        f"{r['attack']}{'' if r['attack'] == 'clean' else '@%.3g' % r['eps']} {r['accuracy']:.4f}" for r in shown)
        + f" (on {rows[0]['n_examples']:,} images)")
    return rows


def evaluate_specs(model, loader, specs, protocol, device, progress, sharded=False):
    """Rows for every solver in ``specs``, each forced into all ODE blocks of ``model``."""
    rows = []
    for spec in specs:
        with using_solver(model, spec):
            rows += evaluate_model(model, loader, protocol, device, spec.label(),
                                   {"method": spec.method, "params": dict(spec.params), "n_steps": spec.n_steps},
                                   progress, sharded=sharded)
    return rows


def run(args):
    """Carry out ``odezoo evaluate`` with parsed ``args``; returns the result rows.  The results
    folder is locked while it is written (under torchrun, by rank 0)."""
    if args.dry_run:
        args.max_batches, args.pgd_steps = 1, 2
    if not Path(args.checkpoint).is_file():
        fail(f"no checkpoint at {args.checkpoint}; train first (odezoo train) or check the path")
    if int(os.environ.get("RANK", "0")) != 0:
        return _evaluate(args)
    try:
        with run_folder_lock(Path(args.out or Path(args.checkpoint).parent / "eval"), "odezoo evaluate"):
            return _evaluate(args)
    except RunFolderBusy as busy:
        fail(str(busy))


def _evaluate(args):
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
        rank, world, device = setup_distributed(args.device)
    except ValueError as error:
        fail(str(error))
    sharded = world > 1
    ev = cfg["eval"]
    names = tuple(a.strip() for a in args.attacks.split(",") if a.strip())
    try:
        eps = parse_number_list(args.eps) if args.eps is not None else list(ev["eps"])
    except ValueError as error:
        fail(f"--eps: {error}")
    if any(e <= 0 for e in eps) or ((names or args.protocol) and not eps):
        fail(f"--eps: give one or more eps > 0 in pixel units (e.g. 0.1,0.3 or 8/255), got {args.eps!r}")
    if args.dry_run:
        eps = eps[:1]
    step = args.pgd_step_size if args.pgd_step_size is not None else ev["pgd_step_size"]
    try:
        step = step if step == "auto" else parse_number_list(str(step))[0]
        if step != "auto" and step <= 0:
            raise ValueError(f"must be positive, got {step!r}")
    except (ValueError, IndexError) as error:
        fail(f"--pgd-step-size: {error} (a number in pixel units such as 2/255, or auto)")
    pgd_steps = args.pgd_steps if args.pgd_steps is not None else ev["pgd_steps"]
    try:
        attacks = list(PROTOCOLS[args.protocol].attacks) if args.protocol else \
            resolve_attacks(names, pgd_steps, step, args.pgd_restarts)
    except ValueError as error:
        fail(f"--attacks: {error}")
    if args.dry_run:  # every attack with a tiny budget (Attack.shrunk: the registry's one rule)
        attacks = [a.shrunk() for a in attacks]
    needs = sorted({a.name for a in attacks if a.package == "torchattacks"})
    if needs and importlib.util.find_spec("torchattacks") is None:
        fail(f"{', '.join(needs)} need torchattacks, which is not installed: pip install 'odezoo[attacks]'")

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

    out = output_folder(args)
    n_examples = None if args.max_batches is None else args.max_batches * batch_size
    if not attacks:
        if sharded:  # one forward pass: not worth sharding; rank 0 does it
            import torch.distributed as dist

            dist.destroy_process_group()
            if rank != 0:
                return []
        return clean_only(args, cfg, meta, model, specs, test_loader, device, n_examples)
    protocol = Protocol(args.protocol or "evaluate", 1, tuple(attacks), eps=tuple(eps), n_examples=n_examples,
                        n_autoattack=n_examples, seed=args.seed)
    main_process = rank == 0
    if main_process:
        print(f"evaluating {args.checkpoint} (trained with {meta.summary()}) on {len(specs)} solver(s)"
              + (f", sharded over {world} processes" if sharded else ""))
        print(protocol.describe(), flush=True)
    from tqdm import tqdm

    runs = len(specs) + (meta.mode == "ensemble") + bool(args.eot and meta.randomized)
    progress = tqdm(total=runs * len(protocol.attacks) * len(protocol.eps), desc="attacks", unit="attack",
                    disable=True if args.quiet or not main_process else None, dynamic_ncols=True)
    rows = evaluate_specs(model, test_loader, specs, protocol, device, progress, sharded)
    if meta.mode == "ensemble":
        rows += evaluate_model(model, test_loader, protocol, device, f"ensemble: {meta.describe()}",
                               {"method": "ensemble", "params": {}, "n_steps": None}, progress, sharded=sharded)
    if args.eot and meta.randomized:
        eot = protocol.replace(attacks=tuple(dataclasses.replace(a, eot_samples=args.eot) for a in protocol.attacks))
        rows += evaluate_model(model, test_loader, eot, device, f"randomized {meta.summary()} (EOT {args.eot})",
                               {"method": "randomized", "params": {}, "n_steps": None}, progress,
                               before_batch=meta.resample, sharded=sharded)
    progress.close()
    if sharded:
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()
        if not main_process:
            return rows
    return write_results(args, cfg, meta, out, rows, specs, train_spec, attacks, eps)


def clean_only(args, cfg, meta, model, specs, loader, device, n_examples):
    """Clean accuracy of every solver (no attack): one forward pass over the test images."""
    out = output_folder(args)
    print(f"evaluating {args.checkpoint} (trained with {meta.summary()}) on {len(specs)} solver(s): clean accuracy")
    batches = take_examples(loader, n_examples, device)
    rows = []
    for spec in specs:
        with using_solver(model, spec):
            ok = torch.cat([correct_predictions(model, x, y).cpu() for x, y in batches])
        rows.append({"solver": spec.label(), "attack": "clean", "eps": 0.0, "n_examples": int(ok.numel()),
                     "accuracy": float(ok.float().mean()), "method": spec.method, "params": dict(spec.params),
                     "n_steps": spec.n_steps})
        print(f"  {spec.label():<40} clean {rows[-1]['accuracy']:.4f} on {rows[-1]['n_examples']:,} images",
              flush=True)
    train_spec = meta.eval_spec or (meta.current if meta.mode != "ensemble" else None)
    return write_results(args, cfg, meta, out, rows, specs, train_spec, [], [])


def output_folder(args) -> Path:
    out = Path(args.out or Path(args.checkpoint).parent / "eval")
    out.mkdir(parents=True, exist_ok=True)
    return out


def write_results(args, cfg, meta, out, rows, specs, train_spec, attacks, eps):
    """Write the rows in the one results schema ([`odezoo.experiments.results`][odezoo.experiments.results]), the
    plots, and
    print the table; returns the schema rows."""
    rows = from_protocol_rows(rows, model=cfg["name"])
    save_json(out / "results.json", rows)
    save_csv(out / "results.csv", [{**r, "params": ";".join(f"{k}={v:.6g}" for k, v in r["params"].items())}
                                    for r in rows])
    plot_accuracy_vs_eps(rows, out / "accuracy_vs_eps.png", title=f"{cfg['name']}: accuracy vs ε")
    if len(specs) > 1:
        train_cell = None
        if train_spec is not None:
            train_cell = (solver_label({"solver": "", "method": train_spec.method, "params": train_spec.params}),
                          train_spec.n_steps)
        pgd = [a.name for a in attacks if a.kind == "pgd"]
        attack = pgd[0] if pgd else (attacks[0].name if attacks else "clean")
        plot_solver_grid(rows, out / "solver_grid.png", attack=attack, eps=max(eps) if eps else None,
                         train_solver=train_cell)
        params = sorted({p for s in specs for p in s.params})
        for param in params:
            plot_accuracy_vs_param(rows, out / f"accuracy_vs_{param}.png", param=param)
    if not args.quiet:
        print(format_table(rows))
    print(f"wrote {out}/results.json, results.csv and plots")
    return rows

