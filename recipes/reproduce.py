"""Reproduce the paper's figures and tables (Gusak et al., Meta-Solver for Neural ODEs).

    python recipes/reproduce.py fig3a --scale small                 # minutes on a laptop CPU
    python recipes/reproduce.py table1 --scale paper --data-dir ~/data   # hours on one GPU
    python recipes/reproduce.py all --scale small
    python recipes/reproduce.py fig5 --scale small --dry-run --out "$(mktemp -d)"   # seconds (CI)

Experiments: fig3a fig3b fig4 fig5 table1 table2 variants (and all).  Each writes to
--out/<experiment>/: raw.csv (every seed), summary.csv (mean ± standard error over seeds),
<experiment>.png and summary.md (our numbers beside the paper's, the seeds and the cost).
Trained models are kept under --out/<experiment>/runs/ and reused when the command is run
again (an interrupted run resumes).

Scales: ``paper`` uses the paper's data, epochs and step counts (full MNIST / CIFAR-10 via
--data-dir).  ``small`` runs on 2 CPU cores: MNIST experiments on the 5,000 embedded digits
(6 epochs, 4 solver steps, attacks on 512 test digits); CIFAR-10 experiments on a reduced
setting — a width-16 CIFAR-10 network, 2 solver steps, 4 epochs — on real CIFAR-10 (5,000
training images) when --data-dir holds it, otherwise on the embedded digits padded to
32×32×3 (a stand-in, clearly labelled: not CIFAR-10).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import train  # noqa: E402

from odezoo.experiments.config import DEFAULTS, deep_update, meta_solver_from_config  # noqa: E402
from odezoo.experiments.data import get_datasets, make_loaders  # noqa: E402
from odezoo.experiments.evaluation import robustness_rows  # noqa: E402
from odezoo.experiments.io import load_checkpoint, save_csv  # noqa: E402
from odezoo.experiments.models import build_model  # noqa: E402
from odezoo.experiments.plots import new_figure, save_figure  # noqa: E402
from odezoo.experiments.training import resolve_device  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

# ε (pixels) at which each experiment's first model gets the strong attacks and checks.
CHECK_EPS = {"fig3a": [0.1, 0.2, 0.3], "fig3b": [0.1, 0.2, 0.3], "fig4": [2 / 255, 4 / 255, 8 / 255],
             "fig5": [0.1, 0.2, 0.3], "table1": [2 / 255, 4 / 255, 8 / 255], "table2": [4 / 255, 8 / 255, 16 / 255],
             "variants": [0.1, 0.2, 0.3]}
PAPER_PGD = {"pgd_steps": 7, "pgd_step_size": 2 / 255}     # the paper's PGD (MNIST, eps 0.3)
STRONG_PGD = {"pgd_steps": 20, "pgd_step_size": "auto"}    # reaches the whole eps-ball
EXPERIMENTS = ("fig3a", "fig3b", "fig4", "fig5", "table1", "table2", "variants")

# Numbers the paper reports (REFERENCE.md); figure values are read off the plots.
PAPER = {
    "fig3a": "clean ≈ 99.5% for every u; PGD (ε 0.3, 2/255, 7 it.) ≈ 0.84 at u = 0.05, dips to ≈ 0.75 near "
             "u ≈ 0.4 and u ≈ 0.9, ≈ 0.79 at u = 1.",
    "fig3b": "robust accuracy differs between u values and the ordering is stable over epochs (9 seeds).",
    "fig4": "the best u is the same for every ε (FGSM, CIFAR-10).",
    "fig5": "4-stage order-4 parameterizations and Euler step sizes give different robust accuracy (MNIST).",
    "table1": {"standard": {"fgsm": "33.02 ± 1.08", "pgd": "31.81 ± 1.03"},
               "smoothing": {"fgsm": "33.64 ± 0.73", "pgd": "32.78 ± 0.65"}},
    "table2": {"standard": {"fgsm": "40.86 ± 0.26", "pgd": "36.13 ± 0.13"},
               "smoothing": {"fgsm": "41.39 ± 0.01", "pgd": "36.37 ± 0.15"}},
    "variants": "not in the paper.",
}


# --------------------------------------------------------------------------- settings
class Context:
    def __init__(self, args):
        self.scale = args.scale
        self.dry_run = args.dry_run
        self.data_dir = args.data_dir
        self.device = resolve_device(args.device)
        self.out = Path(args.out or ROOT / "runs" / "reproduce" / args.scale)
        default_seeds = "0,1" if args.dry_run else ("0,1,2" if args.scale == "small" else "0,1,2")
        self.seeds = [int(s) for s in (args.seeds or default_seeds).split(",")]
        self.quiet = not args.verbose
        self.checks = not args.no_checks
        self.probe = None

    @property
    def cifar_is_real(self) -> bool:
        return self.scale == "paper" or bool(self.data_dir and (Path(self.data_dir) / "cifar-10-batches-py").is_dir())

    def mnist(self, **overrides) -> dict:
        if self.scale == "paper":
            cfg = yaml.safe_load((ROOT / "recipes" / "configs" / "mnist_paper.yaml").read_text())
            cfg["data_dir"] = self.data_dir
            eval_batches = None
        else:
            cfg = yaml.safe_load((ROOT / "recipes" / "configs" / "mnist_rk2_fixed.yaml").read_text())
            cfg.update(epochs=6)
            cfg["solver"]["n_steps"] = 4
            eval_batches = 16                                  # 512 test digits
        cfg["eval_batches"] = eval_batches
        return self._finish(cfg, overrides)

    def cifar(self, **overrides) -> dict:
        cfg = yaml.safe_load((ROOT / "recipes" / "configs" / "cifar10_rk2_standard.yaml").read_text())
        cfg["data_dir"] = self.data_dir
        cfg["eval_batches"] = None
        if self.scale == "small":
            cfg.update(epochs=4, batch_size=64, model_kwargs={"width": 16})
            cfg["schedule"].update(base_lr=1e-4, max_lr=0.05, step_size_up="auto", step_size_down="auto")
            cfg["solver"]["n_steps"] = 2
            cfg["eval_batches"] = 8                            # 512 test images
            if self.cifar_is_real:
                cfg["subset"] = 5000
            else:
                cfg["dataset"] = "mnist-embedded-rgb32"
        return self._finish(cfg, overrides)

    def _finish(self, cfg, overrides):
        solver = overrides.pop("solver", None)
        cfg = deep_update(cfg, overrides)
        if solver is not None:  # a new solver replaces the base one; only the step count carries over
            cfg["solver"] = {"n_steps": cfg["solver"].get("n_steps"), **solver}
        if self.dry_run:
            cfg.update(epochs=1, subset=64, batch_size=16, eval_batches=1)
        cfg["device"] = str(self.device)
        return cfg

    def data_label(self, cfg) -> str:
        return {"mnist-embedded": "MNIST, 5,000 embedded digits (3,500 train)",
                "mnist-embedded-rgb32": "STAND-IN: embedded MNIST digits padded to 32×32×3 (not CIFAR-10)",
                "mnist": "MNIST (full)", "cifar10": "CIFAR-10" + (" (5,000 training images)" if cfg.get("subset")
                                                                 else "")}[cfg["dataset"]]


# --------------------------------------------------------------------------- running
def trained_model(ctx: Context, folder: Path, name: str, cfg: dict):
    """Train (or reuse / resume) one run; return the best model, its MetaSolver and test loader."""
    run_dir = folder / "runs" / name
    eval_batches = cfg.pop("eval_batches", None)
    cfg = {k: v for k, v in cfg.items() if k in DEFAULTS}
    cfg["name"] = name
    if not (run_dir / "summary.json").exists():
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        config_path = run_dir.parent / f"{name}.yaml"
        config_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        flags = ["--config", str(config_path), "--out", str(run_dir), "--no-eval"]
        flags += ["--quiet"] if ctx.quiet else []
        flags += ["--resume"] if (run_dir / "checkpoint.pt").exists() else []
        train.main(flags)
    state = load_checkpoint(run_dir / "best.pt", map_location=ctx.device)
    meta = meta_solver_from_config(cfg["solver"], seed=cfg["seed"])
    model = build_model(cfg["model"], meta, **cfg.get("model_kwargs", {})).to(ctx.device)
    model.load_state_dict(state["model"])
    model.eval()
    splits = get_datasets(cfg["dataset"], data_dir=cfg.get("data_dir"), seed=cfg["seed"])
    loaders = make_loaders(splits, batch_size=cfg["batch_size"], seed=cfg["seed"], subset=cfg.get("subset"))
    if ctx.probe is None:  # the experiment's first model also gets the strong attacks and the checks
        ctx.probe = (name, model, meta, loaders.test)
    return model, meta, loaders.test, eval_batches, run_dir


def attack(ctx, model, meta, loader, max_batches, attacks, eps, pgd):
    with meta.evaluating():
        return robustness_rows(model, loader, "", attacks, eps, device=ctx.device, max_batches=max_batches, **pgd)


def mean_se(values):
    n = len(values)
    mean = sum(values) / n
    se = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1) / n) if n > 1 else float("nan")
    return mean, se, n


#: two-sided 95% quantiles of Student's t by degrees of freedom (the 30-df value serves beyond)
_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262,
         10: 2.228, 12: 2.179, 15: 2.131, 20: 2.086, 30: 2.042}


def t_975(df: int) -> float:
    """The 97.5% quantile of Student's t with ``df`` degrees of freedom (conservative between
    tabulated values)."""
    below = [d for d in _T975 if d <= df]
    return _T975[max(below)] if below else float("inf")


def summarize(rows, keys):
    """Group rows by ``keys`` (+ attack, eps) across seeds -> mean, standard error, n."""
    groups = defaultdict(list)
    for r in rows:
        groups[tuple(r[k] for k in keys) + (r["attack"], r["eps"])].append(r["accuracy"])
    out = []
    for key, values in groups.items():
        mean, se, n = mean_se(values)
        out.append({**dict(zip(keys + ["attack", "eps"], key)), "mean": mean, "se": se, "n": n})
    return out


def fmt(mean, se):
    return f"{100 * mean:.2f} ± {100 * se:.2f}" if not math.isnan(se) else f"{100 * mean:.2f}"


def overlap(a, b) -> str:
    """Whether two mean ± SE intervals are separated (difference larger than the error bars)."""
    gap = abs(a["mean"] - b["mean"])
    bars = (a["se"] if not math.isnan(a["se"]) else 0) + (b["se"] if not math.isnan(b["se"]) else 0)
    return "larger than the error bars" if gap > bars else "within the error bars"


# --------------------------------------------------------------------------- experiments
def fig3a(ctx, folder):
    """MNIST, rk2_u: clean and PGD accuracy vs u (models trained with each u)."""
    grid = ([0.25, 1.0] if ctx.dry_run else [0.1, 0.25, 0.4, 0.55, 0.7, 0.85, 1.0]) if ctx.scale == "small" \
        else [round(0.05 * i, 2) for i in range(1, 21)]
    rows = []
    for u in grid:
        for seed in ctx.seeds:
            cfg = ctx.mnist(seed=seed, solver={"mode": "fixed", "method": "rk2_u", "params": {"u": u}})
            model, meta, loader, nb, _ = trained_model(ctx, folder, f"u{u:g}_seed{seed}", cfg)
            found = attack(ctx, model, meta, loader, nb, ["pgd"], [0.3], PAPER_PGD)
            found += [dict(r, attack="pgd20") for r in attack(ctx, model, meta, loader, nb, ["pgd"], [0.3], STRONG_PGD)
                      if r["attack"] != "clean"]
            rows += [{"u": u, "seed": seed, **r} for r in found]
    summary = summarize(rows, ["u"])
    fig, axes = new_figure(figsize=(6, 4))
    ax = axes[0][0]
    for name, label in [("clean", "clean"), ("pgd", "PGD ε=0.3, 7×2/255 (paper)"), ("pgd20", "PGD ε=0.3, 20 steps")]:
        pts = sorted((s["u"], s["mean"], s["se"]) for s in summary if s["attack"] == name)
        ax.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=[0 if math.isnan(p[2]) else p[2] for p in pts],
                    marker="o", capsize=3, label=label)
    ax.set_xlabel("u (rk2_u)")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return rows, summary, fig, ctx.mnist(), _table(summary, "u", ["clean", "pgd", "pgd20"])


def fig3b(ctx, folder):
    """MNIST, FGSM-random adversarial training: robust validation accuracy per epoch for three u."""
    grid = [0.25, 1.0] if ctx.dry_run else [0.25, 0.5, 1.0]
    rows = []
    for u in grid:
        for seed in ctx.seeds:
            track = {"attack": "pgd", "eps": 0.3, "pgd_steps": 7, "pgd_step_size": 2 / 255,
                     "max_batches": 1 if ctx.dry_run else 8}
            cfg = ctx.mnist(seed=seed, solver={"mode": "fixed", "method": "rk2_u", "params": {"u": u}},
                            adversarial={"kind": "fgsm_random", "eps": 0.3}, track_robust=track)
            _, _, _, _, run_dir = trained_model(ctx, folder, f"u{u:g}_seed{seed}", cfg)
            for line in (run_dir / "metrics.jsonl").read_text().splitlines():
                record = json.loads(line)
                rows.append({"u": u, "seed": seed, "epoch": record["epoch"] + 1, "attack": "pgd", "eps": 0.3,
                             "accuracy": record["robust_val_acc"]})
                rows.append({"u": u, "seed": seed, "epoch": record["epoch"] + 1, "attack": "clean", "eps": 0.0,
                             "accuracy": record["val_acc"]})
    summary = summarize(rows, ["u", "epoch"])
    fig, axes = new_figure(figsize=(6, 4))
    ax = axes[0][0]
    for u in grid:
        pts = sorted((s["epoch"], s["mean"], s["se"]) for s in summary if s["u"] == u and s["attack"] == "pgd")
        ys = [p[1] for p in pts]
        se = [0 if math.isnan(p[2]) else p[2] for p in pts]
        ax.plot([p[0] for p in pts], ys, marker="o", label=f"u = {u:g}")
        ax.fill_between([p[0] for p in pts], [y - s for y, s in zip(ys, se)], [y + s for y, s in zip(ys, se)],
                        alpha=0.2)
    ax.set_xlabel("epoch")
    ax.set_ylabel("robust validation accuracy (PGD ε=0.3)")
    ax.legend()
    ax.grid(alpha=0.3)
    last = max(s["epoch"] for s in summary)
    return rows, summary, fig, ctx.mnist(), _table([s for s in summary if s["epoch"] == last], "u", ["clean", "pgd"])


def fig4(ctx, folder):
    """CIFAR-10 model, rk2_u: FGSM accuracy vs ε for several u."""
    grid = [0.25, 1.0] if ctx.dry_run else [0.25, 0.5, 0.75, 1.0]
    eps = [1 / 255, 2 / 255, 4 / 255, 8 / 255]
    rows = []
    for u in grid:
        for seed in ctx.seeds:
            cfg = ctx.cifar(seed=seed, solver={"mode": "fixed", "method": "rk2_u", "params": {"u": u}})
            model, meta, loader, nb, _ = trained_model(ctx, folder, f"u{u:g}_seed{seed}", cfg)
            rows += [{"u": u, "seed": seed, **r} for r in attack(ctx, model, meta, loader, nb, ["fgsm"], eps, PAPER_PGD)]
    summary = summarize(rows, ["u"])
    fig, axes = new_figure(figsize=(6, 4))
    ax = axes[0][0]
    for u in grid:
        pts = sorted((s["eps"], s["mean"], s["se"]) for s in summary if s["u"] == u)
        ax.errorbar([255 * p[0] for p in pts], [p[1] for p in pts], yerr=[0 if math.isnan(p[2]) else p[2] for p in pts],
                    marker="o", capsize=3, label=f"u = {u:g}")
    ax.set_xlabel("ε × 255 (FGSM; 0 = clean)")
    ax.set_ylabel("accuracy")
    ax.legend()
    ax.grid(alpha=0.3)
    return rows, summary, fig, ctx.cifar(), _table(summary, "u", ["clean", "fgsm"])


def fig5(ctx, folder):
    """MNIST: robust accuracy vs ε for the four rk4 families and Euler (1 and 10 steps)."""
    steps = 1 if ctx.scale == "small" else 2
    solvers = [("rk4_u1", {}, steps), ("rk4_u2", {}, steps), ("rk4_u3", {}, steps), ("rk4_uv", {}, steps),
               ("euler", {}, 1), ("euler", {}, 10)]
    if ctx.dry_run:
        solvers = [solvers[1], solvers[4]]
    eps = [0.1, 0.2, 0.3] if not ctx.dry_run else [0.1]
    rows = []
    for method, params, n in solvers:
        label = f"{method} {n} step{'s' if n > 1 else ''}"
        for seed in ctx.seeds:
            cfg = ctx.mnist(seed=seed, solver={"mode": "fixed", "method": method, "params": params, "n_steps": n})
            model, meta, loader, nb, _ = trained_model(ctx, folder, f"{method}_{n}_seed{seed}", cfg)
            found = attack(ctx, model, meta, loader, nb, ["fgsm", "pgd"], eps, STRONG_PGD)
            rows += [{"solver": label, "seed": seed, **{k: v for k, v in r.items() if k != "solver"}} for r in found]
    summary = summarize(rows, ["solver"])
    fig, axes = new_figure(2, figsize=(10, 4))
    for ax, name in zip(axes[0], ["fgsm", "pgd"]):
        for label in dict.fromkeys(r["solver"] for r in rows):
            pts = sorted((s["eps"], s["mean"], s["se"]) for s in summary
                         if s["solver"] == label and s["attack"] in (name, "clean"))
            ax.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=[0 if math.isnan(p[2]) else p[2] for p in pts],
                        marker="o", capsize=3, label=label)
        ax.set_title(name.upper() + (" (20 steps, 2.5ε/20)" if name == "pgd" else ""))
        ax.set_xlabel("ε")
        ax.set_ylabel("accuracy")
        ax.grid(alpha=0.3)
    axes[0][1].legend(fontsize=8)
    return rows, summary, fig, ctx.mnist(), _table(summary, "solver", ["clean", "fgsm", "pgd"])


def _smoothing_table(ctx, folder, adversarial, eps):
    variants = {"standard": {"mode": "fixed", "method": "rk2_u", "params": {"u": 0.5}},
                "smoothing": {"mode": "smoothing", "method": "rk2_u", "params": {"u": 0.5},
                              "distribution": "normal", "scale": 0.0125}}
    rows = []
    for name, solver in variants.items():
        for seed in ctx.seeds:
            cfg = ctx.cifar(seed=seed, solver=solver, adversarial=adversarial)
            model, meta, loader, nb, _ = trained_model(ctx, folder, f"{name}_seed{seed}", cfg)
            found = attack(ctx, model, meta, loader, nb, ["fgsm", "pgd"], [eps], {"pgd_steps": 7,
                                                                                  "pgd_step_size": eps / 4})
            rows += [{"training": name, "seed": seed, **{k: v for k, v in r.items() if k != "solver"}} for r in found]
    summary = summarize(rows, ["training"])
    fig = _bars(summary, "training", list(variants), f"accuracy (ε = {255 * eps:.0f}/255)")
    return rows, summary, fig, ctx.cifar(), _table(summary, "training", ["clean", "fgsm", "pgd"])


def table1(ctx, folder):
    """CIFAR-10: standard training vs solver smoothing (normal, σ = 0.0125); FGSM and PGD at ε = 2/255."""
    return _smoothing_table(ctx, folder, {"kind": "none"}, 2 / 255)


def table2(ctx, folder):
    """CIFAR-10: the same on top of FGSM-random adversarial training, ε = 8/255."""
    return _smoothing_table(ctx, folder, {"kind": "fgsm_random", "eps": 8 / 255, "alpha": 10 / 255}, 8 / 255)


def variants(ctx, folder):
    """MNIST: solver-smoothing variants the paper did not try, against a fixed solver."""
    base = {"mode": "smoothing", "method": "rk2_u", "params": {"u": 0.5}}
    runs = {
        "fixed": ({"mode": "fixed", "method": "rk2_u", "params": {"u": 0.5}}, "epoch"),
        "normal/epoch": ({**base, "distribution": "normal", "scale": 0.1}, "epoch"),
        "normal/batch": ({**base, "distribution": "normal", "scale": 0.1}, "batch"),
        "normal/sample": ({**base, "distribution": "normal", "scale": 0.1, "per_sample": True}, "batch"),
        "cauchy/batch": ({**base, "distribution": "cauchy", "scale": 0.05}, "batch"),
        "uniform/batch": ({**base, "distribution": "uniform", "scale": 0.25}, "batch"),
    }
    if ctx.dry_run:
        runs = {k: runs[k] for k in ("fixed", "normal/sample")}
    rows = []
    for name, (solver, resample) in runs.items():
        for seed in ctx.seeds:
            cfg = ctx.mnist(seed=seed, solver=solver, resample=resample)
            model, meta, loader, nb, _ = trained_model(ctx, folder, f"{name.replace('/', '_')}_seed{seed}", cfg)
            found = attack(ctx, model, meta, loader, nb, ["fgsm", "pgd"], [0.2], STRONG_PGD)
            rows += [{"variant": name, "seed": seed, **{k: v for k, v in r.items() if k != "solver"}} for r in found]
    summary = summarize(rows, ["variant"])
    fig = _bars(summary, "variant", list(runs), "accuracy (ε = 0.2)")
    return rows, summary, fig, ctx.mnist(), _table(summary, "variant", ["clean", "fgsm", "pgd"])


def _bars(summary, key, names, ylabel):
    """Grouped bars (clean, FGSM, PGD) per ``key`` value, with standard-error whiskers."""
    fig, axes = new_figure(figsize=(max(6, 1.3 * len(names)), 4))
    ax = axes[0][0]
    for i, attack_name in enumerate(["clean", "fgsm", "pgd"]):
        vals = [next(s for s in summary if s[key] == n and s["attack"] == attack_name) for n in names]
        ax.bar([j + 0.27 * (i - 1) for j in range(len(names))], [v["mean"] for v in vals], width=0.25,
               yerr=[0 if math.isnan(v["se"]) else v["se"] for v in vals], capsize=3, label=attack_name)
    ax.set_xticks(range(len(names)), names, fontsize=8)
    ax.set_ylabel(ylabel)
    ax.legend()
    return fig


def _table(summary, key, attacks):
    """Markdown: one row per key value, mean ± SE (%) per attack."""
    eps_of = {}
    for s in summary:
        if s["attack"] != "clean":
            eps_of.setdefault(s["attack"], set()).add(s["eps"])
    header = ["clean" if a == "clean" else f"{a} ε={'/'.join(f'{e:.3g}' for e in sorted(eps_of.get(a, [])))}"
              for a in attacks]
    lines = [f"| {key} | " + " | ".join(header) + " |", "|---" * (len(attacks) + 1) + "|"]
    for value in dict.fromkeys(s[key] for s in summary):
        cells = []
        for a in attacks:
            found = sorted((s for s in summary if s[key] == value and s["attack"] == a), key=lambda s: s["eps"])
            cells.append(", ".join(fmt(s["mean"], s["se"]) for s in found) or "—")
        lines.append(f"| {value} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


RUNNERS = {"fig3a": fig3a, "fig3b": fig3b, "fig4": fig4, "fig5": fig5, "table1": table1, "table2": table2,
           "variants": variants}


def paired_difference(rows, key, a, b, attack_name):
    """Mean ± SE over seeds of (b − a): runs that share a seed share initialization and data
    order, so the paired difference has a smaller error than the two means."""
    acc = {(r[key], r["seed"]): r["accuracy"] for r in rows if r["attack"] == attack_name}
    seeds = sorted({seed for (_, seed) in acc if (a, seed) in acc and (b, seed) in acc})
    return mean_se([acc[(b, seed)] - acc[(a, seed)] for seed in seeds])


def comparison(name, summary, rows) -> str:
    """Our headline comparison in words, with whether it exceeds the error bars."""
    if name in ("table1", "table2"):
        lines = ["| training | FGSM ours | FGSM paper | PGD ours | PGD paper |", "|---|---|---|---|---|"]
        for training in ("standard", "smoothing"):
            ours = {s["attack"]: s for s in summary if s["training"] == training}
            lines.append(f"| {training} | {fmt(ours['fgsm']['mean'], ours['fgsm']['se'])} | "
                         f"{PAPER[name][training]['fgsm']} | {fmt(ours['pgd']['mean'], ours['pgd']['se'])} | "
                         f"{PAPER[name][training]['pgd']} |")
        for attack_name in ("fgsm", "pgd"):
            a = next(s for s in summary if s["training"] == "standard" and s["attack"] == attack_name)
            b = next(s for s in summary if s["training"] == "smoothing" and s["attack"] == attack_name)
            diff, se, n = paired_difference(rows, "training", "standard", "smoothing", attack_name)
            half = t_975(n - 1) * se if n > 1 else float("nan")
            verdict = "beyond" if abs(diff) > half else "within"
            lines.append(f"\n{attack_name.upper()}: smoothing − standard = {100 * (b['mean'] - a['mean']):+.2f} points, "
                         f"{overlap(a, b)}; paired by seed: {100 * diff:+.2f} ± {100 * se:.2f} (n = {n}), "
                         f"{verdict} its 95% interval (± {100 * half:.2f}).")
        return "\n".join(lines)
    if name == "variants":
        lines = ["Seed-paired differences against the fixed solver, in points (mean ± SE over seeds). "
                 "`*`: |mean| > t·SE with t the two-sided 95% Student-t value for n − 1 degrees of freedom "
                 "(4.30 for 3 seeds); with this many comparisons expect about one `*` by chance in 20.", "",
                 "| variant | clean | fgsm | pgd |", "|---|---|---|---|"]
        for variant in dict.fromkeys(r["variant"] for r in rows):
            if variant == "fixed":
                continue
            cells = []
            for attack_name in ("clean", "fgsm", "pgd"):
                diff, se, n = paired_difference(rows, "variant", "fixed", variant, attack_name)
                beyond = " *" if n > 1 and abs(diff) > t_975(n - 1) * se else ""
                cells.append(f"{100 * diff:+.2f} ± {100 * se:.2f}{beyond}")
            lines.append(f"| {variant} | " + " | ".join(cells) + " |")
        return "\n".join(lines + ["", f"Paper: {PAPER[name]}"])
    return f"Paper: {PAPER[name]}"


def stronger_evaluation(ctx: Context, name: str) -> str:
    """Strong attacks (per-example worst case incl. AutoAttack) and gradient-masking checks on
    the experiment's first model, as Markdown."""
    from odezoo.experiments.masking import format_checks, gradient_masking_checks
    from odezoo.experiments.evaluation import strong_results_table, strong_robustness

    label, model, meta, loader = ctx.probe
    eps_list = CHECK_EPS[name][:1] if ctx.dry_run else CHECK_EPS[name]
    batches = 1 if ctx.dry_run else max(1, 128 // loader.batch_size)      # 128 test images
    budget = dict(autoattack_steps=5, pgd_steps=(7, 4), pgd_restarts=(1, 1)) if ctx.dry_run else \
        dict(autoattack_steps=100, pgd_steps=(7, 20), pgd_restarts=(1, 3))
    started = time.time()
    with meta.evaluating():
        results = [strong_robustness(model, loader, eps, device=ctx.device, max_batches=batches,
                                     autoattack_version="fast", **budget) for eps in eps_list]
        checks = gradient_masking_checks(model, loader, eps_list, device=ctx.device, max_batches=batches,
                                         pgd_steps=4 if ctx.dry_run else 20, restarts=1 if ctx.dry_run else 2)
    rows = strong_results_table(results, label=label)
    attacks = list(dict.fromkeys(r["attack"] for r in rows))
    lines = [f"## Stronger attacks and gradient-masking checks ({label}, {results[0].n_examples} test images, "
             f"{(time.time() - started) / 60:.1f} min)", "",
             "| attack | " + " | ".join(f"ε={e:.3g}" for e in eps_list) + " |", "|---" * (len(eps_list) + 1) + "|"]
    for attack_name in attacks:
        cells = [next((f"{100 * r['accuracy']:.1f}" for r in rows if r["attack"] == attack_name and
                       (attack_name == "clean" or abs(r["eps"] - e) < 1e-12)), "—") for e in eps_list]
        lines.append(f"| {attack_name} | " + " | ".join(cells) + " |")
    lines += ["", "`worst`: correct under every attack (per example). " + results[0].descriptions.get("autoattack", ""),
              "", "```", format_checks(checks), "```", ""]
    save_csv(ctx.out / name / "strong.csv", rows)
    return "\n".join(lines)


def run_experiment(ctx: Context, name: str) -> Path:
    folder = ctx.out / name
    folder.mkdir(parents=True, exist_ok=True)
    started = time.time()
    print(f"=== {name} ({ctx.scale}{', dry run' if ctx.dry_run else ''}) -> {folder}", flush=True)
    ctx.probe = None
    rows, summary, fig, cfg, table = RUNNERS[name](ctx, folder)
    strong = stronger_evaluation(ctx, name) if ctx.checks and ctx.probe is not None else ""
    save_csv(folder / "raw.csv", rows)
    save_csv(folder / "summary.csv", summary)
    fig.suptitle(f"{name}: {RUNNERS[name].__doc__.strip().splitlines()[0]}", fontsize=9)
    save_figure(fig, folder / f"{name}.png")
    minutes = (time.time() - started) / 60
    text = [f"# {name} — {ctx.scale} scale{' (dry run: not a result)' if ctx.dry_run else ''}", "",
            RUNNERS[name].__doc__.strip(), "",
            f"* data: {ctx.data_label(cfg)}",
            f"* model: {cfg['model']} {cfg.get('model_kwargs') or ''}, {cfg['epochs']} epochs, batch {cfg['batch_size']}, "
            f"solver steps {cfg['solver'].get('n_steps')}",
            f"* seeds: {ctx.seeds} (mean ± standard error over seeds, in %)",
            f"* wall time: {minutes:.1f} min on {torch.get_num_threads()} CPU thread(s) ({ctx.device})", "",
            table, "", comparison(name, summary, rows), "", strong,
            f"Regenerate: `python recipes/reproduce.py {name} --scale {ctx.scale}"
            f"{' --data-dir ' + str(ctx.data_dir) if ctx.data_dir else ''}`", ""]
    (folder / "summary.md").write_text("\n".join(text))
    print("\n".join(text), flush=True)
    return folder


def write_report(out: Path, docs: Path) -> Path:
    """Copy every finished experiment's summary and figure into ``docs`` (results.md between
    the generated markers, figures under results/)."""
    import shutil

    page = docs / "results.md"
    text = page.read_text() if page.exists() else "<!-- generated:start -->\n<!-- generated:end -->\n"
    start, end = "<!-- generated:start -->", "<!-- generated:end -->"
    if start not in text or end not in text:
        raise SystemExit(f"{page} lacks the markers {start} / {end}")
    (docs / "results").mkdir(parents=True, exist_ok=True)
    parts = []
    for name in EXPERIMENTS:
        summary = out / name / "summary.md"
        if not summary.exists():
            parts.append(f"### {name}\n\nNot run yet at this scale: `python recipes/reproduce.py {name} --scale "
                         f"{out.name}`.\n")
            continue
        shutil.copy(out / name / f"{name}.png", docs / "results" / f"{name}.png")
        body = summary.read_text().replace("\n## ", "\n#### ").replace("# ", "### ", 1)
        parts.append(body + f"\n![{name}](results/{name}.png)\n")
    head, rest = text.split(start, 1)
    page.write_text(head + start + "\n" + "\n".join(parts) + end + rest.split(end, 1)[1])
    return page


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("experiment", choices=EXPERIMENTS + ("all", "report"),
                   help="an experiment, all of them, or report: copy finished results into docs/results.md")
    p.add_argument("--scale", choices=["small", "paper"], default="small")
    p.add_argument("--dry-run", action="store_true", help="tiny data, one epoch, two seeds: checks the pipeline")
    p.add_argument("--out", help="output folder (default runs/reproduce/<scale>)")
    p.add_argument("--data-dir", help="folder with MNIST / CIFAR-10 (paper scale; CIFAR at small scale)")
    p.add_argument("--seeds", help="comma list (default 0,1,2)")
    p.add_argument("--device", default="auto")
    p.add_argument("--verbose", action="store_true", help="progress bars of every training run")
    p.add_argument("--no-checks", action="store_true",
                   help="skip the strong attacks (AutoAttack) and gradient-masking checks on each experiment's first model")
    args = p.parse_args(argv)
    ctx = Context(args)
    if args.experiment == "report":
        print(f"wrote {write_report(ctx.out, ROOT / 'docs')}")
        return 0
    if ctx.scale == "paper" and not args.data_dir:
        p.error("--scale paper needs --data-dir (full MNIST / CIFAR-10; add nothing else: run "
                "`python recipes/train.py --config recipes/configs/mnist_paper.yaml --data-dir DIR --download` "
                "once on a machine with internet to fetch the data)")
    if len(ctx.seeds) < 2 and not args.dry_run:
        p.error("give at least 2 seeds (3 or more recommended): results are mean ± standard error")
    for name in (EXPERIMENTS if args.experiment == "all" else (args.experiment,)):
        run_experiment(ctx, name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
