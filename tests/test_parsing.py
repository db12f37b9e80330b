"""odezoo.parsing: the one number parser behind the CLI, configs and recipe flags."""
import math

import pytest
from hypothesis import given, strategies as st

from odezoo.parsing import parse_number, parse_number_list


@pytest.mark.parametrize("text, value", [("0.3", 0.3), ("1/3", 1 / 3), ("-2e-3", -2e-3), (" 2/3 ", 2 / 3),
                                         (5, 5.0), (0.25, 0.25)])
def test_numbers_and_fractions(text, value):
    assert parse_number(text) == value


@pytest.mark.parametrize("text", ["abc", "1/0", "", "nan", "inf", "-inf", "1e400", True, None, "0.3.1"])
def test_non_numbers_are_refused_with_an_example(text):
    with pytest.raises(ValueError, match="number"):
        parse_number(text)


@given(st.fractions(min_value=-10**6, max_value=10**6))
def test_any_fraction_round_trips(fraction):
    assert parse_number(str(fraction)) == pytest.approx(float(fraction), rel=1e-15)


def test_lists():
    assert parse_number_list("0.1, 1/4,") == [0.1, 0.25]
    assert parse_number_list("1,2,4", integer=True) == [1, 2, 4]
    assert parse_number_list(["2", 3.0], integer=True) == [2, 3]
    with pytest.raises(ValueError, match="whole numbers"):
        parse_number_list("2.5", integer=True)
    assert all(math.isfinite(v) for v in parse_number_list("1e-300,1e300"))
