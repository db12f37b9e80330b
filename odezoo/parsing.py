"""Numbers from text, one parser for every door: the CLI, configs and the recipes' flags."""
from __future__ import annotations

import math
from fractions import Fraction
from typing import Sequence

__all__ = ["parse_number", "parse_number_list"]


def parse_number(text) -> float:
    """``'0.3'``, ``'1/3'``, ``'-2e-3'`` (or a number) -> a finite float; ``ValueError`` otherwise."""
    if isinstance(text, bool):
        raise ValueError(f"not a number: {text!r} (use e.g. 0.3 or 1/3)")
    try:
        value = float(text) if isinstance(text, (int, float)) else float(Fraction(str(text).strip()))
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"not a number: {text!r} (use e.g. 0.3 or 1/3)") from None
    except OverflowError:
        raise ValueError(f"not a number odezoo can use: {text!r} is too large for a float64 (|x| < 1.8e308)") from None
    if not math.isfinite(value):
        raise ValueError(f"not a finite number: {text!r}")
    return value


def parse_number_list(text: str | Sequence, integer: bool = False) -> list:
    """``'0.1,0.2,1/3'`` (or a sequence) -> floats; with ``integer`` every item must be a whole number."""
    items = text.split(",") if isinstance(text, str) else list(text)
    values = [parse_number(item) for item in items if str(item).strip()]
    if not integer:
        return values
    bad = [v for v in values if v != int(v)]
    if bad:
        raise ValueError(f"expected whole numbers, got {bad} in {text!r}")
    return [int(v) for v in values]
