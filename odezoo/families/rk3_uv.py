"""``rk3_uv``: the general two-parameter family of explicit 3-stage methods of order 3.

    0 |
    u | u
    v | v - a32    a32
    --+-----------------------
      | b1         b2     b3

with a32 = v(v-u) / (u(2-3u)), b2 = (3v-2) / (6u(v-u)), b3 = (2-3u) / (6v(v-u)),
b1 = 1 - b2 - b3.  Order 3, 3 stages; singular at u = 0, v = 0, u = v and u = 2/3.
(1/3, 2/3) is Heun's third-order method, (1/2, 1) Kutta's, (1/2, 3/4) Ralston's.
Reference: Hairer, Nørsett & Wanner, *Solving ODEs I*, §II.1 (Kutta 1901).
"""
from odezoo import Constraint, SolverFamily, hookimpl


def formula(u, v):
    a32 = v * (v - u) / (u * (2 - 3 * u))
    b2 = (3 * v - 2) / (6 * u * (v - u))
    b3 = (2 - 3 * u) / (6 * v * (v - u))
    A = [[0.0, 0.0, 0.0],
         [u, 0.0, 0.0],
         [v - a32, a32, 0.0]]
    b = [1 - b2 - b3, b2, b3]
    c = [0.0, u, v]
    return A, b, c


FAMILY = SolverFamily(
    name="rk3_uv",
    params=("u", "v"),
    defaults={"u": 1 / 3, "v": 2 / 3},
    order=3,
    stages=3,
    formula=formula,
    constraints=(
        Constraint("u != 0", lambda u, v: u),
        Constraint("v != 0", lambda u, v: v),
        Constraint("u != v", lambda u, v: u - v),
        Constraint("u != 2/3", lambda u, v: 2 - 3 * u),
    ),
    support={"u": (0.05, 1.0), "v": (0.05, 1.0)},
    members={"heun3": {"u": 1 / 3, "v": 2 / 3}, "kutta3": {"u": 0.5, "v": 1.0},
             "ralston3": {"u": 0.5, "v": 0.75}},
    description="3-stage, order-3 explicit RK methods (general case)",
    reference="Hairer, Nørsett & Wanner, Solving ODEs I, §II.1",
)


@hookimpl
def odezoo_register_families(register):
    register(FAMILY)
