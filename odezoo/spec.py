"""``SolverSpec``: one concrete solver — a method, its parameters and a time grid."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import torch
from torchdiffeq import odeint, odeint_adjoint

from . import _torchdiffeq_bridge as bridge
from .family import as_real
from .registry import registry

__all__ = ["SolverSpec", "uniform_grid"]


def uniform_grid(n_steps: int):
    """A torchdiffeq ``grid_constructor`` with ``n_steps`` equal steps over ``[t[0], t[-1]]``."""
    def grid(func, y0, t):
        g = torch.linspace(float(t[0]), float(t[-1]), n_steps + 1, dtype=t.dtype, device=t.device)
        g[0], g[-1] = t[0], t[-1]
        return g
    return grid


@dataclass(frozen=True)
class SolverSpec:
    """One concrete solver: a method, its parameters and a grid.

    ``method`` is a registered family (``rk2_u``, ...) or one of torchdiffeq's fixed-grid
    methods (``euler``, ``midpoint``, ``rk4``, ...).  Give ``n_steps`` (uniform steps over
    each integration interval) or ``step_size``, not both; with neither, the solver steps
    from output time to output time.  An adaptive family (``rk2_u_adaptive``, ``tsit5``,
    ...) takes ``rtol`` and ``atol`` instead (torchdiffeq's defaults when omitted).
    Parameters are validated on construction: scalar parameters through the family's
    checked coefficients (the same path a solve takes), per-sample tensors through the
    family's singular-set check.
    """

    method: str
    params: Mapping[str, Any] = field(default_factory=dict)
    step_size: float | None = None
    n_steps: int | None = None
    rtol: float | None = None
    atol: float | None = None

    def __post_init__(self):
        object.__setattr__(self, "params", dict(self.params))
        if self.step_size is not None and self.n_steps is not None:
            raise ValueError(f"SolverSpec({self.method!r}): give step_size or n_steps, not both")
        if self.n_steps is not None and (int(self.n_steps) != self.n_steps or self.n_steps < 1):
            raise ValueError(f"SolverSpec({self.method!r}): n_steps must be a positive integer, got {self.n_steps!r}")
        if self.step_size is not None and not (math.isfinite(self.step_size) and self.step_size > 0):
            raise ValueError(f"SolverSpec({self.method!r}): step_size must be positive, got {self.step_size!r}")
        object.__setattr__(self, "_coefficients", None)
        for name in ("rtol", "atol"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"SolverSpec({self.method!r}): {name} must be a non-negative number, got {value!r}")
        family = registry.families().get(self.method)
        if family is not None and getattr(family, "adaptive", False):
            if self.step_size is not None or self.n_steps is not None:
                raise ValueError(f"SolverSpec({self.method!r}): {self.method} is adaptive; give rtol/atol, "
                                 f"not step_size or n_steps")
            if any(isinstance(v, torch.Tensor) and v.numel() != 1 for v in self.params.values()):
                raise ValueError(f"SolverSpec({self.method!r}): adaptive methods take one value per parameter, "
                                 f"not per-sample tensors")
        elif family is not None and (self.rtol is not None or self.atol is not None):
            raise ValueError(f"SolverSpec({self.method!r}): {self.method} is a fixed-grid family; rtol/atol "
                             f"apply to adaptive methods only (give n_steps or step_size)")
        if family is not None:
            resolved = family.resolve(self.params)  # unknown names -> ValueError
            if any(isinstance(v, torch.Tensor) and (v.ndim > 0 or v.requires_grad) for v in self.params.values()):
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

    def solve(self, func, y0, t, adjoint: bool = False, **kwargs):
        """``odeint(func, y0, t, method=self.method, options=self.options(), **kwargs)``, or
        ``odeint_adjoint`` with ``adjoint=True``; the spec's ``rtol``/``atol`` are passed on."""
        for name in ("rtol", "atol"):
            if getattr(self, name) is not None:
                kwargs.setdefault(name, getattr(self, name))
        integrate = odeint_adjoint if adjoint else odeint
        return integrate(func, y0, t, method=self.method, options=self.options(), **kwargs)

    def label(self) -> str:
        """A short label for tables and plots: ``rk2_u(u=0.5; 8 steps)``."""
        params = ",".join(f"{k}={format_value(v)}" for k, v in self.params.items())
        grid = f"{self.n_steps} steps" if self.n_steps else f"h={self.step_size:g}" if self.step_size else "output grid"
        if self.adaptive:
            grid = "adaptive" + "".join(f", {k}={v:g}" for k, v in (("rtol", self.rtol), ("atol", self.atol))
                                        if v is not None)
        return f"{self.method}({params}; {grid})" if params else f"{self.method}({grid})"

    @property
    def adaptive(self) -> bool:
        """Whether the method chooses its own steps (an adaptive family, or rtol/atol given)."""
        return bool(getattr(self.family, "adaptive", False)) or self.rtol is not None or self.atol is not None

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
