"""PNG plots of robustness results and training curves (matplotlib, headless).

Result rows are dicts with at least ``solver`` (label), ``attack`` (``clean``, ``fgsm``,
``pgd``, ...), ``eps`` and ``accuracy``; grid plots also use ``method``, ``params`` and
``n_steps``.
"""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

__all__ = ["plot_accuracy_vs_eps", "plot_solver_grid", "plot_accuracy_vs_param", "plot_training_curves"]


def _save(fig, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_accuracy_vs_eps(rows, path, title="Robust accuracy vs ε"):
    """One panel per attack; one line per solver; ε = 0 is the clean accuracy."""
    clean = {r["solver"]: r["accuracy"] for r in rows if r["attack"] == "clean"}
    attacks = sorted({r["attack"] for r in rows if r["attack"] != "clean"})
    fig, axes = plt.subplots(1, max(1, len(attacks)), figsize=(5 * max(1, len(attacks)), 4), squeeze=False)
    for ax, attack in zip(axes[0], attacks or ["clean"]):
        lines = defaultdict(list)
        for r in rows:
            if r["attack"] == attack:
                lines[r["solver"]].append((r["eps"], r["accuracy"]))
        for solver, points in sorted(lines.items()):
            points = sorted(([(0.0, clean[solver])] if solver in clean else []) + points)
            ax.plot(*zip(*points), marker="o", label=solver)
        ax.set_xlabel("ε (pixels)")
        ax.set_ylabel("accuracy")
        ax.set_title(f"{attack.upper()}")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7)
    fig.suptitle(title)
    return _save(fig, path)


def _param_label(row) -> str:
    params = row.get("params") or {}
    text = ",".join(f"{k}={v:.3g}" for k, v in params.items())
    return f"{row.get('method', row['solver'])}({text})" if text else str(row.get("method", row["solver"]))


def plot_solver_grid(rows, path, attack="pgd", eps=None, train_solver=None,
                     title="Solver overfitting: accuracy across solvers and step counts"):
    """Heatmaps (clean | attack at eps) over solver parameters × number of steps.

    The training solver's cell is outlined: a model that only works with it shows one
    bright cell in a dark row or column."""
    import numpy as np

    attacked = [r for r in rows if r["attack"] == attack and (eps is None or abs(r["eps"] - eps) < 1e-12)]
    panels = [("clean", [r for r in rows if r["attack"] == "clean"])]
    if attacked:
        panels.append((f"{attack.upper()} ε={attacked[0]['eps']:.3g}", attacked))
    solvers = sorted({_param_label(r) for r in panels[0][1]})
    steps = sorted({r.get("n_steps") for r in panels[0][1]}, key=lambda s: (s is None, s))
    fig, axes = plt.subplots(1, len(panels), figsize=(1.2 * len(steps) * len(panels) + 3, 0.45 * len(solvers) + 2),
                             squeeze=False)
    for ax, (name, subset) in zip(axes[0], panels):
        grid = np.full((len(solvers), len(steps)), np.nan)
        for r in subset:
            grid[solvers.index(_param_label(r)), steps.index(r.get("n_steps"))] = r["accuracy"]
        image = ax.imshow(grid, vmin=0, vmax=1, cmap="viridis", aspect="auto")
        for i in range(len(solvers)):
            for j in range(len(steps)):
                if not np.isnan(grid[i, j]):
                    ax.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center", fontsize=7,
                            color="white" if grid[i, j] < 0.6 else "black")
        if train_solver is not None:
            label, n = train_solver
            if label in solvers and n in steps:
                ax.add_patch(plt.Rectangle((steps.index(n) - 0.5, solvers.index(label) - 0.5), 1, 1,
                                           fill=False, edgecolor="red", linewidth=2.5))
        ax.set_xticks(range(len(steps)), [str(s) for s in steps])
        ax.set_yticks(range(len(solvers)), solvers, fontsize=7)
        ax.set_xlabel("steps")
        ax.set_title(name)
    fig.colorbar(image, ax=axes[0].tolist(), shrink=0.8, label="accuracy")
    fig.suptitle(title + ("  (red: training solver)" if train_solver else ""), fontsize=9)
    fig.subplots_adjust(right=0.85)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_accuracy_vs_param(rows, path, param="u", title=None):
    """Accuracy vs one solver parameter, one line per (attack, eps, n_steps)."""
    lines = defaultdict(list)
    for r in rows:
        params = r.get("params") or {}
        if param in params:
            key = f"{r['attack']}" + (f" ε={r['eps']:.3g}" if r["attack"] != "clean" else "") + \
                  (f", {r['n_steps']} steps" if r.get("n_steps") else "")
            lines[key].append((params[param], r["accuracy"]))
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, points in sorted(lines.items()):
        ax.plot(*zip(*sorted(points)), marker="o", label=key)
    ax.set_xlabel(param)
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(title or f"Accuracy vs solver parameter {param}")
    return _save(fig, path)


def plot_training_curves(metrics_jsonl, path, title="Training"):
    records = [json.loads(line) for line in Path(metrics_jsonl).read_text().splitlines() if line.strip()]
    epochs = [r["epoch"] + 1 for r in records]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot(epochs, [r["train_loss"] for r in records], marker="o")
    left.set_xlabel("epoch")
    left.set_ylabel("train loss")
    for key in ("train_acc", "val_acc", "robust_val_acc"):
        if any(key in r for r in records):
            right.plot([e for e, r in zip(epochs, records) if key in r], [r[key] for r in records if key in r],
                       marker="o", label=key)
    right.set_xlabel("epoch")
    right.set_ylabel("accuracy")
    right.set_ylim(0, 1.02)
    right.legend()
    for ax in (left, right):
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    return _save(fig, path)
