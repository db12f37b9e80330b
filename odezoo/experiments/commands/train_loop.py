"""The training loop of ``odezoo train``: a [`Trainer`][odezoo.experiments.commands.train_loop.Trainer]
holds what one run trains with (data, model, solver, optimizer, schedule, process group) and
trains it epoch by epoch, writing metrics.jsonl, best.pt and checkpoint.pt after each epoch.
What may run in the folder, and the summary at the end, are the command's
(`odezoo.experiments.commands.train`).
"""
from __future__ import annotations

import gc
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

import odezoo
from odezoo.experiments.config import fail, meta_solver_from_config
from odezoo.experiments.data import get_datasets, make_loaders
from odezoo.experiments.evaluation import robustness_rows
from odezoo.experiments.io import append_jsonl, nonfinite_tensors, save_checkpoint, save_json
from odezoo.experiments.models import build_model, count_parameters
from odezoo.experiments.training import TrainingDiverged, accuracy, adversarial_batch, check_loss, seed_everything

from .run_folder import record_resume, show_changes, touches


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


def leave_process_group() -> None:
    """Leave the process group the same way on every rank: drop what still refers to it (the
    DDP wrapper, released by the caller), wait for every rank, then destroy it.  When rank 1
    destroyed its group and exited while rank 0 still held its own (to test and save alone),
    rank 1 aborted at exit ("terminate called without an active exception", SIGABRT) in about
    one 2-process run in three on a loaded 2-core machine, failing a finished run."""
    gc.collect()
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


def robust_val_accuracy(model, meta, loader, track, device):
    attack = track.get("attack", "pgd")
    with meta.evaluating():
        rows = robustness_rows(model, loader, "val", [attack], [track["eps"]], track.get("pgd_steps", 7),
                               track.get("pgd_step_size", "auto"), device=device, max_batches=track.get("max_batches"))
    return next(r["accuracy"] for r in rows if r["attack"] == attack)


@dataclass
class Trainer:
    """One run's training state.  ``args`` is the parsed command line (quiet, dry_run,
    stop_after, allow_config_change).  Epochs count from 1 everywhere — on screen, in
    metrics.jsonl, best.pt, checkpoint.pt and summary.json: epoch k is the k-th, and a
    checkpoint of epoch k holds the run after k epochs of training (``epochs_done``)."""
    cfg: dict
    args: Any
    out: Path
    rank: int
    world: int
    device: torch.device
    train_loader: Any
    val_loader: Any
    test_loader: Any
    meta: Any
    model: nn.Module
    train_model: nn.Module | None  # the DDP wrapper under torchrun, else the model itself
    optimizer: Any
    scheduler: Any
    epochs_done: int = 0
    best_val: float = -1.0

    @property
    def main_process(self) -> bool:
        return self.rank == 0

    @property
    def checkpoint_path(self) -> Path:
        return self.out / "checkpoint.pt"

    @classmethod
    def build(cls, cfg: dict, args, out: Path, rank: int, world: int, device) -> "Trainer":
        """Seed, then data, solver, model, optimizer and schedule, in that order (the order of
        the random draws a resume reproduces)."""
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
        if rank == 0:
            print(f"odezoo {odezoo.__version__} | model {cfg['model']}: {count_parameters(model):,} parameters | "
                  f"solver {meta.summary()} | device {device} | world {world} | batch {cfg['batch_size']} per rank, "
                  f"{cfg['batch_size'] * world} global | precision {cfg['precision']}")
        optimizer = make_optimizer(cfg, model.parameters())
        scheduler = make_scheduler(cfg, optimizer, len(train_loader))
        train_model = model
        if world > 1:
            train_model = nn.parallel.DistributedDataParallel(
                model, device_ids=[device] if device.type == "cuda" else None)
        return cls(cfg, args, out, rank, world, device, train_loader, val_loader, test_loader, meta, model,
                   train_model, optimizer, scheduler)

    def resume(self, state: dict, changes: dict) -> None:
        """Continue from a checkpoint: weights, and the optimizer, schedule and solver states
        unless ``changes`` touch them (those restart fresh), then the RNG streams."""
        fresh = []
        try:
            self.model.load_state_dict({k: v.to(self.device) for k, v in state["model"].items()})
            if touches(changes, "optimizer"):
                fresh.append("optimizer")
            else:
                self.optimizer.load_state_dict(state["optimizer"])
            if touches(changes, "schedule"):
                fresh.append("schedule")
            elif self.scheduler is not None and state.get("scheduler"):
                self.scheduler.load_state_dict(state["scheduler"])
            if touches(changes, "solver"):
                fresh.append("solver")
            else:  # the same solver config: an older state without an identity is verified by it
                saved_meta = state["meta_solver"]
                self.meta.load_state_dict(saved_meta, strict="identity" in saved_meta)
            restore_rng_states(state["rng"], self.rank, self.world)
        except (KeyError, RuntimeError, ValueError) as error:
            fail(f"cannot resume from {self.checkpoint_path}: {error}. Start a new run with --out NEW_DIR.")
        self.epochs_done, self.best_val = state["epoch"], state["best_val"]
        if self.main_process:
            record_resume(self.out, state["epoch"], changes, self.args.allow_config_change, fresh,
                          self.meta.identity())
            note = f" with changes {show_changes(changes)}" if changes else ""
            note += f" ({', '.join(fresh)} restarted fresh)" if fresh else ""
            print(f"resumed from {self.checkpoint_path} after epoch {state['epoch']}{note}")

    def train(self, loggers) -> bool:
        """Train the remaining epochs; False when ``--stop-after`` stopped the run early (it
        stays resumable), True when every epoch was trained."""
        for epoch in range(self.epochs_done + 1, self.cfg["epochs"] + 1):
            started = time.time()
            totals = self.train_epoch(epoch)
            self.end_epoch(epoch, totals, started, loggers)
            self.epochs_done = epoch
            stop = self.args.stop_after
            if stop is not None and epoch >= stop and epoch < self.cfg["epochs"]:
                if self.main_process:
                    print(f"stopping after epoch {epoch} as asked; continue with --resume")
                if self.world > 1:
                    self.train_model = None  # DDP's reducer holds the process group: released first
                    leave_process_group()
                return False
        return True

    def _batches(self, epoch: int):
        """The epoch's training batches, shuffled by the epoch's own stream, with a progress
        bar on the main process unless --quiet.  Epoch k shuffles with stream k - 1, the
        stream runs have used since before epochs counted from 1: a seed trains as it did."""
        loader, stream = self.train_loader, epoch - 1
        if hasattr(loader.sampler, "set_epoch"):
            loader.sampler.set_epoch(stream)
        elif getattr(loader, "generator", None) is not None:
            loader.generator.manual_seed(self.cfg["seed"] * 100_003 + stream)
        if not self.main_process or self.args.quiet:
            return loader
        from tqdm import tqdm

        # disable=None: no bar when stderr is not a terminal (CI logs)
        return tqdm(loader, desc=f"epoch {epoch}/{self.cfg['epochs']}", leave=False, disable=None)

    def train_epoch(self, epoch: int) -> tuple[float, int, int]:
        """One epoch of (adversarial) training; (summed loss, correct, examples) on this rank."""
        cfg, adv, meta, device = self.cfg, self.cfg["adversarial"], self.meta, self.device
        batches = self._batches(epoch)
        if cfg["resample"] == "epoch":
            meta.resample()
        self.model.train()
        total_loss = correct = seen = 0
        for step, (x, y) in enumerate(batches):
            if self.args.dry_run and step >= 2:
                break
            if cfg["resample"] == "batch":
                meta.resample()
            x, y = x.to(device), y.to(device)
            # attacks use the bare module (no DDP gradient hooks)
            x_train = adversarial_batch(self.model, x, y, adv["kind"], adv["eps"], adv.get("alpha"),
                                        adv.get("steps", 7), adv.get("step_size"))
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg["precision"] == "bf16"):
                logits = self.train_model(x_train)
            loss = nn.functional.cross_entropy(logits.float(), y)
            try:
                value = check_loss(loss, f"epoch {epoch}, batch {step + 1}", cfg["loss_limit"],
                                   str(self.checkpoint_path) if self.checkpoint_path.exists() else None)
            except TrainingDiverged as error:
                fail(str(error), code=3)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            if self.scheduler is not None:
                self.scheduler.step()
            total_loss += value * len(y)
            correct += int((logits.argmax(-1) == y).sum())
            seen += len(y)
            if batches is not self.train_loader:
                batches.set_postfix(loss=f"{value:.3f}", acc=f"{correct / seen:.3f}", solver=meta.describe())
        return total_loss, correct, seen

    def _refuse_nonfinite_weights(self, epoch: int) -> None:
        bad = nonfinite_tensors(self.model.state_dict())
        if bad:  # an epoch's last step can leave NaN weights behind a finite loss: save nothing of it
            kept = f"the last good checkpoint {self.checkpoint_path} is kept" if self.checkpoint_path.exists() else \
                "nothing was saved"
            fail(f"training diverged in epoch {epoch}: the weights became NaN or inf "
                 f"({', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''}); {kept}. Lower the learning rate or "
                 f"loss_limit, or change the solver.", code=3)

    def end_epoch(self, epoch: int, totals: tuple[float, int, int], started: float, loggers) -> None:
        """Check the weights, validate (main process), log the epoch and save best.pt and
        checkpoint.pt; every rank waits for the others."""
        self._refuse_nonfinite_weights(epoch)
        total_loss, correct, seen = totals
        if self.world > 1:  # every rank trained on its shard: log the global loss and accuracy
            summed = torch.tensor([total_loss, correct, seen], dtype=torch.float64, device=self.device)
            torch.distributed.all_reduce(summed)
            total_loss, correct, seen = summed[0].item(), int(summed[1].item()), int(summed[2].item())
        with self.meta.evaluating():  # validation on rank 0 only: the others would repeat it exactly
            val_acc = accuracy(self.model, self.val_loader, self.device) if self.main_process else float("nan")
        record = {"epoch": epoch, "train_loss": total_loss / max(seen, 1), "train_acc": correct / max(seen, 1),
                  "train_examples": seen, "world_size": self.world,
                  "val_acc": val_acc, "lr": self.optimizer.param_groups[0]["lr"], "seconds": time.time() - started,
                  "solver": self.meta.history[-1]["solvers"]}
        if self.cfg.get("track_robust") and self.main_process:
            record["robust_val_acc"] = robust_val_accuracy(self.model, self.meta, self.val_loader,
                                                           self.cfg["track_robust"], self.device)
        rng = rng_states(self.world)  # every rank's own streams (a collective: all ranks call it)
        if self.main_process:
            self.save(record, rng, loggers)
        if self.world > 1:
            torch.distributed.barrier()

    def save(self, record: dict, rng: dict, loggers) -> None:
        """The epoch's line in metrics.jsonl (and the loggers), best.pt when validation improved,
        checkpoint.pt and solver_history.json; then its line on screen."""
        epoch, val_acc, model, meta, cfg = record["epoch"], record["val_acc"], self.model, self.meta, self.cfg
        append_jsonl(self.out / "metrics.jsonl", record)
        for logger in loggers:
            logger.log(record)
        if val_acc > self.best_val:
            self.best_val = val_acc
            save_checkpoint(self.out / "best.pt", {"model": model.state_dict(), "config": cfg, "epoch": epoch,
                                                   "val_acc": val_acc, "meta_solver_identity": meta.identity()})
        save_checkpoint(self.checkpoint_path, {
            "model": model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "meta_solver": meta.state_dict(),
            "rng": rng,
            "epoch": epoch, "best_val": self.best_val, "config": cfg})
        save_json(self.out / "solver_history.json", meta.history)
        robust = f" robust_val {record['robust_val_acc']:.4f}" if "robust_val_acc" in record else ""
        print(f"epoch {epoch}/{cfg['epochs']}: loss {record['train_loss']:.4f} train_acc "
              f"{record['train_acc']:.4f} val_acc {val_acc:.4f}{robust} ({record['seconds']:.1f}s) "
              f"solver {meta.describe()}", flush=True)

    def leave(self) -> bool | None:
        """Under DDP: whether every rank holds the same final weights, then leave the process
        group (every rank at the same point; rank 0 then finishes alone).  None otherwise."""
        if self.world == 1:
            return None
        agree = ranks_agree_on_weights(self.model)
        self.train_model = None  # DDP's reducer holds the process group: released first
        leave_process_group()
        return agree
