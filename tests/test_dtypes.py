"""State dtypes: integer and bool states refused, complex states work, low precision never
gives non-finite coefficients or silently wrong sums (float64 first, then a checked cast)."""
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torchdiffeq import odeint

import odezoo  # noqa: F401 - registers the methods
from odezoo.plan import cast_limit, coefficient_limit, make_plan
from problems import forced

T = torch.tensor([0.0, 0.5])
LOW = [torch.float16, torch.bfloat16]


def decay(t, y):
    return -y * torch.cos(t)


def solve(y0, method="rk2_u", func=decay, t=T, step_size=0.125, **params):
    return odeint(func, y0, t.to(y0.real.dtype if y0.is_complex() else
                                 (y0.dtype if y0.is_floating_point() else torch.float32)),
                  method=method, options={"step_size": step_size, **params})


@pytest.mark.parametrize("dtype", [torch.int8, torch.uint8, torch.int16, torch.int32, torch.int64, torch.bool])
@pytest.mark.parametrize("u", [0.5, torch.tensor([0.5, 0.7, 0.9])], ids=["float", "per-sample"])
def test_integer_and_bool_states_are_refused(dtype, u):
    y0 = torch.ones(3, dtype=dtype)
    with pytest.raises(ValueError, match=rf"{dtype}.*floating-point.*y0\.float\(\)"):
        odeint(decay, y0, T, method="rk2_u", options={"u": u, "step_size": 0.125})


@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
def test_complex_states_match_torchdiffeq(dtype):
    y0 = torch.tensor([1 + 1j, -0.5 + 2j], dtype=dtype)
    rotate = lambda t, y: 1j * y * torch.cos(t)  # noqa: E731
    ours = solve(y0, func=rotate, u=0.5)
    theirs = odeint(rotate, y0, T.to(y0.real.dtype), method="midpoint", options={"step_size": 0.125})
    assert ours.dtype == dtype
    assert (ours - theirs).abs().max() < (1e-12 if dtype == torch.complex128 else 1e-6)


def test_complex_states_with_per_sample_parameters():
    y0 = torch.tensor([[1 + 1j], [-0.5 + 2j], [0.3 - 1j]], dtype=torch.complex128)
    rotate = lambda t, y: 1j * y * torch.cos(t) + t * y * y  # noqa: E731
    us = torch.tensor([0.3, 0.5, 0.9], dtype=torch.float64)
    batched = solve(y0, func=rotate, u=us)
    for i in range(3):
        alone = solve(y0[i:i + 1], func=rotate, u=float(us[i]))
        assert (batched[:, i:i + 1] - alone).abs().max() < 1e-12


@pytest.mark.parametrize("dtype", LOW)
def test_low_precision_per_sample_near_a_singular_set_is_refused_like_a_float(dtype):
    """The red-team case: per-sample u near u = 1/2 of rk4_uv gave all-NaN in half precision
    (coefficients were computed in half precision) while the same value as a float gave finite
    numbers — which were garbage too: its coefficients reach 3.5e4, and half-precision stage sums
    cancel them away.  Now both are refused alike, and float32 solves both, equal to float64."""
    u = 0.5 + 2e-6
    y0 = torch.ones(2, 1, dtype=dtype)
    for value in (u, torch.tensor([u, u])):
        with pytest.raises(ValueError, match=rf"too large for the state's dtype \({dtype}.*wider dtype"):
            solve(y0, method="rk4_uv", u=value, v=0.7)
    wide = solve(y0.double(), method="rk4_uv", u=u, v=0.7)
    for value in (u, torch.tensor([u, u])):
        narrow = solve(y0.float(), method="rk4_uv", u=value, v=0.7)
        assert (narrow.double() - wide).abs().max() < 1e-3


@pytest.mark.parametrize("u", [5e-6, torch.tensor([0.5, 5e-6])], ids=["float", "per-sample"])
def test_coefficients_too_large_for_the_state_dtype_are_refused(u):
    # rk2_u at u = 5e-6: b = (1 - 1e5, 1e5): beyond float16's 65504, and beyond what bfloat16's
    # 8 significant bits can sum (the two terms cancel to the step's increment)
    with pytest.raises(ValueError, match=r"overflows the state's dtype \(torch.float16.*wider dtype"):
        solve(torch.ones(2, dtype=torch.float16), u=u)
    with pytest.raises(ValueError, match=r"too large for the state's dtype \(torch.bfloat16.*silently wrong"):
        solve(torch.ones(2, dtype=torch.bfloat16), u=u)
    wide = solve(torch.ones(2, dtype=torch.float64), u=u)  # float32 keeps all but ~1 % of each increment
    assert (solve(torch.ones(2, dtype=torch.float32), u=u).double() - wide).abs().max() < 5e-3


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_cast_limit_is_the_largest_value_that_stays_finite(dtype):
    limit = cast_limit(dtype)
    if math.isfinite(limit):
        assert math.isfinite(float(torch.tensor(limit, dtype=torch.float64).to(dtype)))
        assert math.isinf(float(torch.tensor(limit * 1.01, dtype=torch.float64).to(dtype)))
    assert coefficient_limit(dtype) <= limit


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_the_coefficient_limit_is_where_refusal_starts(dtype):
    """rk2_u's largest coefficient is c2 = u for u >= 1: just below the dtype's limit it plans,
    just above it is refused — fixed and per-sample alike."""
    limit = coefficient_limit(dtype)
    family, y0 = odezoo.get_family("rk2_u"), torch.ones(2, dtype=dtype)
    for u in (0.999 * limit, torch.tensor([0.5, 0.999 * limit], dtype=torch.float64)):
        make_plan(family, {"u": u}, y0)
    for u in (1.01 * limit, torch.tensor([0.5, 1.01 * limit], dtype=torch.float64)):
        with pytest.raises(ValueError, match=rf"\({dtype}.*wider dtype"):
            make_plan(family, {"u": u}, y0)


@settings(max_examples=80, deadline=None)
@given(exponent=st.floats(-5.2, 4), sign=st.sampled_from([-1.0, 1.0]),
       dtype=st.sampled_from([torch.float16, torch.bfloat16, torch.float32, torch.float64]),
       per_sample=st.booleans())
def test_low_precision_gives_finite_numbers_or_a_clear_error(exponent, sign, dtype, per_sample):
    """Property: for any legal u of rk2_u and any float dtype, a solve of a bounded problem is
    close to the same solve in float64, or it is refused with a ValueError that names the
    dtype; fixed and per-sample parameters decide alike.  (Before, the property asked only for
    finite numbers, and float16 at u = 8e-6 returned 0.0 where float64 gives 0.44, or inf.)"""
    u = sign * 10.0 ** exponent
    y0 = torch.full((2, 1), 0.5, dtype=dtype)
    outcomes = []
    for value in (u, torch.tensor([u, u], dtype=torch.float64)):
        try:
            y = solve(y0, u=value, step_size=0.0625)
            outcomes.append("ok")
            reference = solve(y0.double(), u=u, step_size=0.0625)
            assert torch.isfinite(y).all(), (u, dtype)
            assert (y.double() - reference).abs().max() < 0.05, (u, dtype, y, reference)
        except ValueError as error:
            assert str(dtype) in str(error) and "wider dtype" in str(error)
            outcomes.append("refused")
    assert outcomes[0] == outcomes[1]


@pytest.mark.parametrize("param_dtype", [torch.float16, torch.float32, torch.float64])
def test_parameter_tensors_of_any_float_dtype(param_dtype):
    y0 = torch.linspace(-0.5, 0.5, 3, dtype=torch.float64)
    us = torch.tensor([0.3, 0.5, 0.75], dtype=param_dtype)
    batched = odeint(forced, y0, T.double(), method="rk2_u", options={"u": us, "step_size": 0.125})
    for i in range(3):
        alone = odeint(forced, y0[i:i + 1], T.double(), method="rk2_u",
                       options={"u": float(us[i]), "step_size": 0.125})
        assert (batched[:, i:i + 1] - alone).abs().max() < 1e-12


def test_every_solve_path_refuses_the_same_low_precision_coefficients():
    """The compile path (odezoo.direct, what ODEBlock runs under torch.compile) and the adaptive
    families refuse what odeint refuses, with the same message, instead of summing garbage."""
    from odezoo import SolverSpec
    from odezoo.direct import solve_direct

    y0, t = torch.ones(2, 1, dtype=torch.bfloat16), torch.tensor([0.0, 0.5], dtype=torch.bfloat16)
    spec = SolverSpec("rk2_u", {"u": 0.05}, n_steps=4)  # b = (-9, 10): too large for bfloat16
    with pytest.raises(ValueError, match=r"too large for the state's dtype \(torch.bfloat16") as direct:
        solve_direct(spec, decay, y0, t)
    with pytest.raises(ValueError) as odeint_error:
        odeint(decay, y0, t, method="rk2_u", options={"u": 0.05, "step_size": 0.125})
    assert str(direct.value) == str(odeint_error.value)
    assert torch.isfinite(solve_direct(spec, decay, y0.float(), t.float())).all()

    # dop853's tableau has coefficients up to 43.5 and tsit5's up to 12.9: bfloat16 cannot sum them
    for method in ("dop853", "tsit5"):
        with pytest.raises(ValueError, match=rf"method '{method}'.*\(torch.bfloat16.*wider dtype"):
            odeint(decay, y0, t, method=method, rtol=1e-2, atol=1e-2)
        wide = odeint(decay, y0.double(), t.double(), method=method, rtol=1e-6, atol=1e-6)
        narrow = odeint(decay, y0.float(), t.float(), method=method, rtol=1e-6, atol=1e-6)
        assert (narrow.double() - wide).abs().max() < 1e-5
    assert torch.isfinite(odeint(decay, y0, t, method="bs32", rtol=1e-2, atol=1e-2)).all()  # largest 1.0
