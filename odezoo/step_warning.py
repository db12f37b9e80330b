"""The warning for torchdiffeq's silent large-step trap (torchdiffeq issue #137).

A fixed-grid method given neither ``step_size`` nor ``grid_constructor`` steps only from
one output time to the next: ``odeint(f, y0, torch.tensor([0., 1.]), method="rk4_uv")``
takes a single step of size 1, with no error and no warning from torchdiffeq.  odezoo's
methods warn instead, once per call site under the default warning filters, naming the step
they actually take.
"""
from __future__ import annotations

import os
import sys
import warnings

import torch
import torchdiffeq

__all__ = ["OdezooStepWarning", "output_grid"]


class OdezooStepWarning(UserWarning):
    """An odezoo method was given neither ``step_size`` nor ``grid_constructor``, so it
    steps only between the output times ``t``; the message names the largest such step.

    Silence it by giving a grid (``options={"step_size": h}``, a ``grid_constructor``, or
    ``SolverSpec(..., n_steps=N)``), or if the output times are the grid you want, with
    ``warnings.filterwarnings("ignore", category=odezoo.OdezooStepWarning)``.
    """


#: Frames in these directories are skipped to find the user's line (the odeint call, or the
#: line that called ``SolverSpec.solve`` / an ``ODEBlock``).
_INTERNAL_DIRS = tuple(os.path.dirname(module.__file__) + os.sep for module in (torch, torchdiffeq)) + (
    os.path.dirname(os.path.abspath(__file__)) + os.sep,)


def _user_stacklevel() -> int:
    """``stacklevel`` for a ``warnings.warn`` in this function's caller that points at the first
    frame outside odezoo, torchdiffeq and torch (``odeint_adjoint`` and ``nn.Module`` calls put
    a varying number of their frames in between, so no fixed number fits)."""
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_code.co_filename.startswith(_INTERNAL_DIRS):
        frame, level = frame.f_back, level + 1
    return level


def output_grid(method: str, per_sample: bool = False):
    """torchdiffeq's default grid (the output times ``t`` themselves) as a ``grid_constructor``
    that warns with `OdezooStepWarning`, naming the largest step it takes (over every
    sample's times with ``per_sample``, where ``t`` has shape (T, batch))."""
    fix = ("pass a grid_constructor of n equal steps per sample (SolverSpec(n_steps=...))" if per_sample else
           "pass options={'step_size': h} or a grid_constructor (SolverSpec: n_steps or step_size)")

    def grid(func, y0, t):
        gaps = (t[1:] - t[:-1]).detach().abs()
        largest = float(gaps.max()) if gaps.numel() else 0.0
        warnings.warn(
            f"method {method!r} was given neither step_size nor grid_constructor, so it steps only "
            f"between the output times t (largest step {largest:.6g}); {fix}",
            OdezooStepWarning, stacklevel=_user_stacklevel())
        return t
    return grid
