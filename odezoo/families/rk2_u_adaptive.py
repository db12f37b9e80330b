"""``rk2_u_adaptive``: the ``rk2_u`` family with Euler's method embedded — order 2(1).

    0 |
    u | u
    --+---------------------
      | 1 - 1/(2u)   1/(2u)       b   (order 2: the rk2_u member)
      | 1            0            b̂   (order 1: explicit Euler)

The error estimate is y1 − ŷ1 = dt/(2u) · (k2 − k1).  u = 1 is the Heun–Euler pair; every
u in the paper's sampling range (0, 1] gives an adaptive method, so ``MetaSolver.smoothing``
can sample u exactly as for ``rk2_u``.  The pair is not FSAL: torchdiffeq's step evaluates
f(t1, y1) as an extra stage and reuses it as the next step's first, so a step costs 2
evaluations.  Output times are interpolated with the cubic Hermite polynomial.
Reference: Hairer, Nørsett & Wanner, *Solving ODEs I*, §II.1 and §II.4.
"""
from odezoo import Constraint, DistributionSpec, SolverFamily, hookimpl


def formula(u):
    A = [[0.0, 0.0],
         [u, 0.0]]
    b = [1 - 1 / (2 * u), 1 / (2 * u)]
    c = [0.0, u]
    b_embedded = [1.0, 0.0]
    return A, b, c, b_embedded


FAMILY = SolverFamily(
    name="rk2_u_adaptive",
    params=("u",),
    defaults={"u": 0.5},
    order=2,
    embedded_order=1,
    stages=2,
    formula=formula,
    constraints=(Constraint("u != 0", lambda u: u),),
    support={"u": (0.05, 1.0)},
    distribution=DistributionSpec("cauchy", 0.0125),
    members={"midpoint_euler": {"u": 0.5}, "heun_euler": {"u": 1.0}, "ralston_euler": {"u": 2 / 3}},
    description="rk2_u with embedded Euler: adaptive 2(1) pairs",
    reference="Hairer, Nørsett & Wanner, Solving ODEs I, §II.1, §II.4",
)


@hookimpl
def odezoo_register_families(register):
    register(FAMILY)
