"""Prepared time grids: a solve's grid bookkeeping and stage times, computed once per grid.

A fixed-grid solve walks the same grid for every batch when the grid is a pure function of
the grid kind and ``t``'s values (torchdiffeq's ``step_size`` grid, odezoo's ``n_steps`` grid).
`prepared` keeps those preparations — keyed by the values, never by tensor identity —
bounded and least recently used first, and reuses one only while none of its tensors has been
modified in place (their version counters are checked on every reuse).
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch

__all__ = ["PreparedGrid", "Timeline", "prepared", "node_times", "stage_time", "GRIDS", "GRID_CACHE_SIZE", "COLUMN_CACHE_SIZE"]


def node_times(node, t0s, t1s, dts, t0_list, stage_dtype):
    """Stage times ``t0 + node·dt`` of one node for every step, as a tuple over steps.

    Float nodes give times in ``stage_dtype``, the dtype the function receives them in.
    Tensor nodes (per-sample or differentiable parameters) are computed in the node's
    dtype for all steps at once, broadcasting over the steps in dim 0.
    """
    if isinstance(node, float):
        if node == 0.0 and t0s.dtype == stage_dtype:
            return t0_list
        column = stage_time(node, t0s, t1s, dts)  # the one rule: t0 at node 0, t1 at node 1
        return column.to(stage_dtype).unbind(0)
    shape = (-1,) + (1,) * node.ndim
    if dts.dtype != node.dtype:
        dts, t0s = dts.to(node.dtype), t0s.to(node.dtype)
    return torch.addcmul(t0s.reshape(shape), node.unsqueeze(0), dts.reshape(shape)).unbind(0)


def stage_time(node, t0, t1, dt, stage_dtype=None):
    """The time of one stage of one step: ``t0`` at node 0, ``t1`` at node 1, else ``t0 + node·dt``
    — the rule of `node_times` for a single step (``t0``, ``t1``, ``dt`` tensors or numbers of
    one shape; a tensor node is computed in its own dtype).  Float nodes' times are cast to
    ``stage_dtype`` when it is given."""
    if isinstance(node, float):
        time = t0 if node == 0.0 else t1 if node == 1.0 else t0 + node * dt
        return time.to(stage_dtype) if stage_dtype is not None and isinstance(time, torch.Tensor) else time
    if isinstance(dt, torch.Tensor) and dt.dtype != node.dtype:
        dt, t0 = dt.to(node.dtype), t0.to(node.dtype)
    return torch.addcmul(torch.as_tensor(t0, dtype=node.dtype, device=node.device), node, dt) \
        if isinstance(dt, torch.Tensor) else t0 + node * dt


def _guards(tensors) -> tuple:
    """The version counter of every tensor storage behind ``tensors`` (views share their
    base's counter), so that an in-place change anywhere is seen on reuse."""
    bases = {}
    for x in tensors:
        base = x if x._base is None else x._base
        bases[id(base)] = base
    return tuple((b, b._version) for b in bases.values())


def _intact(guards) -> bool:
    return all(b._version == v for b, v in guards)


@dataclass
class Timeline:
    """What one solve walks: the grid, its values as floats, every step's t0, t1, dt and
    stage times (tensors handed to the ODE function)."""
    time_grid: torch.Tensor
    grid_values: list
    t0s: tuple
    t1s: tuple
    dts: tuple
    step_times: list


@dataclass
class PreparedGrid:
    """The per-grid preparation (a pure function of the grid kind and t's values) and the
    stage-time columns of the float nodes seen with it, each guarded by version counters."""
    time_grid: torch.Tensor
    grid_values: list
    t0s_tensor: torch.Tensor
    t1s_tensor: torch.Tensor
    dts_tensor: torch.Tensor
    t0_list: tuple
    t1_list: tuple
    dt_list: tuple
    guards: tuple = ()
    columns: "OrderedDict[tuple, tuple]" = None

    def seal(self) -> None:
        self.guards = _guards((self.time_grid, *self.t0_list, *self.t1_list, *self.dt_list))
        self.columns = OrderedDict()

    def intact(self) -> bool:
        return _intact(self.guards)

    def column(self, node, stage_dtype) -> tuple:
        """The stage times of ``node`` for every step; kept (bounded) for float nodes once the
        grid is sealed into the cache."""
        if self.columns is None or not isinstance(node, float):
            return node_times(node, self.t0s_tensor, self.t1s_tensor, self.dts_tensor, self.t0_list, stage_dtype)
        key = (node, stage_dtype)
        entry = self.columns.get(key)
        if entry is not None and _intact(entry[1]):
            return entry[0]
        times = node_times(node, self.t0s_tensor, self.t1s_tensor, self.dts_tensor, self.t0_list, stage_dtype)
        # the steps' times are views of one new column, or the grid's own t0s (guarded by the grid)
        self.columns[key] = (times, () if not times or times is self.t0_list else _guards(times[:1]))
        if len(self.columns) > COLUMN_CACHE_SIZE:
            self.columns.popitem(last=False)
        return times


#: prepared grids, keyed by (grid kind, t's values, t's dtype, device); least recently used first
GRIDS: "OrderedDict[tuple, PreparedGrid]" = OrderedDict()
GRID_CACHE_SIZE = 64
#: stage-time columns kept per grid (a smoothing run draws a new node every solve: those cycle)
COLUMN_CACHE_SIZE = 16


def prepared(key, build) -> PreparedGrid:
    """The grid kept under ``key``, or ``build()`` — kept under ``key`` (sealed, so in-place
    changes are seen on reuse) unless ``key`` is None (a grid that is not a pure function of
    ``t``'s values, or ``t`` with a gradient)."""
    if key is None:
        return build()
    grid = GRIDS.get(key)
    if grid is not None:
        if grid.intact():
            GRIDS.move_to_end(key)
            return grid
        del GRIDS[key]
    grid = build()
    grid.seal()
    GRIDS[key] = grid
    if len(GRIDS) > GRID_CACHE_SIZE:
        GRIDS.popitem(last=False)
    return grid
