"""Shared helpers for the recipe scripts: configs, run folders, metrics files."""
from __future__ import annotations

import copy
import json
import os
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent

DEFAULTS: dict[str, Any] = {
    "name": "run",
    "dataset": "mnist-embedded",      # mnist-embedded | mnist-embedded-rgb32 | mnist | cifar10
    "data_dir": None,
    "download": False,
    "model": "mnist",                 # mnist | cifar10
    "model_kwargs": {},               # e.g. {width: 16} for a narrower CIFAR-10 model
    "epochs": 10,
    "batch_size": 128,
    "seed": 0,
    "device": "auto",
    "num_workers": 0,
    "optimizer": {"name": "rmsprop", "lr": 1e-3, "momentum": 0.0, "weight_decay": 0.0},
    "schedule": {"name": "cyclic", "base_lr": 1e-5, "max_lr": 1e-3, "step_size_up": 2000,
                 "step_size_down": 2000, "mode": "triangular2"},
    "solver": {"mode": "fixed", "method": "rk2_u", "params": {"u": 0.5}, "n_steps": 8},
    "resample": "epoch",              # epoch | batch
    "adversarial": {"kind": "none", "eps": 0.3, "alpha": None, "steps": 7, "step_size": None},
    "track_robust": None,             # e.g. {attack: pgd, eps: 0.3, max_batches: 4}: robust val acc per epoch
    "eval": {"attacks": ["fgsm", "pgd"], "eps": [0.1, 0.2, 0.3], "pgd_steps": 7,
             "pgd_step_size": 2 / 255, "max_batches": None},
    "subset": None,                   # cap each split to N examples (dry runs, small scale)
    "loss_limit": 1e4,
}


def deep_update(base: dict, update: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in (update or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_update(out[key], value)
        else:
            out[key] = value
    return out


def parse_override(text: str) -> tuple[list[str], Any]:
    """``solver.scale=0.05`` -> (["solver", "scale"], 0.05) (values parsed as YAML)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise SystemExit(f"--set expects key.sub=value, got {text!r}")
    parsed = yaml.safe_load(value)
    if isinstance(parsed, str):
        try:  # YAML 1.1 reads "1e-4" as a string
            parsed = float(parsed)
        except ValueError:
            pass
    return key.split("."), parsed


def load_config(path: str | None, overrides: list[str] = (), **flags) -> dict:
    cfg = copy.deepcopy(DEFAULTS)
    if path:
        try:
            with open(path) as handle:
                loaded = yaml.safe_load(handle) or {}
            cfg = deep_update(cfg, loaded)
            if "solver" in loaded:  # a solver is replaced whole: default parameters must not leak into it
                cfg["solver"] = copy.deepcopy(loaded["solver"])
        except FileNotFoundError:
            raise SystemExit(f"config file not found: {path} (configs live in recipes/configs/)") from None
        cfg.setdefault("name", Path(path).stem)
        if cfg["name"] == "run":
            cfg["name"] = Path(path).stem
    for text in overrides:
        keys, value = parse_override(text)
        node = cfg
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = value
    for key, value in flags.items():
        if value is not None:
            cfg[key] = value
    unknown = set(cfg) - set(DEFAULTS)
    if unknown:
        raise SystemExit(f"unknown config keys {sorted(unknown)}; known: {sorted(DEFAULTS)}")
    return cfg


def write_json(path: Path, data) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    os.replace(tmp, path)


def append_jsonl(path: Path, record: dict) -> None:
    with open(path, "a") as handle:
        handle.write(json.dumps(record) + "\n")


def truncate_jsonl(path: Path, max_epoch: int) -> None:
    """Drop records of epochs after ``max_epoch`` (written by an interrupted run)."""
    if not path.exists():
        return
    keep = [line for line in path.read_text().splitlines()
            if line.strip() and json.loads(line).get("epoch", -1) <= max_epoch]
    path.write_text("".join(line + "\n" for line in keep))


def fail(message: str, code: int = 2) -> "NoReturn":  # noqa: F821
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(code)


def pgd_step_for(eps: float, steps: int, step_size) -> float:
    """PGD step size: a number (pixels), or "auto" = 2.5·eps/steps (Madry et al.), which lets
    the iterates reach the whole eps-ball — the paper's fixed 2/255 × 7 steps cannot at eps 0.3."""
    return 2.5 * eps / steps if step_size in ("auto", None) else float(step_size)


def robustness_rows(model, loader, label, attacks, eps_list, pgd_steps=7, pgd_step_size="auto", restarts=1,
                    device="cpu", max_batches=None, eot_samples=1, before_batch=None, worst_case=False,
                    pgd_seed=0):
    """Rows {solver, attack, eps, accuracy} (clean as attack "clean", eps 0) for one model/solver.

    Each eps gets its own PGD step size when ``pgd_step_size`` is "auto"; otherwise one run
    covers every eps.  ``pgd_seed`` fixes PGD's random starts (None: fresh ones each run), so
    evaluating the same model twice gives the same numbers."""
    from odezoo.robustness import evaluate_robustness, results_table

    kwargs = dict(device=device, max_batches=max_batches, eot_samples=eot_samples, before_batch=before_batch)
    groups = ([[e] for e in eps_list] if pgd_step_size in ("auto", None) and "pgd" in attacks
              else [list(eps_list)])
    rows, clean_done = [], False
    for group in groups or [[]]:
        pgd_kwargs = {"n_iter": pgd_steps, "restarts": restarts, "seed": pgd_seed,
                      "step_size": pgd_step_for(group[0], pgd_steps, pgd_step_size) if group else 2 / 255}
        result = evaluate_robustness(model, loader, attacks=tuple(attacks), eps_list=tuple(group),
                                     pgd_kwargs=pgd_kwargs, **kwargs)
        for row in results_table(result, label=label, include_worst_case=worst_case):
            if row["attack"] == "clean":
                if clean_done:
                    continue
                clean_done = True
            rows.append({**row, "eps": float(row["eps"]), "accuracy": float(row["accuracy"])})
    return rows
