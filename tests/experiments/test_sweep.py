"""odezoo.experiments.sweep: jobs in this process, as local processes (submitit's LocalExecutor,
for real), and on Slurm through submitit's SlurmExecutor with sbatch/sacct mocked by submitit's
own test helper (no cluster needed: the job is then run the way a Slurm node runs it)."""
from __future__ import annotations

import shutil
from pathlib import Path
import textwrap

import pytest

from odezoo.experiments.sweep import Job, JobFailed, Launcher, launcher_from_options, run_jobs, submit_jobs, wait_jobs

# A job's function lives in an importable module (here one written to tmp_path and put on the
# path of this process and of the launched workers).  work() is idempotent (a finished name is reused) and
# records every real call; the job named in `kill` SIGKILLs its own process the first time, mid-way.
SCRIPT = textwrap.dedent('''
    import json, os, signal, time
    from pathlib import Path

    def work(name, out, kill="", fail="", exit_code=0, seconds=0.0):
        out = Path(out)
        done = out / f"{name}.done"
        if done.exists():
            return {"name": name, "reused": True}
        with open(out / "calls.log", "a") as log:
            log.write(f"{name} {os.getpid()} {time.time()}\\n")
        (out / f"{name}.half").write_text("half-way")
        if name == kill and not (out / "killed").exists():
            (out / "killed").write_text(name)
            print(f"{name}: epoch 3 of 4", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
        if name == fail:
            raise ValueError(f"{name}: bad input, fix the config")
        if exit_code:
            raise SystemExit(f"error: {name} refused")
        time.sleep(seconds)
        done.write_text(str(os.getpid()))
        return {"name": name, "reused": False, "pid": os.getpid(), "end": time.time()}
''')


@pytest.fixture
def script(tmp_path, monkeypatch):
    import os
    import sys

    path = tmp_path / "odezoo_test_job_module.py"
    path.write_text(SCRIPT)
    sys.modules.pop("odezoo_test_job_module", None)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    out = tmp_path / "out"
    out.mkdir()
    yield "odezoo_test_job_module", out
    sys.modules.pop("odezoo_test_job_module", None)


def jobs_for(script, names, **kwargs):
    module, out = script
    return [Job(n, module, "work", {"name": n, "out": str(out), **kwargs}) for n in names]


def test_a_job_names_a_module_never_a_file_path():
    for bad in ("recipes/train.py", "train.py", "", "a..b"):
        with pytest.raises(ValueError, match="importable dotted name"):
            Job("x", bad, "main")
    assert Job("x", "odezoo.experiments.commands.sweep", "run_config").module == "odezoo.experiments.commands.sweep"


def calls(out):
    log = out / "calls.log"
    return [line.split()[0] for line in log.read_text().splitlines()] if log.exists() else []


def test_inprocess_runs_in_order_and_a_failure_never_stops_the_others(script):
    lines = []
    outcomes = run_jobs(jobs_for(script, ["a", "b", "c"], fail="b"), Launcher(), progress=lines.append)
    assert [o.status for o in outcomes] == ["done", "failed", "done"]
    assert outcomes[1].error == "b: bad input, fix the config"
    assert outcomes[0].result["name"] == "a" and not outcomes[0].result["reused"]
    assert calls(script[1]) == ["a", "b", "c"]
    assert any(line.startswith("[2/3] FAILED: b:") for line in lines)
    assert lines[-1].startswith("[3/3] done: c")


def test_a_recipe_error_exit_becomes_a_failed_outcome(script):
    (outcome,) = run_jobs(jobs_for(script, ["a"], exit_code=2), progress=None)
    assert outcome.status == "failed" and "error: a refused" in outcome.error
    with pytest.raises(JobFailed, match="a refused"):
        jobs_for(script, ["a"], exit_code=2)[0]()


def test_job_names_must_be_unique_and_launchers_are_checked(script):
    with pytest.raises(ValueError, match="unique"):
        run_jobs(jobs_for(script, ["a", "a"]), progress=None)
    with pytest.raises(ValueError, match="unknown launcher 'slrum'"):
        Launcher("slrum")
    with pytest.raises(ValueError, match="needs a folder"):
        Launcher("local", jobs=2)
    with pytest.raises(ValueError, match="--launcher local for --jobs 3"):
        Launcher("inprocess", jobs=3)
    with pytest.raises(ValueError, match="jobs must be a whole number >= 1"):
        Launcher("local", jobs=0, folder="x")
    with pytest.raises(ValueError, match="unknown launcher option.*partion.*known:.*partition"):
        launcher_from_options({"kind": "slurm", "partion": "gpu"}, folder="x")


def test_local_launcher_runs_jobs_in_parallel_and_a_rerun_finishes_only_what_was_killed(script, tmp_path):
    """The issue's acceptance in miniature: two local processes; one job is killed mid-way
    (SIGKILL, no clean-up); it is reported with its log and the others finish; the rerun
    runs only the killed job."""
    launcher = Launcher("local", jobs=2, folder=tmp_path / "logs", poll_seconds=0.2)
    assert launcher.describe().startswith("local: 2 jobs at once")
    jobs = jobs_for(script, ["a", "b", "c", "d"], kill="c", seconds=1.5)
    lines = []
    first = run_jobs(jobs, launcher, progress=lines.append)
    assert [o.status for o in first] == ["done", "done", "failed", "done"]
    killed = first[2]
    assert killed.log and killed.log.endswith("_log.err")
    assert killed.error.startswith("the job's process ended without a result (state ")
    assert killed.error.endswith("its last output: c: epoch 3 of 4")
    assert any(line.startswith("started c (log: ") for line in lines)
    assert any("FAILED: c" in line and killed.log in line for line in lines)
    out = script[1]
    assert (out / "c.half").exists() and not (out / "c.done").exists()
    # two at once: a and b ran in different processes and overlapped in time
    pids = {o.name: o.result["pid"] for o in first if o.ok}
    assert pids["a"] != pids["b"]
    starts = {line.split()[0]: float(line.split()[2]) for line in (out / "calls.log").read_text().splitlines()}
    assert starts["b"] < first[0].result["end"]
    assert sorted(calls(out)) == ["a", "b", "c", "d"]

    second = run_jobs(jobs, launcher, progress=None)
    assert all(o.ok for o in second)
    assert [o.result["reused"] for o in second] == [True, True, False, True]
    assert sorted(calls(out)) == ["a", "b", "c", "c", "d"]


DRIVER = textwrap.dedent('''
    import signal, sys
    from odezoo.experiments.sweep import Job, Launcher, run_jobs

    module, out, logs, background = sys.argv[1:]
    # a background job of a non-interactive shell (or nohup, or a test runner) starts with SIGINT
    # ignored, and so do the processes it starts; a terminal's foreground job handles it
    signal.signal(signal.SIGINT, signal.SIG_IGN if background == "1" else signal.default_int_handler)
    jobs = [Job(n, module, "work", {"name": n, "out": out, "seconds": 120.0}) for n in ("a", "b", "c")]
    run_jobs(jobs, Launcher("local", jobs=2, folder=logs, poll_seconds=0.1), progress=lambda s: print(s, flush=True))
''')


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in state  # a zombie has ended; only its exit status waits to be read


@pytest.mark.parametrize("how, background", [("SIGTERM", "1"), ("SIGTERM", "0"), ("SIGINT", "0")])
def test_stopping_a_local_sweep_stops_its_jobs(script, tmp_path, how, background):
    """`kill PID` or `timeout` (SIGTERM) or Ctrl-C (SIGINT) to the sweep's process stops the jobs it
    launched — a job's process ignores SIGTERM itself (submitit's job environment), and in the
    background SIGINT too, so without the sweep's handler they ran on, orphaned, holding their run
    folders — and says how to finish them."""
    import signal
    import subprocess
    import sys
    import time

    module, out = script
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    proc = subprocess.Popen([sys.executable, str(driver), module, str(out), str(tmp_path / "logs"), background],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 120
        while len(calls(out)) < 2 and time.time() < deadline and proc.poll() is None:
            time.sleep(0.1)
        assert sorted(calls(out)) == ["a", "b"], proc.communicate()[0] if proc.poll() is not None else calls(out)
        pids = [int(line.split()[1]) for line in (out / "calls.log").read_text().splitlines()]
        assert all(_alive(p) for p in pids)
        proc.send_signal(getattr(signal, how))
        text, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0 and "KeyboardInterrupt" in text
    assert "stopped the jobs still running (a, b); run the same command again to finish them" in text
    deadline = time.time() + 30
    while any(_alive(p) for p in pids) and time.time() < deadline:
        time.sleep(0.1)
    assert not any(_alive(p) for p in pids), f"jobs still running after the sweep stopped: {pids}"
    assert sorted(calls(out)) == ["a", "b"] and not list(out.glob("*.done"))  # c never started


def test_slurm_path_through_submitits_executor_with_mocked_sbatch(script, tmp_path):
    """The Slurm launcher builds one job array with the requested resources; each task is then
    run as a Slurm node runs it (submitit's process_job) and collected, failures included."""
    submitit = pytest.importorskip("submitit")
    from submitit.core import submission
    from submitit.core.test_core import MockedSubprocess

    launcher = Launcher("slurm", jobs=2, folder=tmp_path / "slurm", partition="gpu", gpus_per_job=1,
                        cpus_per_job=4, time_limit_min=90, mem_gb=16, poll_seconds=0.01)
    jobs = jobs_for(script, ["a", "b", "c"], fail="b")
    mock = MockedSubprocess(known_cmds=["srun"])
    try:
        with mock.context():
            handles = submit_jobs(jobs, launcher)
            array_id = handles[0].job_id.split("_")[0]
            assert [h.job_id for h in handles] == [f"{array_id}_{i}" for i in range(3)]
            sbatch = submitit.slurm.slurm.SlurmJob(tmp_path / "slurm", array_id).paths.submission_file.read_text()
            for line in ("#SBATCH --array=0-2%2", "#SBATCH --partition=gpu", "#SBATCH --gpus-per-node=1",
                         "#SBATCH --cpus-per-task=4", "#SBATCH --time=90", "#SBATCH --mem=16384MB"):
                assert line in sbatch, (line, sbatch)
            for handle in handles:  # what each Slurm task does on its node
                with mock.job_context(handle.job_id):
                    try:
                        submission.process_job(handle.paths.folder)
                    except ValueError:
                        pass  # b's error is pickled as its result and re-raised to the process
            outcomes = wait_jobs(jobs, handles, launcher, progress=None)
    finally:
        submitit.slurm.slurm.SlurmJob.watcher.clear()
    assert [o.status for o in outcomes] == ["done", "failed", "done"]
    assert "b: bad input" in outcomes[1].error and outcomes[1].log.endswith("_log.err")
    assert outcomes[2].result["name"] == "c"
    assert sorted(calls(script[1])) == ["a", "b", "c"]


def test_launcher_from_yaml_and_flags(tmp_path):
    import argparse

    from odezoo.experiments.sweep import add_launcher_flags, launcher_from_args

    parser = argparse.ArgumentParser()
    add_launcher_flags(parser)
    config = tmp_path / "launcher.yaml"
    config.write_text("launcher:\n  kind: slurm\n  partition: long\n  jobs: 8\n  time_limit_min: 600\n")
    args = parser.parse_args(["--launcher-config", str(config), "--jobs", "4", "--gpus-per-job", "2"])
    launcher = launcher_from_args(args, folder=tmp_path)
    assert (launcher.kind, launcher.partition, launcher.jobs, launcher.time_limit_min, launcher.gpus_per_job) == \
        ("slurm", "long", 4, 600, 2)
    assert "partition long, 2 GPU(s) per job, 600 min limit" in launcher.describe()
    assert launcher_from_args(parser.parse_args([]), folder=tmp_path).kind == "inprocess"


# ----------------------------------------------------------------------------- recipes/sweep.py
def _sweep_recipe():
    import sys
    from pathlib import Path

    recipes = Path(__file__).resolve().parents[2] / "recipes"
    from odezoo.experiments.commands import sweep
    return sweep, recipes / "configs" / "mnist_rk2_fixed.yaml"


def test_sweep_recipe_trains_every_grid_point_and_a_rerun_reuses_them(tmp_path, capsys):
    import csv

    sweep, config = _sweep_recipe()
    args = ["--config", str(config), "--grid", "solver.params.u=0.5,1", "--grid", "seed=0,1", "--set", "epochs=1",
            "--dry-run", "--out", str(tmp_path)]
    assert sweep.main(args) == 0
    with open(tmp_path / "sweep.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["run"], r["solver.params.u"], r["seed"], r["status"]) for r in rows] == [
        ("u=0.5_seed=0", "0.5", "0", "done"), ("u=0.5_seed=1", "0.5", "1", "done"),
        ("u=1_seed=0", "1", "0", "done"), ("u=1_seed=1", "1", "1", "done")]
    assert rows[0]["solver"].startswith("rk2_u(u=0.5") and rows[2]["solver"].startswith("rk2_u(u=1")
    stamps = {p: p.stat().st_mtime_ns for p in tmp_path.glob("*/summary.json")}
    assert len(stamps) == 4 and "4 of 4 run(s) finished" in capsys.readouterr().out
    assert sweep.main(args) == 0
    out = capsys.readouterr().out
    assert "epoch 1/1" not in out and "4 of 4 run(s) finished" in out
    # no job starts for a finished run: the progress count and time estimate cover only new work
    assert "reusing 4 of 4 run(s) finished with these settings; running 0" in out
    assert not [line for line in out.splitlines() if line.startswith("[")]
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())
    shutil.rmtree(tmp_path / "u=1_seed=1")
    assert sweep.main(args) == 0
    out = capsys.readouterr().out
    assert "reusing 3 of 4 run(s) finished with these settings; running 1" in out
    assert [line.split(" (")[0] for line in out.splitlines() if line.startswith("[")] == ["[1/1] done: u=1_seed=1"]


def test_a_sweep_never_reports_a_run_trained_with_other_settings(tmp_path, capsys):
    """Rerunning a grid with a changed setting into the same folder: the finished runs are not
    this grid's, so every job fails with the differences and the runs stay as they were."""
    import csv

    sweep, config = _sweep_recipe()
    args = ["--config", str(config), "--grid", "seed=0,1", "--dry-run", "--out", str(tmp_path)]
    assert sweep.main(args) == 0
    before = {p: p.read_bytes() for p in tmp_path.glob("*/*") if p.is_file()}
    capsys.readouterr()
    assert sweep.main(args + ["--set", "optimizer.lr=0.01"]) == 1
    out = capsys.readouterr().out
    assert "[1/2] FAILED: seed=0: job seed=0: " in out and "trained with other settings (optimizer.lr: " in out
    assert "Traceback" not in out and "0 of 2 run(s) finished" in out
    assert all(p.read_bytes() == data for p, data in before.items())
    assert sweep.main(args + ["--set", "optimizer.lr=0.01", "--collect"]) == 1
    with open(tmp_path / "sweep.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["status"] for r in rows] == ["other-settings"] * 2
    assert "trained with other settings (optimizer.lr: 0.001 in the run, 0.01 now)" in rows[0]["log"]


def test_sweep_recipe_checks_every_grid_point_before_any_job(tmp_path, capsys):
    sweep, config = _sweep_recipe()
    with pytest.raises(SystemExit):
        sweep.main(["--config", str(config), "--grid", "solver.params.u=0.5,0", "--grid", "seed=0,1",
                    "--out", str(tmp_path / "s")])
    err = capsys.readouterr().err
    assert "2 of 4 grid point(s) have a bad config (nothing was run)" in err
    assert "u=0_seed=0, u=0_seed=1: " in err and "u != 0" in err
    assert not (tmp_path / "s").exists()
    with pytest.raises(SystemExit):
        sweep.main(["--config", str(config), "--grid", "seed", "--out", str(tmp_path / "s")])
    assert "--grid expects KEY=V1,V2" in capsys.readouterr().err


def test_time_left_counts_the_jobs_that_run_at_once():
    """Two jobs at once, two 10-minute jobs done, 14 to go: about 70 minutes, not 140; with
    one job to go it runs alone."""
    from odezoo.experiments.sweep import minutes_left

    assert minutes_left([600.0, 600.0], 16, parallel=2) == pytest.approx(70.0)
    assert minutes_left([600.0, 600.0], 16) == pytest.approx(140.0)
    assert minutes_left([600.0, 600.0], 3, parallel=2) == pytest.approx(10.0)
    assert minutes_left([600.0, 600.0], 2, parallel=2) == 0.0 and minutes_left([], 4) == 0.0


def test_two_sweeps_on_one_folder_the_second_is_refused_naming_the_first(tmp_path, capsys):
    from odezoo.experiments.io import run_folder_lock

    sweep, config = _sweep_recipe()
    with run_folder_lock(tmp_path, "odezoo sweep"):  # a first sweep, still running
        with pytest.raises(SystemExit) as stop:
            sweep.main(["--config", str(config), "--grid", "seed=0,1", "--dry-run", "--out", str(tmp_path)])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "is being written by pid" in err and "odezoo sweep" in err
    assert not list(tmp_path.glob("seed=*"))  # no run was started, no epoch logged twice
