"""``rk4_u3``: 4-stage, order-4 methods with nodes c = (0, 1, 1/2, 1).

    0   |
    1   | 1
    1/2 | 3/8       1/8
    1   | 1 - 1/(4u)  -1/(12u)  1/(3u)
    ----+-----------------------------------
        | 1/6       1/6 - u   2/3      u

Order 4, 4 stages; singular at u = 0.  One of Kutta's special cases (c2 = 1).
Reference: Hairer, Nørsett & Wanner, *Solving ODEs I*, §II.1, Case (c2 = 1, c3 = 1/2).
"""
from odezoo import Constraint, SolverFamily, hookimpl


def formula(u):
    a42 = -1 / (12 * u)
    a43 = 1 / (3 * u)
    A = [[0.0, 0.0, 0.0, 0.0],
         [1.0, 0.0, 0.0, 0.0],
         [0.5 - 0.125, 0.125, 0.0, 0.0],
         [1 - a42 - a43, a42, a43, 0.0]]
    b = [1 / 6, 1 / 6 - u, 2 / 3, u]
    c = [0.0, 1.0, 0.5, 1.0]
    return A, b, c


FAMILY = SolverFamily(
    name="rk4_u3",
    params=("u",),
    defaults={"u": 1 / 6},
    order=4,
    stages=4,
    formula=formula,
    constraints=(Constraint("u != 0", lambda u: u),),
    support={"u": (0.05, 1.0)},
    description="4-stage, order-4 RK methods with c = (0, 1, 1/2, 1)",
    reference="Hairer, Nørsett & Wanner, Solving ODEs I, §II.1",
)


@hookimpl
def odezoo_register_families(register):
    register(FAMILY)
