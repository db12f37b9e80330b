"""Distributions over solver parameters, truncated to a family's sampling support.

A draw outside the support (the family's parameter box, kept ``support_margin`` away from
every singular set) is *redrawn*: the result follows the target distribution conditioned
on the support.  Nothing is clamped and nothing is reset to the center — the original
meta-solver code did both, which puts a point mass on the boundary or on the center.

Every draw goes through a ``torch.Generator``, so a seed reproduces the sequence.
Custom distributions implement `ParameterDistribution` (just ``sample_raw``).
"""
from __future__ import annotations

import math
from typing import Mapping, Protocol, runtime_checkable

import numpy as np
import torch

from .family import DistributionSpec, SolverFamily

__all__ = ["ParameterDistribution", "Normal", "Uniform", "Cauchy", "Choice", "make_distribution", "distribution_label",
           "draw", "distribution_identity", "MAX_ROUNDS"]

MAX_ROUNDS = 200


@runtime_checkable
class ParameterDistribution(Protocol):
    """Anything with ``sample_raw(center, n, generator) -> {param: float64 tensor (n,)}``."""

    def sample_raw(self, center: Mapping[str, float], n: int,
                   generator: torch.Generator) -> dict[str, torch.Tensor]: ...


class _Located:
    """Independent draws ``center[p] + scale[p] * noise`` for each parameter p."""

    kind = "?"

    def __init__(self, scale: float | Mapping[str, float]):
        scales = scale.values() if isinstance(scale, Mapping) else [scale]
        for value in scales:
            if not (math.isfinite(float(value)) and float(value) > 0):
                raise ValueError(f"{self.kind} distribution: scale must be positive and finite, got {value!r}")
        self.scale = scale

    def scale_of(self, param: str) -> float:
        if isinstance(self.scale, Mapping):
            if param not in self.scale:
                raise ValueError(f"{self.kind} distribution: no scale given for parameter {param!r}")
            return float(self.scale[param])
        return float(self.scale)

    def noise(self, n: int, generator: torch.Generator) -> torch.Tensor:
        raise NotImplementedError

    def sample_raw(self, center, n, generator):
        return {p: c + self.scale_of(p) * self.noise(n, generator) for p, c in center.items()}

    def __repr__(self):
        return f"{type(self).__name__}(scale={self.scale!r})"

    def label(self, param: str, center: float) -> str:
        """``u ~ N(0.5, σ=0.0125)``-style text for one parameter."""
        return f"{param} ~ {self._label(float(center), self.scale_of(param))}"

    def _label(self, center: float, scale: float) -> str:
        return f"{self.kind}({center:g}, {scale:g})"


class Normal(_Located):
    """Normal with mean = the center and standard deviation ``scale``."""

    kind = "normal"

    def noise(self, n, generator):
        return torch.randn(n, generator=generator, dtype=torch.float64)

    def _label(self, center, scale):
        return f"N({center:g}, σ={scale:g})"


class Uniform(_Located):
    """Uniform on [center - scale, center + scale]."""

    kind = "uniform"

    def noise(self, n, generator):
        return 2 * torch.rand(n, generator=generator, dtype=torch.float64) - 1

    def _label(self, center, scale):
        return f"U[{center - scale:g}, {center + scale:g}]"


class Cauchy(_Located):
    """Cauchy with location = the center and scale ``scale`` (heavy tails, closed under 1/x)."""

    kind = "cauchy"

    def noise(self, n, generator):
        return torch.tan(math.pi * (torch.rand(n, generator=generator, dtype=torch.float64) - 0.5))

    def _label(self, center, scale):
        return f"Cauchy({center:g}, {scale:g})"


class Choice:
    """A discrete choice among parameter points (``probs`` default to uniform)."""

    kind = "choice"

    def __init__(self, points: list[Mapping[str, float]], probs: list[float] | None = None):
        if not points:
            raise ValueError("choice distribution: give at least one parameter point")
        if not all(isinstance(p, Mapping) for p in points):
            raise ValueError(f"choice distribution: each point must be a mapping such as {{'u': 0.5}}, got {points!r}")
        from .spec import check_parameter  # spec imports the registry; keep this module light
        try:
            self.points = [{k: check_parameter(k, v, per_sample=False) for k, v in p.items()} for p in points]
        except ValueError as error:
            raise ValueError(f"choice distribution: {error}") from None
        names = set(self.points[0])
        for i, point in enumerate(self.points):
            if set(point) != names:
                raise ValueError(f"choice distribution: every point must give the same parameters; point 0 gives "
                                 f"{sorted(names)}, point {i} gives {sorted(point)}")
        self.probs = validate_probabilities(probs, len(points), "choice distribution")

    def check_params(self, params) -> None:
        """Refuse points that do not give exactly the family's parameters ``params``."""
        missing, extra = sorted(set(params) - set(self.points[0])), sorted(set(self.points[0]) - set(params))
        if missing or extra:
            raise ValueError(f"choice distribution: the points must give exactly the parameters {list(params)}; "
                             + (f"missing {missing}" if missing else "") + ("; " if missing and extra else "")
                             + (f"unknown {extra}" if extra else ""))

    def sample_raw(self, center, n, generator):
        self.check_params(list(center))
        index = torch.multinomial(torch.tensor(self.probs, dtype=torch.float64), n, replacement=True,
                                  generator=generator)
        return {p: torch.tensor([float(self.points[i][p]) for i in index.tolist()], dtype=torch.float64)
                for p in center}

    def __repr__(self):
        return f"Choice(points={self.points!r}, probs={self.probs!r})"

    def label(self, param: str, center: float) -> str:
        values = ", ".join(f"{p[param]:g}" for p in self.points)
        return f"{param} ∈ {{{values}}}"


_KINDS = {"normal": Normal, "uniform": Uniform, "cauchy": Cauchy}


def distribution_label(distribution, center: Mapping[str, float]) -> str:
    """``u ~ N(0.5, σ=0.0125)`` (one clause per parameter) for any distribution; a custom
    object without ``label(param, center)`` is shown by its ``repr``."""
    if hasattr(distribution, "label"):
        return ", ".join(distribution.label(p, c) for p, c in center.items())
    return f"{', '.join(center)} ~ {distribution!r}"


def make_distribution(distribution=None, scale=None, family: SolverFamily | None = None):
    """A distribution object from a name (``normal``/``uniform``/``cauchy``), a
    `DistributionSpec`, an object implementing ``sample_raw``, or None (the family's
    registered default, with ``scale`` overriding its scale)."""
    if distribution is None:
        if family is None:
            raise ValueError("no distribution given and no family to take the default from")
        distribution = family.distribution
    if isinstance(distribution, DistributionSpec):
        scale = distribution.scale if scale is None else scale
        distribution = distribution.kind
    if isinstance(distribution, str):
        kind = distribution.lower()
        if kind not in _KINDS:
            raise ValueError(f"unknown distribution {distribution!r}; choose one of {sorted(_KINDS)}, "
                             f"or pass an object with sample_raw(center, n, generator)")
        if scale is None:
            raise ValueError(f"the {kind} distribution needs a scale")
        return _KINDS[kind](scale)
    if isinstance(distribution, ParameterDistribution):
        if scale is not None:
            raise ValueError("scale applies to named distributions only; configure your distribution object instead")
        if family is not None and isinstance(distribution, Choice):
            distribution.check_params(family.params)
        return distribution
    raise ValueError(f"cannot use {distribution!r} as a distribution: expected a name, a DistributionSpec "
                     f"or an object with sample_raw(center, n, generator)")


def draw(family: SolverFamily, distribution, center: Mapping[str, float], n: int,
         generator: torch.Generator) -> dict[str, torch.Tensor]:
    """``n`` parameter points from ``distribution`` truncated to ``family``'s support.

    Returns float64 tensors of shape (n,).  Rejected points are redrawn; after
    ``MAX_ROUNDS`` rounds without filling every slot a ``ValueError`` explains why.
    """
    center = {p: float(center[p]) for p in family.params}
    out = missing = None
    for _ in range(MAX_ROUNDS):
        k = n if missing is None else len(missing)
        values = _sample(distribution, family, center, k, generator)
        mask = family.support_mask({p: v.numpy() for p, v in values.items()})
        if missing is None:
            if mask.all():  # the usual case: every first draw is accepted, nothing to merge
                return values
            out = {p: torch.empty(n, dtype=torch.float64) for p in family.params}
            missing = torch.arange(n)
        ok = torch.from_numpy(mask)
        for p in family.params:
            out[p][missing[ok]] = values[p][ok]
        missing = missing[~ok]
        if len(missing) == 0:
            return out
    raise ValueError(
        f"{family.name}: could not draw {len(missing)} of {n} parameter points inside the sampling "
        f"support ({family.support_text()}) in {MAX_ROUNDS} rounds of {distribution!r} centered at "
        f"{center}. Move the center into the support or change the scale.")


def _sample(distribution, family: SolverFamily, center, k: int, generator) -> dict[str, torch.Tensor]:
    """``distribution.sample_raw(center, k, generator)``, checked: a mapping giving every
    parameter of ``family`` as ``k`` real values (a tensor, array or list)."""
    raw = distribution.sample_raw(center, k, generator)
    expected = (f"{type(distribution).__name__}.sample_raw(center, n={k}, generator) must return a dict "
                f"{{parameter: float tensor of shape ({k},)}} for the parameters {list(family.params)}")
    if not isinstance(raw, Mapping):
        raise ValueError(f"{expected}; it returned a {type(raw).__name__}")
    missing = [p for p in family.params if p not in raw]
    if missing:
        raise ValueError(f"{expected}; it gave no values for {missing} (it gave {sorted(map(str, raw))})")
    values = {}
    for p in family.params:
        value = raw[p]
        try:
            tensor = value if isinstance(value, torch.Tensor) else torch.as_tensor(np.asarray(value))
        except (TypeError, ValueError, RuntimeError):
            raise ValueError(f"{expected}; for {p} it returned {type(value).__name__} {value!r}") from None
        if tensor.is_complex() or tensor.dtype == torch.bool or not (tensor.is_floating_point()
                                                                      or tensor.dtype in _INTEGER_DTYPES):
            raise ValueError(f"{expected}; for {p} it returned values of dtype {tensor.dtype}")
        if tensor.numel() != k or tensor.ndim > 1:
            raise ValueError(f"{expected}; for {p} it returned shape {tuple(tensor.shape)}")
        values[p] = tensor.detach().to(device="cpu", dtype=torch.float64).reshape(-1)
    return values


_INTEGER_DTYPES = (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)


def distribution_identity(distribution) -> dict:
    """A distribution as plain data, for MetaSolver identities: kind and scale for the named
    ones, points and probabilities for `Choice`, the class (and its own ``repr``, if
    it defines one) for custom objects."""
    if isinstance(distribution, _Located):
        scale = distribution.scale
        scale = {k: float(v) for k, v in scale.items()} if isinstance(scale, Mapping) else float(scale)
        return {"kind": distribution.kind, "scale": scale}
    if isinstance(distribution, Choice):
        return {"kind": "choice", "points": [dict(p) for p in distribution.points], "probs": list(distribution.probs)}
    cls = type(distribution)
    own_repr = cls.__repr__ is not object.__repr__
    return {"kind": "custom", "type": f"{cls.__module__}.{cls.__qualname__}",
            "repr": repr(distribution) if own_repr else None}


def validate_probabilities(values, count: int, what: str) -> list[float]:
    """``count`` finite, non-negative values summing to 1 (within 1e-6); None means uniform."""
    if values is None:
        return [1.0 / count] * count
    try:
        array = np.asarray([float(v) for v in values], dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{what}: expected {count} numbers, got {values!r}") from None
    if array.shape != (count,):
        raise ValueError(f"{what}: expected {count} values (one per solver), got {len(array)}")
    if not np.all(np.isfinite(array)) or np.any(array < 0):
        raise ValueError(f"{what}: values must be finite and non-negative, got {array.tolist()}")
    total = float(array.sum())
    if abs(total - 1.0) > 1e-6:
        raise ValueError(f"{what}: values must sum to 1, got {array.tolist()} (sum {total:.6g}); "
                         f"pass normalized values, e.g. [w / sum(w) for w in values]")
    return array.tolist()
