"""``odezoo sweep``: train a grid of configs, each run an independent job (in this process, as
local processes, or on Slurm through submitit), then collect what finished into one table.

    odezoo sweep --config recipes/configs/mnist_rk2_fixed.yaml \\
        --grid solver.params.u=0.25,0.5,1 --grid seed=0,1,2 --launcher local --jobs 2
    odezoo sweep --config recipes/configs/cifar10_rk2_standard.yaml --data-dir ~/data \\
        --grid seed=0,1,2,3 --launcher slurm --partition gpu --gpus-per-job 1 --time-limit 600
    odezoo sweep ... --collect        # train nothing: gather what has finished

Every --grid KEY=V1,V2,... multiplies the grid (keys as in --set; values read as YAML); --set
KEY=VALUE applies to every run.  Each grid point is an ``odezoo train`` run in <out>/<run name>/,
and the whole grid is checked before the first job starts.  Jobs are idempotent: a finished run
(summary.json) trained with the same settings is reused, one with only a checkpoint resumes
from it (rerun the same command after a failure or a kill, and only what is missing runs); a
finished run trained with other settings (a changed --set, a dry run's folder) is never
reused or touched: its job fails and names the differences.  The sweep folder is locked while
a sweep writes it (a second sweep on it is refused, naming the holder).  <out>/sweep.csv gets
one row per grid point: its values, status (done, failed, missing, other-settings), best epoch,
validation and test accuracy with their image counts, and the log of a failed job.
"""
from __future__ import annotations

import itertools
from pathlib import Path

from odezoo.experiments.commands import train
from odezoo.experiments.config import ConfigError, fail, parse_override
from odezoo.experiments.io import RunFolderBusy, run_folder_lock, save_csv
from odezoo.experiments.sweep import Job, launcher_from_args, run_jobs


def main(argv=None) -> int:
    """``odezoo sweep ARGV`` as a function (argv: the flags, without ``sweep``)."""
    from odezoo_cli import parse

    return run(parse("sweep", argv))


def parse_grid(texts: list[str]) -> list[tuple[str, list[str]]]:
    """``["seed=0,1", "solver.params.u=0.5,1"]`` -> ``[("seed", ["0", "1"]), ("solver.params.u", ["0.5", "1"])]``."""
    grid, seen = [], set()
    for text in texts:
        key, sep, values = text.partition("=")
        key = key.strip()
        items = [v.strip() for v in values.split(",")]
        if not sep or not key or not all(items):
            raise ConfigError(f"--grid expects KEY=V1,V2,... (e.g. seed=0,1,2), got {text!r}")
        if key in seen:
            raise ConfigError(f"--grid {key} is given twice; put all its values in one --grid")
        seen.add(key)
        parse_override(f"{key}={items[0]}")  # the key's form, checked like --set
        grid.append((key, items))
    return grid


def run_name(point: dict[str, str]) -> str:
    """``{"solver.params.u": "0.5", "seed": "1"}`` -> ``u=0.5_seed=1`` (a folder name)."""
    text = "_".join(f"{key.split('.')[-1]}={value}" for key, value in point.items()) or "run"
    return "".join(c if c.isalnum() or c in ".=-" else "_" for c in text)


def plan(args) -> list[dict]:
    """Every grid point with its run name and --set list, each config checked before any job starts."""
    grid = parse_grid(args.grid)
    points = [dict(zip([k for k, _ in grid], values)) for values in itertools.product(*[v for _, v in grid])]
    runs, names, problems = [], set(), {}
    for point in points:
        name = run_name(point)
        if name in names:
            raise ConfigError(f"two grid points share the run name {name!r}; make the last key segments differ")
        names.add(name)
        sets = list(args.set) + [f"{k}={v}" for k, v in point.items()]
        cfg = None
        try:
            cfg = train.build_config(args.config, sets, dry_run=args.dry_run, data_dir=args.data_dir)
        except ConfigError as error:
            problems.setdefault(str(error), []).append(name)
        runs.append({"name": name, "point": point, "sets": sets, "cfg": cfg})
    if problems:
        bad = sum(len(v) for v in problems.values())
        raise ConfigError(f"{bad} of {len(points)} grid point(s) have a bad config (nothing was run):\n  "
                          + "\n  ".join(f"{', '.join(v)}: {error}" for error, v in problems.items()))
    return runs


def run_config(config: str | None, sets: list[str], out: str, data_dir: str | None = None, dry_run: bool = False,
               quiet: bool = True, logger=()) -> dict:
    """One job: train one grid point (reused when finished, resumed from its checkpoint when
    half-finished); return its summary.json."""
    out = Path(out)
    flags = (["--config", config] if config else ["--defaults"]) + ["--out", str(out), "--no-eval", "--reuse-finished"]
    flags += [f for s in sets for f in ("--set", s)]
    flags += ["--data-dir", data_dir] if data_dir else []
    flags += ["--dry-run"] if dry_run else []
    flags += ["--quiet"] if quiet else []
    flags += ["--logger", ",".join(logger)] if logger else []
    flags += ["--resume"] if (out / "checkpoint.pt").exists() else []
    train.main(flags)  # a finished run with other settings stops here, with the differences
    return train.read_summary(out / "summary.json")


def collect(runs: list[dict], out: Path, outcomes=None) -> list[dict]:
    """One row per grid point from the run folders (and, when given, how each job ended)."""
    ended = {o.name: o for o in outcomes or []}
    rows = []
    for run in runs:
        row = {"run": run["name"], **run["point"]}
        summary_path = out / run["name"] / "summary.json"
        outcome = ended.get(run["name"])
        changes = train.finished_run_changes(out / run["name"], run["cfg"])
        if changes:  # a finished run, but not this grid point's: never reported as its result
            row.update(status="other-settings", best_epoch="", val_acc="", val_images="", test_acc="", test_images="",
                       solver="",
                       log=train.refusal(out / run["name"], changes))
        elif summary_path.exists():
            summary = train.read_summary(summary_path)
            row.update(status="done", best_epoch=summary["best_epoch"], val_acc=summary["val_acc"],
                       val_images=summary.get("val_images", ""), test_acc=summary["test_acc"],
                       test_images=summary.get("test_images", ""), solver=summary.get("trained_with", ""), log="")
        else:
            row.update(val_images="", test_images="")
            row.update(status="failed" if outcome is not None and not outcome.ok else "missing", best_epoch="",
                       val_acc="", test_acc="", solver="", log=(outcome.log or outcome.error) if outcome else "")
        rows.append(row)
    return rows


def run(args) -> int:
    """Carry out ``odezoo sweep`` with parsed ``args``."""
    if not args.grid:
        fail("give at least one --grid KEY=V1,V2,... (a single run is odezoo train)")
    out = Path(args.out) if args.out else Path("runs") / "sweeps" / (Path(args.config).stem if args.config else "sweep")
    try:  # the whole grid is checked before the folder is even created
        launcher = launcher_from_args(args, folder=out / "jobs")
        runs = plan(args)
    except (ValueError, ConfigError) as error:
        fail(str(error))
    if args.collect:
        return _sweep(args, out, launcher, runs)
    try:
        with run_folder_lock(out, "odezoo sweep"):
            return _sweep(args, out, launcher, runs)
    except RunFolderBusy as busy:
        fail(str(busy))


def _sweep(args, out: Path, launcher, runs) -> int:
    outcomes = None
    if not args.collect:
        print(f"sweep: {len(runs)} run(s) in {out} ({launcher.describe()})", flush=True)
        config = str(Path(args.config).resolve()) if args.config else None
        # A run finished with these settings starts no job, so the progress count and the time
        # estimate cover only the runs this command trains.
        to_run = [run for run in runs if train.finished_run_changes(out / run["name"], run["cfg"]) != {}]
        if len(to_run) < len(runs):
            print(f"reusing {len(runs) - len(to_run)} of {len(runs)} run(s) finished with these settings; "
                  f"running {len(to_run)}", flush=True)
        jobs = [Job(run["name"], __name__, "run_config",
                    {"config": config, "sets": run["sets"], "out": str(out / run["name"]), "data_dir": args.data_dir,
                     "dry_run": args.dry_run, "quiet": not args.verbose, "logger": tuple(args.logger or ())})
                for run in to_run]
        outcomes = run_jobs(jobs, launcher, progress=lambda line: print(line, flush=True))
    rows = collect(runs, out, outcomes)
    out.mkdir(parents=True, exist_ok=True)
    save_csv(out / "sweep.csv", rows)
    for row in rows:
        result = (f"validation {row['val_acc']:.4f} on {row['val_images']} images, test {row['test_acc']:.4f} on "
                  f"{row['test_images']} images (best epoch {row['best_epoch']})"
                  if row["status"] == "done" else row["status"] + (f" — {row['log']}" if row["log"] else ""))
        print(f"  {row['run']}: {result}")
    finished = sum(row["status"] == "done" for row in rows)
    print(f"{finished} of {len(rows)} run(s) finished; table: {out / 'sweep.csv'}"
          + ("" if finished == len(rows) else "; rerun the same command to finish only what is missing"))
    return 0 if finished == len(rows) else 1

