"""RBONN (arXiv 2209.01542; docs/methods.md, section 'RBONN'): RBONNWeight ("rbonn_weight")
forward and gradients against numpy, the recurrent backtracking of the channels of lowest
|alpha| (by rank, not by the argsort permutation of the official code), the fixed-lambda
bilinear term, the previous gradient recorded in the backward pass (eagerly and in a
tf.function) and the inference form.

Every expected value is computed here with numpy from the formulas of docs/methods.md.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from kbnn import quantizers as q
from kbnn.layers import QuantDense
from kbnn.quantizers import RBONNWeight
from kbnn.quantizers.rbonn import backtrack_count, backtrack_indicator


def np_sign(x):
    return np.where(x >= 0, 1.0, -1.0)


def np_rank_indicator(scale, count):
    """1 for the `count` smallest entries of `scale` (ties in index order), by hand."""
    order = sorted(range(len(scale)), key=lambda i: (scale[i], i))
    chosen = set(order[:count])
    return np.array([1.0 if i in chosen else 0.0 for i in range(len(scale))])


# M = 3 weights per output channel, C = 5 output channels. With tau = 0.6 the module backtracks
# int(5 * 0.4) = 2 channels: those of smallest |alpha|, channels 1 (0.1) and 3 (|-0.2|).
W = np.array([[0.5, -0.2, 0.05, 1.5, -0.3],
              [-0.4, 0.3, -0.6, 0.2, 0.1],
              [0.9, -1.1, 0.25, -0.05, 0.7]], np.float32)
ALPHA = np.array([0.3, 0.1, 0.5, -0.2, 0.4], np.float32)
U = np.array([0.2, 0.5, 0.2, 1.5, 0.2], np.float32)
PREVIOUS_GRADIENT = np.array([[0.1, 0.6, -0.2, -0.4, 0.3],
                              [0.2, 0.1, 0.3, 0.5, -0.1],
                              [-0.3, -0.8, 0.1, 0.2, 0.2]], np.float32)
UPSTREAM = np.array([[0.3, -1.0, 0.2, 0.4, -0.5],
                     [0.7, 0.5, -0.4, -0.2, 0.6],
                     [-0.2, 0.9, 0.6, 0.1, 0.3]], np.float32)
LAM = 0.5  # large, so the bilinear term is visible in the gradients


def _quantizer(**kwargs):
    quantizer = RBONNWeight(**{"lam": LAM, **kwargs})
    quantizer.build(W.shape)
    quantizer.alpha.assign(ALPHA)
    if quantizer.alpha_ready is not None:  # alpha set: skip the mean|W| init
        quantizer.alpha_ready.assign(1.0)
    quantizer.u.assign(U)
    return quantizer


def _step(quantizer, w=W, upstream=UPSTREAM, training=True):
    w = tf.constant(w)
    with tf.GradientTape() as tape:
        tape.watch(w)
        out = quantizer(w, training=training)
        losses = list(quantizer.losses)
        total = tf.reduce_sum(out * upstream) + tf.add_n([tf.constant(0.0)] + losses)
    dw, dalpha, du = tape.gradient(total, [w, quantizer.alpha, quantizer.u])
    return out.numpy(), [float(v) for v in losses], dw.numpy(), dalpha.numpy(), du


def np_rbonn(w, alpha, u, g_prev, upstream, lam, tau=0.6, clip=None, alpha_gradient="sign"):
    """Forward, loss and gradients of RBONN by the formulas of docs/methods.md."""
    scale = np.abs(alpha)
    indicator = np_rank_indicator(scale, int(len(scale) * (1 - tau)))
    w_bt = w - u * g_prev * indicator
    b = np_sign(w_bt)
    out = scale * b
    residual = w_bt - scale * b
    loss = 0.5 * lam * (residual ** 2).sum()
    mask = np.ones_like(w) if clip is None else (np.abs(w_bt) <= clip)
    dw = scale * upstream * mask + lam * residual  # dW' = dW (W' = W - const)
    factor = b if alpha_gradient == "sign" else w_bt
    dalpha = np.sign(alpha) * ((upstream * factor).sum(0) - lam * (residual * b).sum(0))
    du = -(dw * g_prev * indicator).sum(0)
    return out, loss, dw, dalpha, du


def test_alias_and_registry():
    assert isinstance(q.get("rbonn_weight"), RBONNWeight)
    assert RBONNWeight.applies_to == "weights"


def test_backtrack_count_is_int_of_channels_times_one_minus_tau():
    assert backtrack_count(32, 0.6) == 12  # int(12.8)
    assert backtrack_count(10, 0.6) == 4
    assert backtrack_count(5, 0.6) == 2
    assert backtrack_count(64, 1.0) == 0
    assert backtrack_count(64, 0.0) == 64


def test_indicator_uses_each_channels_rank():
    scale = np.array([0.3, 0.1, 0.5, 0.2, 0.4], np.float32)
    np.testing.assert_array_equal(backtrack_indicator(scale, 2), [0, 1, 0, 1, 0])
    # the official code's quirk (compare the argsort permutation [1, 3, 0, 4, 2] with 2) would
    # pick channels 0 and 2, the wrong ones
    quirk = (np.argsort(scale, kind="stable") < 2).astype(float)
    assert not np.array_equal(quirk, [0, 1, 0, 1, 0])
    # ties: channel order
    np.testing.assert_array_equal(backtrack_indicator(np.float32([0.2, 0.2, 0.1]), 2), [1, 0, 1])
    rng = np.random.default_rng(0)
    for _ in range(5):
        s = rng.uniform(size=16).astype("float32")
        np.testing.assert_array_equal(backtrack_indicator(s, 6), np_rank_indicator(s, 6))


def test_inference_is_abs_alpha_times_sign_without_backtracking():
    quantizer = _quantizer()
    quantizer.previous_gradient.assign(PREVIOUS_GRADIENT)
    out, losses, dw, dalpha, _ = _step(quantizer, training=False)
    np.testing.assert_array_equal(out, np.abs(ALPHA) * np_sign(W))
    assert losses == []
    np.testing.assert_allclose(dw, np.abs(ALPHA) * UPSTREAM, rtol=1e-6)  # no mask by default
    np.testing.assert_allclose(dalpha, np.sign(ALPHA) * (UPSTREAM * np_sign(W)).sum(0),
                               rtol=1e-6, atol=1e-7)
    form = quantizer.binary_form(tf.constant(W))
    np.testing.assert_array_equal(form(W), out)
    np.testing.assert_array_equal(quantizer.previous_gradient.numpy(), PREVIOUS_GRADIENT)


def test_first_training_step_has_nothing_to_backtrack():
    quantizer = _quantizer()
    out, losses, dw, dalpha, du = _step(quantizer)
    e_out, e_loss, e_dw, e_dalpha, e_du = np_rbonn(W, ALPHA, U, np.zeros_like(W), UPSTREAM, LAM)
    np.testing.assert_array_equal(out, e_out)
    np.testing.assert_allclose(losses, [e_loss], rtol=1e-6)
    np.testing.assert_allclose(dw, e_dw, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(dalpha, e_dalpha, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(du, e_du, atol=1e-7)  # zero: g_prev = 0
    # the backward pass stored the gradient that reached W (task + bilinear term)
    np.testing.assert_allclose(quantizer.previous_gradient.numpy(), e_dw, rtol=1e-6, atol=1e-7)


def test_training_step_backtracks_the_low_scale_channels():
    quantizer = _quantizer()
    quantizer.previous_gradient.assign(PREVIOUS_GRADIENT)
    out, losses, dw, dalpha, du = _step(quantizer)
    e_out, e_loss, e_dw, e_dalpha, e_du = np_rbonn(W, ALPHA, U, PREVIOUS_GRADIENT, UPSTREAM, LAM)
    # channels 1 and 3 move: W' = W - u g_prev; channel 3 (u = 1.5) changes sign in row 1:
    # 1.5 - 1.5 * -0.4 = 2.1, 0.2 - 1.5 * 0.5 = -0.55 (flips), -0.05 - 1.5 * 0.2 = -0.35
    np.testing.assert_array_equal(e_out[:, 3], np.float32(0.2) * np.array([1, -1, -1]))
    np.testing.assert_allclose(out, e_out, rtol=1e-6)
    np.testing.assert_allclose(losses, [e_loss], rtol=1e-5)
    np.testing.assert_allclose(dw, e_dw, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(dalpha, e_dalpha, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(du.numpy(), e_du, rtol=1e-5, atol=1e-7)
    assert np.count_nonzero(e_du) == 2  # only the backtracked channels train u
    np.testing.assert_allclose(quantizer.previous_gradient.numpy(), e_dw, rtol=1e-5, atol=1e-7)


def test_code_options_and_tau():
    quantizer = _quantizer(clip_value=1.0, alpha_gradient="latent")
    quantizer.previous_gradient.assign(PREVIOUS_GRADIENT)
    _, _, dw, dalpha, _ = _step(quantizer)
    _, _, e_dw, e_dalpha, _ = np_rbonn(W, ALPHA, U, PREVIOUS_GRADIENT, UPSTREAM, LAM, clip=1.0,
                                       alpha_gradient="latent")
    np.testing.assert_allclose(dw, e_dw, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(dalpha, e_dalpha, rtol=1e-5, atol=1e-7)
    # tau = 1: nothing backtracked, the forward equals the inference form
    off = _quantizer(tau=1.0)
    off.previous_gradient.assign(PREVIOUS_GRADIENT)
    out, _, _, _, du = _step(off)
    np.testing.assert_array_equal(out, np.abs(ALPHA) * np_sign(W))
    np.testing.assert_array_equal(du.numpy(), np.zeros(5))


def test_previous_gradient_is_recorded_inside_a_tf_function():
    quantizer = _quantizer()
    w_var = tf.Variable(W)

    @tf.function
    def step(upstream):
        with tf.GradientTape() as tape:
            out = quantizer(w_var, training=True)
            total = tf.reduce_sum(out * upstream) + tf.add_n(quantizer.losses)
        return tape.gradient(total, [w_var, quantizer.alpha, quantizer.u])

    first = step(tf.constant(UPSTREAM))
    _, _, e_dw1, _, _ = np_rbonn(W, ALPHA, U, np.zeros_like(W), UPSTREAM, LAM)
    np.testing.assert_allclose(first[0].numpy(), e_dw1, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(quantizer.previous_gradient.numpy(), e_dw1, rtol=1e-5, atol=1e-7)
    second = step(tf.constant(UPSTREAM[::-1].copy()))
    _, _, e_dw2, e_dalpha2, e_du2 = np_rbonn(W, ALPHA, U, e_dw1, UPSTREAM[::-1], LAM)
    np.testing.assert_allclose(second[0].numpy(), e_dw2, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(second[1].numpy(), e_dalpha2, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(second[2].numpy(), e_du2, rtol=1e-5, atol=1e-6)


def test_rbonn_in_a_layer_under_fit():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((5,))
    layer = QuantDense(10, input_quantizer="ste_sign", kernel_quantizer="rbonn_weight",
                       use_bias=False)
    model = keras.Model(inputs, layer(inputs))
    model.compile(keras.optimizers.Adam(0.01), "mse")
    x = np.random.default_rng(0).normal(size=(32, 5)).astype("float32")
    y = np.random.default_rng(1).normal(size=(32, 10)).astype("float32")
    model.fit(x, y, batch_size=8, epochs=2, verbose=0)
    quantizer = layer.kernel_quantizer
    assert quantizer.backtracked_channels == 4
    assert np.abs(quantizer.previous_gradient.numpy()).max() > 0
    u = quantizer.u.numpy()
    moved = np.abs(u - 0.2) > 0
    assert 0 < moved.sum() <= 10  # u trains where channels were backtracked


@pytest.mark.parametrize("kwargs, argument", [
    ({"lam": -1e-4}, "lam"),
    ({"tau": 1.5}, "tau"),
    ({"tau": -0.1}, "tau"),
    ({"u_initializer": "no_such_initializer"}, "u_initializer"),
    ({"alpha_gradient": "w"}, "alpha_gradient"),
])
def test_argument_errors_name_the_argument(kwargs, argument):
    with pytest.raises(ValueError, match=f"`{argument}` of RBONNWeight"):
        RBONNWeight(**kwargs)
