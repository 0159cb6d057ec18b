"""IR-Net quantizers LibraSign and EDESign (METHODS.md §6, §13)."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from reference_values import EDE_GRAD_MIDDLE, W13, X, ede_grad_np, value_and_grad

import kbnn
from kbnn.layers import QuantConv2D
from kbnn.quantizers import EDESign, LibraSign
from kbnn.quantizers.irnet import libra_standardize


def standardise_np(w, ddof):
    """(w_hat, mean, std, Jacobian d w_hat_i / d w_j) of one channel w (shape (n,)), float64.

    w_hat = (w - m) / s, s = sqrt(sum((w - m)^2) / (n - ddof)):
    d w_hat_i / d w_j = (delta_ij - 1/n - w_hat_i w_hat_j / (n - ddof)) / s.
    """
    w = w.astype(np.float64)
    n = w.size
    m = w.mean()
    s = np.sqrt(((w - m) ** 2).sum() / (n - ddof))
    w_hat = (w - m) / s
    jac = (np.eye(n) - 1.0 / n - np.outer(w_hat, w_hat) / (n - ddof)) / s
    return w_hat, m, s, jac


def test_standardise_reference_jacobian_matches_finite_differences(rng):
    w = rng.normal(size=7)
    _, _, _, jac = standardise_np(w, ddof=1)
    h = 1e-6
    numeric = np.stack([(standardise_np(w + h * e, 1)[0] - standardise_np(w - h * e, 1)[0]) / (2 * h)
                        for e in np.eye(7)], axis=1)
    np.testing.assert_allclose(jac, numeric, rtol=1e-5, atol=1e-8)


def test_libra_sign_matches_methods_reference():
    q = LibraSign()
    y = q(W13).numpy().ravel()
    w_hat, _, scale = libra_standardize(W13)
    np.testing.assert_allclose(w_hat.numpy().ravel(), [0.9449, -1.3229, 0.5669, -0.1890], atol=1e-4)
    np.testing.assert_array_equal(scale.numpy(), [1.0])
    np.testing.assert_array_equal(y, [1, -1, 1, -1])  # s = 2^round(log2(0.7559)) = 1
    form = q.binary_form(W13).numpy()
    np.testing.assert_allclose(form.threshold, [-0.125], rtol=1e-6)
    np.testing.assert_array_equal(form.scale, [1.0])
    assert float(form.offset) == 0.0


def test_libra_sign_power_of_two_scale():
    # one spike among 64: mean 0.125, unbiased std exactly 1, w_hat = [7.875, -0.125 x 63],
    # mean|w_hat| = 15.75 / 64 = 0.2461 -> 2^round(-2.02) = 0.25
    w = np.zeros((64, 1), np.float32)
    w[5] = 8.0
    y = LibraSign()(w).numpy().ravel()
    expected = np.full(64, -0.25)
    expected[5] = 0.25
    np.testing.assert_allclose(y, expected, rtol=1e-6)
    np.testing.assert_allclose(LibraSign().binary_form(w).scale, [0.25], rtol=1e-6)


@pytest.mark.parametrize("k,t", [(10.0, 0.1), (1.0, 3.0)])
def test_libra_sign_gradient_through_standardisation(k, t, rng):
    w = rng.normal(size=(3, 3, 2, 3)).astype(np.float32)
    upstream = rng.normal(size=w.shape).astype(np.float32)
    y, grad = value_and_grad(LibraSign(k=k, t=t), w, upstream)
    grad = grad.reshape(-1, 3)
    y = y.reshape(-1, 3)
    for c in range(3):
        w_hat, _, _, jac = standardise_np(w.reshape(-1, 3)[:, c], ddof=1)
        scale = 2.0 ** np.round(np.log2(np.abs(w_hat).mean()))  # detached
        np.testing.assert_allclose(y[:, c], scale * np.where(w_hat >= 0, 1, -1), rtol=1e-6)
        g = upstream.reshape(-1, 3)[:, c] * scale * ede_grad_np(w_hat, k, t)
        np.testing.assert_allclose(grad[:, c], g @ jac, rtol=1e-4, atol=1e-6)


def test_libra_sign_binary_form_is_exact(rng):
    w = rng.normal(size=(3, 3, 8, 16)).astype(np.float32) * 0.05 + 0.01
    q = LibraSign()
    np.testing.assert_array_equal(q.binary_form(w)(w).numpy(), q(w).numpy())


def test_ede_sign_forward_and_gradient(rng):
    q = EDESign(k=2.0, t=1.5)
    upstream = rng.normal(size=9).astype(np.float32)
    y, g = value_and_grad(q, X, upstream)
    np.testing.assert_array_equal(y, [-1, -1, -1, -1, 1, 1, 1, 1, 1])
    np.testing.assert_allclose(g, upstream * ede_grad_np(X, 2.0, 1.5), rtol=1e-5, atol=1e-7)
    assert q.binary_form(X).threshold == 0.0
    assert not q.t.trainable and not q.k.trainable
    assert q.trainable_weights == []


def test_ede_sign_reads_assigned_t_and_k():
    q = EDESign()
    q.build((9,))
    q.set_ede(t=1.0, k=1.0)
    _, g = value_and_grad(q, X)
    np.testing.assert_allclose(g, EDE_GRAD_MIDDLE, atol=1e-4)  # 1 - tanh^2(x)


@pytest.mark.parametrize("cls,kwargs,arg", [(EDESign, {"k": 0.0}, "k"), (EDESign, {"t": -1.0}, "t"),
                                            (LibraSign, {"t": 0.0}, "t")])
def test_bad_arguments(cls, kwargs, arg):
    with pytest.raises(ValueError, match=f"`{arg}` of {cls.__name__}"):
        cls(**kwargs)


def test_libra_sign_needs_two_elements_per_channel():
    with pytest.raises(ValueError, match="LibraSign"):
        LibraSign().build((1, 1, 1, 4))


def test_aliases_and_round_trip_keep_t_and_k(tmp_path, rng):
    assert isinstance(kbnn.quantizers.get("ede_sign"), EDESign)
    assert isinstance(kbnn.quantizers.get("libra_weight"), LibraSign)
    inputs = keras.Input((5, 5, 3))
    conv = QuantConv2D(4, 3, input_quantizer="ede_sign", kernel_quantizer=LibraSign(k=5.0, t=0.2))
    model = keras.Model(inputs, conv(inputs))
    conv.input_quantizer.set_ede(t=3.0, k=1.0)
    conv.kernel_quantizer.set_ede(t=0.5, k=2.0)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras").layers[-1]
    assert (float(loaded.input_quantizer.t), float(loaded.input_quantizer.k)) == (3.0, 1.0)
    assert (float(loaded.kernel_quantizer.t), float(loaded.kernel_quantizer.k)) == (0.5, 2.0)
    assert loaded.kernel_quantizer.get_config()["k"] == 5.0
    x = rng.normal(size=(2, 5, 5, 3)).astype(np.float32)
    np.testing.assert_array_equal(loaded(x).numpy(), conv(x).numpy())


def test_assigned_t_and_k_take_effect_inside_a_traced_function():
    """fit traces the train step once; the EDE gradient must read t and k at every call."""
    q = EDESign()
    q.build((9,))

    @tf.function
    def grad(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(q(x))
        return tape.gradient(loss, x)

    x = tf.constant(X)
    np.testing.assert_allclose(grad(x).numpy(), ede_grad_np(X, 10.0, 0.1), rtol=1e-5)
    q.set_ede(t=10.0, k=1.0)
    np.testing.assert_allclose(grad(x).numpy(), ede_grad_np(X, 1.0, 10.0), rtol=1e-4, atol=1e-6)
    assert grad.experimental_get_tracing_count() == 1
