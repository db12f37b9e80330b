"""``bs32``: the Bogacki–Shampine 3(2) pair as an adaptive method.

    0   |
    1/2 | 1/2
    3/4 | 0      3/4
    1   | 2/9    1/3    4/9
    ----+----------------------------
        | 2/9    1/3    4/9    0        b   (order 3)
        | 7/24   1/4    1/3    1/8      b̂   (order 2)

Four stages, first same as last (the last stage is f(t1, y1)), so a step costs three
evaluations.  No dense-output weights are given: output times are interpolated with the
cubic Hermite polynomial through the step's ends, which is third-order like the method.
Reference: P. Bogacki and L. F. Shampine, "A 3(2) pair of Runge–Kutta formulas",
Appl. Math. Lett. 2 (1989) 321–325.  (torchdiffeq's ``bosh3`` is the same pair with a
second-order midpoint for its quartic interpolant.)
"""
import odezoo


A = [[0.0, 0.0, 0.0, 0.0],
     [1 / 2, 0.0, 0.0, 0.0],
     [0.0, 3 / 4, 0.0, 0.0],
     [2 / 9, 1 / 3, 4 / 9, 0.0]]
B = [2 / 9, 1 / 3, 4 / 9, 0.0]
C = [0.0, 1 / 2, 3 / 4, 1.0]
B_EMBEDDED = [7 / 24, 1 / 4, 1 / 3, 1 / 8]

# A pair without parameters; a parameterized one builds odezoo.SolverFamily(..., embedded_order=...)
# with a formula(**params) returning (A, b, c, b_embedded[, b_mid]) (docs/adaptive.md).
FAMILY = odezoo.SolverFamily.from_tableau(
    "bs32", odezoo.ButcherTableau(A, B, C, B_EMBEDDED), order=3, embedded_order=2,
    description="Bogacki-Shampine 3(2) pair, FSAL",
    reference="Bogacki & Shampine, Appl. Math. Lett. 2 (1989) 321-325",
)


@odezoo.hookimpl
def odezoo_register_families(register):
    register(FAMILY)
