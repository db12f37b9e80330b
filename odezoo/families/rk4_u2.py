"""``rk4_u2``: 4-stage, order-4 methods with nodes c = (0, 1/2, 1/2, 1).

    0   |
    1/2 | 1/2
    1/2 | 1/2 - 1/(6u)  1/(6u)
    1   | 0             1 - 3u   3u
    ----+-------------------------------
        | 1/6           2/3 - u  u    1/6

Order 4, 4 stages; singular at u = 0.  u = 1/3 is the classic Runge–Kutta method.
Reference: Hairer, Nørsett & Wanner, *Solving ODEs I*, §II.1, Case (c2 = c3 = 1/2).
"""
from odezoo import Constraint, SolverFamily, hookimpl


def formula(u):
    a32 = 1 / (6 * u)
    a42 = 1 - 3 * u
    a43 = 3 * u
    A = [[0.0, 0.0, 0.0, 0.0],
         [0.5, 0.0, 0.0, 0.0],
         [0.5 - a32, a32, 0.0, 0.0],
         [1 - a42 - a43, a42, a43, 0.0]]
    b = [1 / 6, 2 / 3 - u, u, 1 / 6]
    c = [0.0, 0.5, 0.5, 1.0]
    return A, b, c


FAMILY = SolverFamily(
    name="rk4_u2",
    params=("u",),
    defaults={"u": 1 / 3},
    order=4,
    stages=4,
    formula=formula,
    constraints=(Constraint("u != 0", lambda u: u),),
    support={"u": (0.05, 1.0)},
    members={"classic_rk4": {"u": 1 / 3}},
    description="4-stage, order-4 RK methods with c = (0, 1/2, 1/2, 1)",
    reference="Hairer, Nørsett & Wanner, Solving ODEs I, §II.1",
)


@hookimpl
def odezoo_register_families(register):
    register(FAMILY)
