"""The one module of generic argument checks, with Keras-style error messages:

    "Invalid value for argument `k_bit` of DoReFa. Expected an integer in [1, 32].
     Received k_bit=0."

Every check takes ``(owner, argument, value, ...)``, returns the value normalised (an int, a
float, ...) and raises a ValueError of that form otherwise. Domain-specific checks (quantizer
arguments, recipes, ...) live next to their domain and build on these.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

__all__ = ["argument_error", "check_bool", "check_choice", "check_initializer",
           "check_int_in_range", "check_non_negative", "check_number", "check_pad_values",
           "check_positive", "check_positive_int", "check_positive_or_none", "check_strides"]


def argument_error(owner: str, name: str, expected: str, value: Any) -> ValueError:
    """The Keras-style error for argument `name` of `owner` (returned, for the caller to raise):
    "Invalid value for argument `name` of owner. Expected <expected>. Received name=value."."""
    return ValueError(
        f"Invalid value for argument `{name}` of {owner}. Expected {expected}. "
        f"Received {name}={value!r}."
    )


def _fail(owner: str, name: str, expected: str, value: Any):
    raise argument_error(owner, name, expected, value)


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


def check_positive_int(owner: str, name: str, value: Any, *,
                       allow_none: bool = False) -> int | None:
    """`value` as an int; it must be an integer (not a bool) >= 1 (or None, kept as None, when
    `allow_none`)."""
    if value is None and allow_none:
        return None
    if not (isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 1):
        _fail(owner, name, "a strictly positive integer" + (", or None" if allow_none else ""),
              value)
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


def check_bool(owner: str, name: str, value: Any, expected: str = "True or False") -> bool:
    """`value`, which must be a bool (`expected` words the error, e.g. what each value means)."""
    if not isinstance(value, bool):
        _fail(owner, name, expected, value)
    return value


def check_initializer(owner: str, name: str, value: Any, default: Any = None,
                      expected: str = "a Keras initializer (name, config or instance) or None"):
    """`value` (`default` when None) as a Keras initializer, through `keras.initializers.get`;
    a ValueError naming the argument, `expected` and Keras' reason otherwise. (Keras is imported
    here, on use: this module stays importable without it.)"""
    import keras

    if value is None:
        value = default
    try:
        return keras.initializers.get(value)
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"Invalid value for argument `{name}` of {owner}. Expected {expected}. "
            f"Received {name}={value!r} ({err})."
        ) from None


def check_strides(owner: str, strides: Any, name: str = "strides") -> int:
    """`strides` as an int, 1 or 2 (a tuple or list of one repeated value counts as that value);
    bools are rejected."""
    if isinstance(strides, (tuple, list)) and len(set(strides)) == 1:
        strides = strides[0]
    if isinstance(strides, bool) or strides not in (1, 2):
        _fail(owner, name, "1 or 2", strides)
    return int(strides)


def check_pad_values(owner: str, pad_values: Any, name: str = "pad_values") -> float:
    """`pad_values` of a binarized input as a float: 0.0 (zero padding) or 1.0 (pad with its +1
    level); bools are rejected (True would otherwise read as 1.0)."""
    try:
        value = None if isinstance(pad_values, bool) else float(pad_values)
    except (TypeError, ValueError):
        value = None
    if value not in (0.0, 1.0):
        _fail(owner, name, "0.0 (zero padding of the binarized input) or 1.0 (pad with its +1 "
              "level)", pad_values)
    return value
