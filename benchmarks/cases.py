"""ODE functions timed by ``benchmarks/run.py``.

* :class:`MLPFunc` — a small MLP on a (batch, 64) state; the tensors are tiny, so a solve
  is dominated by per-step Python and dispatch overhead.
* ``odezoo.experiments.models.MnistODEFunc`` — the MNIST ODE function of the paper's appendix A.1, the
  one the recipes train, on a (batch, 64, 6, 6) state: GroupNorm, ReLU, ConcatConv(65→64, 3×3),
  GroupNorm, ReLU, ConcatConv(65→64, 3×3), GroupNorm, where ConcatConv appends a channel of t.

Both accept a scalar ``t`` or a per-sample ``t`` broadcastable against ``x[:, :1]``
(shape ``(batch, 1)`` resp. ``(batch, 1, 1, 1)``), which is what odezoo passes when a
family's nodes depend on per-sample parameters.
"""
from __future__ import annotations

import torch
from torch import nn

from odezoo.experiments.models import MnistODEFunc

__all__ = ["ConcatLinear", "MLPFunc", "make_case", "CASES"]


class ConcatLinear(nn.Module):
    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.linear = nn.Linear(dim_in + 1, dim_out)

    def forward(self, t, x):
        tt = torch.ones_like(x[:, :1]) * t
        return self.linear(torch.cat([tt, x], dim=1))


class MLPFunc(nn.Module):
    """A small time-dependent MLP: ConcatLinear(65→64), tanh, ConcatLinear(65→64)."""

    def __init__(self, dim: int = 64, hidden: int = 64):
        super().__init__()
        self.fc1 = ConcatLinear(dim, hidden)
        self.fc2 = ConcatLinear(hidden, dim)

    def forward(self, t, x):
        return self.fc2(t, torch.tanh(self.fc1(t, x)))


#: name -> (constructor, full-size state shape, quick state shape, description)
CASES = {
    "mlp": (MLPFunc, (256, 64), (8, 16), "small MLP, state 256×64 (overhead-bound)"),
    "conv": (MnistODEFunc, (128, 64, 6, 6), (4, 8, 6, 6), "MNIST ODE function, state 128×64×6×6"),
}


def make_case(name: str, device, dtype=torch.float32, quick: bool = False, seed: int = 0):
    """``(func, y0)`` for case ``name``: a freshly initialized function and a random state."""
    build, shape, quick_shape, _ = CASES[name]
    shape = quick_shape if quick else shape
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    func = build(shape[1]) if name == "conv" else build(shape[1], shape[1])
    func = func.to(device=device, dtype=dtype)
    y0 = torch.randn(shape, generator=generator, dtype=dtype).to(device)
    return func, y0


def hand_written(method: str, t: torch.Tensor, step_size: float):
    """``solve(func, y0)``: the tableau of ``method`` written out by hand as a plain loop over a
    uniform grid on ``[t[0], t[-1]]``, with the same fused tensor operations odezoo's stepper
    makes (one ``add(alpha=)`` per nonzero coefficient) and the stage times prepared once —
    what a careful user would write without any solver library, so ``odezoo / hand-written``
    is the cost of the library itself.  Returns ``stack([y0, y(t[-1])])``.

    ``"midpoint"``: rk2_u at u = 1/2; ``"rk4_38"``: rk4_uv at (1/3, 2/3), Kutta's 3/8 rule.
    """
    t0, t1 = float(t[0]), float(t[-1])
    n = round((t1 - t0) / step_size)
    h = (t1 - t0) / n
    grid = torch.linspace(t0, t1, n + 1, dtype=t.dtype, device=t.device)
    starts, ends = grid[:-1], grid[1:]

    if method == "midpoint":
        mids = (starts + h / 2).unbind(0)
        starts = starts.unbind(0)

        def solve(func, y0):
            y = y0
            for i in range(n):
                k1 = func(starts[i], y)
                k2 = func(mids[i], torch.add(y, k1, alpha=h / 2))
                y = torch.add(y, k2, alpha=h)
            return torch.stack([y0, y])
        return solve

    if method == "rk4_38":
        thirds, two_thirds = (starts + h / 3).unbind(0), (starts + 2 * h / 3).unbind(0)
        starts, ends = starts.unbind(0), ends.unbind(0)

        def solve(func, y0):
            y = y0
            for i in range(n):
                k1 = func(starts[i], y)
                k2 = func(thirds[i], torch.add(y, k1, alpha=h / 3))
                k3 = func(two_thirds[i], torch.add(y, k1, alpha=-h / 3).add_(k2, alpha=h))
                k4 = func(ends[i], torch.add(y, k1, alpha=h).add_(k2, alpha=-h).add_(k3, alpha=h))
                y = torch.add(y, k1, alpha=h / 8).add_(k2, alpha=3 * h / 8).add_(k3, alpha=3 * h / 8).add_(
                    k4, alpha=h / 8)
            return torch.stack([y0, y])
        return solve

    raise ValueError(f"no hand-written solver for {method!r}; there are 'midpoint' and 'rk4_38'")
