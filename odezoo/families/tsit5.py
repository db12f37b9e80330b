"""``tsit5``: Tsitouras' 5(4) pair — 7 stages, FSAL, order 5 with an embedded order 4.

Coefficients from Ch. Tsitouras, "Runge–Kutta pairs of order 5(4) satisfying only the first
column simplifying assumption", Comput. Math. Appl. 62 (2011) 770–775, Table 1 (16 digits,
as in OrdinaryDiffEq.jl's Tsit5).  The paper prints the last error weight with the wrong
sign (error weights must sum to 0); with it fixed, e annihilates every tree with ≤ 4
vertices and b̂ = b − e is an order-4 row (checked from rooted trees at registration and in
the tests).

Dense output: torchdiffeq interpolates output times with a quartic through y0, y1, f0, f1
and y(t0 + dt/2); the half-step weights ``b_mid`` are the order-4 solution of the
continuous order conditions at θ = 1/2 (`odezoo.order.dense_weights`), which is the
value of Tsitouras' own order-4 interpolant at θ = 1/2.
"""
from odezoo import ButcherTableau, SolverFamily, hookimpl
from odezoo.order import dense_weights

C = [0.0, 0.161, 0.327, 0.9, 0.9800255409045097, 1.0, 1.0]
B = [0.09646076681806523, 0.01, 0.4798896504144996, 1.379008574103742, -3.290069515436081,
     2.324710524099774, 0.0]
#: error weights e = b − b̂ (the paper's "b̂" column with the corrected sign of the last entry)
E = [0.001780011052226, 0.000816434459657, -0.007880878010262, 0.144711007173263, -0.582357165452555,
     0.458082105929187, -1 / 66]


def _lower(rows):
    """A from its rows 2..6 without the first column, which follows from c_i = Σ_j a_ij."""
    A = [[0.0] * 7 for _ in range(7)]
    for i, row in enumerate(rows, start=1):
        A[i][1:1 + len(row)] = row
        A[i][0] = C[i] - sum(row)
    return A


A = _lower([
    [],
    [0.3354806554923570],
    [-6.359448489975075, 4.362295432869581],
    [-11.74888356406283, 7.495539342889836, -0.09249506636175525],
    [-12.92096931784711, 8.159367898576159, -0.07158497328140100, -0.02826905039406838],
])
A[6] = B[:6] + [0.0]  # FSAL: the last stage is f(t1, y1)
B_EMBEDDED = [b - e for b, e in zip(B, E)]
B_MID = dense_weights(A, order=4, theta=0.5)


FAMILY = SolverFamily.from_tableau(
    "tsit5", ButcherTableau(A, B, C, B_EMBEDDED, B_MID), order=5, embedded_order=4,
    description="Tsitouras 5(4) pair, FSAL",
    reference="Tsitouras, Comput. Math. Appl. 62 (2011) 770-775",
)


@hookimpl
def odezoo_register_families(register):
    register(FAMILY)
