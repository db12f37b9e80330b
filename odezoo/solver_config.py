"""Solvers from configuration: YAML dicts and compact command-line strings."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from .metasolver import MetaSolver, SolverSpec

__all__ = ["meta_solver_from_config", "parse_solver_grid", "parse_number_list"]


def _number(text: str) -> float:
    from fractions import Fraction

    try:
        return float(Fraction(str(text).strip()))
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"not a number: {text!r} (use e.g. 0.25 or 1/3)") from None


def parse_number_list(text: str | Sequence, integer: bool = False) -> list:
    items = text.split(",") if isinstance(text, str) else list(text)
    values = [_number(item) for item in items if str(item).strip()]
    return [int(v) for v in values] if integer else values


def _spec(data: Mapping[str, Any], defaults: Mapping[str, Any]) -> SolverSpec:
    data = {**defaults, **data}
    return SolverSpec(data["method"], {k: _number(v) for k, v in (data.get("params") or {}).items()},
                      step_size=data.get("step_size"), n_steps=data.get("n_steps"))


def meta_solver_from_config(cfg: Mapping[str, Any], seed: int | None = None) -> MetaSolver:
    """A MetaSolver from a config mapping, e.g.::

        mode: smoothing          # fixed | switching | smoothing | ensemble
        method: rk2_u
        params: {u: 0.5}         # fixed: the solver; smoothing: the center
        n_steps: 8
        distribution: normal     # smoothing: normal | uniform | cauchy (default: the family's)
        scale: 0.0125
        per_sample: false
        specs: [{method: rk2_u, params: {u: 0.5}}, ...]   # switching / ensemble
        probs: [0.5, 0.5]        # switching;  weights: [...] for ensemble
    """
    cfg = dict(cfg)
    mode = cfg.get("mode", "fixed")
    grid = {k: cfg[k] for k in ("n_steps", "step_size") if cfg.get(k) is not None}
    if mode == "fixed":
        return MetaSolver.fixed(_spec(cfg, grid))
    if mode == "smoothing":
        center = {k: _number(v) for k, v in (cfg.get("params") or {}).items()}
        return MetaSolver.smoothing(cfg["method"], center=center, distribution=cfg.get("distribution"),
                                    scale=cfg.get("scale"), per_sample=bool(cfg.get("per_sample", False)),
                                    seed=seed, **grid)
    specs = [_spec(s, {"method": cfg.get("method"), **grid}) for s in cfg.get("specs") or []]
    if mode == "switching":
        return MetaSolver.switching(specs, probs=cfg.get("probs"), seed=seed)
    if mode == "ensemble":
        return MetaSolver.ensemble(specs, weights=cfg.get("weights"))
    raise ValueError(f"unknown solver mode {mode!r}; choose fixed, switching, smoothing or ensemble")


def parse_solver_grid(text: str, n_steps: Sequence[int] = (8,)) -> list[SolverSpec]:
    """``"rk2_u:u=0.25,0.5,1.0;rk4_u2:u=1/3;euler"`` × n_steps -> SolverSpecs.

    Each ``;``-separated item is ``method`` or ``method:param=v1,v2,...[:param2=...]``; the
    values of several parameters combine as a product.
    """
    import itertools

    specs = []
    for item in filter(None, (part.strip() for part in text.split(";"))):
        method, *assignments = item.split(":")
        grids = []
        for assignment in assignments:
            name, sep, values = assignment.partition("=")
            if not sep:
                raise ValueError(f"cannot parse {assignment!r} in {item!r}: expected param=v1,v2")
            grids.append([(name.strip(), v) for v in parse_number_list(values)])
        for combo in itertools.product(*grids) if grids else [()]:
            for steps in n_steps:
                specs.append(SolverSpec(method.strip(), dict(combo), n_steps=int(steps)))
    if not specs:
        raise ValueError(f"no solvers in {text!r}; example: 'rk2_u:u=0.25,0.5,1.0;rk4_u2:u=1/3'")
    return specs
