"""Fan independent runs out as jobs: one after another in this process, as parallel local
processes, or on a Slurm cluster — the last two through `submitit <https://github.com/facebookincubator/submitit>`_.

A job is a plain, picklable [`Job`][odezoo.experiments.sweep.Job]: *call function F of the importable module M with
these keyword arguments*.  The worker process imports M by name (never a file by path), so the
same object runs unchanged under every launcher.  Jobs must be idempotent (the commands make
them so: a finished run is reused, a half-finished one resumes from its checkpoint), because a
rerun of a sweep simply submits every job again.

    >>> launcher = Launcher("local", jobs=2, folder="runs/sweep/logs")
    >>> outcomes = run_jobs([Job("u=0.5", "odezoo.experiments.commands.sweep", "run_config", {...}), ...],
    ...                     launcher)
    >>> [o.name for o in outcomes if o.status == "failed"]

A failed job never stops the others: its [`Outcome`][odezoo.experiments.sweep.Outcome] carries the error and the
path of its
log, and [`run_jobs`][odezoo.experiments.sweep.run_jobs] returns once every job has finished or failed.
"""
from __future__ import annotations

import contextlib
import importlib
import os
import signal
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

__all__ = ["LAUNCHERS", "Launcher", "Job", "Outcome", "run_jobs", "submit_jobs", "wait_jobs", "launcher_from_options",
           "add_launcher_flags", "launcher_from_args", "JobFailed", "minutes_left"]

#: ``inprocess``: one job after another in this process (the default, no submitit needed);
#: ``local``: up to ``jobs`` processes on this machine; ``slurm``: one Slurm job array, at most
#: ``jobs`` tasks running at once.
LAUNCHERS = ("inprocess", "local", "slurm")


class JobFailed(RuntimeError):
    """A job's function exited with a non-zero ``SystemExit`` (a recipe's ``error: ...`` line)."""


@dataclass(frozen=True)
class Launcher:
    """Where and how jobs run.

    Args:
        kind: one of `LAUNCHERS`.
        jobs: at most this many jobs at once (local: processes; slurm: array parallelism).
        folder: submitit's folder (pickled jobs, one ``<job id>_log.out/.err`` pair per job);
            required for ``local`` and ``slurm``.
        threads: torch threads per job (default: this machine's cores divided by ``jobs``
            for ``local``; for ``slurm``, ``cpus_per_job``).
        partition: Slurm partition (default: the cluster's default).
        gpus_per_job: GPUs per Slurm job (``--gpus-per-node``).
        cpus_per_job: CPUs per Slurm task (``--cpus-per-task``).
        time_limit_min: wall-clock limit per job in minutes (Slurm ``--time``; local jobs are
            stopped after it too).
        mem_gb: memory per Slurm job.
        poll_seconds: how often to look at running jobs.
    """
    kind: str = "inprocess"
    jobs: int = 1
    folder: str | os.PathLike | None = None
    threads: int | None = None
    partition: str | None = None
    gpus_per_job: int = 0
    cpus_per_job: int | None = None
    time_limit_min: int = 240
    mem_gb: float | None = None
    poll_seconds: float = 1.0

    def __post_init__(self):
        if self.kind not in LAUNCHERS:
            raise ValueError(f"unknown launcher {self.kind!r}; choose one of {', '.join(LAUNCHERS)}")
        for key in ("jobs", "time_limit_min"):
            _positive_int(getattr(self, key), key)
        for key in ("threads", "cpus_per_job"):
            if getattr(self, key) is not None:
                _positive_int(getattr(self, key), key)
        if isinstance(self.gpus_per_job, bool) or not isinstance(self.gpus_per_job, int) or self.gpus_per_job < 0:
            raise ValueError(f"gpus_per_job must be a whole number >= 0, got {self.gpus_per_job!r}")
        if self.mem_gb is not None and not (isinstance(self.mem_gb, (int, float)) and self.mem_gb > 0):
            raise ValueError(f"mem_gb must be a positive number, got {self.mem_gb!r}")
        if self.kind != "inprocess" and self.folder is None:
            raise ValueError(f"the {self.kind} launcher needs a folder for submitit's logs")
        if self.kind == "inprocess" and self.jobs != 1:
            raise ValueError("the inprocess launcher runs one job at a time; use --launcher local for --jobs "
                             f"{self.jobs}")

    @property
    def job_threads(self) -> int | None:
        """Torch threads each job sets (None: in-process jobs keep the caller's setting)."""
        if self.threads is not None:
            return self.threads
        if self.kind == "local":
            return max(1, (os.cpu_count() or 1) // self.jobs)
        if self.kind == "slurm":
            return self.cpus_per_job
        return None

    def describe(self) -> str:
        """'local: 2 jobs at once, 1 torch thread each' — what the results' setup records."""
        if self.kind == "inprocess":
            return "in-process: one job at a time"
        threads = self.job_threads
        text = f"{self.kind}: {self.jobs} job{'s' if self.jobs > 1 else ''} at once"
        text += f", {threads} torch thread{'s' if threads != 1 else ''} each" if threads else ""
        if self.kind == "slurm":
            text += (f", partition {self.partition or '(default)'}, {self.gpus_per_job} GPU(s) per job, "
                     f"{self.time_limit_min} min limit")
        return text


def _positive_int(value, key):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{key} must be a whole number >= 1, got {value!r}")
    return value


@dataclass(frozen=True)
class Job:
    """Call ``function`` of the importable module ``module`` (a dotted name such as
    ``odezoo.experiments.commands.sweep``) with ``kwargs`` (picklable plain data).

    In the worker the module is imported by name and, when ``threads`` is set, torch uses that
    many threads.  A ``SystemExit`` with a non-zero code (a command's ``error:`` line) becomes
    [`JobFailed`][odezoo.experiments.sweep.JobFailed]."""
    name: str
    module: str
    function: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    threads: int | None = None

    def __post_init__(self):
        if not isinstance(self.module, str) or not self.module or "/" in self.module or \
                self.module.endswith(".py") or not all(part.isidentifier() for part in self.module.split(".")):
            raise ValueError(f"Job {self.name!r}: module must be an importable dotted name such as "
                             f"'odezoo.experiments.commands.sweep', not a file path ({self.module!r})")

    def __call__(self) -> Any:
        if self.threads:
            import torch
            torch.set_num_threads(self.threads)
        function = getattr(importlib.import_module(self.module), self.function)
        try:
            return function(**self.kwargs)
        except SystemExit as stop:
            if stop.code in (None, 0):
                return None
            raise JobFailed(f"job {self.name}: {getattr(stop, 'message', None) or stop.code}") from None


@dataclass
class Outcome:
    """How one job ended: ``status`` is ``done`` (``result`` holds what the function returned)
    or ``failed`` (``error`` says why, ``log`` is the file holding its output, when there is one)."""
    name: str
    status: str
    result: Any = None
    error: str | None = None
    log: str | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == "done"


def _executor(launcher: Launcher):
    try:
        import submitit
    except ImportError:
        raise ImportError(f"--launcher {launcher.kind} needs submitit. Install it with: "
                          "pip install 'odezoo[recipes]'") from None
    folder = Path(launcher.folder)
    folder.mkdir(parents=True, exist_ok=True)
    if launcher.kind == "local":
        executor = submitit.LocalExecutor(folder=folder)
        executor.update_parameters(timeout_min=launcher.time_limit_min)
        return executor
    executor = submitit.SlurmExecutor(folder=folder)
    options: dict[str, Any] = {"time": launcher.time_limit_min, "array_parallelism": launcher.jobs,
                               "ntasks_per_node": 1, "nodes": 1}
    if launcher.partition:
        options["partition"] = launcher.partition
    if launcher.gpus_per_job:
        options["gpus_per_node"] = launcher.gpus_per_job
    if launcher.cpus_per_job:
        options["cpus_per_task"] = launcher.cpus_per_job
    if launcher.mem_gb:
        options["mem"] = f"{int(launcher.mem_gb * 1024)}MB"
    executor.update_parameters(**options)
    return executor


def _log_of(handle) -> str | None:
    try:
        return str(handle.paths.stderr)
    except Exception:  # noqa: BLE001 — a log path is a courtesy, never a reason to fail
        return None


def _error_text(error: BaseException) -> str:
    """One line: the error's last line; for submitit's FailedJobError, the last line of the
    job's traceback (between its dashed rules), e.g. ``ValueError: ...``; for a job whose
    process ended without a result (UncompletedJobError: killed, out of memory, over its time
    limit), that, its state and the last line it printed."""
    lines = [line for line in (str(error).strip() or type(error).__name__).splitlines() if line.strip()]
    rules = [i for i, line in enumerate(lines) if set(line.strip()) == {"-"}]
    if type(error).__name__ == "UncompletedJobError":
        state = next((line.split("(state:", 1)[1].rstrip(") ") for line in lines if "(state:" in line), "unknown")
        last = lines[-1].strip() if rules and rules[-1] < len(lines) - 1 else None
        return (f"the job's process ended without a result (state {state}: killed, out of memory or over its "
                f"time limit?)" + (f"; its last output: {last}" if last else ""))
    if len(rules) >= 2 and rules[1] > rules[0] + 1:
        return lines[rules[1] - 1].strip()
    return lines[-1].strip() if lines else type(error).__name__


def submit_jobs(jobs: Sequence[Job], launcher: Launcher) -> list:
    """Submit every job at once (``slurm``: one job array limited to ``launcher.jobs`` running
    tasks); return submitit's job handles, in order.  ``local`` jobs are windowed by
    [`run_jobs`][odezoo.experiments.sweep.run_jobs] instead, so use this for ``slurm`` only."""
    if launcher.kind != "slurm":
        raise ValueError("submit_jobs is for the slurm launcher; run_jobs handles inprocess and local")
    executor = _executor(launcher)
    handles = []
    with executor.batch():
        for job in jobs:
            handles.append(executor.submit(job))
    return handles


def wait_jobs(jobs: Sequence[Job], handles: Sequence, launcher: Launcher,
              progress: Callable[[str], None] | None = print) -> list[Outcome]:
    """Wait for submitted jobs; one [`Outcome`][odezoo.experiments.sweep.Outcome] per job, in order."""
    since = time.time()
    started = {job.name: since for job in jobs}
    outcomes: dict[int, Outcome] = {}
    while len(outcomes) < len(jobs):
        for i, (job, handle) in enumerate(zip(jobs, handles)):
            if i not in outcomes and handle.done():
                outcomes[i] = _finish(job, handle, started[job.name])
                _report(outcomes[i], list(outcomes.values()), len(jobs), progress, since, launcher.jobs)
        if len(outcomes) < len(jobs):
            time.sleep(launcher.poll_seconds)
    return [outcomes[i] for i in range(len(jobs))]


def _finish(job: Job, handle, started: float) -> Outcome:
    seconds = time.time() - started
    try:
        result = handle.result()
    except Exception as error:  # noqa: BLE001 — every failure becomes an Outcome; the others go on
        return Outcome(job.name, "failed", error=_error_text(error), log=_log_of(handle), seconds=seconds)
    return Outcome(job.name, "done", result=result, log=_log_of(handle), seconds=seconds)


def minutes_left(seconds: Sequence[float], total: int, parallel: int = 1) -> float:
    """Estimated minutes until ``total`` jobs are done, given the durations of those finished
    so far: their mean times the jobs to go, divided by how many run at once."""
    to_go = total - len(seconds)
    if to_go <= 0 or not seconds:
        return 0.0
    return sum(seconds) / len(seconds) * to_go / max(1, min(parallel, to_go)) / 60


def _report(outcome: Outcome, finished: Sequence[Outcome], total: int, progress, since: float,
            parallel: int = 1) -> None:
    if progress is None:
        return
    done = len(finished)
    spent = time.time() - since
    clock = f"; {spent / 60:.1f} min so far" + (
        f", about {minutes_left([o.seconds for o in finished], total, parallel):.1f} min left" if done < total else "")
    if outcome.ok:
        progress(f"[{done}/{total}] done: {outcome.name} ({outcome.seconds / 60:.1f} min{clock})")
    else:
        progress(f"[{done}/{total}] FAILED: {outcome.name}: {outcome.error}"
                 + (f" (log: {outcome.log})" if outcome.log else "") + f" ({clock[2:]})")


def run_jobs(jobs: Sequence[Job], launcher: Launcher = Launcher(),
             progress: Callable[[str], None] | None = print) -> list[Outcome]:
    """Run every job with ``launcher`` and wait for all of them; one [`Outcome`][odezoo.experiments.sweep.Outcome]
    per job,
    in the order given.  A failing job is reported (with its log) and the others go on."""
    names = [job.name for job in jobs]
    if len(set(names)) != len(names):
        raise ValueError(f"job names must be unique: {sorted(n for n in set(names) if names.count(n) > 1)}")
    threads = launcher.job_threads
    jobs = [job if job.threads or not threads else Job(job.name, job.module, job.function, job.kwargs, threads)
            for job in jobs]
    if launcher.kind == "inprocess":
        return _run_inprocess(jobs, progress)
    if launcher.kind == "slurm":
        return wait_jobs(jobs, submit_jobs(jobs, launcher), launcher, progress)
    executor = _executor(launcher)
    since = time.time()
    pending = list(enumerate(jobs))
    running: dict[int, tuple[Any, float]] = {}
    outcomes: dict[int, Outcome] = {}
    try:
        with _terminate_as_interrupt():
            while pending or running:
                while pending and len(running) < launcher.jobs:
                    i, job = pending.pop(0)
                    running[i] = (executor.submit(job), time.time())
                    if progress is not None:
                        progress(f"started {job.name} (log: {_log_of(running[i][0])})")
                for i in [i for i, (handle, _) in running.items() if handle.done()]:
                    handle, started = running.pop(i)
                    outcomes[i] = _finish(jobs[i], handle, started)
                    _report(outcomes[i], list(outcomes.values()), len(jobs), progress, since, launcher.jobs)
                if running:
                    time.sleep(launcher.poll_seconds)
    except BaseException:  # Ctrl-C, a SIGTERM (`kill`, `timeout`) or an error here: no job outlives its sweep
        _stop(running, jobs, progress)
        raise
    return [outcomes[i] for i in range(len(jobs))]


@contextlib.contextmanager
def _terminate_as_interrupt():
    """While the local jobs run, a SIGTERM to this process (``kill PID``, ``timeout``, a
    scheduler ending it) stops the sweep as Ctrl-C does, so that its jobs are stopped too: a
    job's process does not stop on SIGTERM by itself (submitit's job environment ignores it)."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _stop(running: Mapping[int, tuple[Any, float]], jobs: Sequence[Job], progress, grace: float = 3.0) -> None:
    """Stop the jobs still running and say how to finish them (jobs are idempotent, so the same
    command again reuses what finished and resumes what was stopped).  First submitit's cancel
    (SIGINT to the job's controller, which stops its task); a process started with SIGINT ignored
    — in the background of a non-interactive shell, under ``nohup`` or a test runner — does not
    stop on it, so after ``grace`` seconds every process of the job still alive is killed."""
    trees = []
    for handle, _ in running.values():
        trees.append(_process_tree(int(handle.job_id)) if str(handle.job_id).isdigit() else [])
        with contextlib.suppress(Exception):  # already ended
            handle.cancel(check=False)
    deadline = time.time() + grace
    while time.time() < deadline and any(_alive(pid) for tree in trees for pid in tree):
        time.sleep(0.05)
    for tree in trees:
        if tree and _alive(tree[0]):  # a task started after the first look
            tree += [pid for pid in _process_tree(tree[0]) if pid not in tree]
        for pid in reversed(tree):  # the job's task first, then its controller
            if _alive(pid):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
    if running and progress is not None:
        names = ", ".join(jobs[i].name for i in running)
        progress(f"stopped the jobs still running ({names}); run the same command again to finish them "
                 "(finished jobs are reused, stopped ones resume from their last checkpoint)")


def _process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (Linux /proc; just ``pid`` where /proc has no child lists)."""
    tree, todo = [], [pid]
    while todo:
        current = todo.pop(0)
        tree.append(current)
        for task in Path(f"/proc/{current}/task").glob("*/children"):
            with contextlib.suppress(OSError):
                todo += [int(child) for child in task.read_text().split()]
    return tree


def _alive(pid: int) -> bool:
    """Whether ``pid`` still runs (a zombie, ended but not yet reaped, does not)."""
    if not Path("/proc/self/status").exists():  # no /proc (macOS): ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


def _run_inprocess(jobs: Sequence[Job], progress) -> list[Outcome]:
    since = time.time()
    outcomes = []
    for job in jobs:
        started = time.time()
        try:
            outcome = Outcome(job.name, "done", result=job())
        except Exception as error:  # noqa: BLE001 — reported, and the other jobs go on
            if progress is not None and not isinstance(error, JobFailed):  # a recipe's error says it all
                progress("".join(traceback.format_exception(error)).rstrip())
            outcome = Outcome(job.name, "failed", error=_error_text(error))
        outcome.seconds = time.time() - started
        outcomes.append(outcome)
        _report(outcome, outcomes, len(jobs), progress, since)
    return outcomes


# ----------------------------------------------------------------------------- command line
_OPTION_KEYS = {f.name for f in fields(Launcher)} - {"poll_seconds"}


def launcher_from_options(options: Mapping[str, Any], folder: str | os.PathLike | None = None) -> Launcher:
    """A [`Launcher`][odezoo.experiments.sweep.Launcher] from a mapping (a YAML ``launcher:`` section or flags);
    unknown keys
    are refused with the list of known ones."""
    unknown = sorted(set(options) - _OPTION_KEYS)
    if unknown:
        raise ValueError(f"unknown launcher option(s) {', '.join(unknown)}; known: {', '.join(sorted(_OPTION_KEYS))}")
    values = {k: v for k, v in options.items() if v is not None}
    values.setdefault("folder", folder)
    return Launcher(**values)


def add_launcher_flags(parser) -> None:  # the odezoo command line defines the same flags in odezoo_cli
    """``--launcher``, ``--jobs``, ``--launcher-config`` and the Slurm flags, for a recipe's parser."""
    group = parser.add_argument_group("launching jobs (submitit)")
    group.add_argument("--launcher", choices=LAUNCHERS,
                       help="inprocess: one run after another here (default); local: --jobs processes on this "
                            "machine; slurm: a Slurm job array")
    group.add_argument("--jobs", type=int, metavar="N", help="at most N jobs at once (local, slurm)")
    group.add_argument("--threads", type=int, metavar="T", help="torch threads per job (local default: cores / jobs)")
    group.add_argument("--partition", help="Slurm partition")
    group.add_argument("--gpus-per-job", type=int, metavar="G", help="Slurm GPUs per job")
    group.add_argument("--cpus-per-job", type=int, metavar="C", help="Slurm CPUs per job")
    group.add_argument("--time-limit", type=int, metavar="MIN", dest="time_limit_min",
                       help="wall-clock limit per job in minutes (default 240)")
    group.add_argument("--mem-gb", type=float, help="Slurm memory per job")
    group.add_argument("--launcher-config", metavar="YAML",
                       help="a YAML file whose keys (kind, jobs, threads, partition, gpus_per_job, cpus_per_job, "
                            "time_limit_min, mem_gb) set the launcher; flags override it")


def launcher_from_args(args, folder: str | os.PathLike) -> Launcher:
    """The launcher the flags of [`add_launcher_flags`][odezoo.experiments.sweep.add_launcher_flags] ask for (YAML
    first, flags over it).
    Raises ``ValueError`` with the offending option named."""
    options: dict[str, Any] = {}
    if getattr(args, "launcher_config", None):
        import yaml

        try:
            loaded = yaml.safe_load(Path(args.launcher_config).read_text()) or {}
        except FileNotFoundError:
            raise ValueError(f"launcher config not found: {args.launcher_config}") from None
        if not isinstance(loaded, dict):
            raise ValueError(f"{args.launcher_config} must hold a mapping (kind: local, jobs: 2, ...)")
        options.update(loaded.get("launcher", loaded))
    flags = {"kind": args.launcher, "jobs": args.jobs, "threads": args.threads, "partition": args.partition,
             "gpus_per_job": args.gpus_per_job, "cpus_per_job": args.cpus_per_job,
             "time_limit_min": args.time_limit_min, "mem_gb": args.mem_gb}
    options.update({k: v for k, v in flags.items() if v is not None})
    return launcher_from_options(options, folder=folder)
