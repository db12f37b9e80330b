"""Analytic test problems (nonlinear and non-autonomous: a linear autonomous problem cannot
tell the members of a family apart, nor see most order-4 conditions)."""
import math

import torch
from torch import nn
from torchdiffeq import odeint


def riccati(t, y):
    """y' = -2 t y², y(0) = 1  ->  y = 1 / (1 + t²)."""
    return -2 * t * y * y


def riccati_exact(t):
    return 1 / (1 + t * t)


def forced(t, y):
    """A vector field with no closed form, for cross-checks: nonlinear in y, depends on t."""
    return torch.sin(3 * t) * y - 0.5 * y * y + torch.cos(t + y)


def sample_params(family, count, seed=0):
    """``count`` points drawn uniformly from the family's sampling support."""
    import numpy as np

    rng = np.random.default_rng(seed)
    points = []
    while len(points) < count:
        point = {p: float(rng.uniform(*family.support[p])) for p in family.params}
        if family.in_support(point):
            points.append(point)
    return points


def convergence_slope(method, params, steps=(32, 64, 128, 256), t_end=2.0):
    errors, sizes = [], []
    y0 = torch.tensor([1.0], dtype=torch.float64)
    t = torch.tensor([0.0, t_end], dtype=torch.float64)
    for n in steps:
        h = t_end / n
        y = odeint(riccati, y0, t, method=method, options={**params, "step_size": h})
        errors.append(abs(float(y[-1, 0]) - riccati_exact(t_end)))
        sizes.append(h)
    xs = [math.log(h) for h in sizes]
    ys = [math.log(e) for e in errors]
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys)) / sum((x - mean_x) ** 2 for x in xs)
    return slope, errors


class ConcatField(nn.Module):
    """ConcatConv-style: appends t as a feature, so per-sample t must broadcast."""

    def __init__(self, dim=3):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.w = nn.Parameter(torch.randn(dim + 1, dim, generator=g, dtype=torch.float64) * 0.5)

    def forward(self, t, y):
        tt = torch.ones_like(y[:, :1]) * t
        return torch.tanh(torch.cat([y, tt], dim=1) @ self.w)


def coupled_exact(t):
    """The solution of :func:`coupled`: (1 / (1 + t²), e^(−t/2) cos t)."""
    t = torch.as_tensor(t, dtype=torch.float64)
    return torch.stack([1 / (1 + t * t), torch.exp(-t / 2) * torch.cos(t)], dim=-1)


def _coupled_g(t, y1, y2):
    return torch.sin(t) * y1 * y2, y1 * y1 - torch.cos(t) * y2 * y2


def coupled(t, y):
    """A nonlinear, non-autonomous 2-d system with a known solution (:func:`coupled_exact`):
    f(t, y) = g(t, y) − g(t, y*(t)) + y*'(t) with a coupling g quadratic in y."""
    s1, s2 = 1 / (1 + t * t), torch.exp(-t / 2) * torch.cos(t)
    d1 = -2 * t / (1 + t * t) ** 2
    d2 = -0.5 * s2 - torch.exp(-t / 2) * torch.sin(t)
    g1, g2 = _coupled_g(t, y[..., 0], y[..., 1])
    h1, h2 = _coupled_g(t, s1, s2)
    return torch.stack([g1 - h1 + d1, g2 - h2 + d2], dim=-1)


# torchdiffeq's dopri5 (Dormand–Prince with Shampine's embedded row and dense output), typed.
DP_A = [[0.0] * 7,
        [1 / 5, 0, 0, 0, 0, 0, 0],
        [3 / 40, 9 / 40, 0, 0, 0, 0, 0],
        [44 / 45, -56 / 15, 32 / 9, 0, 0, 0, 0],
        [19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729, 0, 0, 0],
        [9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656, 0, 0],
        [35 / 384, 0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0]]
DP_B = [35 / 384, 0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0]
DP_BHAT = [1951 / 21600, 0, 22642 / 50085, 451 / 720, -12231 / 42400, 649 / 6300, 1 / 60]
DP_C = [0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1, 1]
DP_MID = [6025192743 / 30085553152 / 2, 0, 51252292925 / 65400821598 / 2, -2691868925 / 45128329728 / 2,
          187940372067 / 1594534317056 / 2, -1776094331 / 19743644256 / 2, 11237099 / 235043384 / 2]
