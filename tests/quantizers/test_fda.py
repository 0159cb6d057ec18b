"""FDA (Xu et al., arXiv 2103.00841; docs/methods.md, section 'FDA'): FDASign's forward and
Fourier-series gradient, the noise adaptation module's gradients, the schedule, and the digits
contract (fit, .keras round trip, strict conversion, verify). Every expected value is computed
here with numpy or by hand, never by kbnn."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from methods2_helpers import (
    assert_converts_and_agrees,
    assert_round_trip_exact,
    fit_digits,
    stem_model,
)

from kbnn.blocks import BiRealBlock
from kbnn.converters import ConversionError, convert
from kbnn.layers import NoiseAdaptation, QuantConv2D
from kbnn.quantizers import FDASign, fda_sign, get
from kbnn.training import FDASchedule, fda_schedule_values

X = np.array([-1.5, -1, -0.5, -0.25, 0, 0.25, 0.5, 1, 1.5], np.float32)


def np_series_grad(x, n, omega):
    """(4 omega / pi) sum_{i<n} cos((2i + 1) omega x), Eq. 10 with n terms."""
    return 4 * omega / np.pi * sum(np.cos((2 * i + 1) * omega * x) for i in range(n))


def _grad(quantizer, x, training=True):
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = quantizer(x, training=training)
    return y.numpy(), tape.gradient(y, x).numpy()


def test_forward_is_the_sign_and_gradient_the_series():
    q = FDASign()  # 10 terms, omega 0.1
    y, g = _grad(q, X)
    assert y.tolist() == [-1, -1, -1, -1, 1, 1, 1, 1, 1]
    np.testing.assert_allclose(g, np_series_grad(X.astype(np.float64), 10, 0.1), rtol=1e-5)
    # by hand: at 0 every cosine is 1, 4 * 0.1 * 10 / pi; at 1 the Dirichlet sum
    # sum_{i<n} cos((2i+1) a) = sin(2 n a) / (2 sin a) with a = 0.1
    assert g[4] == pytest.approx(4 / math.pi, rel=1e-6)
    assert g[7] == pytest.approx(0.4 / math.pi * math.sin(2.0) / (2 * math.sin(0.1)), rel=1e-5)


@pytest.mark.parametrize("n_terms, omega", [(1, 1.0), (3, 0.5), (19, 0.1)])
def test_series_for_other_terms_and_frequencies(n_terms, omega):
    _, g = _grad(FDASign(n_terms=n_terms, omega=omega), X)
    np.testing.assert_allclose(g, np_series_grad(X.astype(np.float64), n_terms, omega),
                               rtol=1e-5, atol=1e-6)
    if n_terms == 1:  # one term: (4/pi) cos(x)
        np.testing.assert_allclose(g, 4 / np.pi * np.cos(X), rtol=1e-6)


def test_clip_value_zeroes_the_gradient_outside():
    _, g = _grad(FDASign(clip_value=1.0), X)
    expected = np_series_grad(X.astype(np.float64), 10, 0.1) * (np.abs(X) <= 1)
    np.testing.assert_allclose(g, expected, rtol=1e-5)
    assert g[0] == 0 and g[-1] == 0


def test_n_terms_is_a_variable_read_when_the_gradient_runs():
    q = FDASign()
    q.build(X.shape)
    assert not q.n_terms.trainable
    q.n_terms.assign(19.0)
    _, g = _grad(q, X)
    np.testing.assert_allclose(g, np_series_grad(X.astype(np.float64), 19, 0.1), rtol=1e-5)
    q.n_terms.assign(13.6)  # rounded to 14 terms
    _, g = _grad(q, X)
    np.testing.assert_allclose(g, np_series_grad(X.astype(np.float64), 14, 0.1), rtol=1e-5)


def test_function_form_and_alias():
    x = tf.constant(X)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = fda_sign(x, n_terms=2, omega=1.0)
    np.testing.assert_allclose(tape.gradient(y, x).numpy(),
                               np_series_grad(X.astype(np.float64), 2, 1.0), rtol=1e-5)
    assert type(get("fda_sign")) is FDASign
    assert FDASign().binary_form(x).threshold == 0.0


# ----------------------------------------------------------------- noise adaptation module

def _np_module(t, w1, w2, shortcut_scale):
    """e(t) = relu(t W1) W2 + a sin(t) and its pieces, rows of t are the feature vectors."""
    pre = t @ w1
    return np.maximum(pre, 0) @ w2 + shortcut_scale * np.sin(t), pre


def _np_module_grads(t, w1, w2, g, alpha, shortcut_scale):
    """Eq. 15-17 (times alpha, from Eq. 14): the module's share of dL/dt, dL/dW1, dL/dW2 for
    the upstream gradient g."""
    pre = t @ w1
    back = (g @ w2.T) * (pre > 0)
    dt = alpha * (back @ w1.T + g * shortcut_scale * np.cos(t))
    return dt, alpha * t.T @ back, alpha * np.maximum(pre, 0).T @ g


def test_noise_module_on_channels_gradients_match_eq_15_to_17(rng):
    alpha, a = 0.3, 0.1
    q = FDASign(n_terms=4, omega=0.5, noise_adaptation={"features": "channels", "reduction": 2},
                alpha=alpha)
    x = rng.normal(size=(2, 3, 3, 4)).astype(np.float32)
    q.build(x.shape)
    assert tuple(q.noise.w1.shape) == (4, 2) and tuple(q.noise.w2.shape) == (2, 4)
    upstream = rng.normal(size=x.shape).astype(np.float32)
    xt = tf.constant(x)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(xt)
        y = q(xt, training=True)
        loss = tf.reduce_sum(y * upstream)
    np.testing.assert_array_equal(y.numpy(), np.where(x >= 0, 1.0, -1.0))  # forward: sign
    w1, w2 = (np.asarray(v, np.float64) for v in (q.noise.w1, q.noise.w2))
    t, g = x.reshape(-1, 4).astype(np.float64), upstream.reshape(-1, 4).astype(np.float64)
    dt, dw1, dw2 = _np_module_grads(t, w1, w2, g, alpha, a)
    dt = dt + g * np_series_grad(t, 4, 0.5)
    np.testing.assert_allclose(tape.gradient(loss, xt).numpy().reshape(-1, 4), dt, rtol=1e-4,
                               atol=1e-5)
    np.testing.assert_allclose(tape.gradient(loss, q.noise.w1).numpy(), dw1, rtol=1e-4,
                               atol=1e-5)
    np.testing.assert_allclose(tape.gradient(loss, q.noise.w2).numpy(), dw2, rtol=1e-4,
                               atol=1e-5)
    # inference: the plain sign, no module
    np.testing.assert_array_equal(q(xt, training=False).numpy(), np.where(x >= 0, 1.0, -1.0))


def test_noise_module_on_fan_in_acts_per_output_channel(rng):
    alpha, a = 0.2, 0.1
    q = FDASign(noise_adaptation={"features": "fan_in", "reduction": 6}, alpha=alpha)
    w = rng.normal(size=(3, 3, 2, 4)).astype(np.float32)  # d = 18, hidden 3
    q.build(w.shape)
    assert tuple(q.noise.w1.shape) == (18, 3)
    upstream = rng.normal(size=w.shape).astype(np.float32)
    wt = tf.constant(w)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(wt)
        loss = tf.reduce_sum(q(wt, training=True) * upstream)
    w1, w2 = (np.asarray(v, np.float64) for v in (q.noise.w1, q.noise.w2))
    rows = w.reshape(18, 4).T.astype(np.float64)  # one row per output channel
    g = upstream.reshape(18, 4).T.astype(np.float64)
    dt, dw1, dw2 = _np_module_grads(rows, w1, w2, g, alpha, a)
    dt = dt + g * np_series_grad(rows, 10, 0.1)
    np.testing.assert_allclose(tape.gradient(loss, wt).numpy().reshape(18, 4).T, dt,
                               rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(tape.gradient(loss, q.noise.w1).numpy(), dw1, rtol=1e-4,
                               atol=1e-5)
    np.testing.assert_allclose(tape.gradient(loss, q.noise.w2).numpy(), dw2, rtol=1e-4,
                               atol=1e-5)


@pytest.mark.parametrize("shortcut, expected", [
    ("sin", lambda t: 0.25 * np.sin(t)), ("linear", lambda t: 0.25 * t), (None, np.zeros_like)])
def test_noise_module_forward(rng, shortcut, expected):
    layer = NoiseAdaptation(reduction=2, shortcut=shortcut, shortcut_scale=0.25)
    t = rng.normal(size=(5, 4)).astype(np.float32)
    out = layer(t).numpy()
    w1, w2 = np.asarray(layer.w1, np.float64), np.asarray(layer.w2, np.float64)
    np.testing.assert_allclose(out, np.maximum(t @ w1, 0) @ w2 + expected(t), rtol=1e-5,
                               atol=1e-6)
    assert abs(float(np.mean(w1))) < 0.5  # zero-mean uniform init in +-1/sqrt(fan_in) = +-0.5
    assert np.all(np.abs(w1) <= 0.5) and np.all(np.abs(w2) <= 1 / np.sqrt(2))


def test_noise_in_forward_adds_the_module_until_alpha_is_zero(rng):
    q = FDASign(noise_adaptation={"features": "channels", "reduction": 2}, alpha=0.5,
                noise_in_forward=True)
    x = rng.normal(size=(2, 4)).astype(np.float32)
    out = q(x, training=False).numpy()
    w1, w2 = np.asarray(q.noise.w1, np.float64), np.asarray(q.noise.w2, np.float64)
    e, _ = _np_module(x.astype(np.float64), w1, w2, 0.1)
    np.testing.assert_allclose(out, np.where(x >= 0, 1.0, -1.0) + 0.5 * e, rtol=1e-5,
                               atol=1e-6)
    assert q.binary_form(x) is None and "alpha = 0.5" in q.binary_form_unavailable_reason()
    q.alpha.assign(0.0)
    assert q.binary_form(x).scale == 1.0 and q.binary_form_unavailable_reason() is None
    np.testing.assert_array_equal(q(x, training=False).numpy(), np.where(x >= 0, 1.0, -1.0))


def test_strict_conversion_refuses_a_non_binary_forward_and_names_alpha():
    inputs = keras.Input((4, 4, 32))
    q = {"class_name": "fda_sign", "config": {"noise_adaptation": "channels",
                                              "noise_in_forward": True}}
    model = keras.Model(inputs, QuantConv2D(32, 3, input_quantizer=q, kernel_quantizer="ste_sign",
                                            name="fda_conv")(inputs))
    with pytest.raises(ConversionError, match="fda_conv.*alpha = 0.1"):
        convert(model, strict=True)


def test_config_round_trip_and_bad_arguments():
    q = FDASign(n_terms=7, omega=0.3, clip_value=1.0, alpha=0.2, noise_in_forward=True,
                noise_adaptation={"features": "fan_in", "reduction": 8, "shortcut": "linear"})
    clone = FDASign.from_config(q.get_config())
    assert clone.get_config() == q.get_config()
    assert clone.noise_config == {"features": "fan_in", "reduction": 8, "shortcut": "linear",
                                  "shortcut_scale": 0.1}
    for kwargs, argument in [({"n_terms": 0}, "n_terms"), ({"omega": -1.0}, "omega"),
                             ({"alpha": -0.1}, "alpha"), ({"clip_value": 0.0}, "clip_value"),
                             ({"noise_adaptation": "pixels"}, "noise_adaptation"),
                             ({"noise_adaptation": {"size": 3}}, "noise_adaptation"),
                             ({"noise_in_forward": 1}, "noise_in_forward")]:
        with pytest.raises(ValueError, match=f"`{argument}` of FDASign"):
            FDASign(**kwargs)
    with pytest.raises(ValueError, match="`reduction` of NoiseAdaptation"):
        FDASign(noise_adaptation={"features": "channels", "reduction": 0})


# --------------------------------------------------------------------------------- schedule

def test_schedule_values_at_start_middle_and_end():
    # E = 5: n grows from 10 to 19 terms over the epochs 0 ... 4, alpha = 0.1 (1 + cos(pi (e + 1)
    # / 5)) / 2, by hand: cos(pi/5) = 0.809017, cos(3 pi/5) = -0.309017, cos(pi) = -1
    assert fda_schedule_values(0, 5) == (10, pytest.approx(0.0904508, rel=1e-6))
    assert fda_schedule_values(2, 5) == (14, pytest.approx(0.0345492, rel=1e-5))
    assert fda_schedule_values(4, 5) == (19, 0.0)
    assert fda_schedule_values(9, 5) == (19, 0.0)  # past the end
    assert fda_schedule_values(0, 1) == (10, 0.0)  # a one-epoch fit ends at alpha 0


def test_schedule_callback_config_and_arguments():
    schedule = FDASchedule(n_start=5, n_end=9, alpha=None, total_epochs=4)
    assert set(schedule.schedules) == {"n_terms"}
    clone = FDASchedule.from_config(schedule.get_config())
    assert clone.get_config() == schedule.get_config()
    assert [clone.values(e)[0] for e in range(4)] == [5, 6, 7, 9]
    with pytest.raises(ValueError, match="`n_end` of FDASchedule"):
        FDASchedule(n_start=10, n_end=9)
    with pytest.raises(ValueError, match="`alpha` of FDASchedule"):
        FDASchedule(alpha=-1.0)


# ----------------------------------------------------------------------------------- digits

def test_digits_fit_round_trip_strict_conversion_and_verify(tmp_path):
    """BiReal blocks whose activations and kernels use FDASign with the noise module, trained
    with FDASchedule: alpha reaches 0 in the last epoch and n_terms 19."""
    act = {"class_name": "fda_sign", "config": {"noise_adaptation": "channels"}}
    ker = {"class_name": "fda_sign", "config": {"noise_adaptation": "fan_in"}}

    def body(x):
        x = BiRealBlock(32, input_quantizer=act, kernel_quantizer=ker, name="b1")(x)
        return BiRealBlock(64, strides=2, input_quantizer=act, kernel_quantizer=ker,
                           name="b2")(x)

    run = fit_digits(stem_model(body), epochs=3, callbacks=[FDASchedule()])
    assert run.losses[-1] < 0.5 * run.losses[0], run.losses
    assert run.accuracy > 0.8, run.accuracy
    assert run.history["fda_n_terms"] == [10.0, 14.0, 19.0]
    np.testing.assert_allclose(run.history["fda_alpha"], [0.075, 0.025, 0.0], atol=1e-12)
    conv = run.model.get_layer("b1").conv
    assert float(conv.kernel_quantizer.alpha.numpy()) == 0.0
    assert float(conv.input_quantizer.n_terms.numpy()) == 19.0
    # the modules were trained (alpha > 0 in the first epochs)
    assert len(conv.input_quantizer.noise.trainable_weights) == 2
    loaded = assert_round_trip_exact(run.model, tmp_path)
    assert float(loaded.get_layer("b2").conv.input_quantizer.n_terms.numpy()) == 19.0
    _, _, ops = assert_converts_and_agrees(run.model, strict=True)
    assert ops.count("LceBconv2d") == 2
