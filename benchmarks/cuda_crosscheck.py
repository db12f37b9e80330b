#!/usr/bin/env python
"""Quick exactness checks of odezoo's stepper on a device (CUDA by default), in float64.

The same cross-checks as tests/test_bridge.py, on the device: rk2_u at u=1/2 is
torchdiffeq's midpoint, rk4_uv at (1/3, 2/3) its rk4 (3/8 rule), rk4_u2 at u=1/3 the
classic RK4 — all to 1e-12 — plus per-sample parameters against solving each sample
alone, gradients against torchdiffeq's, and device results against the CPU's.

    python benchmarks/cuda_crosscheck.py [--device cuda|cpu]

Exits non-zero on the first failure.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
for index, path in enumerate((HERE.parent,)):
    sys.path.insert(index, str(path))

import torch  # noqa: E402
from torchdiffeq import odeint  # noqa: E402

import odezoo  # noqa: E402,F401  (registers the families)

TOL = 1e-12


class Field(torch.nn.Module):
    """A small time-dependent field, dy/dt = tanh(W [y, t]) + cos(3t)."""

    def __init__(self, dim=6):
        super().__init__()
        torch.manual_seed(0)
        self.lin = torch.nn.Linear(dim + 1, dim)

    def forward(self, t, y):
        tt = torch.ones_like(y[..., :1]) * t
        return torch.tanh(self.lin(torch.cat([y, tt], dim=-1))) + torch.cos(3 * t)


def classic_rk4(f, y0, t0, t1, h):
    y, n = y0, round((t1 - t0) / h)
    for i in range(n):
        s = torch.tensor(t0 + i * h, dtype=y0.dtype, device=y0.device)
        k1 = f(s, y)
        k2 = f(s + h / 2, y + h / 2 * k1)
        k3 = f(s + h / 2, y + h / 2 * k2)
        k4 = f(s + h, y + h * k3)
        y = y + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    return y


def check(name, error, tol=TOL):
    status = "ok " if error < tol else "FAIL"
    print(f"  {status} {name}: max |difference| = {error:.3g} (tolerance {tol:g})")
    if not error < tol:
        raise SystemExit(f"cross-check failed: {name}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("no CUDA device available", file=sys.stderr)
        return 2
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"cross-checks on {device} ({where}), float64, torch {torch.__version__}")
    dtype = torch.float64
    func = Field().to(device=device, dtype=dtype)
    y0 = torch.randn(5, 6, generator=torch.Generator().manual_seed(1), dtype=dtype).to(device)
    t = torch.tensor([0.0, 0.3, 0.75, 1.5], dtype=dtype, device=device)

    def solve(method, f=func, y=y0, tt=t, **options):
        return odeint(f, y, tt, method=method, options={"step_size": 0.05, **options})

    with torch.no_grad():
        check("rk2_u(u=1/2) == midpoint", float((solve("rk2_u", u=0.5) - solve("midpoint")).abs().max()))
        check("rk4_uv(1/3, 2/3) == rk4", float((solve("rk4_uv", u=1 / 3, v=2 / 3) - solve("rk4")).abs().max()))
        check("rk4_uv(1/3, 2/3) == rk4 with cubic interp and perturb", float((
            solve("rk4_uv", u=1 / 3, v=2 / 3, interp="cubic", perturb=True)
            - solve("rk4", interp="cubic", perturb=True)).abs().max()))
        ends = torch.tensor([0.0, 1.0], dtype=dtype, device=device)
        ours = solve("rk4_u2", tt=ends, u=1 / 3, step_size=0.1)[-1]
        check("rk4_u2(1/3) == classic RK4", float((ours - classic_rk4(func, y0, 0.0, 1.0, 0.1)).abs().max()))

        u = torch.tensor([0.3, 0.5, 0.8, 1.0, 0.65], dtype=dtype, device=device)
        batched = solve("rk2_u", u=u, step_size=0.125)
        alone = torch.cat([solve("rk2_u", y=y0[i:i + 1], u=float(u[i]), step_size=0.125)
                           for i in range(len(u))], dim=1)
        check("per-sample rk2_u == each sample alone", float((batched - alone).abs().max()))

        cpu = odeint(Field().to(dtype=dtype), y0.cpu(), t.cpu(), method="rk4_uv",
                     options={"u": 0.3, "v": 0.6, "step_size": 0.05})
        check(f"rk4_uv(0.3, 0.6) on {device} == on cpu",
              float((solve("rk4_uv", u=0.3, v=0.6).cpu() - cpu).abs().max()), tol=1e-10)

    grads = []
    for method, options in (("rk2_u", {"u": 0.5}), ("midpoint", {})):
        func.zero_grad()
        y = y0.clone().requires_grad_(True)
        solve(method, y=y, **options)[-1].pow(2).sum().backward()
        grads.append([y.grad] + [p.grad for p in func.parameters()])
    check("gradients of rk2_u(1/2) == midpoint's",
          max(float((a - b).abs().max()) for a, b in zip(*grads)))
    print("all cross-checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
