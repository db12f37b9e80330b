"""``SolverSpec``: one concrete solver — a method, its parameters and a time grid."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import torch

from . import _torchdiffeq_bridge as bridge
from . import inputs
from .adjoint import odeint_adjoint
from .frontend import odeint
from .registry import registry

__all__ = ["SolverSpec", "uniform_grid", "check_parameter", "check_n_steps", "check_step_size", "is_adaptive"]


# The checks of a value that enters a solver live in odezoo.inputs, the one door: SolverSpec,
# the MetaSolver factories, the recipes' config schema, their flags and the solvers themselves
# all call them, so a bad value gets the same message whichever way it came in.

def _describe(value) -> str:
    return f"{value!r} ({type(value).__name__})"


def check_parameter(name: str, value, *, per_sample: bool = True):
    """A solver parameter as it will be used ([`odezoo.inputs.parameter`][odezoo.inputs.parameter]): a real scalar
    becomes a Python ``float``; a real tensor is kept (0-dim, or ``(batch,)`` per-sample values
    when ``per_sample``); a 1-D NumPy array becomes a float64 tensor.  Strings, bools, complex
    values, non-finite numbers, other shapes and other types raise a ``ValueError`` naming ``name``."""
    return inputs.parameter(name, value, per_sample=per_sample)


def check_n_steps(value) -> int:
    """``n_steps`` as an ``int`` >= 1 (a whole float such as ``8.0`` is accepted)."""
    return inputs.whole_number("n_steps", value, low=1)


def check_step_size(value) -> float:
    """``step_size`` as a finite ``float`` > 0."""
    return inputs.positive_number("step_size", value)


def is_adaptive(method: str) -> bool:
    """Whether ``method`` chooses its own steps — one of torchdiffeq's adaptive methods
    (``dopri5``, ...) or a registered adaptive family (``tsit5``, ...) — so ``n_steps`` and
    ``step_size`` do not apply."""
    if method not in bridge.TORCHDIFFEQ_METHODS:
        family = registry.families().get(method)
        return family is not None and family.adaptive
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
    construction (see `check_parameter`, `check_n_steps`, `check_step_size`):
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
        object.__setattr__(self, "_tableau", None)
        for name in ("rtol", "atol"):
            value = getattr(self, name)
            if value is not None:
                number = inputs.real_number(f"{where}: {name}", value)
                if number < 0:
                    raise ValueError(f"{where}: {name} must be a non-negative number, got {_describe(value)}")
                object.__setattr__(self, name, number)
        batch = inputs.per_sample_batch(params, where)
        if is_adaptive(self.method) and (self.n_steps is not None or self.step_size is not None):
            raise ValueError(f"{where}: {self.method} is an adaptive method (it chooses its own steps), so "
                             f"n_steps and step_size do not apply; give rtol/atol instead (or leave them out), "
                             f"or use a fixed-grid method")
        family = registry.families().get(self.method)
        if family is not None and family.adaptive:
            if any(isinstance(v, torch.Tensor) and (v.numel() != 1 or v.requires_grad) for v in params.values()):
                raise ValueError(f"{where}: adaptive methods take one number per parameter, not per-sample "
                                 f"tensors or tensors that require a gradient")
        elif family is not None and (self.rtol is not None or self.atol is not None):
            raise ValueError(f"{where}: {self.method} is a fixed-grid family; rtol/atol "
                             f"apply to adaptive methods only (give n_steps or step_size)")
        if family is not None:
            resolved = family.resolve(params)  # unknown names -> ValueError
            if batch is not None or any(isinstance(v, torch.Tensor) and v.requires_grad for v in params.values()):
                family.check(resolved)
            else:  # singular points -> ValueError now, not mid-training
                object.__setattr__(self, "_tableau", family.tableau(**resolved))
        elif self.method in bridge.TORCHDIFFEQ_METHODS:
            if self.params:
                raise ValueError(f"SolverSpec({self.method!r}): torchdiffeq's {self.method!r} takes no "
                                 f"parameters, got {sorted(self.params)}")
        else:
            known = sorted(registry.families()) + sorted(bridge.TORCHDIFFEQ_METHODS)
            raise ValueError(f"SolverSpec: unknown method {self.method!r}; choose one of {known}")

    @property
    def family(self):
        """The registered [`SolverFamily`][odezoo.SolverFamily] of ``method``, or None for torchdiffeq's own methods."""
        return registry.families().get(self.method)

    @property
    def tableau(self):
        """The checked [`ButcherTableau`][odezoo.ButcherTableau] of a family with scalar parameters;
        None for torchdiffeq's methods and tensor parameters."""
        return self._tableau

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
        batch = inputs.per_sample_batch(self.params, f"SolverSpec({self.method!r})")
        if batch is None:
            return
        if adjoint:
            raise ValueError(f"SolverSpec({self.method!r}): per-sample parameters do not work with the adjoint "
                             f"method (odeint_adjoint integrates a flattened augmented state, so the batch "
                             f"dimension is lost); use adjoint=False, or scalar parameters")
        inputs.state(f"SolverSpec({self.method!r})", y0, batch)

    def solve(self, func, y0, t, adjoint: bool = False, **kwargs):
        """``odeint(func, y0, t, method=self.method, options=self.options(), **kwargs)``, or
        [`odezoo.odeint_adjoint`][odezoo.odeint_adjoint] with ``adjoint=True`` (per-sample times included); the spec's ``rtol``/``atol`` are passed on."""
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
        """Plain data (tensors become lists), the inverse of `from_dict`."""
        data = {"method": self.method, "params": {k: _plain(v) for k, v in self.params.items()},
                "step_size": self.step_size, "n_steps": self.n_steps}
        if self.rtol is not None or self.atol is not None:
            data.update(rtol=self.rtol, atol=self.atol)
        return data

    @classmethod
    def from_dict(cls, data: Mapping) -> "SolverSpec":
        """The spec that `to_dict` wrote (validated again)."""
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
