"""The one door: every check of a solve's inputs, called by every entry.

``odezoo.odeint``, torchdiffeq method strings (``method="rk4_uv"`` in ``torchdiffeq.odeint`` or
``odeint_adjoint``), ``SolverSpec``, ``ODEBlock`` (eager and compiled), the ``MetaSolver``
factories and state loading, ``register_tableau``, family declarations and the CLI all take
their numbers, times and per-sample batches through these functions, so a value gets the
same answer — and the same message — whichever way it came in.  Fast paths are different
*executions* of what these functions accepted, never a second set of rules.

Numbers: any real number is accepted where a float is — Python ``int``/``float``, NumPy
scalars, ``numbers.Real`` such as ``Fraction``, 0-d real arrays and (where a tensor may be
given) 0-dim real tensors.  ``bool``, complex values, text, ``None`` and non-finite or
out-of-range values are refused with a ``ValueError`` that names the option and the allowed
range.
"""
from __future__ import annotations

import math
import numbers

import numpy as np
import torch

__all__ = ["real_number", "whole_number", "positive_number", "parameter", "times", "time_values", "state",
           "per_sample_batch", "sample_times"]


def _describe(value) -> str:
    return f"{value!r} ({type(value).__name__})"


def _unwrap(name: str, value, tensor: bool):
    """0-d arrays and (with ``tensor``) one-element tensors without a gradient become scalars."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value[()]
    if tensor and isinstance(value, torch.Tensor) and value.ndim == 0:
        if value.dtype == torch.bool or value.is_complex():
            raise ValueError(f"{name} must be a real number, got a tensor of dtype {value.dtype}")
        if value.requires_grad:
            raise ValueError(f"{name} must be a number here, got a tensor that requires a gradient")
        value = value.item()
    return value


def real_number(name: str, value, *, finite: bool = True, tensor: bool = False) -> float:
    """``value`` as a Python ``float``: any real number (see the module docstring); with
    ``tensor`` a 0-dim real tensor without a gradient too.  ``ValueError`` naming ``name`` for
    anything else, for values beyond float64's range, and (with ``finite``) for inf and NaN."""
    value = _unwrap(name, value, tensor)
    if isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be a real number, got the bool {value!r}")
    if isinstance(value, (str, bytes)):
        raise ValueError(f"{name} must be a number, got the text {value!r}; parse text first, e.g. "
                         f"odezoo.parsing.parse_number({value!r})")
    if isinstance(value, (complex, np.complexfloating)):
        raise ValueError(f"{name} must be a real number, got the complex value {value!r}")
    if not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a real number, got {_describe(value)}")
    try:
        result = float(value)
    except (OverflowError, ValueError, TypeError):
        raise ValueError(f"{name} must be a real number within float64's range (|x| < 1.8e308), "
                         f"got {value!r}") from None
    if finite and not math.isfinite(result):
        raise ValueError(f"{name} must be a finite real number, got {value!r}")
    return result


def whole_number(name: str, value, *, low: int | None = None, high: int | None = None) -> int:
    """``value`` as an ``int`` in ``[low, high]``: Python and NumPy integers and whole floats
    (``8.0``); ``2.7``, ``True``, ``"8"`` and values out of range are a ``ValueError``."""
    value = _unwrap(name, value, tensor=True)
    kind = ("a positive integer" if low == 1 and high is None else "a whole number" + (
        "" if low is None and high is None else f" >= {low}" if high is None else
        f" <= {high}" if low is None else f" in [{low}, {high}]"))
    if not isinstance(value, (bool, np.bool_)) and isinstance(value, numbers.Real):
        try:
            whole = int(value)
            exact = float(value) == whole or (isinstance(value, numbers.Integral))
        except (OverflowError, ValueError):
            exact = False
        if exact and (low is None or whole >= low) and (high is None or whole <= high):
            return whole
    raise ValueError(f"{name} must be {kind}, got {_describe(value)}")


def positive_number(name: str, value) -> float:
    """``value`` as a finite ``float`` > 0 (a step size, a scale)."""
    try:
        result = real_number(name, value, tensor=True)
    except ValueError:
        result = None
    if result is None or not result > 0:
        raise ValueError(f"{name} must be a positive, finite number, got {_describe(value)}")
    return result


def parameter(name: str, value, *, per_sample: bool = True):
    """A solver parameter as a solve uses it: a real scalar becomes a Python ``float``; a real
    tensor is kept (0-dim — differentiable or not — or ``(batch,)`` per-sample values when
    ``per_sample``, with at least one sample); a 1-D real NumPy array becomes a float64
    tensor.  Everything else, and non-finite scalars, is a ``ValueError`` naming ``name``."""
    label = f"parameter {name}"
    if isinstance(value, np.ndarray) and value.ndim:
        if value.dtype.kind not in "iuf":
            raise ValueError(f"{label} must hold real numbers, got an array of dtype {value.dtype}")
        value = torch.from_numpy(np.ascontiguousarray(value, dtype=np.float64))
    if isinstance(value, torch.Tensor):
        if value.is_complex() or value.dtype == torch.bool:
            raise ValueError(f"{label} must be real, got a tensor of dtype {value.dtype}")
        if value.ndim > 1 or (value.ndim == 1 and not per_sample):
            expected = "a number, a 0-dim tensor or a tensor of shape (batch,)" if per_sample else "a number"
            raise ValueError(f"{label} must be {expected}; got a tensor of shape {tuple(value.shape)}")
        if value.ndim == 1 and value.numel() == 0:
            raise ValueError(f"{label}: per-sample values need at least one sample, got an empty tensor")
        if not value.is_floating_point():
            value = value.to(torch.float64)
        return value
    if isinstance(value, np.ndarray):
        value = value[()]
    if not isinstance(value, (numbers.Number, str, bytes, np.generic)):
        raise ValueError(f"{label} must be a real number or a tensor, got {_describe(value)}")
    return real_number(label, value)


def per_sample_batch(params: dict, where: str) -> int | None:
    """The batch size of the per-sample parameters in ``params`` (tensors of shape ``(batch,)``),
    or None; ``ValueError`` naming the lengths when they disagree."""
    lengths = {name: v.shape[0] for name, v in params.items() if isinstance(v, torch.Tensor) and v.ndim == 1}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"{where}: per-sample parameters must all have one value per sample (the same "
                         f"length), got lengths {lengths}")
    return next(iter(lengths.values()), None)


def state(where: str, y0, batch: int | None = None) -> None:
    """A state a Runge–Kutta solve can represent: a floating-point or complex tensor (integer
    and bool states would be truncated by the stages), with dim 0 of length ``batch`` when
    per-sample parameters apply along it."""
    if not isinstance(y0, torch.Tensor):
        raise ValueError(f"{where}: y0 must be a tensor, got {type(y0).__name__}")
    if not (y0.is_floating_point() or y0.is_complex()):
        raise ValueError(
            f"{where}: the state y0 has dtype {y0.dtype}, but Runge–Kutta stages are fractional combinations "
            f"of the state, so an integer or bool state would be truncated. Pass a floating-point state, "
            f"e.g. y0.float() or y0.double() (complex states work too).")
    if batch is not None and y0.ndim == 0:
        raise ValueError(f"{where}: per-sample parameters (one per sample) apply along dim 0 of y0, but y0 has "
                         f"no batch dimension (shape ()); pass y0 of shape (batch, ...)")
    if batch is not None and y0.shape[0] != batch:
        raise ValueError(
            f"{where}: per-sample parameters hold {batch} values but y0 has a batch of {y0.shape[0]} (shape "
            f"{tuple(y0.shape)}); they apply along dim 0 of y0, one value per sample. Pass one tensor y0 whose "
            f"dim 0 is the batch (tuples of states and odeint_adjoint's augmented state are flattened, so "
            f"per-sample parameters need plain odeint with a tensor state).")


def time_values(where: str, values: list[float], *, minimum: int = 1) -> list[float]:
    """Check the values of a time tensor: at least ``minimum`` of them, all finite, strictly
    increasing or strictly decreasing.  The message names the first offending entry."""
    if len(values) < minimum:
        raise ValueError(f"{where}: t must hold at least {minimum} time{'s' if minimum > 1 else ''}, got {values}")
    for i, value in enumerate(values):
        if not math.isfinite(value):
            raise ValueError(f"{where}: t must hold finite times, but t[{i}] = {value!r}; integrate over a "
                             f"finite interval")
    if len(values) > 1:
        increasing = values[1] > values[0]
        for i in range(1, len(values)):
            if not ((values[i] > values[i - 1]) if increasing else (values[i] < values[i - 1])):
                raise ValueError(f"{where}: t must be strictly increasing or strictly decreasing, but t[{i - 1}] = "
                                 f"{values[i - 1]!r} and t[{i}] = {values[i]!r}")
    return values


def times(where: str, t, *, minimum: int = 1) -> torch.Tensor:
    """``t`` as a checked time tensor: a 1-D floating-point tensor (a sequence of numbers becomes
    a float64 tensor, exactly), whose values pass `time_values`.  Its dtype is kept."""
    if not isinstance(t, torch.Tensor):
        try:
            t = torch.tensor([real_number(f"{where}: t[{i}]", x, finite=False) for i, x in enumerate(t)],
                             dtype=torch.float64)
        except TypeError:
            raise ValueError(f"{where}: t must be a 1-D tensor or a sequence of numbers, got "
                             f"{_describe(t)}") from None
    if t.ndim != 1:
        raise ValueError(f"{where}: t must be one-dimensional, got shape {tuple(t.shape)}")
    if not t.is_floating_point():
        raise ValueError(f"{where}: t must be a floating-point tensor, got dtype {t.dtype}")
    time_values(where, t.tolist(), minimum=minimum)
    return t


def sample_times(where: str, t: torch.Tensor, y0) -> torch.Tensor:
    """Per-sample times: ``t`` of shape ``(T, batch)`` — time first, like ``odeint``'s output —
    where column ``b`` holds sample ``b``'s ``T`` times, finite and strictly monotone in its own
    direction (samples may start, end and run in different directions).  A batch-first ``t``
    of shape ``(batch, T)`` is refused with the transposition that fixes it; every other defect
    names the sample and the entries."""
    if not isinstance(y0, torch.Tensor) or y0.ndim == 0:
        raise ValueError(f"{where}: per-sample times need a state y0 of shape (batch, ...), got "
                         f"{tuple(y0.shape) if isinstance(y0, torch.Tensor) else type(y0).__name__}")
    if not t.is_floating_point():
        raise ValueError(f"{where}: t must be a floating-point tensor, got dtype {t.dtype}")
    batch = y0.shape[0]
    if t.ndim != 2 or t.shape[1] != batch:
        if t.ndim == 2 and t.shape[0] == batch:
            raise ValueError(f"{where}: t has shape {tuple(t.shape)}, batch first; per-sample times are time "
                             f"first, shape (T, batch) = (T, {batch}) like odeint's output: pass t.T")
        raise ValueError(f"{where}: per-sample times must have shape (T, batch) = (T, {batch}) for y0 of shape "
                         f"{tuple(y0.shape)}; got t of shape {tuple(t.shape)}")
    if t.shape[0] < 1:
        raise ValueError(f"{where}: t must hold at least one time per sample, got shape {tuple(t.shape)}")
    finite = torch.isfinite(t)
    if not bool(finite.all()):
        i, b = (int(x) for x in (~finite).nonzero()[0])
        raise ValueError(f"{where}: sample {b}: t must hold finite times, but t[{i}, {b}] = {float(t[i, b])!r}")
    if t.shape[0] > 1:
        steps = t[1:] - t[:-1]
        monotone = (steps > 0).all(0) | (steps < 0).all(0)
        if not bool(monotone.all()):
            b = int((~monotone).nonzero()[0])
            column = t[:, b].tolist()
            time_values(f"{where}: sample {b}", column)  # names the entries
    return t
