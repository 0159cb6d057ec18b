"""AdaBin quantizers (METHODS.md §3.1, §13): weight set, activation set and their gradients."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from reference_values import (
    W13,
    X,
    approx_sign_grad_np,
    ede_grad_np,
    value_and_grad,
    value_and_grads,
)

import kbnn
from kbnn.layers import QuantConv2D
from kbnn.quantizers import AdaBinActivation, AdaBinWeight


def test_adabin_weight_matches_methods_reference():
    q = AdaBinWeight()
    np.testing.assert_allclose(q(W13).numpy().ravel(), [0.447822, -0.697822, 0.447822, -0.697822],
                               atol=1e-6)
    form = q.binary_form(W13).numpy()
    np.testing.assert_allclose(form.threshold, [-0.125], rtol=1e-6)
    np.testing.assert_allclose(form.scale, [0.572822], rtol=1e-6)
    np.testing.assert_allclose(form.offset, [-0.125], rtol=1e-6)


@pytest.mark.parametrize("k,t", [(10.0, 0.1), (1.0, 2.0)])
def test_adabin_weight_gradient_through_normalisation(k, t, rng):
    w = rng.normal(size=(3, 3, 2, 3)).astype(np.float32) * 0.1 + 0.02
    upstream = rng.normal(size=w.shape).astype(np.float32)
    y, grad = value_and_grad(AdaBinWeight(k=k, t=t), w, upstream)
    grad = grad.reshape(-1, 3)
    y = y.reshape(-1, 3)
    for c in range(3):
        v = w.reshape(-1, 3)[:, c].astype(np.float64)
        g = upstream.reshape(-1, 3)[:, c].astype(np.float64)
        n = v.size
        beta = v.mean()
        alpha = np.sqrt(((v - beta) ** 2).mean())
        u = (v - beta) / alpha
        s = np.where(u >= 0, 1.0, -1.0)
        np.testing.assert_allclose(y[:, c], alpha * s + beta, rtol=1e-5)
        # W_b = alpha s(u) + beta with ds/du = h(u):
        # dalpha/dw_j = u_j / n, dbeta/dw_j = 1 / n, du_i/dw_j = (delta_ij - 1/n - u_i u_j / n) / alpha
        h = ede_grad_np(u, k, t)
        jac_u = (np.eye(n) - 1.0 / n - np.outer(u, u) / n) / alpha
        expected = (g * alpha * h) @ jac_u + np.sum(g * s) * u / n + np.sum(g) / n
        np.testing.assert_allclose(grad[:, c], expected, rtol=1e-4, atol=1e-6)


def test_adabin_weight_binary_form_is_exact(rng):
    w = rng.normal(size=(3, 3, 8, 16)).astype(np.float32) * 0.05 + 0.01
    q = AdaBinWeight()
    np.testing.assert_array_equal(q.binary_form(w)(w).numpy(), q(w).numpy())


def activation_with(alpha, beta, form="paper"):
    q = AdaBinActivation(alpha_initializer=keras.initializers.Constant(alpha),
                         beta_initializer=keras.initializers.Constant(beta), form=form)
    q.build((None, 9))
    return q


def _expected_activation(form, alpha, beta, s, u, fprime):
    """(output, d/dbeta, d/dalpha) per sample, by hand from METHODS.md §3.1:
    paper alpha*sign(u) + beta; official code alpha*(sign(u) + beta)."""
    if form == "paper":
        return alpha * s + beta, 1 - fprime, s - u * fprime
    return alpha * (s + beta), alpha - fprime, s + beta - u * fprime


@pytest.mark.parametrize("form", ["paper", "code"])
@pytest.mark.parametrize("alpha,beta", [(1.0, 0.0), (0.7, 0.2), (1.8, -0.4)])
def test_adabin_activation_values_and_gradients(alpha, beta, form, rng):
    q = activation_with(alpha, beta, form=form)
    x = np.concatenate([X, rng.uniform(-3, 3, size=23).astype(np.float32)])
    upstream = rng.normal(size=32).astype(np.float32)
    y, dx, (dalpha, dbeta) = value_and_grads(q, x, [q.alpha, q.beta], upstream)
    u = (x.astype(np.float64) - beta) / alpha
    s = np.where(u >= 0, 1.0, -1.0)
    fprime = approx_sign_grad_np(u)
    out, d_beta, d_alpha = _expected_activation(form, alpha, beta, s, u, fprime)
    np.testing.assert_allclose(y, out, rtol=1e-6)
    np.testing.assert_allclose(dx, upstream * fprime, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(dbeta, np.sum(upstream * d_beta), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(dalpha, np.sum(upstream * d_alpha), rtol=1e-4, atol=1e-5)
    # inference form: threshold beta, scale alpha, offset beta (paper) or alpha*beta (code)
    binary = q.binary_form(x).numpy()
    offset = beta if form == "paper" else alpha * beta
    assert (float(binary.threshold), float(binary.scale), float(binary.offset)) == pytest.approx(
        (beta, alpha, offset))
    np.testing.assert_array_equal(q.binary_form(x)(x).numpy(), y)


def test_adabin_activation_form_is_checked():
    with pytest.raises(ValueError, match="`form` of AdaBinActivation"):
        AdaBinActivation(form="pytorch")


def test_adabin_activation_defaults_and_binary_form(rng):
    q = AdaBinActivation()
    x = rng.normal(size=(2, 4, 4, 3)).astype(np.float32)
    np.testing.assert_array_equal(q(x).numpy(), np.where(x >= 0, 1.0, -1.0))  # alpha 1, beta 0
    q.alpha.assign(0.6)
    q.beta.assign(0.3)
    form = q.binary_form(x).numpy()
    assert (float(form.threshold), float(form.offset)) == pytest.approx((0.3, 0.3))
    assert float(form.scale) == pytest.approx(0.6)
    y = q(x).numpy()
    np.testing.assert_array_equal(q.binary_form(x)(x).numpy(), y)
    np.testing.assert_allclose(np.unique(y), [-0.3, 0.9], rtol=1e-6)


def test_adabin_activation_alpha_stays_positive():
    q = activation_with(0.01, 0.0)
    optimizer = keras.optimizers.SGD(learning_rate=1.0)
    optimizer.apply_gradients([(tf.constant(5.0), q.alpha)])  # would take alpha to -4.99
    assert float(q.alpha.numpy()) == pytest.approx(1e-3)
    with pytest.raises(ValueError, match="min_alpha"):
        AdaBinActivation(min_alpha=0.0)


def test_aliases_and_keras_round_trip(tmp_path, rng):
    assert isinstance(kbnn.quantizers.get("adabin_weight"), AdaBinWeight)
    assert isinstance(kbnn.quantizers.get("adabin_activation"), AdaBinActivation)
    inputs = keras.Input((5, 5, 3))
    conv = QuantConv2D(4, 3, input_quantizer=AdaBinActivation(min_alpha=0.01),
                       kernel_quantizer=AdaBinWeight(k=2.0, t=0.5))
    model = keras.Model(inputs, conv(inputs))
    conv.input_quantizer.alpha.assign(0.8)
    conv.input_quantizer.beta.assign(-0.1)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras").layers[-1]
    assert float(loaded.input_quantizer.alpha) == pytest.approx(0.8)
    assert loaded.input_quantizer.min_alpha == 0.01
    assert loaded.kernel_quantizer.get_config()["t"] == 0.5
    x = rng.normal(size=(2, 5, 5, 3)).astype(np.float32)
    np.testing.assert_array_equal(loaded(x).numpy(), conv(x).numpy())
