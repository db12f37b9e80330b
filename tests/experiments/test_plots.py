"""odezoo.experiments.plots draws on Figure objects: no global backend switch, files written."""
import subprocess
import sys

import numpy as np

from odezoo.experiments import plots


def test_importing_plots_does_not_switch_the_backend():
    code = ("import matplotlib; matplotlib.use('svg'); import odezoo.experiments.plots, matplotlib.pyplot as plt; "
            "print(matplotlib.get_backend())")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "svg"


def grid_rows():
    rows = []
    for u in (0.25, 0.5, 1.0):
        for n in (2, 4):
            acc = 0.97 + 0.01 * u - 0.002 * n
            rows.append({"solver": f"rk2_u({u})", "method": "rk2_u", "params": {"u": u}, "n_steps": n,
                         "attack": "clean", "eps": 0.0, "accuracy": acc})
            rows.append({"solver": f"rk2_u({u})", "method": "rk2_u", "params": {"u": u}, "n_steps": n,
                         "attack": "pgd", "eps": 0.1, "accuracy": acc - 0.5})
    return rows


def test_every_plot_writes_a_png(tmp_path):
    import matplotlib.image

    rows = grid_rows()
    label = plots.solver_label(rows[0])
    assert label == "rk2_u(u=0.25)"
    paths = [plots.plot_solver_grid(rows, tmp_path / "grid.png", attack="pgd", eps=0.1, train_solver=(label, 2)),
             plots.plot_accuracy_vs_eps(rows, tmp_path / "eps.png"),
             plots.plot_accuracy_vs_param(rows, tmp_path / "u.png")]
    log = tmp_path / "m.jsonl"
    log.write_text('{"epoch": 1, "train_loss": 1.0, "val_acc": 0.5}\n{"epoch": 2, "train_loss": 0.5, "val_acc": 0.7}\n')
    paths.append(plots.plot_training_curves(log, tmp_path / "curves.png"))
    for path in paths:
        image = matplotlib.image.imread(path)
        assert image.shape[0] > 100 and image.shape[1] > 100
        assert np.ptp(image[..., :3]) > 0.1  # not a blank canvas


def _figure_of(monkeypatch, draw):
    """The Figure a plot function draws (captured instead of saved)."""
    captured = []
    monkeypatch.setattr(plots, "save_figure", lambda fig, path, tight=True: captured.append(fig) or path)
    draw()
    return captured[0]


def test_the_solver_grid_shares_one_colour_scale_and_never_repeats_the_clean_panel(monkeypatch, tmp_path):
    rows = [{**r, "accuracy": 0.97 + 0.02 * r["accuracy"], "n_images": 512} for r in grid_rows()]
    fig = _figure_of(monkeypatch, lambda: plots.plot_solver_grid(rows, tmp_path / "g.png", attack="pgd", eps=0.1))
    images = [im for ax in fig.axes for im in ax.images]
    assert len(images) == 2 and images[0].get_clim() == images[1].get_clim()  # one scale for both panels
    low, high = images[0].get_clim()
    assert high - low >= plots.MIN_COLOUR_SPAN - 1e-12  # a 97-99 % grid is not stretched over the colours
    assert "512 images per cell" in fig._suptitle.get_text()
    clean_only = [r for r in rows if r["attack"] == "clean"]
    fig = _figure_of(monkeypatch, lambda: plots.plot_solver_grid(clean_only, tmp_path / "c.png", attack="clean"))
    assert len([im for ax in fig.axes for im in ax.images]) == 1  # not the clean panel twice


def test_accuracy_vs_eps_shows_the_intervals_of_schema_rows(monkeypatch, tmp_path):
    from matplotlib.container import ErrorbarContainer

    from odezoo.experiments.results import schema_row

    rows = [schema_row(model="m", solver=s, attack=a, eps=e, n_images=256, accuracy=acc)
            for s in ("fixed", "smoothing") for a, e, acc in (("clean", 0.0, 0.9), ("pgd-7x2/255", 0.1, 0.5))]
    fig = _figure_of(monkeypatch, lambda: plots.plot_accuracy_vs_eps(rows, tmp_path / "e.png"))
    bars = [c for ax in fig.axes for c in ax.containers if isinstance(c, ErrorbarContainer)]
    assert len(bars) == 2 and all(c.has_yerr for c in bars)
