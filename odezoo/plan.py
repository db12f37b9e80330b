"""Step plans: a tableau's validated nonzero coefficients, ready for stepping.

`make_plan` turns a family and its parameters into a `StepPlan` for one state:
Python floats when the parameters are plain numbers (cached per parameter values by
`float_plan`), tensors when a parameter needs a gradient or differs per sample.  Every
coefficient is computed in float64, checked (singular sets, tableau checks, overflow in the
state's dtype) and only then cast.
"""
from __future__ import annotations

import functools
import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import torch

from . import inputs
from .family import SolverFamily

__all__ = ["StepPlan", "float_plan", "make_plan", "cast_limit", "coefficient_limit", "check_coefficient_size",
           "PRECISION_LOSS_LIMIT"]

Coef = Any  # float, or a tensor (0-dim or broadcastable per sample)


@dataclass(frozen=True)
class StepPlan:
    """Non-zero coefficients of one tableau, ready for stepping.

    rows[i] lists (j, a_ij) for stage i ≥ 1; weights lists (i, b_i); nodes[i] is c_i.
    Entries are floats or tensors.  ``batch`` is the per-sample size, or None.
    """

    rows: tuple[tuple[tuple[int, Coef], ...], ...]
    weights: tuple[tuple[int, Coef], ...]
    nodes: tuple[Coef, ...]
    batch: int | None = None
    largest: float = 0.0  # max |coefficient| in float64, for the check against the state's dtype

    @property
    def stages(self) -> int:
        return len(self.nodes)


def _nonzero(entries):
    return tuple((j, a) for j, a in enumerate(entries) if not (isinstance(a, float) and a == 0.0))


@functools.lru_cache(maxsize=4096)
def float_plan(family: SolverFamily, key: tuple[float, ...]) -> StepPlan:
    """The validated plan of ``family`` at the parameter values ``key`` (in ``family.params``
    order).  Cached: a solver whose parameters repeat (fixed, switching, evaluation) builds
    it once; a smoothed solver builds one per draw, in plain Python, a few microseconds."""
    tableau = family.tableau(**dict(zip(family.params, key)))
    A, b, c = tableau.A.tolist(), tableau.b.tolist(), tableau.c.tolist()
    largest = max(abs(x) for x in (*(x for row in A for x in row), *b, *c))
    return StepPlan(rows=tuple(_nonzero(A[i][:i]) for i in range(1, len(c))),
                    weights=_nonzero(b), nodes=tuple(c), largest=largest)


@functools.lru_cache(maxsize=None)
def cast_limit(dtype: torch.dtype) -> float:
    """Largest magnitude a float64 may have and stay finite when cast to ``dtype`` (the
    dtype's largest finite value: a little more may round down to it, but torch casts some
    dtypes through float32, rounding twice, so only this much is certain)."""
    if dtype == torch.float64:
        return math.inf
    return float(torch.finfo(dtype).max)


#: The largest share of a step's increment that rounding in the stage sums may put at risk:
#: a coefficient of magnitude ``m`` in a dtype with machine epsilon ``eps`` rounds each term
#: ``m·h·k`` by up to ``m·eps`` times the increment ``h·k`` (their sum is that increment, so a
#: large ``m`` means cancellation); above this share a solve gives silently wrong numbers.
PRECISION_LOSS_LIMIT = 0.05


@functools.lru_cache(maxsize=None)
def coefficient_limit(dtype: torch.dtype) -> float:
    """The largest coefficient magnitude a tableau may have for a state of real dtype ``dtype``:
    below `cast_limit` (finite after the cast) and below ``PRECISION_LOSS_LIMIT / eps``
    (stage sums keep their digits) — about 51 in float16, 6.4 in bfloat16, 4.2e5 in float32
    and 2.3e14 in float64."""
    return min(cast_limit(dtype), PRECISION_LOSS_LIMIT / float(torch.finfo(dtype).eps))


def check_coefficient_size(method: str, largest: float, dtype: torch.dtype, params) -> None:
    """ValueError when a coefficient (largest magnitude ``largest``, computed in float64) could
    become inf in the coefficient dtype ``dtype``, or is so large that the stage sums would lose
    their digits there (`coefficient_limit`)."""
    if largest <= coefficient_limit(dtype):
        return
    shown = ", ".join(f"{p}={v:.10g}" if isinstance(v, float) else f"{p}=<tensor>" for p, v in params.items())
    if largest > cast_limit(dtype):
        why = f"which overflows the state's dtype ({dtype}, largest finite {torch.finfo(dtype).max:.4g})"
    else:
        eps = float(torch.finfo(dtype).eps)
        why = (f"too large for the state's dtype ({dtype}, machine epsilon {eps:.2g}): the stage sums "
               f"cancel terms up to {largest:.4g} times the step's increment, so rounding could change "
               f"each step by {largest * eps:.2g} times its increment (the limit is "
               f"{PRECISION_LOSS_LIMIT:.0%}) and the answer would be silently wrong")
    raise ValueError(
        f"method {method!r}: at {shown} its tableau has a coefficient of magnitude "
        f"{largest:.4g}, {why}. Solve in a wider dtype (e.g. y0.float() or y0.double()) or move "
        f"the parameters away from the family's singular sets.")


def make_plan(family: SolverFamily, params: dict[str, Any], y0: torch.Tensor) -> StepPlan:
    """Validate ``params`` for ``family`` and precompute the coefficients for ``y0``.

    Guarantees: every coefficient is computed in float64 and passes the same checks for
    every kind of parameter — the singular sets and the tableau checks of
    [`odezoo.tableau.validate`][odezoo.tableau.validate] (for per-sample tensors, at every sample); it is then
    cast to the real dtype of ``y0`` and refused with a ``ValueError`` if it would become
    inf there or is too large for that dtype's precision (`coefficient_limit`: the stage
    sums would cancel away the step's digits).  Integer and bool states are refused with a
    ``ValueError``.
    """
    where = f"method {family.name!r}"
    resolved = family.resolve(params)
    tensors = {}
    for name, value in resolved.items():
        if type(value) is float:  # the common case; a non-finite float is refused by the tableau's check
            continue
        value = resolved[name] = inputs.parameter(name, value)
        if isinstance(value, torch.Tensor):
            if value.ndim == 0 and not value.requires_grad:
                resolved[name] = inputs.real_number(f"parameter {name}", value, tensor=True)
            else:
                tensors[name] = value
    batch = inputs.per_sample_batch(tensors, where) if tensors else None
    inputs.state(where, y0, batch)
    dtype = y0.dtype.to_real()

    if not tensors:
        plan = float_plan(family, tuple(resolved[p] for p in family.params))
        check_coefficient_size(family.name, plan.largest, dtype, resolved)
        return plan
    if any(value.requires_grad for value in tensors.values()):  # a plan in an autograd graph: never kept
        return _tensor_plan(family, resolved, tensors, batch, y0, dtype)
    # Per-sample values without a gradient: the checked plan is kept while the very same tensors
    # (held here, so their identity cannot be reused) are unmodified — their version counters are
    # checked on every reuse, as for prepared grids.  New values are always checked in full.
    key = (family, tuple((name, id(value)) for name, value in tensors.items()),
           tuple((name, value) for name, value in resolved.items() if name not in tensors),
           dtype, y0.device, y0.ndim)
    kept = _PLANS.get(key)
    if kept is not None and all(value._version == version for value, version in kept[0]):
        _PLANS.move_to_end(key)
        return kept[1]
    plan = _tensor_plan(family, resolved, tensors, batch, y0, dtype)
    _PLANS[key] = (tuple((value, value._version) for value in tensors.values()), plan)
    if len(_PLANS) > PLAN_CACHE_SIZE:
        _PLANS.popitem(last=False)
    return plan


#: per-sample plans kept by the identity and version of their parameter tensors; least recently used first
_PLANS: "OrderedDict[tuple, tuple]" = OrderedDict()
PLAN_CACHE_SIZE = 8


def _tensor_plan(family: SolverFamily, resolved: dict, tensors: dict, batch: int | None, y0: torch.Tensor,
                 dtype: torch.dtype) -> StepPlan:
    """The plan for tensor parameters (per-sample, differentiable or both), checked in float64."""

    # One validation path: the values on the host in float64, every sample checked at once.
    host = {name: (value.detach().to("cpu", torch.float64).numpy() if name in tensors else float(value))
            for name, value in resolved.items()}
    checked = family.checked_batch(host, batch or 1)
    largest = checked.largest
    check_coefficient_size(family.name, largest, dtype, resolved)

    broadcast = (batch,) + (1,) * (y0.ndim - 1) if batch is not None else ()
    if any(value.requires_grad for value in tensors.values()):
        # Differentiable parameters: the same formula on float64 tensors, for autograd.
        for name, value in tensors.items():
            value = value.to(dtype=torch.float64, device=y0.device)
            resolved[name] = value.reshape(broadcast) if value.ndim == 1 else value
        try:
            A, b, c = family.evaluate(resolved)[:3]
        except ValueError as error:
            raise ValueError(f"{family.name}: with tensor parameters that need a gradient, {error}. "
                             f"Formulas must work on tensors too: + - * / with Python numbers.") from None
        entries = [x.to(dtype) if isinstance(x, torch.Tensor) else float(x)
                   for x in (*(x for row in A for x in row), *b, *c)]
    else:
        # The checked float64 values themselves: one host-to-device copy for all of them.
        entries = list(checked.constants)
        varying = checked.varying
        if varying:
            rows = torch.from_numpy(checked.rows).to(device=y0.device, dtype=dtype)
            for i, row in zip(varying, rows.reshape((len(varying),) + broadcast).unbind(0)):
                entries[i] = row
    s = checked.stages
    A = [entries[i * s:(i + 1) * s] for i in range(s)]
    b, c = entries[s * s:s * s + s], entries[s * s + s:]
    return StepPlan(rows=tuple(_nonzero(A[i][:i]) for i in range(1, s)),
                    weights=_nonzero(b), nodes=tuple(c), batch=batch, largest=largest)
