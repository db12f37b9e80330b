"""Train a neural ODE classifier with a (meta-)solver, optionally adversarially.

    python recipes/train.py --config recipes/configs/mnist_rk2_smoothing.yaml --epochs 5
    python recipes/train.py --config recipes/configs/cifar10_rk2_fgsm_random.yaml --data-dir ~/data
    torchrun --nproc_per_node=2 recipes/train.py --config ...        # data-parallel

Writes to --out (default runs/<config name>): config.yaml (resolved), metrics.jsonl (one
line per epoch), solver_history.json, checkpoint.pt (every epoch, atomic; --resume
continues from it), best.pt (best validation accuracy), summary.json and, unless
--no-eval, robustness.json/.csv from the best model.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch
import yaml
from torch import nn

import odezoo
from odezoo.experiments.config import fail, load_config, meta_solver_from_config
from odezoo.experiments.data import get_datasets, make_loaders
from odezoo.experiments.evaluation import robustness_rows
from odezoo.experiments.io import (CheckpointError, append_jsonl, load_checkpoint, save_checkpoint, save_csv,
                                   save_json, truncate_jsonl)
from odezoo.experiments.models import build_model, count_parameters
from odezoo.experiments.training import (TrainingDiverged, accuracy, adversarial_batch, check_loss, resolve_device,
                                         seed_everything)

ROOT = Path(__file__).resolve().parent.parent

DRY_RUN = {"epochs": 1, "subset": 64, "batch_size": 16}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="YAML config (recipes/configs/*.yaml); flags below override it")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--data-dir", help="folder holding (or receiving, with --download) MNIST / CIFAR-10")
    p.add_argument("--download", action="store_true", default=None, help="allow torchvision to download data")
    p.add_argument("--device", help="auto (CUDA when present), cpu or cuda")
    p.add_argument("--resample", choices=["epoch", "batch"], help="when the MetaSolver draws a new solver")
    p.add_argument("--out", help="run folder (default runs/<config name>)")
    p.add_argument("--resume", action="store_true", help="continue from <out>/checkpoint.pt")
    p.add_argument("--stop-after", type=int, metavar="K",
                   help="stop after epoch K (the run stays resumable with --resume; splits a long run into pieces)")
    p.add_argument("--dry-run", action="store_true", help="a few batches on tiny data, then stop (for CI)")
    p.add_argument("--no-eval", action="store_true", help="skip the final robustness evaluation")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config entry, e.g. --set solver.scale=0.05 (repeatable)")
    return p.parse_args(argv)


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


def setup_distributed(device_name):
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, resolve_device(device_name)
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name)
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), world, device


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


def main(argv=None):
    args = parse_args(argv)
    flags = {"epochs": args.epochs, "batch_size": args.batch_size, "seed": args.seed, "data_dir": args.data_dir,
             "download": args.download, "device": args.device, "resample": args.resample}
    cfg = load_config(args.config, args.set, **flags)
    if args.dry_run:
        cfg.update({k: v for k, v in DRY_RUN.items() if k != "epochs" or args.epochs is None})
        cfg["eval"] = {**cfg["eval"], "max_batches": 1, "eps": cfg["eval"]["eps"][:1], "pgd_steps": 2}
        if cfg.get("track_robust"):
            cfg["track_robust"] = {**cfg["track_robust"], "max_batches": 1}
    rank, world, device = setup_distributed(cfg["device"])
    main_process = rank == 0
    out = Path(args.out or ROOT / "runs" / cfg["name"])
    checkpoint_path = out / "checkpoint.pt"
    if main_process:
        if checkpoint_path.exists() and not args.resume:
            fail(f"{out} already holds a run (checkpoint.pt); pass --resume to continue it or --out DIR for a new run")
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))

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
              f"solver {meta.mode}: {meta.describe()} | device {device} | world {world}")
    optimizer = make_optimizer(cfg, model.parameters())
    scheduler = make_scheduler(cfg, optimizer, len(train_loader))
    train_model = model
    if world > 1:
        train_model = nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)

    start_epoch, best_val = 0, -1.0
    if args.resume:
        try:
            state = load_checkpoint(checkpoint_path, map_location=device)
        except CheckpointError as error:
            fail(str(error))
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and state.get("scheduler"):
            scheduler.load_state_dict(state["scheduler"])
        meta.load_state_dict(state["meta_solver"])
        torch.set_rng_state(state["rng"]["torch"])
        start_epoch, best_val = state["epoch"] + 1, state["best_val"]
        if main_process:
            truncate_jsonl(out / "metrics.jsonl", state["epoch"])
            print(f"resumed from {checkpoint_path} after epoch {state['epoch']}")

    adv = cfg["adversarial"]
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

            batches = tqdm(train_loader, desc=f"epoch {epoch + 1}/{cfg['epochs']}", leave=False)
        for step, (x, y) in enumerate(batches):
            if args.dry_run and step >= 2:
                break
            if cfg["resample"] == "batch":
                meta.resample()
            x, y = x.to(device), y.to(device)
            x_train = adversarial_batch(attack_model, x, y, adv["kind"], adv["eps"], adv.get("alpha"),
                                        adv.get("steps", 7), adv.get("step_size"))
            logits = train_model(x_train)
            loss = nn.functional.cross_entropy(logits, y)
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

        with meta.evaluating():
            val_acc = accuracy(model, val_loader, device)
        record = {"epoch": epoch, "train_loss": total_loss / max(seen, 1), "train_acc": correct / max(seen, 1),
                  "val_acc": val_acc, "lr": optimizer.param_groups[0]["lr"], "seconds": time.time() - started,
                  "solver": meta.history[-1]["solvers"]}
        if cfg.get("track_robust"):
            record["robust_val_acc"] = robust_val_accuracy(model, meta, val_loader, cfg["track_robust"], device)
        if main_process:
            append_jsonl(out / "metrics.jsonl", record)
            if val_acc > best_val:
                best_val = val_acc
                save_checkpoint(out / "best.pt", {"model": model.state_dict(), "config": cfg, "epoch": epoch,
                                                  "val_acc": val_acc})
            save_checkpoint(checkpoint_path, {
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict() if scheduler is not None else None,
                "meta_solver": meta.state_dict(), "rng": {"torch": torch.get_rng_state()},
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
                torch.distributed.destroy_process_group()
            return 0

    weights_agree = None
    if world > 1:
        weights_agree = ranks_agree_on_weights(model)
    if not main_process:
        torch.distributed.destroy_process_group()
        return 0
    best = load_checkpoint(out / "best.pt", map_location=device)
    model.load_state_dict(best["model"])
    with meta.evaluating():
        test_acc = accuracy(model, test_loader, device)
    summary = {"name": cfg["name"], "best_epoch": best["epoch"], "val_acc": best["val_acc"], "test_acc": test_acc,
               "parameters": count_parameters(model), "solver": meta.eval_spec.label() if meta.eval_spec else
               meta.describe()}
    if weights_agree is not None:
        summary["ddp_world_size"] = world
        summary["ddp_weights_agree"] = weights_agree
        print(f"DDP: {world} ranks {'agree' if weights_agree else 'DISAGREE'} on the final weights")
    print(f"best epoch {best['epoch'] + 1}: val_acc {best['val_acc']:.4f} test_acc {test_acc:.4f}")
    if not args.no_eval and cfg["eval"]["attacks"]:
        ev = cfg["eval"]
        with meta.evaluating():
            rows = robustness_rows(model, test_loader, summary["solver"], ev["attacks"], ev["eps"],
                                   ev["pgd_steps"], ev["pgd_step_size"], device=device,
                                   max_batches=ev["max_batches"])
        save_json(out / "robustness.json", rows)
        save_csv(out / "robustness.csv", rows)
        summary["robustness"] = rows
        for row in rows:
            print(f"  {row['attack']:>6} eps={row['eps']:<8.4g} accuracy {row['accuracy']:.4f}")
    save_json(out / "summary.json", summary)
    if world > 1:
        torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
