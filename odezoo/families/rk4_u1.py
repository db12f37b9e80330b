"""``rk4_u1``: 4-stage, order-4 methods with nodes c = (0, 1/2, 0, 1).

    0   |
    1/2 | 1/2
    0   | -1/(12u)   1/(12u)
    1   | -1/2 - 6u  3/2       6u
    ----+-------------------------------
        | 1/6 - u    2/3       u     1/6

Order 4, 4 stages; singular at u = 0.  One of Kutta's special cases (c3 = 0).
Reference: Hairer, Nørsett & Wanner, *Solving ODEs I*, §II.1, Case (c2 = 1/2, c3 = 0).
"""
from odezoo import Constraint, SolverFamily, hookimpl


def formula(u):
    a32 = 1 / (12 * u)
    a43 = 6 * u
    A = [[0.0, 0.0, 0.0, 0.0],
         [0.5, 0.0, 0.0, 0.0],
         [-a32, a32, 0.0, 0.0],
         [1 - 1.5 - a43, 1.5, a43, 0.0]]
    b = [1 / 6 - u, 2 / 3, u, 1 / 6]
    c = [0.0, 0.5, 0.0, 1.0]
    return A, b, c


FAMILY = SolverFamily(
    name="rk4_u1",
    params=("u",),
    defaults={"u": 1 / 12},
    order=4,
    stages=4,
    formula=formula,
    constraints=(Constraint("u != 0", lambda u: u),),
    support={"u": (0.02, 0.5)},
    description="4-stage, order-4 RK methods with c = (0, 1/2, 0, 1)",
    reference="Hairer, Nørsett & Wanner, Solving ODEs I, §II.1",
)


@hookimpl
def odezoo_register_families(register):
    register(FAMILY)
