"""odezoo.experiments.io: one atomic, fsynced write for checkpoints, JSON, CSV and logs."""
import json
import os

import pytest
import torch

from odezoo.experiments import io as eio


def test_atomic_write_replaces_whole_files_and_leaves_no_temporaries(tmp_path):
    path = tmp_path / "sub" / "a.json"
    eio.save_json(path, {"x": torch.tensor(1.5), "p": tmp_path})
    assert json.loads(path.read_text()) == {"x": 1.5, "p": str(tmp_path)}
    eio.atomic_write(path, b"bytes")
    assert path.read_bytes() == b"bytes"
    eio.save_csv(tmp_path / "r.csv", [{"a": 1, "b": [1, 2]}, {"c": "z"}])
    assert (tmp_path / "r.csv").read_text() == "a,b,c\n1,\"[1, 2]\",\n,,z\n"
    assert sorted(os.listdir(path.parent)) == ["a.json"]


def test_a_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "c.pt"
    eio.save_checkpoint(path, {"model": {}, "config": {}})
    before = path.read_bytes()

    def explode(handle):
        handle.write(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        eio.atomic_write(path, explode)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["c.pt"]
    assert eio.load_checkpoint(path) == {"model": {}, "config": {}}


def test_jsonl_log_survives_a_torn_last_line(tmp_path):
    log = tmp_path / "metrics.jsonl"
    for epoch in range(3):
        eio.append_jsonl(log, {"epoch": epoch})
    with open(log, "a") as handle:
        handle.write('{"epoch": 3, "trai')  # the process died mid-append
    assert [r["epoch"] for r in eio.read_jsonl(log)] == [0, 1, 2]
    eio.truncate_jsonl(log, 1)
    assert eio.read_jsonl(log) == [{"epoch": 0}, {"epoch": 1}] and len(log.read_text().splitlines()) == 2
    log.write_text('{"epoch": 0}\nnot json\n{"epoch": 2}\n')
    with pytest.raises(eio.IntegrityError, match="metrics.jsonl line 2 is not JSON"):
        eio.read_jsonl(log)
    assert eio.read_jsonl(tmp_path / "missing.jsonl") == []


def test_checkpoint_errors_are_clear(tmp_path):
    with pytest.raises(eio.CheckpointError, match="no checkpoint"):
        eio.load_checkpoint(tmp_path / "none.pt")
    (tmp_path / "bad.pt").write_bytes(b"garbage")
    with pytest.raises(eio.CheckpointError, match="corrupt"):
        eio.load_checkpoint(tmp_path / "bad.pt")
    eio.save_checkpoint(tmp_path / "other.pt", {"weights": 1})
    with pytest.raises(eio.CheckpointError, match="not an odezoo training checkpoint"):
        eio.load_checkpoint(tmp_path / "other.pt")
