"""What ``odezoo train`` may do with its run folder: start a new run, resume the one it holds,
or reuse a finished one — decided from the folder's files before anything is written.

A resume continues only the run the folder holds: a config that changes the run (solver,
optimizer, data, ...) is refused unless ``--allow-config-change`` makes it an explicit choice,
recorded in ``resumes.jsonl``; a finished run stands in (``--reuse-finished``) only for a config
that computes the same run.
"""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import yaml

from odezoo.experiments.config import ConfigError, config_differences, fail, validate_config
from odezoo.experiments.io import (SEAL_SUFFIX, CheckpointError, FormatError, IntegrityError, append_jsonl,
                                   atomic_write, load_checkpoint, load_sealed_json, read_metrics, truncate_jsonl)

#: config keys that do not change what a finished run computed (its weights, metrics.jsonl and
#: summary.json): where it ran, where its data was read from, the divergence limit, and the final
#: evaluation (which --reuse-finished callers run themselves).
REUSE_SAFE = ("device", "data_dir", "download", "num_workers", "loss_limit", "eval")
#: config keys a resume may change without changing what the run computes (each change is
#: still recorded in resumes.jsonl): those, and how long to train.
RESUME_SAFE = ("epochs", *REUSE_SAFE)
#: config keys no resume may change: the saved weights belong to this model.
RESUME_NEVER = ("model", "model_kwargs")


def resume_changes(saved_cfg, cfg) -> dict:
    """``{dotted key: (in the run, now)}`` for every config difference."""
    try:
        saved = validate_config(saved_cfg)
    except ConfigError:
        saved = dict(saved_cfg)
    return config_differences(saved, cfg)


def touches(changes, *prefixes) -> bool:
    """Whether any changed key is one of ``prefixes`` or lies below one."""
    return any(key == p or key.startswith(p + ".") for key in changes for p in prefixes)


def show_changes(changes) -> str:
    return "; ".join(f"{key}: {old!r} in the run, {new!r} now" for key, (old, new) in changes.items())


def epochs_logged(out: Path) -> list[int]:
    """The epochs ``out/metrics.jsonl`` records (from 1).  A log that is damaged, or was written
    before epochs counted from 1, stops the command with the file named and what to do."""
    try:
        return [record["epoch"] for record in read_metrics(out / "metrics.jsonl")]
    except (FormatError, IntegrityError) as error:
        fail(str(error))


def finished_run_changes(out: Path, cfg: dict) -> dict | None:
    """None when ``out`` holds no finished run (no summary.json); otherwise ``{dotted key: (in the
    run, now)}`` for every setting in which ``cfg`` differs from the run's config.yaml and which
    changes what the run computed (empty: the finished run is this config's run and may be reused).
    A finished run written before epochs counted from 1 stops the command (`epochs_logged`)."""
    out = Path(out)
    if not (out / "summary.json").exists():
        return None
    epochs_logged(out)
    saved = yaml.safe_load((out / "config.yaml").read_text()) if (out / "config.yaml").exists() else {}
    changes = resume_changes(saved or {}, validate_config(cfg))
    return {k: v for k, v in changes.items() if not touches({k: v}, *REUSE_SAFE)}


def refusal(out: Path, changes: dict) -> str:
    """Why a finished run is not reused for a config that changes it, and what to do."""
    return (f"{out} holds a finished run trained with other settings ({show_changes(changes)}); it is not reused "
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
            changes = resume_changes(yaml.safe_load(previous.read_text()), cfg) if previous.exists() else None
            if changes is None or changes:
                shown = show_changes(changes) if changes else "no config.yaml"
                fail(f"{out} holds files of another run ({', '.join(leftovers)}; {shown}) that never finished "
                     f"its first epoch; start the new run with --out NEW_DIR, or delete {out}")
        return None, {}
    try:
        state = load_checkpoint(checkpoint_path)
    except CheckpointError as error:
        fail(str(error))
    if state["epoch"] not in epochs_logged(out):  # the log is written before the checkpoint of its epoch
        fail(f"{out / 'metrics.jsonl'} records no epoch {state['epoch']} although {checkpoint_path} holds the run "
             f"after epoch {state['epoch']}: the log was deleted or replaced. Restore it, or start a new run with "
             f"--out NEW_DIR.")
    changes = resume_changes(state["config"], cfg)
    never = {k: v for k, v in changes.items() if touches({k: v}, *RESUME_NEVER)}
    if never:
        fail(f"cannot resume {out}: the saved weights belong to another model ({show_changes(never)}). "
             f"Start a new run with --out NEW_DIR.")
    unsafe = {k: v for k, v in changes.items() if not touches({k: v}, *RESUME_SAFE)}
    if unsafe and not args.allow_config_change:
        fail(f"cannot resume {out} with a changed configuration ({show_changes(unsafe)}): the run so far was "
             f"trained with the settings in its config.yaml and checkpoint.pt. Start a new run with "
             f"--out NEW_DIR, or pass --allow-config-change to continue this run with the new settings "
             f"(recorded in {out / 'resumes.jsonl'}).")
    return state, changes


def start_new_run(out: Path, cfg: dict) -> None:
    """A new run in ``out``: what an interrupted first epoch left is cleared, and the config is
    written once (a resume never rewrites it)."""
    for name in ("metrics.jsonl", "resumes.jsonl"):
        (out / name).unlink(missing_ok=True)
        (out / (name + SEAL_SUFFIX)).unlink(missing_ok=True)
    atomic_write(out / "config.yaml", yaml.safe_dump(cfg, sort_keys=False))


def record_resume(out: Path, after_epoch: int, changes: dict, allowed: bool, fresh: list[str], solver) -> None:
    """A resume after ``after_epoch``: metrics.jsonl is cut back to the checkpoint's epochs and
    resumes.jsonl gets one line (when, what changed, whether allowed, what restarted fresh)."""
    truncate_jsonl(out / "metrics.jsonl", after_epoch)
    append_jsonl(out / "resumes.jsonl", {
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"), "after_epoch": after_epoch,
        "changes": {k: [old, new] for k, (old, new) in changes.items()},
        "allow_config_change": bool(allowed), "restarted_fresh": fresh, "solver": solver})


def read_summary(path: Path) -> dict:
    """A run's summary.json, checked against its digest (a truncated or edited one stops with
    the file named)."""
    try:
        return load_sealed_json(path)
    except IntegrityError as error:
        fail(str(error))
