"""ReBNN (arXiv 2302.00956; docs/methods.md, section 'ReBNN'): ReBNNWeight ("rebnn_weight")
forward and gradients against numpy, the weighted reconstruction loss with the balanced
parameter gamma from the oscillation ratio (the paper's rule, step by step, eagerly and inside
a tf.function), the official code's options, and `kbnn.metrics.OscillationRatio` against signs
recorded independently during `fit`.

Every expected value is computed here with numpy from the formulas of docs/methods.md.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf
from methods2_helpers import fit_binary_dense
from reference_values import quantizer_step, traced_training_step

from kbnn import quantizers as q
from kbnn.layers import QuantDense
from kbnn.metrics import OscillationRatio
from kbnn.quantizers import BinaryForm, ReBNNWeight
from kbnn.quantizers.rebnn import learned_scale_sign, oscillation_ratio, reconstruction_loss


def np_sign(x):
    return np.where(x >= 0, 1.0, -1.0)


# A kernel of M = 4 weights per output channel and 3 output channels; |W| > 1 somewhere so the
# 1[|W| <= 1] mask matters. alpha has a negative entry (the forward uses |alpha|).
W = np.array([[0.5, -1.2, 0.0],
              [-0.25, 0.3, 2.0],
              [1.0, -0.7, -0.05],
              [-1.5, 0.1, 0.4]], np.float32)
ALPHA = np.array([0.5, -2.0, 1.25], np.float32)
UPSTREAM = np.array([[0.3, -1.0, 0.2],
                     [0.7, 0.5, -0.4],
                     [-0.2, 0.9, 0.6],
                     [1.1, -0.3, 0.8]], np.float32)


def _quantizer(**kwargs):
    quantizer = ReBNNWeight(**kwargs)
    quantizer.build(W.shape)
    quantizer.alpha.assign(ALPHA)
    if quantizer.alpha_ready is not None:  # alpha set: skip the mean|W| init
        quantizer.alpha_ready.assign(1.0)
    return quantizer


def _step(quantizer, w, upstream=UPSTREAM, training=True):
    """One forward/backward: the output, the reconstruction losses and the gradients of
    sum(upstream * output) + sum(losses) with respect to w and alpha."""
    out, losses, dw, (dalpha,) = quantizer_step(quantizer, w, upstream, [quantizer.alpha],
                                                training)
    return out, losses, dw, dalpha.numpy()


def np_rebnn_gradients(w, alpha, upstream, gamma, clip=1.0, alpha_gradient="sign"):
    """dW and dalpha of the paper's objective (docs/methods.md, 'ReBNN')."""
    b = np_sign(w)
    scale = np.abs(alpha)
    mask = np.ones_like(w) if clip is None else (np.abs(w) <= clip).astype(np.float64)
    residual = w - scale * b
    dw = scale * upstream * mask + gamma * residual
    factor = b if alpha_gradient == "sign" else w
    dalpha = np.sign(alpha) * ((upstream * factor).sum(0) - gamma * (residual * b).sum(0))
    return dw, dalpha


# ------------------------------------------------------------------------- forward, inference


def test_alias_and_registry():
    assert isinstance(q.get("rebnn_weight"), ReBNNWeight)
    assert ReBNNWeight.applies_to == "weights"
    assert ReBNNWeight().precision == 1


def test_forward_is_abs_alpha_times_sign_and_binary_form_matches():
    quantizer = _quantizer()
    expected = np.abs(ALPHA) * np_sign(W)  # sign(0) = +1
    out, losses, _, _ = _step(quantizer, W, training=False)
    np.testing.assert_allclose(out, expected, rtol=0, atol=0)
    assert losses == []  # inference adds no loss
    form = quantizer.binary_form(tf.constant(W))
    np.testing.assert_array_equal(form.scale, np.abs(ALPHA))
    np.testing.assert_array_equal(BinaryForm(scale=np.abs(ALPHA))(W), expected)


def test_inference_gradients_paper_defaults():
    """dW = |alpha| g 1[|W| <= 1]; dalpha = sign(alpha) sum g sign(W) (no gamma term)."""
    _, _, dw, dalpha = _step(_quantizer(), W, training=False)
    expected_dw, expected_dalpha = np_rebnn_gradients(W, ALPHA, UPSTREAM, gamma=0.0)
    np.testing.assert_allclose(dw, expected_dw, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(dalpha, expected_dalpha, rtol=1e-6, atol=1e-7)
    # by hand for channel 0: |alpha| = 0.5, W[:, 0] = [0.5, -0.25, 1, -1.5] -> mask [1, 1, 1, 0]
    np.testing.assert_allclose(dw[:, 0], [0.15, 0.35, -0.1, 0.0], rtol=1e-6)
    # sign(alpha_0) * (0.3*1 + 0.7*(-1) + (-0.2)*1 + 1.1*(-1)) = -1.7
    np.testing.assert_allclose(dalpha[0], -1.7, rtol=1e-6)


def test_official_code_options():
    """clip_value=None (no mask) and alpha_gradient="latent" (sum g * W for alpha)."""
    quantizer = _quantizer(clip_value=None, alpha_gradient="latent")
    _, _, dw, dalpha = _step(quantizer, W, training=False)
    expected_dw, expected_dalpha = np_rebnn_gradients(W, ALPHA, UPSTREAM, gamma=0.0, clip=None,
                                                      alpha_gradient="latent")
    np.testing.assert_allclose(dw, expected_dw, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(dalpha, expected_dalpha, rtol=1e-6, atol=1e-7)
    # channel 0 by hand: 0.3*0.5 + 0.7*(-0.25) - 0.2*1 + 1.1*(-1.5) = -1.875
    np.testing.assert_allclose(dalpha[0], -1.875, rtol=1e-6)


def test_learned_scale_sign_function_clip_value():
    scale = np.abs(ALPHA)
    _, dw_half = _grad_fn(lambda w: learned_scale_sign(w, scale, clip_value=0.5))
    np.testing.assert_allclose(dw_half, scale * UPSTREAM * (np.abs(W) <= 0.5), rtol=1e-6)


def _grad_fn(fn):
    w = tf.constant(W)
    with tf.GradientTape() as tape:
        tape.watch(w)
        out = fn(w)
        total = tf.reduce_sum(out * UPSTREAM)
    return out.numpy(), tape.gradient(total, w).numpy()


# ------------------------------------------------------------- reconstruction loss and gamma


def test_reconstruction_loss_and_oscillation_ratio_functions():
    gamma = np.array([0.1, 0.0, 2.0], np.float32)
    scale = np.abs(ALPHA)
    expected = 0.5 * (gamma * ((W - scale * np_sign(W)) ** 2).sum(0)).sum()
    np.testing.assert_allclose(float(reconstruction_loss(W, scale, gamma)), expected, rtol=1e-6)
    previous = np.array([[1, 1, 0], [1, -1, 0], [-1, -1, 0], [-1, 1, 0]], np.float32)
    current = np_sign(W)  # columns: [1,-1,1,-1], [-1,1,-1,1], [1,1,-1,1]
    # flips: channel 0 at rows 1 and 2 -> 2/4; channel 1 at rows 0 and 1 -> 2/4; channel 2 has
    # no previous sign (0) -> 0
    np.testing.assert_allclose(oscillation_ratio(previous, current), [0.5, 0.5, 0.0])


def test_gamma_follows_the_oscillation_rule_step_by_step():
    """The paper's eq. 3.150: gamma^(t+1) = (flips between steps t and t+1) / M * max|dL/dW_q^t|,
    then dW and dalpha gain gamma's terms (eqs. 3.144, 3.151-3.152)."""
    quantizer = _quantizer()
    # step 1: no previous sign -> no oscillation, gamma = 0, the loss is 0
    _, losses, dw, dalpha = _step(quantizer, W)
    assert losses == [0.0]
    np.testing.assert_array_equal(quantizer.gamma.numpy(), [0, 0, 0])
    expected_dw, expected_dalpha = np_rebnn_gradients(W, ALPHA, UPSTREAM, gamma=0.0)
    np.testing.assert_allclose(dw, expected_dw, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(dalpha, expected_dalpha, rtol=1e-6, atol=1e-7)
    # the backward pass stored max_j |dL/dW_q| per channel
    np.testing.assert_allclose(quantizer.max_grad.numpy(), [1.1, 1.0, 0.8], rtol=1e-6)
    np.testing.assert_array_equal(quantizer.previous_sign.numpy(), np_sign(W))

    # step 2: flip the sign of two weights of channel 0 and one of channel 2
    w2 = W.copy()
    w2[0, 0], w2[3, 0], w2[2, 2] = -0.1, 0.2, 0.3
    upstream2 = UPSTREAM[::-1].copy()
    _, losses, dw, dalpha = _step(quantizer, w2, upstream2)
    osc = np.array([2 / 4, 0.0, 1 / 4])
    gamma = osc * np.array([1.1, 1.0, 0.8])  # [0.55, 0, 0.2]
    np.testing.assert_allclose(quantizer.oscillation.numpy(), osc, rtol=1e-6)
    np.testing.assert_allclose(quantizer.gamma.numpy(), gamma, rtol=1e-6)
    scale = np.abs(ALPHA)
    expected_loss = 0.5 * (gamma * ((w2 - scale * np_sign(w2)) ** 2).sum(0)).sum()
    np.testing.assert_allclose(losses, [expected_loss], rtol=1e-6)
    expected_dw, expected_dalpha = np_rebnn_gradients(w2, ALPHA, upstream2, gamma=gamma)
    np.testing.assert_allclose(dw, expected_dw, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(dalpha, expected_dalpha, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(quantizer.max_grad.numpy(), np.abs(upstream2).max(0), rtol=1e-6)

    # an inference call changes none of the state
    state = [v.numpy().copy() for v in (quantizer.gamma, quantizer.previous_sign,
                                        quantizer.max_grad, quantizer.oscillation)]
    _step(quantizer, -w2, training=False)
    for before, v in zip(state, (quantizer.gamma, quantizer.previous_sign, quantizer.max_grad,
                                 quantizer.oscillation)):
        np.testing.assert_array_equal(v.numpy(), before)


def test_state_updates_inside_a_tf_function():
    """The same two steps traced into one tf.function (as `fit` runs them): the forward's
    assignments and the gradient recorded in the backward pass both happen."""
    quantizer = _quantizer()
    w_var = tf.Variable(W)

    step = traced_training_step(quantizer, w_var, [quantizer.alpha])

    step(tf.constant(UPSTREAM))
    np.testing.assert_allclose(quantizer.max_grad.numpy(), [1.1, 1.0, 0.8], rtol=1e-6)
    w2 = W.copy()
    w2[0, 0], w2[3, 0], w2[2, 2] = -0.1, 0.2, 0.3
    w_var.assign(w2)
    upstream2 = UPSTREAM[::-1].copy()
    dw, dalpha = step(tf.constant(upstream2))
    gamma = np.array([0.55, 0.0, 0.2])
    np.testing.assert_allclose(quantizer.gamma.numpy(), gamma, rtol=1e-6)
    expected_dw, expected_dalpha = np_rebnn_gradients(w2, ALPHA, upstream2, gamma=gamma)
    np.testing.assert_allclose(dw.numpy(), expected_dw, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(dalpha.numpy(), expected_dalpha, rtol=1e-5, atol=1e-7)


def test_constant_gamma_and_gamma_range():
    """gamma=2e-4 (the official code's effective constant) from the first step;
    gamma_range=(1e-5, 2e-4) clamps the rule (the clamp the code meant)."""
    quantizer = _quantizer(gamma=2e-4)
    _, losses, dw, _ = _step(quantizer, W)
    np.testing.assert_allclose(quantizer.gamma.numpy(), [2e-4] * 3, rtol=1e-6)
    scale = np.abs(ALPHA)
    expected = 0.5 * 2e-4 * ((W - scale * np_sign(W)) ** 2).sum()
    np.testing.assert_allclose(losses, [expected], rtol=1e-5)
    np.testing.assert_allclose(dw, np_rebnn_gradients(W, ALPHA, UPSTREAM, 2e-4)[0], rtol=1e-5)

    clamped = _quantizer(gamma_range=(1e-5, 2e-4))
    _step(clamped, W)  # no oscillation yet: the rule gives 0, clamped up to 1e-5
    np.testing.assert_allclose(clamped.gamma.numpy(), [1e-5] * 3, rtol=1e-6)
    w2 = W.copy()
    w2[0, 0], w2[3, 0] = -0.1, 0.2
    _step(clamped, w2)  # channel 0: 0.5 * 1.1 = 0.55 -> 2e-4
    np.testing.assert_allclose(clamped.gamma.numpy(), [2e-4, 1e-5, 1e-5], rtol=1e-6)


def test_rebnn_in_a_layer_under_fit_records_its_state():
    model, layer, x = fit_binary_dense(4, "rebnn_weight", keras.optimizers.SGD(0.5))
    quantizer = layer.kernel_quantizer
    assert np.all(quantizer.max_grad.numpy() > 0)
    np.testing.assert_array_equal(quantizer.previous_sign.numpy(),
                                  np_sign(quantizer.previous_sign.numpy()))
    assert np.all((quantizer.oscillation.numpy() >= 0) & (quantizer.oscillation.numpy() <= 1))
    model(x, training=True)
    assert len(model.losses) == 1


@pytest.mark.parametrize("kwargs, argument", [
    ({"gamma": "constant"}, "gamma"),
    ({"gamma": -1.0}, "gamma"),
    ({"gamma_range": (2e-4, 1e-5)}, "gamma_range"),
    ({"gamma_range": 3}, "gamma_range"),
    ({"alpha_gradient": "weights"}, "alpha_gradient"),
    ({"clip_value": 0.0}, "clip_value"),
    ({"alpha_initializer": "no_such_initializer"}, "alpha_initializer"),
])
def test_argument_errors_name_the_argument(kwargs, argument):
    with pytest.raises(ValueError, match=f"`{argument}` of ReBNNWeight"):
        ReBNNWeight(**kwargs)


def test_build_refuses_a_vector():
    with pytest.raises(ValueError, match="ReBNNWeight quantizes kernels"):
        ReBNNWeight().build((5,))


# --------------------------------------------------------------------------- OscillationRatio


class _SignRecorder(keras.callbacks.Callback):
    """Records the kernel's signs at the start of fit and after every step (independently of
    OscillationRatio)."""

    def __init__(self, variable):
        super().__init__()
        self.variable = variable
        self.signs = []

    def on_train_begin(self, logs=None):
        self.signs.append(np_sign(self.variable.numpy()))

    def on_train_batch_end(self, batch, logs=None):
        self.signs.append(np_sign(self.variable.numpy()))


def _oscillating_model():
    keras.utils.set_random_seed(2)
    inputs = keras.Input((6,))
    dense_a = QuantDense(5, input_quantizer="ste_sign", kernel_quantizer="ste_sign", name="a")
    dense_b = QuantDense(3, input_quantizer="ste_sign", kernel_quantizer="rebnn_weight",
                         name="b")
    model = keras.Model(inputs, dense_b(dense_a(inputs)))
    model.compile(keras.optimizers.SGD(2.0), "mse")  # a large rate: many flips
    return model, dense_a, dense_b


@pytest.mark.parametrize("reduction", ["last", "mean"])
def test_oscillation_ratio_per_layer_matches_recorded_signs(reduction):
    model, dense_a, dense_b = _oscillating_model()
    x = np.random.default_rng(0).normal(size=(12, 6)).astype("float32")
    y = np.random.default_rng(1).normal(size=(12, 3)).astype("float32")
    recorders = [_SignRecorder(dense_a.kernel), _SignRecorder(dense_b.kernel)]
    callback = OscillationRatio(reduction=reduction)
    history = model.fit(x, y, batch_size=4, epochs=2, verbose=0,
                        callbacks=[callback, *recorders])
    for key, recorder in zip(["a", "b"], recorders):
        signs = np.array(recorder.signs)  # 1 + 6 steps
        per_step = (signs[1:] != signs[:-1]).mean(axis=(1, 2))  # 3 steps per epoch
        if reduction == "last":
            expected = per_step[[2, 5]]
        else:
            expected = [per_step[:3].mean(), per_step[3:].mean()]
        np.testing.assert_allclose(history.history[f"oscillation_ratio/{key}"], expected,
                                   rtol=1e-6)
        assert callback.current_values[key] == pytest.approx(per_step[-1])
    assert per_step.max() > 0  # the run does oscillate


def test_oscillation_ratio_names_layers_with_several_binary_weights():
    from kbnn.layers import QuantSeparableConv2D

    inputs = keras.Input((6, 6, 2))
    layer = QuantSeparableConv2D(3, 3, input_quantizer="ste_sign",
                                 depthwise_quantizer="ste_sign",
                                 pointwise_quantizer="ste_sign", name="sep")
    model = keras.Model(inputs, layer(inputs))
    keys = [key for key, _ in OscillationRatio.tracked_weights(model)]
    assert keys == ["sep/depthwise_quantizer", "sep/pointwise_quantizer"]


def test_oscillation_ratio_warns_without_binary_weights_and_checks_arguments():
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    model.compile("sgd", "mse")
    with pytest.warns(UserWarning, match="no binary weights"):
        model.fit(np.zeros((2, 3)), np.zeros((2, 2)), verbose=0, callbacks=[OscillationRatio()])
    with pytest.raises(ValueError, match="`reduction` of OscillationRatio"):
        OscillationRatio(reduction="max")
    with pytest.raises(ValueError, match="`log_prefix` of OscillationRatio"):
        OscillationRatio(log_prefix=None)
    config = OscillationRatio(reduction="mean", log_prefix="osc_").get_config()
    assert OscillationRatio.from_config(config).get_config() == config


# ------------------------------------------------------------------------------ alpha's init


def test_alpha_starts_from_mean_abs_at_the_first_training_step():
    quantizer = ReBNNWeight()
    quantizer.build(W.shape)
    np.testing.assert_array_equal(quantizer.alpha.numpy(), np.ones(3))  # until trained
    np.testing.assert_array_equal(quantizer(W, training=False).numpy(), np_sign(W))
    mean_abs = np.abs(W).mean(axis=0)  # [0.8125, 0.575, 0.6125]
    np.testing.assert_allclose(mean_abs, [0.8125, 0.575, 0.6125])
    out, _, dw, dalpha = _step(quantizer, W)
    np.testing.assert_allclose(quantizer.alpha.numpy(), mean_abs, rtol=1e-6)
    np.testing.assert_allclose(out, mean_abs * np_sign(W), rtol=1e-6)
    e_dw, e_dalpha = np_rebnn_gradients(W, mean_abs, UPSTREAM, gamma=0.0)
    np.testing.assert_allclose(dw, e_dw, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(dalpha, e_dalpha, rtol=1e-6, atol=1e-7)
    # later steps keep the (trained) alpha
    quantizer.alpha.assign(ALPHA)
    out, _, _, _ = _step(quantizer, 2 * W)
    np.testing.assert_allclose(out, np.abs(ALPHA) * np_sign(W), rtol=1e-6)
    assert quantizer.get_config()["alpha_initializer"] == "mean_abs"


def test_alpha_initializer_argument():
    quantizer = ReBNNWeight(alpha_initializer=keras.initializers.Constant(0.3))
    quantizer.build(W.shape)
    assert quantizer.alpha_ready is None
    _step(quantizer, W)
    np.testing.assert_allclose(quantizer.alpha.numpy(), [0.3] * 3)  # no mean|W| init
    config = quantizer.get_config()
    assert ReBNNWeight.from_config(config).get_config() == config
