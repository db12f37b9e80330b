"""PNG plots of robustness results and training curves.

Figures are drawn on ``matplotlib.figure.Figure`` objects, never through ``pyplot``: no
global backend switch, no figure manager, nothing left open — importing this module does
not change how the rest of a program plots.

Result rows are dicts with at least ``solver`` (label), ``attack`` (``clean``, ``fgsm``,
``pgd``, ...), ``eps`` and ``accuracy``; grid plots also use ``method``, ``params`` and
``n_steps``.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from .io import read_metrics

__all__ = ["new_figure", "save_figure", "solver_label", "plot_accuracy_vs_eps", "plot_solver_grid",
           "plot_accuracy_vs_param", "plot_training_curves", "MIN_COLOUR_SPAN"]


def new_figure(ncols: int = 1, nrows: int = 1, figsize=(6, 4)):
    """A fresh ``(Figure, axes)``; ``axes`` is a 2-D array of shape ``(nrows, ncols)``."""
    fig = Figure(figsize=figsize)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def save_figure(fig: Figure, path, tight: bool = True) -> Path:
    """Save ``fig`` as a PNG (folders created) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if tight:
        fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return path




def _interval(row) -> tuple[float, float]:
    """(below, above) the accuracy: its 95% interval when the row carries one (the results schema)."""
    if "ci_low" in row and "ci_high" in row:
        return max(0.0, row["accuracy"] - row["ci_low"]), max(0.0, row["ci_high"] - row["accuracy"])
    return 0.0, 0.0


def plot_accuracy_vs_eps(rows, path, title="Robust accuracy vs ε"):
    """One panel per attack; one line per solver; ε = 0 is the clean accuracy.  Rows of the
    results schema get their 95% intervals as error bars (a reader compares lines here)."""
    clean = {r["solver"]: r for r in rows if r["attack"] == "clean"}
    attacks = sorted({r["attack"] for r in rows if r["attack"] != "clean"})
    fig, axes = new_figure(max(1, len(attacks)), figsize=(5 * max(1, len(attacks)), 4))
    for ax, attack in zip(axes[0], attacks or ["clean"]):
        lines = defaultdict(list)
        for r in rows:
            if r["attack"] == attack:
                lines[r["solver"]].append(r)
        for solver, points in sorted(lines.items()):
            points = sorted(([clean[solver]] if solver in clean and attack != "clean" else []) + points,
                            key=lambda r: r["eps"])
            below, above = zip(*(_interval(r) for r in points))
            ax.errorbar([r["eps"] for r in points], [r["accuracy"] for r in points], yerr=[below, above],
                        marker="o", capsize=3, label=solver)
        ax.set_xlabel("ε (pixels)")
        ax.set_ylabel("accuracy")
        ax.set_title(f"{attack.upper()}")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7)
    fig.suptitle(title)
    return save_figure(fig, path)


def solver_label(row) -> str:
    """``method(p=v, ...)`` of a result row (its ``solver`` label when it has no method)."""
    params = row.get("params") or {}
    text = ",".join(f"{k}={v:.3g}" for k, v in params.items())
    return f"{row.get('method', row['solver'])}({text})" if text else str(row.get("method", row["solver"]))


#: the least accuracy range the solver grid's colour scale spans (10 points)
MIN_COLOUR_SPAN = 0.10


def plot_solver_grid(rows, path, attack="pgd", eps=None, train_solver=None,
                     title="Solver overfitting: accuracy across solvers and step counts"):
    """Heat maps (clean | attack at eps) over solver parameters × number of steps.

    The panels share one colour scale, spanning at least
    `MIN_COLOUR_SPAN` (so a
    difference of an image or two never fills the colour range), with one colour bar; the
    value is printed in every cell, the title gives the images per cell and the half-width of a
    95% interval at that count, and the training solver ``(label, n_steps)`` is outlined: a
    model that only works with it shows one bright cell in a darker row or column.  A clean-only
    grid (``attack="clean"``) is one panel, never the clean panel twice."""
    attacked = [] if attack == "clean" else \
        [r for r in rows if r["attack"] == attack and (eps is None or abs(r["eps"] - eps) < 1e-12)]
    panels = [("clean", [r for r in rows if r["attack"] == "clean"])]
    if attacked:
        panels.append((f"{attack} ε={attacked[0]['eps']:.3g}", attacked))
    values = np.array([r["accuracy"] for _, subset in panels for r in subset], dtype=float)
    values = values[np.isfinite(values)]
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 1.0)
    if high - low < MIN_COLOUR_SPAN:
        low = min(max(0.0, (low + high) / 2 - MIN_COLOUR_SPAN / 2), 1.0 - MIN_COLOUR_SPAN)
        high = low + MIN_COLOUR_SPAN
    solvers = sorted({solver_label(r) for r in panels[0][1]})
    steps = sorted({r.get("n_steps") for r in panels[0][1]}, key=lambda s: (s is None, s or 0))
    fig, axes = new_figure(len(panels), figsize=(1.1 * len(steps) * len(panels) + 4.5 * len(panels),
                                                 0.45 * len(solvers) + 2))
    for ax, (name, subset) in zip(axes[0], panels):
        grid = np.full((len(solvers), len(steps)), np.nan)
        for r in subset:
            grid[solvers.index(solver_label(r)), steps.index(r.get("n_steps"))] = r["accuracy"]
        image = ax.imshow(grid, vmin=low, vmax=high, cmap="viridis", aspect="auto")
        middle = (low + high) / 2
        for i in range(len(solvers)):
            for j in range(len(steps)):
                if not np.isnan(grid[i, j]):
                    ax.text(j, i, f"{100 * grid[i, j]:.1f}", ha="center", va="center", fontsize=7,
                            color="white" if grid[i, j] < middle else "black")
        if train_solver is not None:
            label, n = train_solver
            if label in solvers and n in steps:
                ax.add_patch(Rectangle((steps.index(n) - 0.5, solvers.index(label) - 0.5), 1, 1,
                                       fill=False, edgecolor="red", linewidth=2.5))
        ax.set_xticks(range(len(steps)), ["adaptive" if s is None else str(s) for s in steps])
        ax.set_yticks(range(len(solvers)), solvers, fontsize=7)
        ax.set_xlabel("solver steps")
        ax.set_title(f"{name} (accuracy, %)", fontsize=9)
    fig.colorbar(image, ax=list(axes[0]), fraction=0.046, pad=0.04, format=lambda v, _: f"{100 * v:.1f}")
    counts = sorted({int(r["n_images"]) for _, subset in panels for r in subset if r.get("n_images")} |
                    {int(r["n_examples"]) for _, subset in panels for r in subset if r.get("n_examples")})
    note = ""
    if counts:
        half = 100 * 1.96 * np.sqrt(0.25 / counts[0])
        note = f"\n{counts[0]:,} images per cell: a 95% interval is up to ±{half:.1f} points; one shared colour scale"
    fig.suptitle(title + ("  (red box: training solver)" if train_solver else "") + note, fontsize=9)
    return save_figure(fig, path, tight=False)


def plot_accuracy_vs_param(rows, path, param="u", title=None):
    """Accuracy vs one solver parameter, one line per (attack, eps, n_steps)."""
    lines = defaultdict(list)
    for r in rows:
        params = r.get("params") or {}
        if param in params:
            key = f"{r['attack']}" + (f" ε={r['eps']:.3g}" if r["attack"] != "clean" else "") + \
                  (f", {r['n_steps']} steps" if r.get("n_steps") else "")
            lines[key].append((params[param], r["accuracy"]))
    fig, axes = new_figure()
    ax = axes[0][0]
    for key, points in sorted(lines.items()):
        ax.plot(*zip(*sorted(points)), marker="o", label=key)
    ax.set_xlabel(param)
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(title or f"Accuracy vs solver parameter {param}")
    return save_figure(fig, path)


def plot_training_curves(metrics_jsonl, path, title="Training"):
    """Training loss and accuracies per epoch from a recipe's JSON-lines metrics log, saved as a
    PNG at ``path`` (returned)."""
    records = read_metrics(metrics_jsonl)  # a log counting epochs from 0 (an older odezoo's) is refused
    epochs = [r["epoch"] for r in records]
    fig, axes = new_figure(2, figsize=(10, 4))
    left, right = axes[0]
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
    return save_figure(fig, path)
