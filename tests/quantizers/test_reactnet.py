"""ReActNet quantizers RSign and ScaledSign: METHODS.md §1.1, §1.3 and §13 values."""

import keras
import numpy as np
import pytest
from reference_values import XNOR_ROWS, X, approx_sign_grad_np, value_and_grad, value_and_grads

import kbnn
from kbnn.layers import QuantConv2D
from kbnn.quantizers import RSign, ScaledSign


def rsign_with(thresholds) -> RSign:
    q = RSign(threshold_initializer=keras.initializers.Constant(0.0))
    q.build((None, len(thresholds)))
    q.threshold.assign(np.asarray(thresholds, np.float32))
    return q


def test_rsign_matches_methods_reference_values():
    q = rsign_with([0.25])
    y, dx, (dt,) = value_and_grads(q, X.reshape(9, 1), [q.threshold])
    np.testing.assert_array_equal(y.ravel(), [-1, -1, -1, -1, -1, 1, 1, 1, 1])
    expected_dx = np.array([0, 0, 0.5, 1, 1.5, 2, 1.5, 0.5, 0])
    np.testing.assert_allclose(dx.ravel(), expected_dx, atol=1e-6)
    # one threshold shared by the 9 rows: d/dt sums -F'(x - t) over the batch
    np.testing.assert_allclose(dt, [-expected_dx.sum()], atol=1e-5)


def test_rsign_threshold_is_per_channel_and_gets_minus_input_gradient(rng):
    thresholds = np.array([0.25, -0.5, 0.0], np.float32)
    q = rsign_with(thresholds)
    x = rng.uniform(-2, 2, size=(4, 5, 3)).astype(np.float32)
    upstream = rng.normal(size=(4, 5, 3)).astype(np.float32)
    y, dx, (dt,) = value_and_grads(q, x, [q.threshold], upstream)
    np.testing.assert_array_equal(y, np.where(x >= thresholds, 1.0, -1.0))
    fprime = approx_sign_grad_np(x - thresholds)
    np.testing.assert_allclose(dx, upstream * fprime, atol=1e-5)
    np.testing.assert_allclose(dt, -(upstream * fprime).sum(axis=(0, 1)), atol=1e-4)


def test_rsign_threshold_initialises_to_zero_and_binary_form_is_exact(rng):
    q = RSign()
    x = rng.normal(size=(2, 4, 4, 6)).astype(np.float32)
    q(x)  # builds
    assert q.threshold.shape == (6,)
    np.testing.assert_array_equal(q.threshold.numpy(), np.zeros(6))
    q.threshold.assign(rng.normal(size=6).astype(np.float32))
    form = q.binary_form(x)
    np.testing.assert_array_equal(np.asarray(form.threshold), q.threshold.numpy())
    assert form.scale == 1.0 and form.offset == 0.0
    np.testing.assert_array_equal(q(x).numpy(), form(x).numpy())
    assert q.precision == 1 and q.is_binary


def test_rsign_needs_a_known_channel_dimension():
    with pytest.raises(ValueError, match="RSign"):
        RSign().build((None, None))


def test_scaled_sign_forward_scale_and_clipped_ste_gradient():
    # two output channels (last axis): the METHODS.md §13 XNOR rows
    w = XNOR_ROWS.T
    q = ScaledSign()
    upstream = np.arange(1, 9, dtype=np.float32).reshape(4, 2)
    y, g = value_and_grad(q, w, upstream)
    alpha = np.array([0.5, 0.625])
    np.testing.assert_allclose(y, alpha * np.where(w >= 0, 1.0, -1.0), rtol=1e-6)
    # gradient 1[|W| <= 1], no magnitude factor (alpha is detached)
    np.testing.assert_allclose(g, upstream * (np.abs(w) <= 1.0), rtol=1e-6)
    form = q.binary_form(w)
    np.testing.assert_allclose(form.scale, alpha, rtol=1e-6)
    np.testing.assert_array_equal(form(w).numpy(), y)


def test_scaled_sign_per_output_channel_over_conv_kernel(rng):
    w = rng.normal(size=(3, 3, 4, 5)).astype(np.float32)
    q = ScaledSign(clip_value=0.5)
    y = q(w).numpy()
    alpha = np.abs(w).reshape(-1, 5).mean(axis=0)
    np.testing.assert_allclose(y, alpha * np.where(w >= 0, 1.0, -1.0), rtol=1e-6)
    np.testing.assert_array_equal(q.binary_form(w)(w).numpy(), y)
    _, g = value_and_grad(q, w)
    np.testing.assert_array_equal(g, np.abs(w) <= 0.5)


def test_scaled_sign_rejects_bad_clip_value():
    with pytest.raises(ValueError, match="clip_value"):
        ScaledSign(clip_value=0.0)


def test_aliases_resolve():
    assert isinstance(kbnn.quantizers.get("rsign"), RSign)
    assert isinstance(kbnn.quantizers.get("scaled_sign"), ScaledSign)


def test_conv_with_rsign_and_scaled_sign_round_trips_through_keras_file(tmp_path, rng):
    inputs = keras.Input((6, 6, 4))
    conv = QuantConv2D(8, 3, padding="same", use_bias=False, input_quantizer="rsign",
                       kernel_quantizer=ScaledSign(clip_value=1.5))
    model = keras.Model(inputs, conv(inputs))
    conv.input_quantizer.threshold.assign(rng.normal(size=4).astype(np.float32) * 0.3)
    x = rng.normal(size=(2, 6, 6, 4)).astype(np.float32)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    lconv = loaded.layers[-1]
    assert isinstance(lconv.input_quantizer, RSign)
    assert lconv.kernel_quantizer.clip_value == 1.5
    np.testing.assert_array_equal(lconv.input_quantizer.threshold.numpy(),
                                  conv.input_quantizer.threshold.numpy())
    np.testing.assert_array_equal(loaded(x).numpy(), model(x).numpy())


def test_rsign_config_round_trip():
    q = RSign(threshold_initializer="ones", threshold_regularizer="l2")
    clone = RSign.from_config(q.get_config())
    clone.build((None, 3))
    np.testing.assert_array_equal(clone.threshold.numpy(), np.ones(3))
    assert isinstance(clone.threshold_regularizer, keras.regularizers.L2)
