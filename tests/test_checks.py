"""kbnn.checks: the generic argument checks and their Keras-form messages."""

import numpy as np
import pytest

from kbnn import checks


def test_check_positive_int():
    assert checks.check_positive_int("X", "n", np.int64(3)) == 3
    assert checks.check_positive_int("X", "n", None, allow_none=True) is None
    for value in (0, -1, True, 2.0, "2", None):
        with pytest.raises(ValueError) as info:
            checks.check_positive_int("X", "n", value)
        assert str(info.value) == ("Invalid value for argument `n` of X. Expected a strictly "
                                   f"positive integer. Received n={value!r}.")
    with pytest.raises(ValueError, match=r"strictly positive integer, or None\. Received n=0"):
        checks.check_positive_int("X", "n", 0, allow_none=True)


def test_check_strides_and_pad_values():
    assert checks.check_strides("X", (2, 2)) == 2
    assert checks.check_strides("X", 1) == 1
    for value in (3, True, (1, 2), "2"):
        with pytest.raises(ValueError, match=r"`strides` of X\. Expected 1 or 2\. Received"):
            checks.check_strides("X", value)
    assert checks.check_pad_values("X", 1) == 1.0
    assert checks.check_pad_values("X", 0.0) == 0.0
    for value in (True, 0.5, "a", None):
        with pytest.raises(ValueError, match=r"`pad_values` of X\. Expected 0\.0 \(zero padding"):
            checks.check_pad_values("X", value)


def test_check_bool_wording():
    assert checks.check_bool("X", "flag", False) is False
    with pytest.raises(ValueError, match=r"Expected True or False\. Received flag=1\."):
        checks.check_bool("X", "flag", 1)
    with pytest.raises(ValueError, match=r"Expected a bool\. Received flag=None\."):
        checks.check_bool("X", "flag", None, "a bool")


def test_quantizers_checks_reexports_the_same_functions():
    from kbnn.quantizers import _checks

    assert _checks.check_positive_int is checks.check_positive_int
    assert _checks.check_bool is checks.check_bool
