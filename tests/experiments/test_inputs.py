"""Run folders and inputs nothing can corrupt: folder locks, sealed results files, the report's
validation of what it reads, strict configs, the one results schema, the loggers."""
from __future__ import annotations

import csv
import json
import multiprocessing
import os
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from odezoo.experiments.config import ConfigError, load_config
from odezoo.experiments.io import (IntegrityError, RunFolderBusy, append_jsonl, load_sealed_json, read_jsonl,
                                   run_folder_lock, save_sealed_json, truncate_jsonl)
from odezoo.experiments.report import ReportError, build_report, read_csv
from odezoo.experiments.results import SCHEMA, format_table, schema_row, wilson_interval

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "docs" / "results" / "fig5"


# ----------------------------------------------------------------------------- folder locks
def _hold(folder, ready, release):
    with run_folder_lock(folder, "odezoo train"):
        ready.set()
        release.wait(60)


def test_a_second_writer_is_refused_naming_the_holder_and_the_lock_dies_with_its_process(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold, args=(tmp_path / "run", ready, release))
    holder.start()
    try:
        assert ready.wait(60)
        with pytest.raises(RunFolderBusy) as busy:
            with run_folder_lock(tmp_path / "run", "odezoo sweep"):
                pytest.fail("two writers held one run folder")
        message = str(busy.value)
        assert f"pid {holder.pid}" in message and "odezoo train" in message and "another --out" in message
    finally:
        holder.kill()  # like kill -9: no clean-up runs
        holder.join(60)
    with run_folder_lock(tmp_path / "run", "odezoo train"):  # the OS released the dead holder's lock
        pass


def test_two_train_commands_on_one_folder_the_second_is_refused_and_writes_nothing(tmp_path, capsys):
    from odezoo.experiments.commands import train

    out = tmp_path / "run"
    with run_folder_lock(out, "odezoo train"):
        with pytest.raises(SystemExit):
            train.main(["--config", str(ROOT / "recipes/configs/mnist_rk2_fixed.yaml"), "--dry-run", "--out",
                        str(out), "--quiet"])
    assert "is being written by pid" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".odezoo.lock")) == []


def test_a_file_where_a_folder_belongs_is_refused(tmp_path):
    (tmp_path / "x").write_text("not a folder")
    with pytest.raises(RunFolderBusy, match="is a file, not a folder"):
        with run_folder_lock(tmp_path / "x", "odezoo demo"):
            pass


# ----------------------------------------------------------------------------- sealed files
def _log(path, n):
    for epoch in range(1, n + 1):
        append_jsonl(path, {"epoch": epoch, "val_acc": 0.5 + epoch / 100, "seconds": 1.5})


def test_a_sealed_log_reads_back_and_an_unsealed_last_line_is_an_interrupted_append(tmp_path):
    path = tmp_path / "metrics.jsonl"
    _log(path, 3)
    assert [r["epoch"] for r in read_jsonl(path)] == [1, 2, 3] and "_chain" not in read_jsonl(path)[0]
    seal = (tmp_path / "metrics.jsonl.seal").read_text()
    append_jsonl(path, {"epoch": 4})
    (tmp_path / "metrics.jsonl.seal").write_text(seal)  # killed between the line and its seal
    assert [r["epoch"] for r in read_jsonl(path)] == [1, 2, 3, 4]
    truncate_jsonl(path, 2)  # what a resume from epoch 2's checkpoint does
    assert [r["epoch"] for r in read_jsonl(path)] == [1, 2]
    with open(path, "a") as handle:
        handle.write('{"epoch": 3, "val')  # a torn append
    assert [r["epoch"] for r in read_jsonl(path)] == [1, 2]
    append_jsonl(path, {"epoch": 3})
    assert [r["epoch"] for r in read_jsonl(path)] == [1, 2, 3]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_cut_or_edit_of_a_sealed_log_is_refused_naming_the_file(tmp_path, data):
    import tempfile

    folder = Path(tempfile.mkdtemp(dir=tmp_path))
    path = folder / "metrics.jsonl"
    _log(path, 4)
    raw = path.read_bytes()
    lines = raw.splitlines(keepends=True)
    how = data.draw(st.sampled_from(["drop-lines", "edit-byte", "swap", "delete-seal"]))
    if how == "drop-lines":  # a truncation at a line boundary (a torn line is an interrupted append)
        keep = data.draw(st.integers(0, len(lines) - 2))
        path.write_bytes(b"".join(lines[:keep]))
        if keep == 0:
            path.unlink()
            assert read_jsonl(path) == []  # no log at all: a run that never logged
            return
    elif how == "edit-byte":
        digits = [i for i, b in enumerate(raw) if chr(b).isdigit() and b"_chain" not in raw[max(0, i - 80):i]]
        i = data.draw(st.sampled_from(digits))
        new = str((int(chr(raw[i])) + data.draw(st.integers(1, 9))) % 10).encode()
        path.write_bytes(raw[:i] + new + raw[i + 1:])
    elif how == "swap":
        a = data.draw(st.integers(0, len(lines) - 2))
        lines[a], lines[a + 1] = lines[a + 1], lines[a]
        path.write_bytes(b"".join(lines))
    else:
        (folder / "metrics.jsonl.seal").unlink()
    with pytest.raises(IntegrityError) as error:
        read_jsonl(path)
    assert str(path) in str(error.value)


def test_a_sealed_json_refuses_truncation_and_edits(tmp_path):
    path = tmp_path / "summary.json"
    save_sealed_json(path, {"name": "run", "test_acc": 0.9, "test_images": 1000})
    assert load_sealed_json(path) == {"name": "run", "test_acc": 0.9, "test_images": 1000}
    text = path.read_text()
    path.write_text(text.replace("0.9", "0.95"))
    with pytest.raises(IntegrityError, match="summary.json does not match the sha256 digest"):
        load_sealed_json(path)
    path.write_text(text[: len(text) // 2])
    with pytest.raises(IntegrityError, match="summary.json is not valid JSON"):
        load_sealed_json(path)
    path.write_text(json.dumps({"name": "run"}))
    with pytest.raises(IntegrityError, match="has no integrity digest"):
        load_sealed_json(path)


def test_a_partial_evaluation_file_that_was_tampered_with_is_refused(tmp_path, model, loader):
    from odezoo.experiments.protocol import Attack, Protocol, evaluate_protocol

    protocol = Protocol("t", 1, (Attack("fgsm"),), eps=(0.1, 0.2), n_examples=60, n_checks=None)
    store = tmp_path / "partial.pt"
    evaluate_protocol(model, loader, protocol, store=store, store_key="k")
    assert store.exists()
    data = bytearray(store.read_bytes())
    data[len(data) // 2] ^= 0xFF
    store.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="partial.pt"):
        evaluate_protocol(model, loader, protocol, store=store, store_key="k")


# ----------------------------------------------------------------------------- the report validates
@pytest.fixture
def shipped(tmp_path):
    folder = tmp_path / "fig5"
    shutil.copytree(SHIPPED, folder)
    return folder


def _rewrite(path, change):
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    columns, rows = change(list(rows[0]), rows)
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def test_the_report_builds_from_shipped_files(shipped):
    assert "fig5" in build_report(shipped)


@pytest.mark.parametrize("case, expected", [
    ("duplicate", "repeat the same (arm, seed, attack, eps)"),
    ("nan", "accuracy is nan (a result must be a finite number)"),
    ("missing-column", "lacks the column(s) n_examples"),
    ("empty-value", "accuracy is empty"),
    ("text", "is not a number"),
    ("out-of-range", "is outside [0, 1]"),
    ("ragged", "fields than the header"),
    ("not-utf8", "not a readable CSV file"),
    ("unknown-arm", "does not list"),
])
def test_the_report_refuses_bad_per_seed_rows_naming_the_file(shipped, case, expected):
    path = shipped / "per_seed.csv"
    if case == "duplicate":
        _rewrite(path, lambda cols, rows: (cols, rows + rows[-1:]))
    elif case == "nan":
        _rewrite(path, lambda cols, rows: (cols, [{**rows[0], "accuracy": "nan"}] + rows[1:]))
    elif case == "missing-column":
        _rewrite(path, lambda cols, rows: ([c for c in cols if c != "n_examples"], rows))
    elif case == "empty-value":
        _rewrite(path, lambda cols, rows: (cols, rows[:3] + [{**rows[3], "accuracy": ""}] + rows[4:]))
    elif case == "text":
        _rewrite(path, lambda cols, rows: (cols, [{**rows[0], "seed": "one"}] + rows[1:]))
    elif case == "out-of-range":
        _rewrite(path, lambda cols, rows: (cols, [{**rows[0], "accuracy": "1.5"}] + rows[1:]))
    elif case == "ragged":
        path.write_text(path.read_text().rstrip("\n") + "\nonly,three,fields\n")
    elif case == "not-utf8":
        path.write_bytes(path.read_bytes() + b"\xff\xfe\n")
    else:
        _rewrite(path, lambda cols, rows: (cols, [{**rows[0], "arm": "ghost"}] + rows[1:]))
    with pytest.raises(ReportError) as error:
        build_report(shipped)
    assert expected in str(error.value) and "per_seed.csv" in str(error.value)


def test_the_report_refuses_malformed_json_and_a_missing_file(shipped):
    (shipped / "setup.json").write_text('{"experiment": "fig5", ')
    with pytest.raises(ReportError, match="setup.json is not valid JSON"):
        build_report(shipped)
    (shipped / "setup.json").unlink()
    with pytest.raises(ReportError, match="setup.json is missing"):
        build_report(shipped)


def test_the_report_command_exits_2_with_the_message(shipped, tmp_path, capsys):
    from odezoo_cli import main

    _rewrite(shipped / "per_seed.csv", lambda cols, rows: (cols, rows + rows[:1]))
    page = tmp_path / "page.md"
    with pytest.raises(SystemExit) as stop:
        main(["report", "--results", str(shipped.parent), "--page", str(page)])
    assert stop.value.code == 2 and "a duplicated row would count a seed twice" in capsys.readouterr().err


@settings(max_examples=40, deadline=None)
@given(st.lists(st.sampled_from(["0.5", "1", "-0.1", "nan", "inf", "", "x", "1e-3"]), min_size=1, max_size=6))
def test_read_csv_accepts_only_finite_rates_in_range(tmp_path_factory, values):
    folder = tmp_path_factory.mktemp("csv")
    path = folder / "per_seed.csv"
    lines = ["arm,seed,attack,eps,n_examples,accuracy"] + [f"a,{i},clean,0,10,{v}" for i, v in enumerate(values)]
    path.write_text("\n".join(lines) + "\n")
    good = all(v not in ("nan", "inf", "", "x", "-0.1") for v in values)
    if good:
        assert [r["accuracy"] for r in read_csv(path)] == [float(v) for v in values]
    else:
        with pytest.raises(ReportError, match="per_seed.csv, line"):
            read_csv(path)


# ----------------------------------------------------------------------------- strict configs
@pytest.mark.parametrize("text, expected", [
    ("epochs: 3\nepochs: 4\n", "line 2: the key 'epochs' appears twice"),
    ("solver: {mode: fixed, method: rk2_u, method: euler}\n", "the key 'method' appears twice"),
    ('epochs: "8"\n', "epochs: '8' is quoted, so YAML reads it as text"),
    ("optimizer: {name: rmsprop, lr: '0.001'}\n", "optimizer.lr: '0.001' is quoted"),
    ("# only a comment\n", "is empty (or only comments)"),
    ("", "is empty"),
    ("epochs: " + "9" * 400 + "\n", "with 400 digits"),
    ("a: " + "[" * 3000 + "]" * 3000 + "\n", "nested too deeply"),
    ("- a list\n", "must hold a mapping"),
    ("name: " + "x" * 300 + "\n", "at most 100 characters"),
])
def test_a_bad_config_file_is_refused_with_what_to_do(tmp_path, text, expected):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as error:
        load_config(str(path))
    assert expected in str(error.value)


def test_non_utf8_files_and_folders_are_refused(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_bytes("name: caf\u00e9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="is not UTF-8 text"):
        load_config(str(path))
    with pytest.raises(ConfigError, match="is a folder; give a YAML file"):
        load_config(str(tmp_path))


def test_the_number_rule_text_that_yaml_cannot_type_is_parsed_quoted_numbers_are_not(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: '8'\noptimizer: {name: rmsprop, lr: 1e-4}\nadversarial: {kind: fgsm, eps: 8/255}\n")
    cfg = load_config(str(path))
    assert cfg["name"] == "8" and type(cfg["name"]) is str          # text where text is wanted
    assert cfg["optimizer"]["lr"] == 1e-4                            # YAML 1.1 reads 1e-4 as text
    assert cfg["adversarial"]["eps"] == pytest.approx(8 / 255)       # a fraction is text to YAML
    assert load_config(None, ["epochs=8"])["epochs"] == 8
    with pytest.raises(ConfigError, match="quoted"):
        load_config(None, ['epochs="8"'])


def test_train_without_a_config_needs_the_explicit_choice(capsys):
    from odezoo.experiments.commands import train

    with pytest.raises(SystemExit):
        train.main(["--dry-run"])
    assert "or --defaults to train the built-in defaults" in capsys.readouterr().err


# ----------------------------------------------------------------------------- one results schema
@settings(max_examples=200, deadline=None)
@given(st.integers(1, 100_000), st.data())
def test_the_wilson_interval_holds_the_accuracy_and_narrows_with_images(n, data):
    k = data.draw(st.integers(0, n))
    low, high = wilson_interval(k / n, n)
    assert 0 <= low <= k / n <= high <= 1
    low4, high4 = wilson_interval(k / n, 4 * n)
    assert high4 - low4 <= high - low + 1e-12


def test_every_printed_accuracy_carries_its_image_count():
    rows = [schema_row(model="m", solver="rk2_u(u=0.5; 8 steps)", attack=a, eps=e, n_images=256, accuracy=0.5)
            for a, e in (("clean", 0.0), ("pgd-10x2.5eps/10", 0.3))]
    assert list(rows[0])[: len(SCHEMA)] == list(SCHEMA)
    table = format_table(rows)
    assert table.count("(256 images)") == 2 and "PGD, 10 steps of 2.5eps/10, 1 random start" in table
    with pytest.raises(ValueError, match="number of images"):
        schema_row(model="m", solver="s", attack="clean", eps=0, n_images=0, accuracy=1.0)


# ----------------------------------------------------------------------------- loggers
def test_the_csv_and_tensorboard_loggers_follow_metrics_jsonl_and_a_resume(tmp_path):
    from odezoo.experiments.commands import train

    out = tmp_path / "run"
    config = str(ROOT / "recipes/configs/mnist_rk2_fixed.yaml")
    loggers = "csv,tensorboard" if _has_tensorboard() else "csv"
    args = ["--config", config, "--dry-run", "--epochs", "2", "--out", str(out), "--quiet", "--no-eval",
            "--logger", loggers]
    assert train.main(args + ["--stop-after", "1"]) == 0
    assert train.main(args + ["--resume"]) == 0
    with open(out / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["epoch"] for r in rows] == ["1", "2"]  # from 1, as on screen, each epoch once
    log = read_jsonl(out / "metrics.jsonl")
    assert [float(r["val_acc"]) for r in rows] == [r["val_acc"] for r in log]
    if _has_tensorboard():
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        events = EventAccumulator(str(out / "tensorboard"))
        events.Reload()
        assert [e.step for e in events.Scalars("val_acc")] == [1, 2]


def _has_tensorboard() -> bool:
    import importlib.util

    return importlib.util.find_spec("tensorboard") is not None


def test_a_truncated_metrics_log_stops_the_sweep_report_naming_the_file(tmp_path, capsys):
    """A sweep collecting a run whose summary.json was edited refuses it, naming the file."""
    from odezoo.experiments.commands import sweep

    config = str(ROOT / "recipes/configs/mnist_rk2_fixed.yaml")
    args = ["--config", config, "--grid", "seed=0", "--dry-run", "--out", str(tmp_path)]
    assert sweep.main(args) == 0
    summary = tmp_path / "seed=0" / "summary.json"
    summary.write_text(summary.read_text().replace('"best_epoch": 1', '"best_epoch": 5'))
    with pytest.raises(SystemExit):
        sweep.main(args + ["--collect"])
    assert f"{summary} does not match the sha256 digest" in capsys.readouterr().err
    os.remove(summary)


def test_the_tensorboard_logger_without_its_package_says_what_to_install(tmp_path, monkeypatch):
    import sys

    from odezoo.experiments.loggers import open_loggers

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if tensorboard were not installed
    with pytest.raises(ImportError, match=r"pip install 'odezoo\[tensorboard\]'"):
        open_loggers(["tensorboard"], tmp_path)
    assert [type(x).__name__ for x in open_loggers(["csv", "csv"], tmp_path)] == ["CSVLogger"]
    with pytest.raises(ValueError, match="unknown logger"):
        open_loggers(["wandb"], tmp_path)
