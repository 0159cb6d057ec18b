"""Argument checks shared by quantizers and constraints, with Keras-style error messages:

    "Invalid value for argument `k_bit` of DoReFa. Expected an integer in [1, 32].
     Received k_bit=0."
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

__all__ = ["check_bool", "check_choice", "check_int_in_range", "check_non_negative",
           "check_number", "check_positive", "check_positive_int", "check_positive_or_none"]


def _fail(owner: str, name: str, expected: str, value: Any):
    raise ValueError(
        f"Invalid value for argument `{name}` of {owner}. Expected {expected}. "
        f"Received {name}={value!r}."
    )


def _is_real(value: Any) -> bool:
    return (isinstance(value, numbers.Real) and not isinstance(value, bool)
            and math.isfinite(value))


def check_positive(owner: str, name: str, value: Any) -> float:
    """`value` as a float; it must be a finite number > 0."""
    if not (_is_real(value) and value > 0):
        _fail(owner, name, "a finite, strictly positive number", value)
    return float(value)


def check_positive_or_none(owner: str, name: str, value: Any) -> float | None:
    """`value` as a float, or None; a number must be finite and > 0."""
    if value is None:
        return None
    if not (_is_real(value) and value > 0):
        _fail(owner, name, "a finite, strictly positive number, or None", value)
    return float(value)


def check_positive_int(owner: str, name: str, value: Any) -> int:
    """`value` as an int; it must be an integer (not a bool) >= 1."""
    if not (isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 1):
        _fail(owner, name, "a strictly positive integer", value)
    return int(value)


def check_non_negative(owner: str, name: str, value: Any) -> float:
    """`value` as a float; it must be a finite number >= 0."""
    if not (_is_real(value) and value >= 0):
        _fail(owner, name, "a finite, non-negative number", value)
    return float(value)


def check_number(owner: str, name: str, value: Any, low: float = -math.inf,
                 high: float = math.inf, *, high_open: bool = False) -> float:
    """`value` as a float; it must be a finite number (not a bool) in [low, high] (in
    [low, high) when `high_open`)."""
    in_range = _is_real(value) and low <= value and (value < high if high_open else value <= high)
    if not in_range:
        if math.isinf(low) and math.isinf(high):
            expected = "a finite number"
        else:
            expected = f"a finite number in [{low:g}, {high:g}{')' if high_open else ']'}"
        _fail(owner, name, expected, value)
    return float(value)


def check_int_in_range(owner: str, name: str, value: Any, low: int, high: int) -> int:
    """`value` as an int; it must be an integer (not a bool) in [low, high]."""
    if not (isinstance(value, numbers.Integral) and not isinstance(value, bool)
            and low <= value <= high):
        _fail(owner, name, f"an integer in [{low}, {high}]", value)
    return int(value)


def check_choice(owner: str, name: str, value: Any, choices: Sequence[str]) -> str:
    """`value`, which must be one of `choices`."""
    if value not in choices:
        _fail(owner, name, "one of " + ", ".join(repr(c) for c in choices), value)
    return value


def check_bool(owner: str, name: str, value: Any) -> bool:
    """`value`, which must be a bool."""
    if not isinstance(value, bool):
        _fail(owner, name, "True or False", value)
    return value
