#!/usr/bin/env python
"""Per-sample times: one batched solve against the workarounds, on irregularly sampled series.

    python benchmarks/per_sample_times.py --threads 1            # the table in docs/per_sample_times.md
    python benchmarks/per_sample_times.py --quick                # a smoke test (the test suite runs it)

Problem (latent-ODE style): 256 series, each observed at 6 irregular times of its own in (0, 5],
all starting at t = 0 from their own state; the right-hand side is a small tanh network
dy/dt = tanh(W₂ tanh(W₁ y + t)) on 8 dimensions; Tsit5 at rtol 1e-6, atol 1e-8 everywhere.
Rows, each timed against odezoo's per-sample solve in the same run (alternating, one thread):

* **loop** — one ``odezoo.odeint`` per series (what users of torchdiffeq write today);
* **merged grid** — one solve over the union of all series' times (1,536 points), then each
  series' own times picked out; every series is stepped to the union, so its cost grows with it;
* **torchode** — torchode's own per-sample solve (``Tsit5``, ``IntegralController``), the only
  other PyTorch library with per-sample times (imported only here: ``pip install torchode``).

Also reported: each method's largest error against a float64 reference at rtol 1e-10, its function
evaluations, and the bytes autograd saves for the backward of one training pass (the memory a
training step holds; ``benchmarks/run.py``'s ``saved_bytes``).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
for index, path in enumerate((HERE, HERE.parent)):
    sys.path.insert(index, str(path))

import torch  # noqa: E402
from torch import nn  # noqa: E402

import odezoo  # noqa: E402
from run import saved_bytes  # noqa: E402

RTOL, ATOL = 1e-6, 1e-8


class Field(nn.Module):
    """dy/dt = tanh(W₂ tanh(W₁ y + t)): small, nonlinear, time-dependent; ``t`` of any shape that
    broadcasts against ``(batch, 1)``."""

    def __init__(self, dim: int = 8, hidden: int = 16):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)
        self.nfe = 0

    def forward(self, t, y):
        self.nfe += 1
        t = t.reshape(-1, 1) if t.ndim else t
        return torch.tanh(self.fc2(torch.tanh(self.fc1(y) + t)))


def problem(batch: int, count: int, dtype=torch.float32, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    func = Field().to(dtype)
    y0 = torch.randn(batch, 8, generator=generator).to(dtype)
    times = torch.sort(torch.rand(count - 1, batch, generator=generator, dtype=torch.float64) * 5, dim=0).values
    t = torch.cat([torch.zeros(1, batch, dtype=torch.float64), times]).to(dtype)  # (T, batch), from 0
    return func, y0, t


def per_sample(func, y0, t):
    return odezoo.odeint(func, y0, t, method="tsit5", rtol=RTOL, atol=ATOL)


def loop(func, y0, t):
    return torch.stack([odezoo.odeint(func, y0[b:b + 1], t[:, b], method="tsit5", rtol=RTOL, atol=ATOL)[:, 0]
                        for b in range(y0.shape[0])], dim=1)


def merged(func, y0, t):
    union, inverse = torch.unique(t, sorted=True, return_inverse=True)  # every series' times, once
    states = odezoo.odeint(func, y0, union, method="tsit5", rtol=RTOL, atol=ATOL)  # (U, batch, dim)
    return states[inverse, torch.arange(t.shape[1]).expand_as(inverse)]


def torchode_solver(func):
    import torchode

    term = torchode.ODETerm(lambda t, y: func(t, y))
    step = torchode.Tsit5(term=term)
    control = torchode.IntegralController(atol=ATOL, rtol=RTOL, term=term)
    solver = torchode.AutoDiffAdjoint(step, control)

    def solve(func_, y0, t):
        problem_ = torchode.InitialValueProblem(y0=y0, t_eval=t.T.contiguous())
        return solver.solve(problem_).ys.transpose(0, 1)
    return solve


def timed(fn, reps):
    start = time.process_time()
    for _ in range(reps):
        fn()
    return (time.process_time() - start) / reps


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    parser.add_argument("--quick", action="store_true", help="16 series, a few repetitions (a smoke test)")
    parser.add_argument("--reps", type=int, default=None, help="alternating repetitions per pair (default 7)")
    parser.add_argument("--out", type=Path, default=None, help="JSON file for the raw numbers")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    batch, count = (16, 6) if args.quick else (256, 6)
    reps = args.reps or (2 if args.quick else 7)
    func, y0, t = problem(batch, count)
    with torch.no_grad():
        f64 = Field().double()
        f64.load_state_dict(func.state_dict())
        reference = odezoo.odeint(f64, y0.double(), t.double(), method="tsit5", rtol=1e-10, atol=1e-12).float()
    methods = {"odezoo per-sample": per_sample, "loop over series": loop, "merged grid": merged}
    try:
        methods["torchode per-sample"] = torchode_solver(func)
    except ImportError:
        print("torchode is not installed: its row is skipped (pip install torchode)")
    rows = {}
    for name, solve in methods.items():
        with torch.no_grad():
            func.nfe = 0
            out = solve(func, y0, t)
            nfe = func.nfe
        error = float((out - reference).abs().max())
        y = y0.clone().requires_grad_(True)
        memory = saved_bytes(lambda: solve(func, y, t).sum().backward())
        rows[name] = {"error": error, "nfe": nfe, "saved_MB": memory / 2 ** 20, "times_s": []}
    base = methods["odezoo per-sample"]
    for name, solve in methods.items():  # alternating with the per-sample solve, forward passes
        if name == "odezoo per-sample":
            continue
        with torch.no_grad():
            for r in range(reps):
                pair = [(name, solve), ("odezoo per-sample", base)]
                for label, fn in (pair if r % 2 == 0 else pair[::-1]):
                    rows[label]["times_s"].append(timed(lambda: fn(func, y0, t), 1))
    ours = statistics.median(rows["odezoo per-sample"]["times_s"])
    print(f"{batch} series x {count} irregular times, Tsit5 rtol {RTOL:g} atol {ATOL:g}, float32, "
          f"{torch.get_num_threads()} thread(s); time = CPU seconds of a forward solve, median of {reps}")
    print("| method | time (s) | time / odezoo per-sample | max error vs reference | f evaluations | "
          "saved for backward (MB) |")
    print("|---|---|---|---|---|---|")
    for name, row in rows.items():
        median = statistics.median(row["times_s"])
        row["median_s"], row["ratio"] = median, median / ours
        print(f"| {name} | {median:.3f} | {median / ours:.2f} | {row['error']:.1e} | {row['nfe']} | "
              f"{row['saved_MB']:.1f} |")
    if args.out:
        args.out.write_text(json.dumps({"batch": batch, "count": count, "rtol": RTOL, "atol": ATOL,
                                        "threads": torch.get_num_threads(), "rows": rows}, indent=1) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
