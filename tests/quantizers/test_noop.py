"""NoOp: identity forward and backward; precision recorded for summaries."""

import numpy as np
import pytest
import tensorflow as tf

from kbnn.quantizers import NoOp


def test_identity_forward_and_gradient(rng):
    x = tf.constant(rng.normal(size=(2, 5)).astype(np.float32))
    dy = rng.normal(size=(2, 5)).astype(np.float32)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = NoOp()(x)
        loss = tf.reduce_sum(y * dy)
    np.testing.assert_array_equal(y.numpy(), x.numpy())
    np.testing.assert_array_equal(tape.gradient(loss, x).numpy(), dy)


@pytest.mark.parametrize("precision", [1, 8, 32])
def test_precision_is_recorded_not_applied(precision):
    q = NoOp(precision=precision)
    assert q.precision == precision
    assert q.get_config()["precision"] == precision
    x = np.array([0.3, -1.7], np.float32)
    np.testing.assert_array_equal(q(tf.constant(x)).numpy(), x)
    assert q.binary_form(x) is None


def test_default_precision_is_32():
    assert NoOp().precision == 32 and NoOp.from_config(NoOp().get_config()).precision == 32


@pytest.mark.parametrize("precision", [0, 33, 1.5, "8", True])
def test_bad_precision_raises(precision):
    with pytest.raises(ValueError, match=r"`precision` of NoOp.*\[1, 32\].*Received precision="):
        NoOp(precision=precision)
