"""``rk3_w``: explicit 3-stage, order-3 methods with equal nodes c2 = c3 = 2/3.

    0   |
    2/3 | 2/3
    2/3 | 2/3 - 1/(4w)   1/(4w)
    ----+------------------------------
        | 1/4            3/4 - w   w

Order 3, 3 stages, singular at w = 0.  This is the special case u = v = 2/3 that the
general ``rk3_uv`` family cannot reach (it is singular on u = v and on u = 2/3); w = 3/8
gives Nyström's third-order method.  Reference: Hairer, Nørsett & Wanner, *Solving ODEs I*,
§II.1 (Case c2 = c3 = 2/3).
"""
import odezoo


def formula(w):
    a32 = 1 / (4 * w)
    A = [[0.0, 0.0, 0.0],
         [2 / 3, 0.0, 0.0],
         [2 / 3 - a32, a32, 0.0]]
    b = [0.25, 0.75 - w, w]
    c = [0.0, 2 / 3, 2 / 3]
    return A, b, c


FAMILY = odezoo.SolverFamily(
    name="rk3_w",
    params=("w",),
    defaults={"w": 3 / 8},
    order=3,
    stages=3,
    formula=formula,
    constraints=(odezoo.Constraint("w != 0", lambda w: w),),
    support={"w": (0.1, 1.0)},
    members={"nystrom3": {"w": 3 / 8}},
    description="3-stage, order-3 RK methods with c2 = c3 = 2/3",
    reference="Hairer, Nørsett & Wanner, Solving ODEs I, §II.1",
)


@odezoo.hookimpl
def odezoo_register_families(register):
    register(FAMILY)
