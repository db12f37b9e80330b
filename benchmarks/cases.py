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
