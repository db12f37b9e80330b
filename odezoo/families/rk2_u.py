"""``rk2_u``: all explicit 2-stage Runge–Kutta methods of order 2.

    0 |
    u | u
    --+---------------------
      | 1 - 1/(2u)   1/(2u)

Order 2, 2 stages; singular at u = 0.  u = 1/2 is the midpoint rule, u = 1 Heun's method,
u = 2/3 Ralston's method.  Reference: Hairer, Nørsett & Wanner, *Solving ODEs I*, §II.1.
The paper samples u in (0, 1]; its default distribution is Cauchy (section 4: the
coefficients are 1/u-like, and the Cauchy family is closed under inversion).
"""
from odezoo import Constraint, DistributionSpec, SolverFamily, hookimpl


def formula(u):
    A = [[0.0, 0.0],
         [u, 0.0]]
    b = [1 - 1 / (2 * u), 1 / (2 * u)]
    c = [0.0, u]
    return A, b, c


FAMILY = SolverFamily(
    name="rk2_u",
    params=("u",),
    defaults={"u": 0.5},
    order=2,
    stages=2,
    formula=formula,
    constraints=(Constraint("u != 0", lambda u: u),),
    support={"u": (0.05, 1.0)},
    distribution=DistributionSpec("cauchy", 0.0125),
    members={"midpoint": {"u": 0.5}, "heun": {"u": 1.0}, "ralston": {"u": 2 / 3}},
    description="2-stage, order-2 explicit RK methods",
    reference="Hairer, Nørsett & Wanner, Solving ODEs I, §II.1",
)


@hookimpl
def odezoo_register_families(register):
    register(FAMILY)
