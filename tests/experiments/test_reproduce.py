"""recipes/reproduce.py: every experiment end to end on tiny data (--dry-run)."""
import csv
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "recipes"))

import reproduce  # noqa: E402


@pytest.fixture(scope="module")
def dry_run_all(tmp_path_factory):
    out = tmp_path_factory.mktemp("reproduce")
    assert reproduce.main(["all", "--dry-run", "--out", str(out), "--device", "cpu"]) == 0
    return out


@pytest.mark.parametrize("name", reproduce.EXPERIMENTS)
def test_every_experiment_writes_csv_png_and_summary(dry_run_all, name):
    folder = dry_run_all / name
    summary = (folder / "summary.md").read_text()
    assert "dry run: not a result" in summary and "seeds: [0, 1]" in summary
    assert (folder / f"{name}.png").stat().st_size > 1000
    rows = list(csv.DictReader(open(folder / "summary.csv")))
    assert rows and all(0 <= float(r["mean"]) <= 1 and int(r["n"]) == 2 for r in rows)
    raw = list(csv.DictReader(open(folder / "raw.csv")))
    assert {r["seed"] for r in raw} == {"0", "1"}


def test_tables_set_our_numbers_beside_the_papers(dry_run_all):
    text = (dry_run_all / "table1" / "summary.md").read_text()
    assert "33.02 ± 1.08" in text and "32.78 ± 0.65" in text
    assert "STAND-IN" in text  # no CIFAR-10 offline: the reduced setting says so
    assert "error bars" in text


def test_rerun_reuses_trained_models(dry_run_all, capsys):
    reproduce.main(["fig5", "--dry-run", "--out", str(dry_run_all), "--device", "cpu"])
    assert "epoch 1/1" not in capsys.readouterr().out


def test_se_and_grouping():
    mean, se, n = reproduce.mean_se([0.5, 0.7, 0.6])
    assert (round(mean, 12), round(se, 12), n) == (0.6, round(0.1 / 3 ** 0.5, 12), 3)
    rows = [{"u": 1, "attack": "pgd", "eps": 0.3, "accuracy": a} for a in (0.2, 0.4)]
    (s,) = reproduce.summarize(rows, ["u"])
    assert s["mean"] == pytest.approx(0.3) and s["n"] == 2


def test_paper_scale_needs_data(capsys):
    with pytest.raises(SystemExit):
        reproduce.main(["table1", "--scale", "paper"])
    assert "--data-dir" in capsys.readouterr().err


def test_report_copies_summaries_and_figures_into_the_docs(dry_run_all, tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "results.md").write_text("# Results\n\nprose\n<!-- generated:start -->\nold\n<!-- generated:end -->\ntail\n")
    page = reproduce.write_report(dry_run_all, docs)
    text = page.read_text()
    assert text.startswith("# Results\n\nprose\n") and text.endswith("tail\n") and "old" not in text
    for name in reproduce.EXPERIMENTS:
        assert f"![{name}](results/{name}.png)" in text and (docs / "results" / f"{name}.png").exists()
    assert "PASS  input-gradients" in text
