"""Recipe configuration: the defaults, YAML files with ``--set`` overrides, solvers from
config mappings and compact command-line strings."""
from __future__ import annotations

import copy
import itertools
import sys
from pathlib import Path
from typing import Any, Mapping, NoReturn, Sequence

import yaml

from odezoo import MetaSolver, SolverSpec
from odezoo.parsing import parse_number, parse_number_list

__all__ = ["DEFAULTS", "deep_update", "parse_override", "load_config", "fail", "meta_solver_from_config",
           "parse_solver_grid", "parse_number_list"]


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


def fail(message: str, code: int = 2) -> NoReturn:
    """Print ``error: message`` to stderr and exit with ``code`` (for recipe scripts)."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(code)


def _spec(data: Mapping[str, Any], defaults: Mapping[str, Any]) -> SolverSpec:
    data = {**defaults, **data}
    return SolverSpec(data["method"], {k: parse_number(v) for k, v in (data.get("params") or {}).items()},
                      step_size=data.get("step_size"), n_steps=data.get("n_steps"))


def meta_solver_from_config(cfg: Mapping[str, Any], seed: int | None = None) -> MetaSolver:
    """A MetaSolver from a config mapping, e.g.::

        mode: smoothing          # fixed | switching | smoothing | ensemble
        method: rk2_u
        params: {u: 0.5}         # fixed: the solver; smoothing: the center
        n_steps: 8
        distribution: normal     # smoothing: normal | uniform | cauchy (default: the family's)
        scale: 0.0125
        per_sample: false
        specs: [{method: rk2_u, params: {u: 0.5}}, ...]   # switching / ensemble
        probs: [0.5, 0.5]        # switching;  weights: [...] for ensemble
    """
    cfg = dict(cfg)
    mode = cfg.get("mode", "fixed")
    grid = {k: cfg[k] for k in ("n_steps", "step_size") if cfg.get(k) is not None}
    if mode == "fixed":
        return MetaSolver.fixed(_spec(cfg, grid))
    if mode == "smoothing":
        center = {k: parse_number(v) for k, v in (cfg.get("params") or {}).items()}
        return MetaSolver.smoothing(cfg["method"], center=center, distribution=cfg.get("distribution"),
                                    scale=cfg.get("scale"), per_sample=bool(cfg.get("per_sample", False)),
                                    seed=seed, **grid)
    specs = [_spec(s, {"method": cfg.get("method"), **grid}) for s in cfg.get("specs") or []]
    if mode == "switching":
        return MetaSolver.switching(specs, probs=cfg.get("probs"), seed=seed)
    if mode == "ensemble":
        return MetaSolver.ensemble(specs, weights=cfg.get("weights"))
    raise ValueError(f"unknown solver mode {mode!r}; choose fixed, switching, smoothing or ensemble")


def parse_solver_grid(text: str, n_steps: Sequence[int] = (8,)) -> list[SolverSpec]:
    """``"rk2_u:u=0.25,0.5,1.0;rk4_u2:u=1/3;euler"`` × n_steps -> SolverSpecs.

    Each ``;``-separated item is ``method`` or ``method:param=v1,v2,...[:param2=...]``; the
    values of several parameters combine as a product.
    """
    specs = []
    for item in filter(None, (part.strip() for part in text.split(";"))):
        method, *assignments = item.split(":")
        grids = []
        for assignment in assignments:
            name, sep, values = assignment.partition("=")
            if not sep:
                raise ValueError(f"cannot parse {assignment!r} in {item!r}: expected param=v1,v2")
            grids.append([(name.strip(), v) for v in parse_number_list(values)])
        for combo in itertools.product(*grids) if grids else [()]:
            for steps in n_steps:
                specs.append(SolverSpec(method.strip(), dict(combo), n_steps=int(steps)))
    if not specs:
        raise ValueError(f"no solvers in {text!r}; example: 'rk2_u:u=0.25,0.5,1.0;rk4_u2:u=1/3'")
    return specs
