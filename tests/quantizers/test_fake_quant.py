"""FakeQuant (arXiv 1712.05877): argument checks, forward values for 8 and 4 bits with and
without narrow range, and the moving-average range over several training steps, against numpy.

(tests/converters/test_int8.py covers the 8-bit wide-range forward, one moving-average step,
the learned-range gradient and the int8 conversion; these tests do not repeat them.)"""

import numpy as np
import pytest

from kbnn.quantizers import FakeQuant


def _fake_quant(x, lo, hi, bits, narrow):
    """numpy fake quantization: the range [lo, hi] is nudged so that 0 is on the grid of
    2^bits - 1 (or 2^bits - 2 with a narrow range) steps; values are clamped to the nudged
    range and rounded half up to the grid."""
    x = np.asarray(x, np.float64)
    q_low, q_high = (1.0 if narrow else 0.0), 2.0 ** bits - 1.0
    step = (hi - lo) / (q_high - q_low)
    zero_point = min(max(np.floor(q_low - lo / step + 0.5), q_low), q_high)
    low, high = (q_low - zero_point) * step, (q_high - zero_point) * step
    return low + step * np.floor((np.clip(x, low, high) - low) / step + 0.5)


@pytest.mark.parametrize("kwargs, name", [
    ({"momentum": "0.9"}, "momentum"),
    ({"momentum": float("nan")}, "momentum"),
    ({"momentum": -0.1}, "momentum"),
    ({"init_min": "a"}, "init_min"),
    ({"init_max": None}, "init_max"),
    ({"init_max": float("inf")}, "init_max"),
    ({"narrow_range": "yes"}, "narrow_range"),
    ({"narrow_range": 1}, "narrow_range"),
    ({"symmetric": "no"}, "symmetric"),
    ({"num_bits": 8.0}, "num_bits"),
    ({"num_bits": True}, "num_bits"),
    ({"mode": None}, "mode"),
], ids=lambda v: repr(v) if isinstance(v, dict) else None)
def test_bad_argument_types_are_value_errors(kwargs, name):
    with pytest.raises(ValueError, match=rf"Invalid value for argument `{name}` of FakeQuant\. "
                                         rf"Expected .*Received {name}="):
        FakeQuant(**kwargs)


def test_range_must_contain_zero():
    with pytest.raises(ValueError, match="`init_min`/`init_max` of FakeQuant"):
        FakeQuant(init_min=-1.0, init_max=0.0)


def test_four_bit_narrow_range_hand_values():
    # [-1.4, 1.4] on 15 - 1 = 14 steps of 0.2, zero point 8: 0.29 -> 0.2, 0.31 -> 0.4,
    # out-of-range values clamp to +-1.4.
    fq = FakeQuant(num_bits=4, mode="learned", init_min=-1.4, init_max=1.4, narrow_range=True)
    y = np.asarray(fq(np.array([-5.0, -0.31, 0.0, 0.29, 0.31, 5.0], np.float32)))
    np.testing.assert_allclose(y, [-1.4, -0.4, 0.0, 0.2, 0.4, 1.4], atol=1e-6)


@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("narrow", [False, True])
def test_forward_matches_numpy(bits, narrow, rng):
    lo, hi = -1.3, 2.1  # zero is not on the un-nudged grid
    fq = FakeQuant(num_bits=bits, mode="learned", init_min=lo, init_max=hi, narrow_range=narrow)
    x = rng.uniform(-3.0, 3.0, size=(4, 50)).astype(np.float32)
    expected = _fake_quant(x, lo, hi, bits, narrow)
    y = np.asarray(fq(x, training=False))
    np.testing.assert_allclose(y, expected, atol=1e-5)
    levels = 2 ** bits - (2 if narrow else 1)  # steps; levels + 1 values
    assert len(np.unique(y)) <= levels + 1
    assert np.asarray(fq(np.zeros(3, np.float32)))[0] == 0.0  # zero is exactly representable


def test_moving_average_range_over_several_steps_matches_numpy(rng):
    momentum = 0.8
    fq = FakeQuant(num_bits=8, mode="moving_average", momentum=momentum)
    lo, hi = -6.0, 6.0
    batches = [rng.uniform(-1.0, 3.0, size=(8, 5)).astype(np.float32),
               rng.uniform(0.5, 2.0, size=(8, 5)).astype(np.float32),  # min clamps to 0
               rng.uniform(-4.0, -0.5, size=(8, 5)).astype(np.float32)]  # max clamps to 0
    for x in batches:
        lo = momentum * lo + (1 - momentum) * min(float(x.min()), 0.0)
        hi = momentum * hi + (1 - momentum) * max(float(x.max()), 0.0)
        y = np.asarray(fq(x, training=True))
        assert float(fq.min_var) == pytest.approx(lo, abs=1e-5)
        assert float(fq.max_var) == pytest.approx(hi, abs=1e-5)
        # the training forward already uses the updated range
        np.testing.assert_allclose(y, _fake_quant(x, lo, hi, 8, False), atol=1e-5)
    # inference uses the stored range and leaves it alone
    probe = np.linspace(-8.0, 8.0, 33, dtype=np.float32)
    np.testing.assert_allclose(np.asarray(fq(probe, training=False)),
                               _fake_quant(probe, lo, hi, 8, False), atol=1e-5)
    assert float(fq.min_var) == pytest.approx(lo, abs=1e-5)


def test_symmetric_range(rng):
    # symmetric: the range used is [-m, m], m = max(|min|, |max|) of the stored range
    # (here [-2, 2]).
    fq = FakeQuant(num_bits=8, mode="learned", init_min=-0.5, init_max=2.0, symmetric=True,
                   narrow_range=True)
    x = rng.uniform(-3.0, 3.0, size=(64,)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(fq(x, training=False)),
                               _fake_quant(x, -2.0, 2.0, 8, True), atol=1e-5)
