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
    log.write_text('{"epoch": 0, "train_loss": 1.0, "val_acc": 0.5}\n{"epoch": 1, "train_loss": 0.5, "val_acc": 0.7}\n')
    paths.append(plots.plot_training_curves(log, tmp_path / "curves.png"))
    for path in paths:
        image = matplotlib.image.imread(path)
        assert image.shape[0] > 100 and image.shape[1] > 100
        assert np.ptp(image[..., :3]) > 0.1  # not a blank canvas
