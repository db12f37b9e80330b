"""``SolverSpec``: one concrete solver — a method, its parameters and a time grid."""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
import torch
from torchdiffeq import odeint_adjoint

from . import _torchdiffeq_bridge as bridge
from .family import as_real
from .frontend import odeint
from .registry import registry

__all__ = ["SolverSpec", "uniform_grid", "check_parameter", "check_n_steps", "check_step_size", "is_adaptive"]


# The checks below are the one door for values that enter a solver: SolverSpec, the
# MetaSolver factories, the recipes' config schema and their flags all call them, so a bad
# value gets the same message whichever way it came in.

def _describe(value) -> str:
    return f"{value!r} ({type(value).__name__})"


def check_parameter(name: str, value, *, per_sample: bool = True):
    """A solver parameter as it will be used: a real scalar becomes a Python ``float``
    (``int``, ``np.float32``, ``np.int64``, ``Fraction``, a one-element 0-dim array, ...);
    a real tensor is kept (0-dim, or ``(batch,)`` per-sample values when ``per_sample``); a
    1-D NumPy array becomes a float64 tensor.  Strings, bools, complex values, other
    shapes and other types raise a ``ValueError`` naming ``name`` and saying what to pass."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value[()]
    if isinstance(value, (bool, np.bool_)):
        raise ValueError(f"parameter {name} must be a real number, got {_describe(value)}")
    if isinstance(value, (str, bytes)):
        raise ValueError(f"parameter {name} must be a number, got the text {value!r}; "
                         f"parse text first, e.g. odezoo.parsing.parse_number({value!r})")
    if isinstance(value, (complex, np.complexfloating)):
        raise ValueError(f"parameter {name} must be a real number, got the complex value {value!r}")
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "iuf":
            raise ValueError(f"parameter {name} must hold real numbers, got an array of dtype {value.dtype}")
        value = torch.from_numpy(np.ascontiguousarray(value, dtype=np.float64))
    if isinstance(value, torch.Tensor):
        if value.is_complex() or value.dtype == torch.bool:
            raise ValueError(f"parameter {name} must be real, got a tensor of dtype {value.dtype}")
        if value.ndim > 1 or (value.ndim == 1 and not per_sample):
            expected = "a number, a 0-dim tensor or a tensor of shape (batch,)" if per_sample else "a number"
            raise ValueError(f"parameter {name} must be {expected}; got a tensor of shape {tuple(value.shape)}")
        if value.ndim == 1 and value.numel() == 0:
            raise ValueError(f"parameter {name}: per-sample values need at least one sample, got an empty tensor")
        return value
    if isinstance(value, numbers.Real):
        try:
            result = float(value)
        except (OverflowError, ValueError):
            raise ValueError(f"parameter {name} must be a finite real number, got {value!r}") from None
        return result
    raise ValueError(f"parameter {name} must be a real number or a tensor, got {_describe(value)}")


def check_n_steps(value) -> int:
    """``n_steps`` as an ``int`` >= 1 (a whole float such as ``8.0`` is accepted)."""
    if not isinstance(value, (bool, np.bool_)) and isinstance(value, numbers.Real):
        try:
            if float(value) == int(value) and int(value) >= 1:
                return int(value)
        except (OverflowError, ValueError):
            pass
    raise ValueError(f"n_steps must be a positive integer, got {_describe(value)}")


def check_step_size(value) -> float:
    """``step_size`` as a finite ``float`` > 0."""
    if not isinstance(value, (bool, np.bool_)) and isinstance(value, numbers.Real):
        result = float(value)
        if math.isfinite(result) and result > 0:
            return result
    raise ValueError(f"step_size must be a positive, finite number, got {_describe(value)}")


def is_adaptive(method: str) -> bool:
    """Whether ``method`` chooses its own steps — one of torchdiffeq's adaptive methods
    (``dopri5``, ...) or a registered adaptive family (``tsit5``, ...) — so ``n_steps`` and
    ``step_size`` do not apply."""
    if method not in bridge.TORCHDIFFEQ_METHODS:
        return bool(getattr(registry.families().get(method), "adaptive", False))
    solver = bridge.installed(method)
    return not (isinstance(solver, type) and issubclass(solver, bridge.FixedGridODESolver))


def uniform_grid(n_steps: int):
    """A torchdiffeq ``grid_constructor`` with ``n_steps`` equal steps over ``[t[0], t[-1]]``."""
    def grid(func, y0, t):
        g = torch.linspace(float(t[0]), float(t[-1]), n_steps + 1, dtype=t.dtype, device=t.device)
        g[0], g[-1] = t[0], t[-1]
        return g
    grid.odezoo_grid_key = ("n", int(n_steps))  # a pure function of t's values: solvers may reuse it
    return grid


@dataclass(frozen=True)
class SolverSpec:
    """One concrete solver: a method, its parameters and a grid.

    ``method`` is a registered family (``rk2_u``, ...) or one of torchdiffeq's methods
    (``euler``, ``midpoint``, ``rk4``, ...).  A fixed-grid method takes ``n_steps`` (uniform
    steps over the integration interval) or ``step_size``, not both; with neither, it steps
    from output time to output time.  An adaptive method (torchdiffeq's ``dopri5``, ...; an
    adaptive family such as ``rk2_u_adaptive`` or ``tsit5``) takes ``rtol`` and ``atol``
    instead (torchdiffeq's defaults when omitted) and no grid.  Everything is validated on
    construction (see :func:`check_parameter`, :func:`check_n_steps`, :func:`check_step_size`):
    real scalars become floats, text and complex values are refused; scalar parameters go
    through the family's checked coefficients (the same path a solve takes), per-sample
    tensors (all of one length) through the family's singular-set check.
    """

    method: str
    params: Mapping[str, Any] = field(default_factory=dict)
    step_size: float | None = None
    n_steps: int | None = None
    rtol: float | None = None
    atol: float | None = None

    def __post_init__(self):
        if not isinstance(self.method, str):
            raise ValueError(f"SolverSpec: method must be a name such as 'rk2_u', got {_describe(self.method)}")
        if not isinstance(self.params, Mapping):
            raise ValueError(f"SolverSpec({self.method!r}): params must be a mapping such as {{'u': 0.5}}, "
                             f"got {_describe(self.params)}")
        where = f"SolverSpec({self.method!r})"
        try:
            params = {name: check_parameter(name, value) for name, value in self.params.items()}
            if self.step_size is not None and self.n_steps is not None:
                raise ValueError("give step_size or n_steps, not both")
            if self.n_steps is not None:
                object.__setattr__(self, "n_steps", check_n_steps(self.n_steps))
            if self.step_size is not None:
                object.__setattr__(self, "step_size", check_step_size(self.step_size))
        except ValueError as error:
            raise ValueError(f"{where}: {error}") from None
        object.__setattr__(self, "params", params)
        object.__setattr__(self, "_coefficients", None)
        for name in ("rtol", "atol"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, numbers.Real) and not isinstance(value, bool)
                                          and math.isfinite(value) and value >= 0):
                raise ValueError(f"{where}: {name} must be a non-negative number, got {_describe(value)}")
        lengths = {name: v.shape[0] for name, v in params.items() if isinstance(v, torch.Tensor) and v.ndim == 1}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"{where}: per-sample parameters must all have one value per sample (the same "
                             f"length), got lengths {lengths}")
        if is_adaptive(self.method) and (self.n_steps is not None or self.step_size is not None):
            raise ValueError(f"{where}: {self.method} is an adaptive method (it chooses its own steps), so "
                             f"n_steps and step_size do not apply; give rtol/atol instead (or leave them out), "
                             f"or use a fixed-grid method")
        family = registry.families().get(self.method)
        if family is not None and getattr(family, "adaptive", False):
            if any(isinstance(v, torch.Tensor) and v.numel() != 1 for v in self.params.values()):
                raise ValueError(f"SolverSpec({self.method!r}): adaptive methods take one value per parameter, "
                                 f"not per-sample tensors")
        elif family is not None and (self.rtol is not None or self.atol is not None):
            raise ValueError(f"SolverSpec({self.method!r}): {self.method} is a fixed-grid family; rtol/atol "
                             f"apply to adaptive methods only (give n_steps or step_size)")
        if family is not None:
            resolved = family.resolve(self.params)  # unknown names -> ValueError
            if lengths or any(isinstance(v, torch.Tensor) and v.requires_grad for v in self.params.values()):
                family.check(resolved)
            else:  # singular points -> ValueError now, not mid-training
                object.__setattr__(self, "_coefficients", family.checked_coefficients(
                    tuple(as_real(family.name, p, resolved[p]) for p in family.params)))
        elif self.method in bridge.TORCHDIFFEQ_METHODS:
            if self.params:
                raise ValueError(f"SolverSpec({self.method!r}): torchdiffeq's {self.method!r} takes no "
                                 f"parameters, got {sorted(self.params)}")
        else:
            known = sorted(registry.families()) + sorted(bridge.TORCHDIFFEQ_METHODS)
            raise ValueError(f"SolverSpec: unknown method {self.method!r}; choose one of {known}")

    @property
    def family(self):
        """The registered :class:`~odezoo.SolverFamily` of ``method``, or None for torchdiffeq's own methods."""
        return registry.families().get(self.method)

    @property
    def coefficients(self):
        """The checked Butcher coefficients ``(A, b, c)`` as tuples of floats for a family
        with scalar parameters; None for torchdiffeq's methods and tensor parameters."""
        return self._coefficients

    def options(self) -> dict[str, Any]:
        """The ``options`` for ``torchdiffeq.odeint``."""
        options = dict(self.params)
        if self.n_steps is not None:
            options["grid_constructor"] = uniform_grid(int(self.n_steps))
        elif self.step_size is not None:
            options["step_size"] = self.step_size
        return options

    @property
    def per_sample(self) -> bool:
        """Whether any parameter holds per-sample values (a tensor of shape ``(batch,)``)."""
        return any(isinstance(v, torch.Tensor) and v.ndim == 1 for v in self.params.values())

    def check_inputs(self, y0, adjoint: bool = False) -> None:
        """Refuse, before integrating, what per-sample parameters cannot do: a state without
        a batch dimension, a batch of another size, or the adjoint method."""
        lengths = [v.shape[0] for v in self.params.values() if isinstance(v, torch.Tensor) and v.ndim == 1]
        if not lengths:
            return
        if adjoint:
            raise ValueError(f"SolverSpec({self.method!r}): per-sample parameters do not work with the adjoint "
                             f"method (odeint_adjoint integrates a flattened augmented state, so the batch "
                             f"dimension is lost); use adjoint=False, or scalar parameters")
        if not isinstance(y0, torch.Tensor) or y0.ndim == 0:
            shape = tuple(y0.shape) if isinstance(y0, torch.Tensor) else type(y0).__name__
            raise ValueError(f"SolverSpec({self.method!r}): per-sample parameters (one per sample) apply along "
                             f"dim 0 of y0, but y0 has no batch dimension (shape {shape}); pass y0 of shape "
                             f"(batch, ...)")
        if y0.shape[0] != lengths[0]:
            raise ValueError(f"SolverSpec({self.method!r}): per-sample parameters hold {lengths[0]} values but y0 "
                             f"has a batch of {y0.shape[0]} (shape {tuple(y0.shape)}); give one value per sample")

    def solve(self, func, y0, t, adjoint: bool = False, **kwargs):
        """``odeint(func, y0, t, method=self.method, options=self.options(), **kwargs)``, or
        ``odeint_adjoint`` with ``adjoint=True``; the spec's ``rtol``/``atol`` are passed on."""
        self.check_inputs(y0, adjoint)
        for name in ("rtol", "atol"):
            if getattr(self, name) is not None:
                kwargs.setdefault(name, getattr(self, name))
        integrate = odeint_adjoint if adjoint else odeint
        return integrate(func, y0, t, method=self.method, options=self.options(), **kwargs)

    def label(self) -> str:
        """A short label for tables and plots: ``rk2_u(u=0.5; 8 steps)``."""
        params = ",".join(f"{k}={format_value(v)}" for k, v in self.params.items())
        grid = f"{self.n_steps} steps" if self.n_steps else f"h={self.step_size:g}" if self.step_size else \
            "output grid"
        if self.adaptive:
            grid = "adaptive" + "".join(f", {k}={v:g}" for k, v in (("rtol", self.rtol), ("atol", self.atol))
                                        if v is not None)
        return f"{self.method}({params}; {grid})" if params else f"{self.method}({grid})"

    @property
    def adaptive(self) -> bool:
        """Whether the method chooses its own steps (an adaptive family, or rtol/atol given)."""
        return is_adaptive(self.method) or self.rtol is not None or self.atol is not None

    def to_dict(self) -> dict:
        """Plain data (tensors become lists), the inverse of :meth:`from_dict`."""
        data = {"method": self.method, "params": {k: _plain(v) for k, v in self.params.items()},
                "step_size": self.step_size, "n_steps": self.n_steps}
        if self.rtol is not None or self.atol is not None:
            data.update(rtol=self.rtol, atol=self.atol)
        return data

    @classmethod
    def from_dict(cls, data: Mapping) -> "SolverSpec":
        """The spec that :meth:`to_dict` wrote (validated again)."""
        return cls(data["method"], dict(data.get("params") or {}), data.get("step_size"), data.get("n_steps"),
                   data.get("rtol"), data.get("atol"))


def _plain(value):
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().tolist()
    return float(value)


def format_value(value) -> str:
    """A parameter value for labels: ``0.3333`` or ``[64 per-sample, mean 0.5]``."""
    if isinstance(value, torch.Tensor) and value.ndim > 0:
        return f"[{value.numel()} per-sample, mean {float(value.double().mean()):.4g}]"
    return f"{float(value):.4g}"
