"""Irregularly sampled series: a latent-ODE-style model trained with per-sample times, against the
merged-grid workaround.  Synthetic data, generated here (no download); CPU minutes.

    python recipes/latent_ode.py                       # both ways, the comparison table
    python recipes/latent_ode.py --method tsit5 --epochs 30
    python recipes/latent_ode.py --method tsit5 --adjoint   # gradients by the adjoint method
    python recipes/latent_ode.py --dry-run             # seconds: what the tests run

Each series is a damped oscillation y(t) = e^{-λt}(sin(ωt + φ), cos(ωt + φ)) with its own λ, ω, φ,
observed at its own 8 irregular times in [0, 4] (the first at t = 0).  The model encodes the first
observation into a latent state z0, integrates dz/dt = g(z, t) and decodes every latent state back
to an observation; the loss is the mean squared error at the observed times.  Two ways to solve a
batch, the same model and data:

* **per-sample** — ``odezoo.odeint(g, z0, t)`` with ``t`` of shape (T, batch): each series over its
  own times in one batched solve;
* **merged grid** — one solve over the sorted union of the batch's times, then each series' own
  times picked out (what torchdiffeq users write today); a fixed-grid method then steps through
  every time of every series.

With ``--adjoint`` both solve with ``odezoo.odeint_adjoint`` (gradients by the adjoint method,
per-sample times included: docs/per_sample_times.md).  The table gives the test MSE (on held-out
series), the training time per epoch and the bytes autograd keeps from the forward pass of one training
step for its backward.
"""
from __future__ import annotations

import argparse
import math
import time

import torch
from torch import nn

import odezoo


def make_series(count: int, times: int = 8, seed: int = 0):
    """``(t, y)``: t of shape (times, count) — each column sorted, from 0 — and y (times, count, 2)."""
    generator = torch.Generator().manual_seed(seed)
    decay = 0.1 + 0.4 * torch.rand(count, generator=generator)
    frequency = 1.0 + 2.0 * torch.rand(count, generator=generator)
    phase = 2 * math.pi * torch.rand(count, generator=generator)
    inner = torch.sort(torch.rand(times - 1, count, generator=generator) * 4.0, dim=0).values
    t = torch.cat([torch.zeros(1, count), inner])
    angle = frequency * t + phase
    y = torch.exp(-decay * t)[..., None] * torch.stack([torch.sin(angle), torch.cos(angle)], dim=-1)
    return t, y


class Dynamics(nn.Module):
    """dz/dt = g(z, t): a small MLP fed the latent state and the time (per sample: t is (batch, 1))."""

    def __init__(self, latent: int = 8, hidden: int = 32):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(latent + 1, hidden), nn.Tanh(), nn.Linear(hidden, latent))

    def forward(self, t, z):
        t = t.reshape(-1, 1).expand(z.shape[0], 1) if t.ndim else t.expand(z.shape[0], 1)
        return self.net(torch.cat([z, t], dim=1))


class LatentODE(nn.Module):
    def __init__(self, latent: int = 8):
        super().__init__()
        self.encode = nn.Linear(2, latent)
        self.dynamics = Dynamics(latent)
        self.decode = nn.Linear(latent, 2)

    def forward(self, t, y0, solve):
        return self.decode(solve(self.dynamics, self.encode(y0), t))


def per_sample(method, options, integrate=odezoo.odeint):
    def solve(func, z0, t):
        return integrate(func, z0, t, method=method, options=options, rtol=1e-5, atol=1e-7)
    return solve


def merged_grid(method, options, integrate=odezoo.odeint):
    def solve(func, z0, t):
        union, where = torch.unique(t, sorted=True, return_inverse=True)
        states = integrate(func, z0, union, method=method, options=options, rtol=1e-5, atol=1e-7)
        return states[where, torch.arange(t.shape[1]).expand_as(where)]
    return solve


def saved_bytes(run) -> int:
    """Bytes autograd keeps for backward (each storage once), as benchmarks/run.py counts them."""
    seen = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        run()
    return sum(seen.values())


def train(name, solve, data, args):
    t_train, y_train, t_test, y_test = data
    torch.manual_seed(args.seed)
    model = LatentODE()
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    count = t_train.shape[1]
    seconds = []
    for epoch in range(args.epochs):
        order = torch.randperm(count, generator=torch.Generator().manual_seed(args.seed + epoch))
        start = time.process_time()
        for first in range(0, count, args.batch_size):
            index = order[first:first + args.batch_size]
            t, y = t_train[:, index], y_train[:, index]
            loss = (model(t, y[0], solve) - y).square().mean()
            if not torch.isfinite(loss):
                raise SystemExit(f"{name}: the loss became {float(loss)} in epoch {epoch + 1}; lower --lr")
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        seconds.append(time.process_time() - start)
    with torch.no_grad():
        test = float((model(t_test, y_test[0], solve) - y_test).square().mean())
    batch = slice(0, args.batch_size)
    losses = []  # the forward pass only: what autograd keeps from it until backward (an adjoint's backward
    # pass builds and frees small graphs of its own, one function evaluation at a time, not counted here)
    memory = saved_bytes(lambda: losses.append((model(t_train[:, batch], y_train[0, batch], solve)
                                                - y_train[:, batch]).square().mean()))
    losses[0].backward()
    return {"test_mse": test, "seconds_per_epoch": sum(seconds) / len(seconds), "saved_MB": memory / 2 ** 20}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--method", default="rk4_uv", help="an odezoo family: fixed-grid (rk4_uv, ...) or an "
                        "embedded pair (tsit5, ...) (default rk4_uv)")
    parser.add_argument("--n-steps", type=int, default=None, help="fixed grid: n equal steps per solve (default: "
                        "one step per interval between output times)")
    parser.add_argument("--epochs", type=int, default=20, help="training epochs (default 20)")
    parser.add_argument("--series", type=int, default=512, help="training series (default 512; 256 more for test)")
    parser.add_argument("--batch-size", type=int, default=64, help="series per batch (default 64)")
    parser.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate (default 3e-3)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data and the initialization (default 0)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--adjoint", action="store_true", help="gradients by the adjoint method "
                        "(odezoo.odeint_adjoint) instead of backpropagation through the solve")
    parser.add_argument("--dry-run", action="store_true", help="64 series, 2 epochs: a smoke test")
    args = parser.parse_args(argv)
    if args.dry_run:
        args.series, args.epochs, args.batch_size = 64, 2, 32
    torch.set_num_threads(args.threads)
    family = odezoo.get_family(args.method)
    options = {} if family.adaptive or args.n_steps is None else {
        "grid_constructor": odezoo.spec.uniform_grid(args.n_steps)}
    t_train, y_train = make_series(args.series, seed=args.seed)
    t_test, y_test = make_series(args.series // 2, seed=args.seed + 1)
    data = (t_train, y_train, t_test, y_test)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", odezoo.OdezooStepWarning)  # the output grid is the point here
        integrate = odezoo.odeint_adjoint if args.adjoint else odezoo.odeint
        rows = {name: train(name, make(args.method, options, integrate), data, args)
                for name, make in (("per-sample times", per_sample), ("merged grid", merged_grid))}
    grid = ("adaptive" if family.adaptive else f"{args.n_steps} steps per solve" if args.n_steps
            else "one step per interval between output times")
    print(f"{args.method} ({grid}{', adjoint' if args.adjoint else ''}), {args.series} training / {args.series // 2} test series of 8 irregular "
          f"times, {args.epochs} epochs, batch {args.batch_size}, one seed ({args.seed}), "
          f"{torch.get_num_threads()} thread(s)")
    print("| solve | test MSE | CPU s per epoch | saved for backward, one batch (MB) |")
    print("|---|---|---|---|")
    for name, row in rows.items():
        print(f"| {name} | {row['test_mse']:.4f} | {row['seconds_per_epoch']:.2f} | {row['saved_MB']:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
