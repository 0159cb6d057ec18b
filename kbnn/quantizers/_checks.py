"""Moved to `kbnn.checks` (the one module of generic argument checks); re-exported here for the
quantizers, constraints and training modules that import it from this path."""

from kbnn.checks import (
    check_bool,
    check_choice,
    check_int_in_range,
    check_non_negative,
    check_number,
    check_positive,
    check_positive_int,
    check_positive_or_none,
)

__all__ = ["check_bool", "check_choice", "check_int_in_range", "check_non_negative",
           "check_number", "check_positive", "check_positive_int", "check_positive_or_none"]
