#!/usr/bin/env python
"""Time odezoo's generic Runge–Kutta stepper against torchdiffeq's hand-written solvers.

    python benchmarks/run.py                      # full run on the default device
    python benchmarks/run.py --threads 1 --reps 20
    python benchmarks/run.py --device cuda --out results/cuda.json
    python benchmarks/run.py --quick              # tiny sizes, a few reps (used by the tests)

For every case two callables A (odezoo) and B (the baseline) are warmed up and then run
alternately — A B, B A, A B, ... — so slow drifts of a shared machine hit both alike.  The
table shows each side's median time, their ratio (median A / median B) and the target.
Adaptive cases: the dopri5 tableau registered through ``odezoo.register_tableau`` against
torchdiffeq's ``dopri5`` (same controller, equal nfe, checked), and ``tsit5`` against
``dopri5`` at tolerances that give the same error against a float64 reference.
"fwd" is an inference pass under ``torch.no_grad()``; "fwd+bwd" is a training step: the
solve with autograd on, then ``backward()`` of the final state's sum.

The results (with the machine, the library versions and every raw time) go to a JSON file.
"""
from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import platform
import socket
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
# cases.py, then this checkout's odezoo (also when not pip-installed)
for index, path in enumerate((HERE, HERE.parent)):
    sys.path.insert(index, str(path))

import torch  # noqa: E402
import torchdiffeq  # noqa: E402
from torchdiffeq import odeint  # noqa: E402

import odezoo  # noqa: E402
from odezoo import MetaSolver, SolverSpec  # noqa: E402
from cases import CASES, hand_written, make_case  # noqa: E402

STEP_SIZE = 0.125  # 8 steps over [0, 1], as in the paper
#: (odezoo method, its parameters, torchdiffeq method that computes the same thing)
FAMILY_PAIRS = [
    ("rk2_u", {"u": 1 / 2}, "midpoint"),
    ("rk4_uv", {"u": 1 / 3, "v": 2 / 3}, "rk4"),
    ("rk4_u2", {"u": 1 / 3}, "rk4"),
]
#: (odezoo method, its parameters, the same tableau written out by hand in cases.py)
HAND_WRITTEN = [
    ("rk2_u", {"u": 1 / 2}, "midpoint"),
    ("rk4_uv", {"u": 1 / 3, "v": 2 / 3}, "rk4_38"),
]
#: target ratios (A / B must not exceed them); None: reported only
TARGETS = {
    ("family", "mlp", "fwd"): None,
    ("family", "mlp", "fwd+bwd"): 0.90,
    ("family", "conv", "fwd"): 1.00,
    ("family", "conv", "fwd+bwd"): 1.00,
    ("smoothing", None, None): 1.02,
    ("per-sample", None, None): 1.05,
    ("solver-work", "conv", "fwd"): 1.05,
    ("solver-work", "mlp", "fwd"): 1.05,
    ("hand-written", None, "fwd"): 1.05,
    ("front-end", None, None): 1.00,
    ("adaptive", None, None): 1.00,
    ("equal-accuracy", None, None): None,
    ("compile", None, None): None,
    ("bf16", None, None): None,
}
KINDS = ("family", "front-end", "smoothing", "per-sample", "solver-work", "hand-written", "adaptive", "equal-accuracy",
         "compile", "bf16")
#: adaptive cases: tolerances (float32 states) and the dopri5 tableau, registered through odezoo
ADAPTIVE_RTOL, ADAPTIVE_ATOL = 1e-3, 1e-4
DOPRI5 = dict(
    A=[[0.0] * 7, [1 / 5, 0, 0, 0, 0, 0, 0], [3 / 40, 9 / 40, 0, 0, 0, 0, 0], [44 / 45, -56 / 15, 32 / 9, 0, 0, 0, 0],
       [19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729, 0, 0, 0],
       [9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656, 0, 0],
       [35 / 384, 0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0]],
    b=[35 / 384, 0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0],
    c=[0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1, 1], order=5,
    b_embedded=[1951 / 21600, 0, 22642 / 50085, 451 / 720, -12231 / 42400, 649 / 6300, 1 / 60], embedded_order=4,
    b_mid=[6025192743 / 30085553152 / 2, 0, 51252292925 / 65400821598 / 2, -2691868925 / 45128329728 / 2,
           187940372067 / 1594534317056 / 2, -1776094331 / 19743644256 / 2, 11237099 / 235043384 / 2])
REGISTERED_DOPRI5 = "dopri5_odezoo"


def target_for(kind: str, function: str, pass_: str):
    for key in ((kind, function, pass_), (kind, None, pass_), (kind, None, None)):
        if key in TARGETS:
            return TARGETS[key]
    return None


# ---------------------------------------------------------------------------- timing
class Timer:
    """Wall-clock seconds of one call, with the device synchronized before and after."""

    def __init__(self, device: torch.device):
        self.sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def __call__(self, fn) -> float:
        self.sync()
        start = time.perf_counter()
        fn()
        self.sync()
        return time.perf_counter() - start


def interleaved(a, b, *, timer: Timer, reps: int, warmup: int, budget: float):
    """Times of ``a`` and ``b`` over alternating runs (AB, BA, AB, ...).

    At least ``reps`` runs each; more (up to 10×) when one pair takes well under
    ``budget`` seconds / ``reps``, so cheap cases get more samples for the same wall time.
    """
    for _ in range(warmup):
        a()
        b()
    estimate = timer(a) + timer(b)
    n = max(reps, min(10 * reps, int(budget / max(estimate, 1e-9))))
    times_a, times_b = [], []
    gc.collect()
    for r in range(n):
        if r % 2 == 0:
            times_a.append(timer(a))
            times_b.append(timer(b))
        else:
            times_b.append(timer(b))
            times_a.append(timer(a))
    return times_a, times_b


def summary(times):
    q = statistics.quantiles(times, n=4) if len(times) > 1 else [times[0]] * 3
    return {"median_ms": 1e3 * statistics.median(times), "q1_ms": 1e3 * q[0], "q3_ms": 1e3 * q[2],
            "n": len(times)}


# ---------------------------------------------------------------------------- passes
def forward_pass(solve, func, y0):
    def run():
        with torch.no_grad():
            solve(func, y0)
    return run


def training_pass(solve, func, y0):
    """A training step's worth of work: solve with autograd on, then backward."""
    params = list(func.parameters())
    y0 = y0.detach().clone().requires_grad_(True)

    def run():
        for p in params:
            p.grad = None
        y0.grad = None
        solve(func, y0)[-1].sum().backward()
    return run


PASSES = {"fwd": forward_pass, "fwd+bwd": training_pass}


def saved_bytes(run) -> int:
    """Bytes of the tensors autograd keeps for the backward of one training pass, each storage
    counted once: what a forward+backward holds at its peak beyond the inputs and weights (which
    are counted too where a backward saves them; both sides alike).  Deterministic, so unlike
    times it does not depend on the machine's load."""
    seen = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        seen[(storage.device, storage.data_ptr())] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        run()
    return sum(seen.values())


def odeint_solver(method, params, t, step_size, front=odezoo.odeint):
    """A solve as a user writes it: ``odezoo.odeint`` for odezoo's families (``front``;
    torchdiffeq's ``odeint`` for its own methods, and for the front-end comparison)."""
    options = {**params, "step_size": step_size}
    return lambda func, y0: front(func, y0, t, method=method, options=options)


def adaptive_solver(method, t, rtol=ADAPTIVE_RTOL, atol=ADAPTIVE_ATOL):
    return lambda func, y0: odeint(func, y0, t, method=method, rtol=rtol, atol=atol)


class Counting(torch.nn.Module):
    """``func`` with a count of its evaluations (for nfe)."""

    def __init__(self, func):
        super().__init__()
        self.func, self.n = func, 0

    def forward(self, t, y):
        self.n += 1
        return self.func(t, y)


def nfe_and_error(method, func, y0, t, tol, reference=None):
    counted = Counting(func)
    with torch.no_grad():
        y = odeint(counted, y0, t, method=method, rtol=tol, atol=tol / 10)[-1]
    error = None if reference is None else float((y.double() - reference).abs().max())
    return counted.n, error


def equal_accuracy_tolerances(func, y0, t, base_tol, reference_tol=1e-10):
    """dopri5 at ``base_tol``, and the largest tsit5 tolerance (on a √10 grid) whose error
    against a tight float64 reference (dop853 at ``reference_tol``) is no larger: (tsit5 tol,
    nfe, error, dopri5 nfe, error)."""
    import copy

    func64 = copy.deepcopy(func).double()
    with torch.no_grad():
        reference = odeint(func64, y0.double(), t.double(), method="dop853", rtol=reference_tol,
                           atol=reference_tol)[-1]
    dp_nfe, dp_error = nfe_and_error("dopri5", func, y0, t, base_tol, reference)
    for k in range(9):
        tol = base_tol * 10 ** (1 - k / 2)
        ts_nfe, ts_error = nfe_and_error("tsit5", func, y0, t, tol, reference)
        if ts_error <= dp_error:
            return tol, ts_nfe, ts_error, dp_nfe, dp_error
    return tol, ts_nfe, ts_error, dp_nfe, dp_error


def meta_solver(meta: MetaSolver, t):
    """What a training loop does per batch: draw the next solver, then solve."""
    def solve(func, y0):
        meta.resample()
        return meta.solve(func, y0, t)
    return solve


def fmt_params(params):
    shown = {1 / 2: "1/2", 1 / 3: "1/3", 2 / 3: "2/3"}
    return ",".join(f"{k}={shown.get(v, f'{v:g}')}" for k, v in params.items())


# ---------------------------------------------------------------------------- the cases
def build_comparisons(functions, device, quick, kinds=KINDS):
    """Yield (kind, function, pass, odezoo label, baseline label, A, B, extra) for ``kinds``
    (under ``quick`` the inductor compile case is left out: compiling takes a minute)."""
    for comparison in _comparisons(functions, device, quick):
        if comparison[0] in kinds and not (quick and comparison[0] == "compile"):
            yield comparison


def _block_forward(block, y0, autocast=False):
    def run():
        with torch.no_grad(), torch.autocast(y0.device.type, dtype=torch.bfloat16, enabled=autocast):
            block(y0)
    return run


def _comparisons(functions, device, quick):
    t = torch.tensor([0.0, 1.0], device=device)
    steps = round(1.0 / STEP_SIZE)
    if REGISTERED_DOPRI5 not in odezoo.families():
        odezoo.register_tableau(REGISTERED_DOPRI5, **DOPRI5)
    for name in functions:
        func, y0 = make_case(name, device, quick=quick)
        batch = y0.shape[0]

        # 1. each family against torchdiffeq's hand-written solver for the same tableau
        for method, params, builtin in FAMILY_PAIRS:
            for pass_, make in PASSES.items():
                yield ("family", name, pass_, f"{method}({fmt_params(params)})", builtin,
                       make(odeint_solver(method, params, t, STEP_SIZE), func, y0),
                       make(odeint_solver(builtin, {}, t, STEP_SIZE, front=odeint), func, y0), {})

        # 1b. the same family through odezoo.odeint and through torchdiffeq.odeint (its front end)
        method, params, _ = FAMILY_PAIRS[0]
        for pass_, make in PASSES.items():
            yield ("front-end", name, pass_, f"odezoo.odeint {method}({fmt_params(params)})",
                   f"torchdiffeq.odeint {method}", make(odeint_solver(method, params, t, STEP_SIZE), func, y0),
                   make(odeint_solver(method, params, t, STEP_SIZE, front=odeint), func, y0), {})

        # 2. smoothing, resampled every batch, against the fixed solver at its center.  The
        # center is Ralston's u = 2/3, where no coefficient vanishes, so both sides do the same
        # tensor work (at the midpoint u = 1/2, b_1 = 0 saves the fixed solver one operation).
        for pass_, make in PASSES.items():
            smooth = MetaSolver.smoothing("rk2_u", center={"u": 2 / 3}, distribution="normal", scale=0.1,
                                          step_size=STEP_SIZE, seed=0)
            fixed = MetaSolver.fixed(SolverSpec("rk2_u", {"u": 2 / 3}, step_size=STEP_SIZE))
            yield ("smoothing", name, pass_, "smoothing rk2_u(u~N(2/3,0.1)), resampled",
                   "fixed rk2_u(u=2/3)", make(meta_solver(smooth, t), func, y0),
                   make(meta_solver(fixed, t), func, y0), {})

        # 3. per-sample parameters against one scalar with the same number of operations
        generator = torch.Generator().manual_seed(0)
        u = torch.empty(batch, dtype=torch.float64).uniform_(0.5, 0.9, generator=generator).to(device)
        u_scalar = float(u.mean())
        for pass_, make in PASSES.items():
            yield ("per-sample", name, pass_, "rk2_u(u per-sample)",
                   f"rk2_u(u={u_scalar:.3f})", make(odeint_solver("rk2_u", {"u": u}, t, STEP_SIZE), func, y0),
                   make(odeint_solver("rk2_u", {"u": u_scalar}, t, STEP_SIZE), func, y0), {})

        # 4. the solve against stages × steps evaluations of the function, back to back in one
        # timed run (as the solve makes them; timing one evaluation and multiplying would charge
        # the solve for the gaps between timed calls, which cost a 0.2 ms function up to 13 %)
        t_eval = torch.tensor(0.5, device=device, dtype=y0.dtype)

        def evaluations(n, func=func, y0=y0):
            def run():
                with torch.no_grad():
                    for _ in range(n):
                        func(t_eval, y0)
            return run

        def chained(n):
            """n evaluations of f and nothing else, y <- f(t, y) (as a one-row "solution"): timed
            as a training step, the part of one that no solver can avoid (a solve adds its stage
            combinations, their backward and the output stack)."""
            def solve(func, y0):
                y = y0
                for _ in range(n):
                    y = func(t_eval, y)
                return y.unsqueeze(0)
            return solve

        for method, params, _ in FAMILY_PAIRS:
            stages = odezoo.get_family(method).stages
            yield ("solver-work", name, "fwd", f"{method}({fmt_params(params)}) solve",
                   f"{stages}×{steps}×f", forward_pass(odeint_solver(method, params, t, STEP_SIZE), func, y0),
                   evaluations(stages * steps), {"details": {"evaluations": stages * steps}})
            yield ("solver-work", name, "fwd+bwd", f"{method}({fmt_params(params)}) solve",
                   f"{stages}×{steps}×f chained", training_pass(odeint_solver(method, params, t, STEP_SIZE), func, y0),
                   training_pass(chained(stages * steps), func, y0), {"details": {"evaluations": stages * steps}})

        # 4b. the solve against the same tableau written out by hand (no library): the cost of
        # odezoo itself, where the rows above also hold what any Runge–Kutta loop costs beyond f
        for method, params, hand in HAND_WRITTEN:
            for pass_, make in PASSES.items():
                yield ("hand-written", name, pass_, f"{method}({fmt_params(params)})", f"hand-written {hand}",
                       make(odeint_solver(method, params, t, STEP_SIZE), func, y0),
                       make(hand_written(hand, t, STEP_SIZE), func, y0), {})

        # 5. adaptive: the dopri5 tableau registered through odezoo against torchdiffeq's dopri5
        # (the same controller, so the same steps: equal nfe, checked here)
        ours, theirs = (nfe_and_error(m, func, y0, t, ADAPTIVE_RTOL)[0] for m in (REGISTERED_DOPRI5, "dopri5"))
        if ours != theirs:
            raise SystemExit(f"{name}: registered dopri5 took {ours} evaluations, torchdiffeq's dopri5 {theirs}")
        for pass_, make in PASSES.items():
            yield ("adaptive", name, pass_, f"odezoo-registered dopri5 (nfe {ours})", f"dopri5 (nfe {theirs})",
                   make(adaptive_solver(REGISTERED_DOPRI5, t), func, y0), make(adaptive_solver("dopri5", t), func, y0),
                   {"details": {"nfe": [ours, theirs], "rtol": ADAPTIVE_RTOL, "atol": ADAPTIVE_ATOL}})

        # 6. tsit5 against dopri5 at tolerances that give the same error (vs a float64 dop853 reference;
        # --quick: at 1e-8, still far below the errors compared, where 1e-10 took 13 s of the conv case)
        tol, ts_nfe, ts_error, dp_nfe, dp_error = equal_accuracy_tolerances(func, y0, t, ADAPTIVE_RTOL,
                                                                            1e-8 if quick else 1e-10)
        yield ("equal-accuracy", name, "fwd", f"tsit5 tol {tol:.1e} (nfe {ts_nfe}, err {ts_error:.1e})",
               f"dopri5 tol {ADAPTIVE_RTOL:.0e} (nfe {dp_nfe}, err {dp_error:.1e})",
               forward_pass(adaptive_solver("tsit5", t, tol, tol / 10), func, y0),
               forward_pass(adaptive_solver("dopri5", t), func, y0),
               {"details": {"nfe": [ts_nfe, dp_nfe], "error": [ts_error, dp_error], "tol": [tol, ADAPTIVE_RTOL]}})

        # 7. torch.compile (inductor) of an ODEBlock with a fixed family against the same block in eager mode
        block = odezoo.ODEBlock(func, SolverSpec("rk2_u", {"u": 0.5}, n_steps=steps)).to(device)
        yield ("compile", name, "fwd", f"compiled ODEBlock rk2_u({steps} steps)", "eager",
               _block_forward(torch.compile(block), y0), _block_forward(block, y0), {"backend": "inductor"})

        # 8. bf16 autocast against float32 (the function in bf16, the ODE state float32)
        yield ("bf16", name, "fwd", f"bf16 autocast ODEBlock rk2_u({steps} steps)", "float32",
               _block_forward(block, y0, autocast=True), _block_forward(block, y0), {})


# ---------------------------------------------------------------------------- environment
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device: torch.device, args) -> dict:
    env = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "hostname": socket.gethostname(),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torchdiffeq": getattr(torchdiffeq, "__version__", "?"),
        "odezoo": odezoo.__version__,
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "device": str(device),
        "dtype": "float32",
        "step_size": STEP_SIZE,
        "reps_min": args.reps,
        "quick": args.quick,
    }
    try:
        env["load_average"] = os.getloadavg()
    except OSError:
        pass
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
        env["cuda"] = torch.version.cuda
    return env


# ---------------------------------------------------------------------------- output
COLUMNS = ("case", "pass", "odezoo ms", "baseline ms", "ratio", "target", "holds?", "memory ratio")


def row_cells(row):
    target = "—" if row["target"] is None else f"≤ {row['target']:.2f}"
    holds = "—" if row["holds"] is None else ("yes" if row["holds"] else "NO")
    memory = row.get("saved_for_backward")
    memory = "—" if not memory or memory["ratio"] is None else f"{memory['ratio']:.3f}"
    return (row["case"], row["pass"], f"{row['odezoo']['median_ms']:.3f}",
            f"{row['baseline']['median_ms']:.3f}", f"{row['ratio']:.3f}", target, holds, memory)


def format_table(rows, markdown=False):
    cells = [COLUMNS] + [row_cells(r) for r in rows]
    if markdown:
        lines = ["| " + " | ".join(cells[0]) + " |", "|" + "|".join("---" for _ in COLUMNS) + "|"]
        lines += ["| " + " | ".join(c) + " |" for c in cells[1:]]
        return "\n".join(lines)
    widths = [max(len(c[i]) for c in cells) for i in range(len(COLUMNS))]
    line = lambda c: "  ".join(x.ljust(w) if i < 2 else x.rjust(w) for i, (x, w) in enumerate(zip(c, widths)))  # noqa: E731
    return "\n".join([line(cells[0]), "  ".join("-" * w for w in widths)] + [line(c) for c in cells[1:]])


def header(env) -> str:
    where = env.get("gpu", env["cpu"])
    return (f"odezoo {env['odezoo']} benchmarks — {env['date']} on {env['hostname']}\n"
            f"device {env['device']} ({where}); {env['threads']} torch thread(s), {env['cpu_count']} CPUs; "
            f"python {env['python']}, torch {env['torch']}, torchdiffeq {env['torchdiffeq']}; "
            f"float32, step 0.125 over [0, 1]")


def default_out(device: torch.device) -> Path:
    return HERE / "results" / f"{socket.gethostname()}-{device.type}.json"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes and few reps (a smoke test)")
    parser.add_argument("--device", default="auto", choices=("cpu", "cuda", "auto"))
    parser.add_argument("--reps", type=int, default=None,
                        help="minimum interleaved repetitions per case (default 20; 3 with --quick)")
    parser.add_argument("--budget", type=float, default=None,
                        help="seconds per case below which cheap cases get up to 10× the reps "
                             "(default 4; 0.2 with --quick)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch.set_num_threads (default: torch's own; 1 with --quick)")
    parser.add_argument("--functions", default=",".join(CASES),
                        help=f"comma-separated ODE functions to run (default: {','.join(CASES)})")
    parser.add_argument("--kinds", default=",".join(KINDS),
                        help=f"comma-separated comparison kinds to run (default: all of {','.join(KINDS)})")
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON output (default benchmarks/results/<hostname>-<device>.json)")
    parser.add_argument("--docs", type=Path, default=None,
                        help="also write the table into this Markdown file, between the lines "
                             "<!-- table:start --> and <!-- table:end --> (e.g. docs/benchmarks.md)")
    args = parser.parse_args(argv)
    args.reps = args.reps if args.reps is not None else (3 if args.quick else 20)
    args.budget = args.budget if args.budget is not None else (0.2 if args.quick else 4.0)
    if args.reps < 1:
        parser.error("--reps must be at least 1")

    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            parser.error("--device cuda: no CUDA device is available")
    functions = [f.strip() for f in args.functions.split(",") if f.strip()]
    unknown = sorted(set(functions) - set(CASES))
    if unknown:
        parser.error(f"unknown --functions {unknown}; choose from {sorted(CASES)}")
    kinds = tuple(k.strip() for k in args.kinds.split(",") if k.strip())
    if set(kinds) - set(KINDS):
        parser.error(f"unknown --kinds {sorted(set(kinds) - set(KINDS))}; choose from {', '.join(KINDS)}")
    if args.threads is None and args.quick:
        args.threads = 1
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    env = environment(device, args)
    print(header(env), flush=True)
    timer = Timer(device)
    rows = []
    for kind, function, pass_, label_a, label_b, a, b, extra in build_comparisons(functions, device, args.quick, kinds):
        times_a, times_b = interleaved(a, b, timer=timer, reps=args.reps, warmup=1 if args.quick else 3,
                                       budget=args.budget)
        odezoo_s, baseline_s = summary(times_a), summary(times_b)
        ratio = odezoo_s["median_ms"] / baseline_s["median_ms"]
        paired = statistics.median(x / y for x, y in zip(times_a, times_b))
        target = target_for(kind, function, pass_)
        memory = None
        if pass_ == "fwd+bwd":
            mem_a, mem_b = saved_bytes(a), saved_bytes(b)
            memory = {"odezoo_MB": mem_a / 2 ** 20, "baseline_MB": mem_b / 2 ** 20,
                      "ratio": mem_a / mem_b if mem_b else None}
        row = {"case": f"{function}: {label_a} vs {label_b}", "kind": kind, "function": function, "pass": pass_,
               "odezoo_label": label_a, "baseline_label": label_b, "odezoo": odezoo_s,
               "baseline": baseline_s, "ratio": ratio, "paired_ratio_median": paired,
               "target": target, "holds": None if target is None else bool(ratio <= target),
               "saved_for_backward": memory,
               **({"details": extra["details"]} if "details" in extra else {}),
               "odezoo_times_ms": [1e3 * x for x in times_a],
               "baseline_times_ms": [1e3 * x for x in times_b]}
        rows.append(row)
        print(f"  {row['case']:<52} {pass_:<8} {odezoo_s['median_ms']:10.3f} {baseline_s['median_ms']:10.3f}"
              f"  ratio {ratio:.3f}", flush=True)

    print()
    print(header(env))
    print(format_table(rows))
    print(f"\n{verdict(rows)}")

    out = args.out or default_out(device)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"environment": env, "rows": rows, "table_markdown": format_table(rows, True)},
                              indent=1, default=float) + "\n")
    print(f"wrote {out}")
    if args.docs is not None:
        write_docs(args.docs, env, rows, out)
        print(f"wrote {args.docs}")
    return 0


def verdict(rows) -> str:
    checked = [r for r in rows if r["holds"] is not None]
    failed = [r for r in checked if not r["holds"]]
    text = f"{len(checked) - len(failed)} of {len(checked)} targets hold"
    return text + ("" if not failed else "; missed: " + "; ".join(
        f"{r['case']} {r['pass']} ({r['ratio']:.3f} > {r['target']:.2f})" for r in failed))


def write_docs(page: Path, env, rows, out: Path) -> None:
    """Replace the table between the markers of ``page`` with this run's."""
    start, end = "<!-- table:start -->", "<!-- table:end -->"
    text = page.read_text()
    if start not in text or end not in text:
        raise SystemExit(f"{page} lacks the lines {start} / {end}")
    try:
        shown = out.resolve().relative_to(HERE.parent)
    except ValueError:
        shown = out
    block = "\n".join([start, "", "```text", header(env), "```", "", format_table(rows, markdown=True), "",
                        f"**{verdict(rows)}.** Command: `{env['command']}`; raw times in `{shown}`.", "", end])
    head, rest = text.split(start, 1)
    page.write_text(head + block + rest.split(end, 1)[1])


if __name__ == "__main__":
    sys.exit(main())
