"""DoReFa k-bit quantizer (arXiv 1606.06160) against a float64 numpy reference."""

import numpy as np
import pytest
import tensorflow as tf
from reference_values import X, value_and_grad

from kbnn.quantizers import BinaryForm, DoReFa


def round_half_up(v):
    return np.floor(v + 0.5)


def ref_activations(x, k):
    n = 2.0**k - 1
    return round_half_up(np.clip(x.astype(np.float64), 0.0, 1.0) * n) / n


def ref_weights(w, k):
    n = 2.0**k - 1
    t = np.tanh(w.astype(np.float64))
    w01 = t / (2.0 * np.abs(t).max()) + 0.5
    return 2.0 * round_half_up(w01 * n) / n - 1.0


def ref_weights_grad(w, dy):
    """Autograd of tanh(w) / max|tanh(w)| (the STE replaces the rounding by the identity)."""
    w = w.astype(np.float64).ravel()
    dy = dy.astype(np.float64).ravel()
    t = np.tanh(w)
    sech2 = 1.0 - t**2
    k = np.argmax(np.abs(t))
    m = np.abs(t[k])
    grad = dy * sech2 / m
    grad[k] -= np.sum(dy * t) / m**2 * np.sign(t[k]) * sech2[k]
    return grad


def test_activation_values_by_hand():
    y, g = value_and_grad(DoReFa(k_bit=1), X)
    np.testing.assert_array_equal(y, [0, 0, 0, 0, 0, 0, 1, 1, 1])  # 0.5 rounds up
    np.testing.assert_array_equal(g, [0, 0, 0, 0, 1, 1, 1, 1, 0])
    y, _ = value_and_grad(DoReFa(k_bit=2), X)
    np.testing.assert_allclose(y, [0, 0, 0, 0, 0, 1 / 3, 2 / 3, 1, 1], rtol=1e-6)


@pytest.mark.parametrize("k_bit", [1, 2, 4])
def test_activations_against_numpy(k_bit, rng):
    x = np.concatenate([X, rng.uniform(-0.5, 1.5, size=200).astype(np.float32)])
    y, g = value_and_grad(DoReFa(k_bit=k_bit, mode="activations"), x)
    np.testing.assert_allclose(y, ref_activations(x, k_bit), atol=1e-6)
    np.testing.assert_array_equal(g, ((x >= 0) & (x <= 1)).astype(np.float32))
    assert len(np.unique(y)) == 2**k_bit  # every level is used


def test_weight_values_by_hand():
    y, _ = value_and_grad(DoReFa(k_bit=1, mode="weights"), X)
    np.testing.assert_array_equal(y, [-1, -1, -1, -1, 1, 1, 1, 1, 1])
    # k=2: w' = tanh(x) / (2 tanh(1.5)) + 0.5 = [0, .079, .245, .365, .5, .635, .755, .921, 1]
    # -> 3 w' = [0, .24, .73, 1.09, 1.5, 1.91, 2.27, 2.76, 3] -> round = [0, 0, 1, 1, 2, 2, 2, 3, 3]
    # -> 2 q - 1.
    y, _ = value_and_grad(DoReFa(k_bit=2, mode="weights"), X)
    np.testing.assert_allclose(y, [-1, -1, -1 / 3, -1 / 3, 1 / 3, 1 / 3, 1 / 3, 1, 1], rtol=1e-6)


@pytest.mark.parametrize("k_bit", [1, 2, 4])
def test_weights_against_numpy(k_bit, rng):
    w = rng.normal(0.0, 0.6, size=(3, 3, 4, 8)).astype(np.float32)
    dy = rng.normal(size=w.shape).astype(np.float32)
    y, g = value_and_grad(DoReFa(k_bit=k_bit, mode="weights"), w, upstream=dy)
    np.testing.assert_allclose(y, ref_weights(w, k_bit), atol=1e-6)
    np.testing.assert_allclose(g.ravel(), ref_weights_grad(w, dy), rtol=1e-4, atol=1e-5)
    assert np.abs(y).max() == 1.0  # the largest |w| sits on an end level


def test_weights_gradient_at_reference_points():
    _, g = value_and_grad(DoReFa(k_bit=2, mode="weights"), X)
    # Upstream ones: the max term cancels (sum tanh(X) = 0), leaving sech^2(x) / tanh(1.5).
    t = np.tanh(X.astype(np.float64))
    np.testing.assert_allclose(g, (1 - t**2) / np.tanh(1.5), rtol=1e-5)


def test_all_zero_weights_stay_finite():
    y, g = value_and_grad(DoReFa(k_bit=2, mode="weights"), np.zeros(4, np.float32))
    np.testing.assert_allclose(y, 1 / 3, rtol=1e-6)  # w' = 0.5 -> round(1.5) = 2 -> 2*2/3 - 1
    assert np.all(np.isfinite(g))


@pytest.mark.parametrize("mode", ["activations", "weights"])
@pytest.mark.parametrize("k_bit", [1, 2, 4, 8])
def test_precision_and_binary_form(k_bit, mode, rng):
    q = DoReFa(k_bit=k_bit, mode=mode)
    assert q.precision == k_bit and q.is_binary == (k_bit == 1)
    x = tf.constant(rng.uniform(-1.5, 1.5, size=(4, 6)).astype(np.float32))
    form = q.binary_form(x)
    if k_bit > 1:
        assert form is None
    else:
        expected = (BinaryForm(threshold=0.5, scale=0.5, offset=0.5) if mode == "activations"
                    else BinaryForm())
        assert form == expected
        np.testing.assert_array_equal(form(x).numpy(), q(x).numpy())


def test_k_bit_1_activations_threshold_is_exact():
    # The ulp below 0.5 must map to 0 and 0.5 to 1, exactly as 0.5 * s(x - 0.5) + 0.5.
    x = np.array([np.nextafter(np.float32(0.5), np.float32(0)), 0.5, 0.25, 1.0], np.float32)
    y, _ = value_and_grad(DoReFa(k_bit=1), x)
    np.testing.assert_array_equal(y, [0, 1, 0, 1])


def test_get_config_lists_every_argument():
    config = DoReFa(k_bit=4, mode="weights").get_config()
    assert config["k_bit"] == 4 and config["mode"] == "weights"


@pytest.mark.parametrize("k_bit", [0, 33, -1, 2.5, "2", True])
def test_bad_k_bit_raises(k_bit):
    with pytest.raises(ValueError, match=r"`k_bit` of DoReFa\. Expected an integer in \[1, 32\]"):
        DoReFa(k_bit=k_bit)


def test_bad_mode_raises():
    with pytest.raises(ValueError, match="`mode` of DoReFa.*'activations', 'weights'.*Received"):
        DoReFa(mode="kernel")
