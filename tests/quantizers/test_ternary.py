"""SteTern: fixed-threshold and TWN ternarization with a clipped STE gradient."""

import numpy as np
import pytest
import tensorflow as tf
from reference_values import STE_GRAD, X, value_and_grad

from kbnn.quantizers import SteTern


def test_fixed_threshold_default():
    y, g = value_and_grad(SteTern(), X)
    np.testing.assert_array_equal(y, [-1, -1, -1, -1, 0, 1, 1, 1, 1])
    np.testing.assert_array_equal(g, STE_GRAD)


def test_fixed_threshold_is_strict():
    y, _ = value_and_grad(SteTern(threshold_value=0.5), X)
    np.testing.assert_array_equal(y, [-1, -1, 0, 0, 0, 0, 0, 1, 1])


def test_ternary_weight_networks_threshold_by_hand():
    x = np.array([0.1, -0.2, 0.3, 1.0], np.float32)  # mean|x| = 0.4 -> threshold 0.28
    y, g = value_and_grad(SteTern(ternary_weight_networks=True), x)
    np.testing.assert_array_equal(y, [0, 0, 1, 1])
    np.testing.assert_array_equal(g, [1, 1, 1, 1])
    y, _ = value_and_grad(SteTern(threshold_value=0.05), x)
    np.testing.assert_array_equal(y, [1, -1, 1, 1])
    # threshold_value is ignored in TWN mode.
    y, _ = value_and_grad(SteTern(threshold_value=0.9, ternary_weight_networks=True), x)
    np.testing.assert_array_equal(y, [0, 0, 1, 1])


def test_ternary_weight_networks_against_numpy(rng):
    w = rng.normal(0.0, 0.7, size=(3, 3, 8, 6)).astype(np.float32)
    dy = rng.normal(size=w.shape).astype(np.float32)
    y, g = value_and_grad(SteTern(ternary_weight_networks=True, clip_value=0.8), w, upstream=dy)
    t = 0.7 * np.abs(w.astype(np.float64)).mean()
    expected = np.where(w > t, 1.0, np.where(w < -t, -1.0, 0.0))
    np.testing.assert_array_equal(y, expected)
    # No gradient flows through the data-dependent threshold: only the clipped STE.
    np.testing.assert_allclose(g, dy * (np.abs(w) <= 0.8), rtol=1e-6)
    assert set(np.unique(y)) == {-1.0, 0.0, 1.0}


def test_clip_value_moves_the_gradient_window():
    _, g = value_and_grad(SteTern(clip_value=0.5), X)
    np.testing.assert_array_equal(g, [0, 0, 1, 1, 1, 1, 1, 0, 0])


def test_precision_and_no_binary_form():
    q = SteTern()
    assert q.precision == 2 and not q.is_binary
    assert q.binary_form(tf.constant(X)) is None
    np.testing.assert_array_equal(q.inference(tf.constant(X)), q(tf.constant(X)))


def test_get_config_lists_every_argument():
    config = SteTern(threshold_value=0.1, ternary_weight_networks=True,
                     clip_value=2.0).get_config()
    assert config["threshold_value"] == 0.1
    assert config["ternary_weight_networks"] is True
    assert config["clip_value"] == 2.0


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        ({"threshold_value": -0.1}, "threshold_value"),
        ({"threshold_value": "0.05"}, "threshold_value"),
        ({"ternary_weight_networks": "yes"}, "ternary_weight_networks"),
        ({"ternary_weight_networks": 1}, "ternary_weight_networks"),
        ({"clip_value": 0.0}, "clip_value"),
    ],
)
def test_bad_arguments_raise_value_error_naming_the_argument(kwargs, argument):
    with pytest.raises(ValueError, match=f"`{argument}` of SteTern.*Received {argument}="):
        SteTern(**kwargs)
