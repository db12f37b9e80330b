"""``odezoo.odeint_adjoint``: torchdiffeq's ``odeint_adjoint``, and the adjoint method for per-sample times.

With a shared 1-D ``t`` this is ``torchdiffeq.odeint_adjoint`` itself (same arguments, same
results).  With per-sample times (``t`` of shape ``(T, batch)``, see
[`odezoo.inputs.sample_times`][odezoo.inputs.sample_times]) torchdiffeq's adjoint cannot run: it integrates the
augmented system backwards over one clock shared by the whole batch.  Here

* the **forward pass** is the per-sample solve of [`odezoo.odeint`][odezoo.odeint] itself, without
  a graph: the same values, bit for bit, as ``odezoo.odeint`` with the same arguments (each
  sample its own grid, or its own error control);
* the **backward pass** is torchdiffeq's adjoint algorithm (``OdeintAdjointMethod.backward``:
  from the last output time to the first, the state reset to the forward value at every output
  time, the gradient at each output time added, dL/dt from ``f·∂L/∂y`` and the time adjoint)
  with one change: between output times ``j`` and ``j+1`` every sample is put on one shared
  clock ``τ ∈ [0, 1]``, ``t_b(τ) = t[j, b] + τ·(t[j+1, b] − t[j, b])``, whose dynamics
  ``Δ_b·f(t_b(τ), y_b)`` share a clock, so the augmented state ``(t̄, y, ȳ, θ̄)`` is integrated
  by ``odeint`` with one time and the parameters' adjoint ``θ̄`` sums over the samples
  automatically (one vector-Jacobian product per stage, as torchdiffeq's).

For a fixed-grid ``adjoint_method`` a step of size 1 in τ is a step of size ``Δ_b`` in ``t_b``
(stages at the same times, increments equal up to round-off), so the gradients equal a loop of
per-sample ``torchdiffeq.odeint_adjoint`` solves to round-off.  For an adaptive one the batch
shares each τ step, accepted when every sample's error is within tolerance (see
`adjoint_norm`), so gradients agree with the per-sample loop to within the tolerance, not
step for step.
"""
from __future__ import annotations

import warnings

import torch
import torchdiffeq
from torch import nn

from . import _torchdiffeq_bridge as bridge
from . import frontend, inputs

__all__ = ["odeint_adjoint", "adjoint_norm"]


def odeint_adjoint(func, y0, t, *, rtol=1e-7, atol=1e-9, method=None, options=None, event_fn=None,
                   adjoint_rtol=None, adjoint_atol=None, adjoint_method=None, adjoint_options=None,
                   adjoint_params=None):
    """``torchdiffeq.odeint_adjoint`` (same signature); with ``t`` of shape ``(T, batch)``, the adjoint
    method for per-sample times (module docstring; docs/per_sample_times.md).

    Per-sample times: the forward values are ``odezoo.odeint``'s; gradients flow to ``y0``, to
    ``adjoint_params`` (default: ``func``'s parameters that require a gradient; ``func`` must then
    be an ``nn.Module``, or pass ``adjoint_params=()``) and to ``t``.  ``adjoint_rtol``,
    ``adjoint_atol``, ``adjoint_method`` default to ``rtol``, ``atol``, ``method``; ``adjoint_options``
    to ``options`` (without ``stats``; a fixed grid of one step per interval stays one step per
    interval, ``n_steps`` stays ``n_steps`` equal steps per interval).  ``adjoint_options`` apply on
    each interval's clock τ ∈ [0, 1]: ``first_step``, ``min_step``, ``max_step`` there are
    fractions of each sample's interval, ``norm="seminorm"`` leaves the parameters' adjoint out of
    the error norm, a callable norm receives ``(t̄ (batch,), y, ȳ, *θ̄)``.
    """
    if not (isinstance(t, torch.Tensor) and t.ndim == 2):
        return torchdiffeq.odeint_adjoint(func, y0, t, rtol=rtol, atol=atol, method=method, options=options,
                                          event_fn=event_fn, adjoint_rtol=adjoint_rtol, adjoint_atol=adjoint_atol,
                                          adjoint_method=adjoint_method, adjoint_options=adjoint_options,
                                          adjoint_params=adjoint_params)
    where = f"odeint_adjoint(method={method!r})"
    solver = bridge.installed(method) if isinstance(method, str) else None
    kind = frontend._kind(solver)
    if not kind:
        raise ValueError(f"{where}: per-sample times (t of shape (T, batch)) need one of odezoo's methods; "
                         f"{method!r} is not one of odezoo's families. Use a family such as 'rk4_uv' or 'tsit5'")
    if event_fn is not None or not isinstance(y0, torch.Tensor):
        raise ValueError(f"{where}: per-sample times need one tensor state y0 of shape (batch, ...) and no event_fn")
    inputs.sample_times(where, t, y0)
    if y0.is_complex():
        raise ValueError(f"{where}: with per-sample times the adjoint method needs a real state (y0 has dtype "
                         f"{y0.dtype}); use odeint (adjoint=False), or split the state into real and imaginary parts")
    options = dict(options or {})
    family = solver.family
    for name in family.params:
        value = options.get(name)
        if isinstance(value, torch.Tensor) and (value.ndim > 0 or value.requires_grad):
            raise ValueError(f"{where}: parameter {name} is a tensor of shape {tuple(value.shape)}"
                             f"{' that requires a gradient' if value.requires_grad else ''}; the adjoint method "
                             f"takes one number per parameter (its backward pass integrates a flattened augmented "
                             f"state, and it does not differentiate the solver's parameters). Use odeint "
                             f"(adjoint=False) for per-sample or differentiable parameters")
    if adjoint_params is None:
        if not isinstance(func, nn.Module):
            raise ValueError(f"{where}: func must be an nn.Module to find the adjoint parameters; alternatively "
                             f"pass them explicitly as adjoint_params (adjoint_params=() if there are none)")
        adjoint_params = tuple(bridge.find_parameters(func))
    given = tuple(adjoint_params)
    adjoint_params = tuple(p for p in given if p.requires_grad)
    if len(adjoint_params) != len(given) and callable((adjoint_options or {}).get("norm")):
        warnings.warn("An adjoint parameter was passed without requiring gradient. For efficiency this will be "
                      "excluded from the adjoint pass, and will not appear as a tensor in the adjoint norm.")
    if adjoint_method is None:
        adjoint_method = method
    if not (isinstance(adjoint_method, str) and bridge.installed(adjoint_method) is not None):
        raise ValueError(f"{where}: unknown adjoint_method {adjoint_method!r}; choose one of "
                         f"{sorted(bridge.SOLVERS)}")
    if adjoint_method != method and options and adjoint_options is None:
        raise ValueError(f"{where}: adjoint_method={adjoint_method!r} is not method={method!r}, so adjoint_options "
                         f"cannot be inferred from options; pass adjoint_options as well")
    adjoint_options = _adjoint_options(where, kind, options, adjoint_options, adjoint_method)
    settings = dict(func=func, rtol=rtol, atol=atol, method=method, options=options, solver=solver,
                    adjoint_rtol=rtol if adjoint_rtol is None else adjoint_rtol,
                    adjoint_atol=atol if adjoint_atol is None else adjoint_atol,
                    adjoint_method=adjoint_method, adjoint_options=adjoint_options,
                    t_requires_grad=t.requires_grad)
    return _PerSampleAdjoint.apply(settings, y0, t, *adjoint_params)


def _adjoint_options(where, kind, options, adjoint_options, adjoint_method):
    """The options of the backward pass, on each interval's clock τ ∈ [0, 1] (see `odeint_adjoint`)."""
    from .spec import uniform_grid  # spec imports this module

    if adjoint_options is None:
        adjoint = {k: v for k, v in options.items() if k not in ("norm", "stats")}
        carried = sorted(set(adjoint) & {"first_step", "min_step", "max_step"})
        if kind == "adaptive" and carried:
            raise ValueError(f"{where}: {carried} are in units of t, but with per-sample times the adjoint pass "
                             f"integrates every interval on its own clock τ in [0, 1]; pass adjoint_options as "
                             f"well, with these as fractions of each interval (or without them)")
    else:
        adjoint = dict(adjoint_options)
        refused = sorted(set(adjoint) & {"stats", "step_size", "step_t", "jump_t", "perturb"})
        if refused:
            raise ValueError(f"{where}: adjoint_options {refused} are not supported with per-sample times (the "
                             f"adjoint pass integrates every interval on its own clock τ in [0, 1] and reports no "
                             f"counts); for a fixed grid give grid_constructor=odezoo.spec.uniform_grid(n) "
                             f"(n equal steps per interval)")
        grid = adjoint.get("grid_constructor")
        if grid is not None and getattr(grid, "odezoo_grid_key", (None,))[0] != "n":
            raise ValueError(f"{where}: adjoint_options' grid_constructor must be odezoo.spec.uniform_grid(n) (n "
                             f"equal steps per interval of each sample); a grid_constructor of your own cannot see "
                             f"each sample's times")
    if _fixed(adjoint_method):  # the forward steps between output times (or n per interval): so does the backward
        adjoint.setdefault("grid_constructor", uniform_grid(1))
    norm = adjoint.get("norm")
    if norm is None or norm == "seminorm":
        adjoint["norm"] = adjoint_norm(with_parameters=norm is None)
    elif not callable(norm):
        raise ValueError(f"{where}: adjoint_options['norm'] must be 'seminorm' or a callable, got {norm!r}")
    return adjoint


def _fixed(method) -> bool:
    solver = bridge.installed(method) if isinstance(method, str) else None
    return isinstance(solver, type) and issubclass(solver, bridge.FixedGridODESolver)


def adjoint_norm(with_parameters: bool = True):
    """The backward pass's error norm for per-sample times: torchdiffeq's default adjoint norm
    (``max(|t̄|, rms(y), rms(ȳ), rms of each θ̄)``) taken *per sample* for ``t̄``, ``y`` and ``ȳ``,
    and the largest over the samples — a shared τ step is accepted only when every sample's own
    error is within tolerance.  The parameters' adjoint (a sum over the samples) is left out for
    ``with_parameters=False`` (``adjoint_options={"norm": "seminorm"}``)."""
    def norm(state):
        t_adj, y, adj_y, *adj_params = state
        batch = y.shape[0]
        per_sample = torch.maximum(_rms(y.reshape(batch, -1)), _rms(adj_y.reshape(batch, -1)))
        value = torch.maximum(per_sample, t_adj.abs().to(per_sample.dtype)).max()
        if with_parameters:
            for p in adj_params:
                value = torch.maximum(value, p.abs().pow(2).mean().sqrt().to(value.dtype))
        return value
    return norm


def _rms(x):
    return x.abs().pow(2).mean(1).sqrt()


class _PerSampleAdjoint(torch.autograd.Function):
    """Forward: ``odezoo.odeint``'s per-sample solve.  Backward: torchdiffeq's adjoint algorithm, each
    interval on the shared clock τ (module docstring)."""

    @staticmethod
    def forward(ctx, settings, y0, t, *adjoint_params):
        ctx.settings = settings
        with torch.no_grad():
            out = frontend._per_sample_times(settings["solver"], settings["func"], y0, t, settings["method"],
                                             settings["options"], None, settings["rtol"], settings["atol"])
        ctx.save_for_backward(t, out, *adjoint_params)
        return out

    @staticmethod
    def backward(ctx, grad_y):
        settings = ctx.settings
        func = settings["func"]
        t, y, *params = ctx.saved_tensors
        params = tuple(params)
        t_grad = settings["t_requires_grad"]
        count, batch = t.shape
        shape = (batch,) + (1,) * (y.ndim - 2)
        real = y.dtype
        with torch.no_grad():
            t_adj = torch.zeros(batch, dtype=real, device=y.device)
            adj_y = grad_y[-1]
            adj_params = [torch.zeros_like(p) for p in params]
            time_vjps = torch.zeros_like(t) if t_grad else None
            tau = torch.tensor([1.0, 0.0], dtype=t.dtype if t.is_floating_point() else real, device=t.device)
            for i in range(count - 1, 0, -1):
                if t_grad:  # the effect of moving output time i (torchdiffeq's dLd_cur_t, per sample)
                    moved = (func(t[i].to(real).reshape(shape), y[i]) * grad_y[i]).reshape(batch, -1).sum(1)
                    t_adj = t_adj - moved
                    time_vjps[i] = moved.to(t.dtype)
                dynamics = _augmented(func, t[i - 1], t[i] - t[i - 1], shape, real, params, t_grad)
                state = torchdiffeq.odeint(dynamics, (t_adj, y[i], adj_y, *adj_params), tau,
                                           rtol=settings["adjoint_rtol"], atol=settings["adjoint_atol"],
                                           method=settings["adjoint_method"], options=settings["adjoint_options"])
                t_adj, _, adj_y, *adj_params = (part[1] for part in state)
                adj_y = adj_y + grad_y[i - 1]
            if t_grad:
                time_vjps[0] = t_adj.to(t.dtype)
        return (None, adj_y, time_vjps, *adj_params)


def _augmented(func, start, span, shape, real, params, t_grad):
    """The augmented dynamics of one interval on the clock τ: with ``Δ`` each sample's interval and
    ``t_b(τ) = start_b + τ·Δ_b``, ``d/dτ (t̄, y, ȳ, θ̄) = Δ·(−ȳ·∂f/∂t, f, −ȳ·∂f/∂y, −ȳ·∂f/∂θ)``, one
    vector-Jacobian product with ``−Δ·ȳ`` (summed over the samples for θ̄)."""
    batch = shape[0]
    scale = span.to(real).reshape(shape)

    def dynamics(tau, state):
        y, adj_y = state[1], state[2]
        with torch.enable_grad():
            time = (start + tau * span).to(real).reshape(shape).detach().requires_grad_(t_grad)
            y = y.detach().requires_grad_(True)
            f = func(time, y)
            wrt = ((time,) if t_grad else ()) + (y,) + params
            vjps = torch.autograd.grad(f, wrt, -adj_y * scale, allow_unused=True)
        vjp_t = vjps[0].reshape(batch) if t_grad and vjps[0] is not None else torch.zeros(batch, dtype=real,
                                                                                          device=y.device)
        vjp_y, *vjp_params = vjps[1:] if t_grad else vjps
        vjp_y = torch.zeros_like(y) if vjp_y is None else vjp_y
        vjp_params = [torch.zeros_like(p) if v is None else v for p, v in zip(params, vjp_params)]
        return (vjp_t, f.detach() * scale, vjp_y, *vjp_params)
    return dynamics
