"""ReCU (arXiv 2103.12369; docs/methods.md, section 'ReCU'): ReCUWeight ("recu_weight") and
ReCUSign ("recu_sign") forward and gradients against numpy (the chain rule through the
standardisation written out by hand), the rectified clamp bound Q(tau) and the tau schedule at
its start, middle and end, its `QuantizerSchedule` under `fit`, and the inference forms.

Every expected value is computed here with numpy from the formulas of docs/methods.md.
"""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from reference_values import approx_sign_grad_np, value_and_grads

from kbnn import quantizers as q
from kbnn.layers import QuantConv2D
from kbnn.quantizers import ReCUSign, ReCUWeight
from kbnn.quantizers.recu import recu_clamp_bound, recu_standardize
from kbnn.training import QuantizerSchedule, ReCUTauSchedule, recu_tau

C = 2.0 * math.sqrt(2.0)


def np_sign(x):
    return np.where(x >= 0, 1.0, -1.0)


def np_standardize(w, eps=1e-5):
    """(w - mean) * 2 sqrt(2) / sqrt(var + eps) per output channel, unbiased variance."""
    w = w.astype(np.float64)
    m = w.mean(axis=tuple(range(w.ndim - 1)))
    n = int(np.prod(w.shape[:-1]))
    d = w - m
    s = np.sqrt((d ** 2).sum(axis=tuple(range(w.ndim - 1))) / (n - 1) + eps)
    return C * d / s, m, d, s, n


def np_recu_weight_grad(w, alpha, upstream, tau, eps=1e-5):
    """dL/dW of L = sum(upstream * alpha * sign(clamp(w1, -Q, Q))): h = upstream * alpha *
    1[|w1| <= Q] at w1, then through w1 = c d / s with d = w - mean, s = sqrt(sum d^2/(n-1)+eps):
    dL/dw_k = c [(h_k - mean(h)) / s - d_k sum_j(h_j d_j) / (s^3 (n - 1))]."""
    w1, _, d, s, n = np_standardize(w, eps)
    q_bound = math.inf if tau == 1.0 else -np.abs(w1).mean() * np.log(2 - 2 * tau)
    h = upstream * alpha * (np.abs(w1) <= q_bound)
    axes = tuple(range(w.ndim - 1))
    return C * ((h - h.mean(axis=axes)) / s - d * (h * d).sum(axis=axes) / (s ** 3 * (n - 1)))


# Kernel (3, 3, 1, 2), channels laid out column by column; both have weights in the tails.
W = np.array([0.3, -0.2, 0.1, 0.05, -0.4, 0.25, -0.1, 0.15, 0.0,
              0.02, -0.03, 0.01, 0.04, -0.02, 0.03, 0.0, 0.01, 0.9],
             np.float32).reshape(2, 9).T.reshape(3, 3, 1, 2)
ALPHA = np.array([0.7, -0.4], np.float32)


def _quantizer(tau=0.85):
    quantizer = ReCUWeight(tau=tau)
    quantizer.build(W.shape)
    quantizer.alpha.assign(ALPHA)
    return quantizer


# --------------------------------------------------------------------------------- ReCUWeight


def test_aliases():
    assert isinstance(q.get("recu_weight"), ReCUWeight)
    assert isinstance(q.get("recu_sign"), ReCUSign)
    assert ReCUWeight.applies_to == "weights" and ReCUSign.applies_to == "activations"


def test_standardisation_matches_numpy():
    w1, mean = recu_standardize(W)
    e_w1, e_mean, _, _, _ = np_standardize(W)
    np.testing.assert_allclose(w1.numpy(), e_w1, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(mean.numpy(), e_mean, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("tau, q_over_b", [(0.85, 1.2040), (0.902856, 1.6384), (0.99, 3.9120)])
def test_clamp_bound_at_the_schedule_start_middle_and_end(tau, q_over_b):
    """Q(tau) / b = -ln(2 - 2 tau) (docs/methods.md, 'Reference values')."""
    w1 = tf.constant([[1.0, -3.0], [0.5, 2.5]])  # b = mean|w1| = 1.75 over the whole layer
    np.testing.assert_allclose(float(recu_clamp_bound(w1, tau)), 1.75 * q_over_b, rtol=1e-4)
    assert float(recu_clamp_bound(w1, 1.0)) == math.inf  # tau = 1: no clamp


def test_forward_and_binary_form():
    quantizer = _quantizer()
    expected = ALPHA * np_sign(W - W.mean(axis=(0, 1, 2)))
    out = quantizer(W, training=True).numpy()
    np.testing.assert_array_equal(out, expected.astype(np.float32))
    np.testing.assert_array_equal(quantizer(W, training=False).numpy(), out)
    form = quantizer.binary_form(tf.constant(W))
    np.testing.assert_allclose(form.threshold, W.mean(axis=(0, 1, 2)), rtol=1e-6)
    np.testing.assert_array_equal(form.scale, ALPHA)
    np.testing.assert_array_equal(form(W).numpy(), out)


@pytest.mark.parametrize("tau", [0.85, 0.902856, 0.99, 1.0])
def test_gradients_through_clamp_and_standardisation(tau, rng):
    quantizer = _quantizer(tau)
    upstream = rng.normal(size=W.shape).astype("float32")
    _, dw, (dalpha,) = value_and_grads(lambda w: quantizer(w, training=True), W,
                                        [quantizer.alpha], upstream)
    np.testing.assert_allclose(dw, np_recu_weight_grad(W, ALPHA, upstream, tau), rtol=1e-4,
                               atol=1e-5)
    w1 = np_standardize(W)[0]
    np.testing.assert_allclose(dalpha, (upstream * np_sign(w1)).sum(axis=(0, 1, 2)), rtol=1e-5)


def test_a_tail_weight_is_clamped_at_tau_085_but_not_at_099():
    """Channel 0's weight -0.4 standardises to w1 = -5.30, beyond Q(0.85) = 1.2040 b but inside
    Q(0.99) = 3.9120 b (b = 1.92, by numpy): the clamp's 1[|w1| <= Q] removes its gradient only
    at tau = 0.85."""
    w1 = np_standardize(W)[0]
    b = np.abs(w1).mean()
    tail = w1[1, 1, 0, 0]
    assert b * 1.2040 < abs(tail) < b * 3.9120
    upstream = np.zeros(W.shape, np.float32)
    upstream[1, 1, 0, 0] = 1.0
    grads = {}
    for tau in (0.85, 0.99):
        quantizer = _quantizer(tau)
        _, dw, _ = value_and_grads(lambda w, quantizer=quantizer: quantizer(w, training=True),
                                    W, [quantizer.alpha], upstream)
        grads[tau] = dw
        np.testing.assert_allclose(dw, np_recu_weight_grad(W, ALPHA, upstream, tau), rtol=1e-4,
                                   atol=1e-6)
    np.testing.assert_array_equal(grads[0.85], np.zeros(W.shape))  # h = 0 everywhere
    assert np.abs(grads[0.99][..., 0]).max() > 0.1
    np.testing.assert_array_equal(grads[0.99][..., 1], 0.0)  # the other channel


def test_tau_variable_changes_the_gradient_not_the_forward():
    quantizer = _quantizer(0.99)
    upstream = np.ones(W.shape, np.float32)
    y99, dw99, _ = value_and_grads(lambda w: quantizer(w), W, [quantizer.alpha], upstream)
    quantizer.tau.assign(0.85)
    y85, dw85, _ = value_and_grads(lambda w: quantizer(w), W, [quantizer.alpha], upstream)
    np.testing.assert_array_equal(y99, y85)
    assert not np.allclose(dw99, dw85)
    np.testing.assert_allclose(dw85, np_recu_weight_grad(W, ALPHA, upstream, 0.85), rtol=1e-4,
                               atol=1e-5)


def test_default_alpha_is_uniform_in_0_1():
    quantizer = ReCUWeight()
    quantizer.build((3, 3, 8, 64))
    alpha = quantizer.alpha.numpy()
    assert alpha.min() >= 0 and alpha.max() < 1 and alpha.std() > 0.1
    assert float(quantizer.tau.numpy()) == pytest.approx(0.85)


@pytest.mark.parametrize("kwargs, argument", [
    ({"tau": 0.5}, "tau"), ({"tau": 1.01}, "tau"), ({"tau": 0.3}, "tau"),
    ({"epsilon": 0.0}, "epsilon"), ({"alpha_initializer": "nope"}, "alpha_initializer")])
def test_weight_argument_errors(kwargs, argument):
    with pytest.raises(ValueError, match=f"`{argument}` of ReCUWeight"):
        ReCUWeight(**kwargs)


def test_weight_refuses_a_single_element_channel():
    with pytest.raises(ValueError, match="at least 2 elements per output channel"):
        ReCUWeight().build((1, 4))


# ----------------------------------------------------------------------------------- ReCUSign


def np_recu_sign_grad(x, upstream, eps=1e-5):
    """dL/dx of sum(upstream * sign(x / s)) with the surrogate F'(u), u = x / s, s =
    sqrt(var_unbiased + eps) per sample: h = upstream F'(u);
    dL/dx_k = h_k / s - (x_k - m) sum_j(h_j x_j) / (s^3 (n - 1))."""
    x = x.astype(np.float64)
    out = np.zeros_like(x)
    for i in range(x.shape[0]):
        xi = x[i]
        n = xi.size
        m = xi.mean()
        s = np.sqrt(((xi - m) ** 2).sum() / (n - 1) + eps)
        h = upstream[i] * approx_sign_grad_np(xi / s)
        out[i] = h / s - (xi - m) * (h * xi).sum() / (s ** 3 * (n - 1))
    return out


def test_recu_sign_forward_and_gradients(rng):
    x = rng.normal(0.3, 2.0, size=(2, 3, 3, 2)).astype("float32")
    upstream = rng.normal(size=x.shape).astype("float32")
    quantizer = ReCUSign()
    y, dx, _ = value_and_grads(lambda v: quantizer(v, training=True), x, [], upstream)
    np.testing.assert_array_equal(y, np_sign(x))
    np.testing.assert_allclose(dx, np_recu_sign_grad(x, upstream), rtol=1e-4, atol=1e-6)
    # inference: the sign reads x itself, gradient F'(x)
    y, dx, _ = value_and_grads(lambda v: quantizer(v, training=False), x, [], upstream)
    np.testing.assert_array_equal(y, np_sign(x))
    np.testing.assert_allclose(dx, upstream * approx_sign_grad_np(x), rtol=1e-6)
    assert quantizer.binary_form(x).threshold == 0.0


def test_recu_sign_argument_checks():
    with pytest.raises(ValueError, match="`epsilon` of ReCUSign"):
        ReCUSign(epsilon=-1.0)
    with pytest.raises(ValueError, match="at least 2 values per sample"):
        ReCUSign().build((4, 1))


# ------------------------------------------------------------------------------ tau schedule


def test_recu_tau_start_middle_end():
    """tau(e) = A e^(e/E) + B, A = (0.99 - 0.85) / (e - 1), B = 0.85 - A (docs/methods.md)."""
    a = 0.14 / (math.e - 1)
    assert recu_tau(0, 100) == pytest.approx(0.85, abs=1e-12)
    assert recu_tau(50, 100) == pytest.approx(0.902856, abs=1e-6)
    assert recu_tau(50, 100) == pytest.approx(a * math.exp(0.5) + 0.85 - a, abs=1e-12)
    assert recu_tau(100, 100) == pytest.approx(0.99, abs=1e-12)
    assert recu_tau(99, 100) < 0.99
    assert recu_tau(3, 4, 0.9, 0.9) == pytest.approx(0.9)


def test_schedule_sets_tau_in_fit_and_logs_it():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4, 4, 2))
    conv = QuantConv2D(3, 3, padding="same", input_quantizer="recu_sign",
                       kernel_quantizer="recu_weight", name="conv")
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(conv(inputs)))
    model.compile("adam", "mse")
    x = np.random.default_rng(0).normal(size=(8, 4, 4, 2)).astype("float32")
    y = np.zeros((8, 3), np.float32)
    history = model.fit(x, y, epochs=4, batch_size=4, verbose=0, callbacks=[ReCUTauSchedule()])
    a = 0.14 / (math.e - 1)
    expected = [a * math.exp(e / 4) + 0.85 - a for e in range(4)]
    np.testing.assert_allclose(history.history["recu_tau"], expected, rtol=1e-7)
    assert float(conv.kernel_quantizer.tau.numpy()) == pytest.approx(expected[-1], rel=1e-6)
    # with total_epochs given, a shorter fit follows the longer schedule
    short = ReCUTauSchedule(tau_min=0.9, tau_max=0.95, total_epochs=10)
    history = model.fit(x, y, epochs=2, batch_size=4, verbose=0, callbacks=[short])
    np.testing.assert_allclose(history.history["recu_tau"],
                               [recu_tau(e, 10, 0.9, 0.95) for e in range(2)], rtol=1e-7)
    assert isinstance(short, QuantizerSchedule)


def test_schedule_arguments():
    with pytest.raises(ValueError, match="`tau_min` of ReCUTauSchedule"):
        ReCUTauSchedule(tau_min=0.5)
    with pytest.raises(ValueError, match="`tau_max` of ReCUTauSchedule"):
        ReCUTauSchedule(tau_min=0.9, tau_max=0.8)
    with pytest.raises(ValueError, match="`total_epochs` of ReCUTauSchedule"):
        ReCUTauSchedule(total_epochs=0)
    config = ReCUTauSchedule(0.8, 0.95, 12).get_config()
    assert config == {"tau_min": 0.8, "tau_max": 0.95, "total_epochs": 12}
    assert ReCUTauSchedule.from_config(config).get_config() == config
