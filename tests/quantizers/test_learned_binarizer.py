"""Binarizing by classification (He et al., arXiv 2205.07433; docs/methods.md, section
'Binarizing by classification'): LearnedBinarizer's forward (the centred scaled sign), the
gradients that the small network learns (to the weights and to its own weights, by a
hand-written numpy backward pass), the linear variant, and the digits contract."""

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
from kbnn.optimizers import CaseOptimizer
from kbnn.quantizers import LearnedBinarizer, get, is_learned_binarizer_variable


@pytest.mark.parametrize("row, center, expected", [
    # [0.5, -1, 0.25, -0.25]: mean -0.125, w_c = [0.625, -0.875, 0.375, -0.125], mean|w_c| = 0.5
    ([0.5, -1.0, 0.25, -0.25], True, [0.5, -0.5, 0.5, -0.5]),
    # [2, -0.1, 0.1, 0.3]: mean 0.575, w_c = [1.425, -0.675, -0.475, -0.275], mean|w_c| = 0.7125
    ([2.0, -0.1, 0.1, 0.3], True, [0.7125, -0.7125, -0.7125, -0.7125]),
    # without centring: mean|w| = 0.625 and the plain signs
    ([2.0, -0.1, 0.1, 0.3], False, [0.625, -0.625, 0.625, 0.625]),
])
def test_forward_is_the_centred_scaled_sign(row, center, expected):
    q = LearnedBinarizer(center=center)
    kernel = np.array(row, np.float32).reshape(4, 1)
    q.build(kernel.shape)
    for training in (True, False):
        np.testing.assert_allclose(q(kernel, training=training).numpy().ravel(), expected,
                                   rtol=1e-6)
    form = q.binary_form(tf.constant(kernel)).numpy()
    mean = float(np.mean(row)) if center else 0.0
    assert float(np.asarray(form.threshold)) == pytest.approx(mean)
    assert float(np.asarray(form.scale)) == pytest.approx(expected[0])


def _np_mlp_backward(w, upstream, w1, w2, gate):
    """The official backward pass written out in numpy for a kernel w (..., C_out): returns
    dL/dw, dL/dW1, dL/dW2 for L = sum(upstream * alpha sign(w_c))."""
    axes = tuple(range(w.ndim - 1))
    centred = w - w.mean(axis=axes)
    alpha = np.abs(centred).mean(axis=axes)
    g = (upstream * alpha).reshape(-1, 1)  # dL/d sign, one row per element
    v = centred.reshape(-1, 1)
    hidden = np.tanh(v @ w1)  # (N, H)
    logits = hidden @ w2  # (N, 2)
    mask = (np.abs(logits) < 1) if gate else np.ones_like(logits)
    d_logits = np.tile(g, (1, 2)) * mask
    d_w2 = hidden.T @ d_logits
    d_pre = (d_logits @ w2.T) * (1 - hidden ** 2)
    d_w1 = v.T @ d_pre
    d_centred = (d_pre @ w1.T).reshape(w.shape)
    d_w = d_centred - d_centred.mean(axis=axes)  # through w_c = w - mean(w)
    return d_w, d_w1, d_w2, mask


@pytest.mark.parametrize("w2_scale", [1.0, 10.0])  # 10: part of the logits leave (-1, 1)
def test_mlp_gradients_match_a_numpy_backward_pass(rng, w2_scale):
    q = LearnedBinarizer()
    w = (rng.normal(size=(3, 3, 2, 4)) * 0.3).astype(np.float32)
    upstream = rng.normal(size=w.shape).astype(np.float32)
    q.build(w.shape)
    q.learned_w2.assign(np.asarray(q.learned_w2) * w2_scale)
    wt = tf.Variable(w)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(q(wt, training=True) * upstream)
    grads = tape.gradient(loss, [wt, q.learned_w1, q.learned_w2])
    d_w, d_w1, d_w2, mask = _np_mlp_backward(
        w.astype(np.float64), upstream.astype(np.float64), np.asarray(q.learned_w1, np.float64),
        np.asarray(q.learned_w2, np.float64), gate=True)
    if w2_scale > 1:
        assert 0.05 < mask.mean() < 0.95  # the gate really closes for part of the logits
    for got, expected in zip(grads, (d_w, d_w1, d_w2)):
        np.testing.assert_allclose(got.numpy(), expected, rtol=1e-4,
                                   atol=1e-5 * max(1.0, np.abs(expected).max()))


def test_linear_variant_is_a_learnt_ste_slope(rng):
    q = LearnedBinarizer(variant="linear")
    assert q.gate is False  # the official linear variant has no gate
    w = (rng.normal(size=(2, 2, 3, 5))).astype(np.float32)
    upstream = rng.normal(size=w.shape).astype(np.float32)
    q.build(w.shape)
    q.learned_w1.assign([[0.7, -0.2]])  # a1, a2
    wt = tf.Variable(w)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(q(wt, training=True) * upstream)
    d_w, d_a = tape.gradient(loss, [wt, q.learned_w1])
    axes = (0, 1, 2)
    centred = w - w.mean(axis=axes)
    g = upstream * np.abs(centred).mean(axis=axes)
    d_centred = g * (0.7 - 0.2)  # alpha g' (a1 + a2)
    np.testing.assert_allclose(d_w.numpy(), d_centred - d_centred.mean(axis=axes), rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_allclose(d_a.numpy(), [[np.sum(g * centred)] * 2], rtol=1e-5)


def test_inference_has_no_network_and_no_gradient(rng):
    q = LearnedBinarizer()
    wt = tf.Variable(rng.normal(size=(3, 3, 2, 4)).astype(np.float32))
    with tf.GradientTape() as tape:
        out = q(wt, training=False)
    assert tape.gradient(out, wt) is None
    np.testing.assert_array_equal(out.numpy(), q(wt, training=True).numpy())


@pytest.mark.parametrize("variant", ["mlp", "linear"])
def test_initial_slope_is_made_positive(variant):
    """By hand: the slope at 0 is sum_h W1[h] (W2[h, 0] + W2[h, 1]) ("linear": a1 + a2)."""
    slopes = {}
    for initial_slope in ("positive", "random"):
        found = []
        for seed in range(6):
            keras.utils.set_random_seed(seed)
            q = LearnedBinarizer(variant=variant, initial_slope=initial_slope)
            q.build((3, 3, 4, 8))
            w1 = np.asarray(q.learned_w1, np.float64)
            slope = (w1.sum() if variant == "linear"
                     else float(w1[0] @ np.asarray(q.learned_w2, np.float64).sum(axis=1)))
            assert float(q.slope_at_zero()) == pytest.approx(slope, rel=1e-5, abs=1e-7)
            found.append(slope)
        slopes[initial_slope] = np.array(found)
    assert np.all(slopes["positive"] > 0)
    assert np.any(slopes["random"] < 0)  # the official random init starts with either sign
    np.testing.assert_allclose(np.abs(slopes["positive"]), np.abs(slopes["random"]), rtol=1e-6)


def test_optimizer_predicate_picks_the_network_weights():
    q = LearnedBinarizer()
    q.build((3, 3, 4, 8))
    assert is_learned_binarizer_variable(q.learned_w1)
    assert is_learned_binarizer_variable(q.learned_w2)
    assert not is_learned_binarizer_variable(keras.Variable(np.zeros(3), name="kernel"))


def test_config_round_trip_and_bad_arguments():
    q = LearnedBinarizer(variant="linear", hidden_units=7, gate=True, center=False,
                         initial_slope="random")
    assert LearnedBinarizer.from_config(q.get_config()).get_config() == q.get_config()
    assert type(get("learned_sign")) is LearnedBinarizer
    assert get("learned_sign").applies_to == "weights"
    for kwargs, argument in [({"variant": "deep"}, "variant"), ({"hidden_units": 0},
                                                                 "hidden_units"),
                             ({"gate": "yes"}, "gate"), ({"center": None}, "center"),
                             ({"initial_slope": "negative"}, "initial_slope")]:
        with pytest.raises(ValueError, match=f"`{argument}` of LearnedBinarizer"):
            LearnedBinarizer(**kwargs)


def test_digits_fit_round_trip_strict_conversion_and_verify(tmp_path):
    """Bi-Real blocks with learned weight binarizers: the networks train with the model (with
    their own, smaller learning rate: Adam 1e-4, the model 1e-2; the paper uses 1e-3 and
    2.5e-3), and the binary convs convert like "scaled_sign" (a threshold and a scale per
    channel)."""

    def body(x):
        x = BiRealBlock(32, kernel_quantizer="learned_sign", name="b1")(x)
        return BiRealBlock(64, strides=2, kernel_quantizer="learned_sign", name="b2")(x)

    model = stem_model(body)
    model.build((None, 8, 8, 1))
    before = np.asarray(model.get_layer("b1").conv.kernel_quantizer.learned_w1).copy()
    run = fit_digits(model, epochs=3, make_optimizer=lambda schedule: CaseOptimizer(
        (is_learned_binarizer_variable, keras.optimizers.Adam(1e-4)),
        default_optimizer=keras.optimizers.Adam(schedule)))
    assert run.losses[-1] < 0.5 * run.losses[0], run.losses
    assert run.accuracy > 0.8, run.accuracy
    after = np.asarray(run.model.get_layer("b1").conv.kernel_quantizer.learned_w1)
    assert not np.allclose(before, after)  # the classifier network learnt
    assert_round_trip_exact(run.model, tmp_path)
    _, _, ops = assert_converts_and_agrees(run.model, strict=True)
    assert ops.count("LceBconv2d") == 2
    assert keras.saving.get_registered_name(LearnedBinarizer) == "kbnn>LearnedBinarizer"
