"""``rk4_uv``: the general two-parameter family of explicit 4-stage methods of order 4.

Nodes c = (0, u, v, 1) and, with D = 6uv - 4u - 4v + 3,

    a32 = v(v-u) / (2u(1-2u))
    a42 = (1-u)(u - 4v² + 5v - 2) / (2u(v-u)D)
    a43 = (1-u)(1-v)(1-2u) / (v(v-u)D)
    b1 = (6uv - 2u - 2v + 1) / (12uv)      b2 = (2v-1) / (12u(1-u)(v-u))
    b3 = (1-2u) / (12v(1-v)(v-u))          b4 = D / (12(1-u)(1-v))

and a21 = u, a31 = v - a32, a41 = 1 - a42 - a43.  Order 4, 4 stages; singular at
u ∈ {0, 1/2, 1}, v ∈ {0, 1}, u = v and D = 0 (the paper omits D ≠ 0; e.g. u = 1/4,
v = 4/5 is singular too).  (1/3, 2/3) is the 3/8 rule, torchdiffeq's ``rk4``.
Reference: Kutta (1901); Hairer, Nørsett & Wanner, *Solving ODEs I*, §II.1.
"""
from odezoo import Constraint, SolverFamily, hookimpl


def _D(u, v):
    return 6 * u * v - 4 * u - 4 * v + 3


def formula(u, v):
    D = _D(u, v)
    a32 = v * (v - u) / (2 * u * (1 - 2 * u))
    a42 = (1 - u) * (u - 4 * v * v + 5 * v - 2) / (2 * u * (v - u) * D)
    a43 = (1 - u) * (1 - v) * (1 - 2 * u) / (v * (v - u) * D)
    A = [[0.0, 0.0, 0.0, 0.0],
         [u, 0.0, 0.0, 0.0],
         [v - a32, a32, 0.0, 0.0],
         [1 - a42 - a43, a42, a43, 0.0]]
    b2 = (2 * v - 1) / (12 * u * (1 - u) * (v - u))
    b3 = (1 - 2 * u) / (12 * v * (1 - v) * (v - u))
    b4 = D / (12 * (1 - u) * (1 - v))
    b = [1 - b2 - b3 - b4, b2, b3, b4]
    c = [0.0, u, v, 1.0]
    return A, b, c


FAMILY = SolverFamily(
    name="rk4_uv",
    params=("u", "v"),
    defaults={"u": 1 / 3, "v": 2 / 3},
    order=4,
    stages=4,
    formula=formula,
    constraints=(
        Constraint("u != 0", lambda u, v: u),
        Constraint("u != 1/2", lambda u, v: 1 - 2 * u),
        Constraint("u != 1", lambda u, v: 1 - u),
        Constraint("v != 0", lambda u, v: v),
        Constraint("v != 1", lambda u, v: 1 - v),
        Constraint("u != v", lambda u, v: v - u),
        Constraint("D = 6uv - 4u - 4v + 3 != 0", _D),
    ),
    support={"u": (0.05, 0.95), "v": (0.05, 0.95)},
    members={"three_eighths": {"u": 1 / 3, "v": 2 / 3}},
    description="4-stage, order-4 explicit RK methods (general case)",
    reference="Kutta (1901); Hairer, Nørsett & Wanner, Solving ODEs I, §II.1",
)


@hookimpl
def odezoo_register_families(register):
    register(FAMILY)
