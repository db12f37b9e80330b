"""benchmarks/run.py runs end to end on a tiny case and writes complete JSON.

No timing assertions: timings depend on the machine; docs/benchmarks.md reports them.
"""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "run.py"

KINDS = {"family", "smoothing", "per-sample", "solver-work", "hand-written", "adaptive", "equal-accuracy", "bf16"}


def test_quick_benchmark_writes_every_case(tmp_path):
    out = tmp_path / "bench.json"
    page = tmp_path / "page.md"
    page.write_text("# before\n<!-- table:start -->\nSTALE TABLE\n<!-- table:end -->\nafter\n")
    # --budget 0: the 3 interleaved repetitions --quick asks for, no more (what is checked here is
    # that every case runs and is written, not its timing)
    result = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--budget", "0", "--device", "cpu", "--out",
                             str(out), "--docs", str(page)],
                            cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "holds?" in result.stdout and "torchdiffeq" in result.stdout

    data = json.loads(out.read_text())
    env = data["environment"]
    for key in ("torch", "torchdiffeq", "python", "cpu", "threads", "device"):
        assert env[key], key
    rows = data["rows"]
    seen = {(r["kind"], r["function"], r["pass"]) for r in rows}
    for function in ("mlp", "conv"):
        for kind in KINDS:
            passes = ("fwd",) if kind in ("equal-accuracy", "bf16") else ("fwd", "fwd+bwd")
            for pass_ in passes:
                assert (kind, function, pass_) in seen
    assert not any(r["kind"] == "compile" for r in rows)  # --quick leaves out the inductor compile case
    baselines = {r["baseline_label"] for r in rows if r["kind"] == "family"}
    assert {"midpoint", "rk4"} <= baselines
    for row in rows:  # the registered dopri5 takes exactly torchdiffeq's steps
        if row["kind"] == "adaptive":
            assert row["details"]["nfe"][0] == row["details"]["nfe"][1] > 0
        if row["kind"] == "equal-accuracy":
            assert row["details"]["error"][0] <= row["details"]["error"][1]
    for row in rows:
        assert row["odezoo"]["median_ms"] > 0 and row["baseline"]["median_ms"] > 0
        assert row["ratio"] > 0 and row["paired_ratio_median"] > 0
        assert len(row["odezoo_times_ms"]) >= 3
        # a verdict exactly where a target is set, and it is the comparison the table shows
        if row["target"] is None:
            assert row["holds"] is None
        else:
            assert row["holds"] is (row["ratio"] <= row["target"])
    assert any(r["target"] is not None for r in rows)
    assert data["table_markdown"].startswith("| case | pass |")
    text = page.read_text()
    assert "STALE TABLE" not in text and text.startswith("# before\n") and text.endswith("after\n")
    assert data["table_markdown"] in text and "targets hold" in text


def test_device_cross_checks_pass_on_cpu():
    # benchmarks/cuda_crosscheck.py is meant for a lent GPU; on the CPU it must pass too,
    # so the script cannot rot between GPU sessions.
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "cuda_crosscheck.py"), "--device", "cpu"],
                            cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "all cross-checks passed" in result.stdout
    assert result.stdout.count("  ok  ") >= 7


@pytest.mark.parametrize("hand, method, params", [("midpoint", "rk2_u", {"u": 0.5}),
                                                  ("rk4_38", "rk4_uv", {"u": 1 / 3, "v": 2 / 3})])
def test_the_hand_written_baselines_compute_the_same_solve(hand, method, params):
    """The hand-written loops the benchmark times odezoo against solve the same problem (else the
    ratio would compare different work): equal to odezoo's solve in float64, on a time-dependent MLP."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from cases import hand_written, make_case
    import odezoo

    func, y0 = make_case("mlp", "cpu", dtype=torch.float64, quick=True)
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    with torch.no_grad():
        ours = odezoo.odeint(func, y0, t, method=method, options={**params, "step_size": 0.125})
        theirs = hand_written(hand, t, 0.125)(func, y0)
    assert ours.shape == theirs.shape
    torch.testing.assert_close(theirs, ours, rtol=1e-13, atol=1e-13)
    assert (ours[-1] - y0).abs().max() > 0.01  # the solve moved the state: not a trivial match
    with pytest.raises(ValueError, match="no hand-written solver"):
        hand_written("dopri5", t, 0.125)


def test_per_sample_times_benchmark_runs_and_writes_its_rows(tmp_path):
    out = tmp_path / "per_sample.json"
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "per_sample_times.py"), "--quick",
                             "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    assert {"odezoo per-sample", "loop over series", "merged grid"} <= set(rows)
    for row in rows.values():  # every method solved the same problem to its tolerance
        assert row["error"] < 1e-3 and row["nfe"] > 0 and row["saved_MB"] > 0 and len(row["times_s"]) >= 2
