"""RBONN (arXiv 2209.01542; docs/methods.md, section 'RBONN'): RBONNWeight ("rbonn_weight")
in its two forms of the recurrent model.

* ``form="paper"`` (default): the density function D and DReLU's selection by rank (ties,
  tau = 1 and tau = 0), the backtrack written back into the `backtrack` state, U trained by the
  task loss only through |U|, the inference form ``|alpha| sign(kernel + backtrack)``;
* ``form="code"``: the official module, the channels of lowest |alpha| by rank (not by the
  argsort permutation of the official code) backtracked along the previous gradient recorded
  in the backward pass (eagerly and in a tf.function).

Both: forward and gradients with the fixed-lambda bilinear term, training under `fit`, configs
saved before `form` existed loading as the code form. Every expected value is computed here
with numpy (or by hand) from the formulas of docs/methods.md, never read back from kbnn.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf
from methods2_helpers import fit_binary_dense
from reference_values import quantizer_step, traced_training_step

from kbnn import quantizers as q
from kbnn.layers import QuantDense
from kbnn.quantizers import RBONNWeight
from kbnn.quantizers.rbonn import (
    backtrack_count,
    backtrack_indicator,
    density,
    density_threshold,
    drelu_selection,
)


def np_sign(x):
    return np.where(x >= 0, 1.0, -1.0)


def np_rank(values):
    """1-based ascending rank of each entry, ties in index order, by sorting by hand."""
    order = sorted(range(len(values)), key=lambda i: (values[i], i))
    rank = [0] * len(values)
    for position, i in enumerate(order):
        rank[i] = position + 1
    return np.array(rank)


def np_density(values, tau):
    """The paper's D: 1 where ranking > int(C * tau)."""
    return (np_rank(values) > int(len(values) * tau)).astype(float)


def np_selection(previous_weight, alpha, tau):
    """(not D(w')) and D(A), w' the channels' L1 norms, A = 1 / |alpha|."""
    norms = np.abs(previous_weight).sum(0)
    return (1.0 - np_density(norms, tau)) * np_density(1.0 / np.abs(alpha), tau)


def np_rank_indicator(scale, count):
    """1 for the `count` smallest entries of `scale` (ties in index order), by hand."""
    order = sorted(range(len(scale)), key=lambda i: (scale[i], i))
    chosen = set(order[:count])
    return np.array([1.0 if i in chosen else 0.0 for i in range(len(scale))])


# M = 3 weights per output channel, C = 5 output channels.
W = np.array([[0.5, -0.2, 0.05, 1.5, -0.3],
              [-0.4, 0.3, -0.6, 0.2, 0.1],
              [0.9, -1.1, 0.25, -0.05, 0.7]], np.float32)
ALPHA = np.array([0.3, 0.1, 0.5, -0.2, 0.4], np.float32)
U = np.array([0.2, 0.5, 0.2, 1.5, 0.2], np.float32)
UPSTREAM = np.array([[0.3, -1.0, 0.2, 0.4, -0.5],
                     [0.7, 0.5, -0.4, -0.2, 0.6],
                     [-0.2, 0.9, 0.6, 0.1, 0.3]], np.float32)
LAM = 0.5  # large, so the bilinear term is visible in the gradients

# Paper form. tau = 0.6: T = int(5 * 0.6) = 3, D is 1 for the ranks 4 and 5.
# A = 1/|alpha| = [3.33, 10, 2, 5, 2.5]: D(A) = channels 1 and 3 (the smallest |alpha|).
# w' (L1 norms of PREVIOUS_WEIGHT) = [0.6, 2.0, 1.5, 0.3, 0.9]: D(w') = channels 1 and 2.
# DReLU selects (not D(w')) and D(A) = channel 3 only.
PREVIOUS_WEIGHT = np.array([[0.2, -0.8, 0.5, 0.1, -0.3],
                            [-0.1, 0.7, -0.5, -0.1, 0.4],
                            [0.3, 0.5, 0.5, 0.1, 0.2]], np.float32)
SELECTED = np.array([0.0, 0.0, 0.0, 1.0, 0.0])
# written back at earlier steps: flips W[2, 3] = -0.05 to 0.05 and W[0, 0] = 0.5 to -0.1
BACKTRACK = np.zeros_like(W)
BACKTRACK[2, 3] = 0.1
BACKTRACK[0, 0] = -0.6
BACKTRACK[1, 4] = 0.05

# Code form: the previous gradient of W
PREVIOUS_GRADIENT = np.array([[0.1, 0.6, -0.2, -0.4, 0.3],
                              [0.2, 0.1, 0.3, 0.5, -0.1],
                              [-0.3, -0.8, 0.1, 0.2, 0.2]], np.float32)


def _quantizer(**kwargs):
    quantizer = RBONNWeight(**{"lam": LAM, **kwargs})
    quantizer.build(W.shape)
    quantizer.alpha.assign(ALPHA)
    if quantizer.alpha_ready is not None:  # alpha set: skip the mean|W| init
        quantizer.alpha_ready.assign(1.0)
    quantizer.u.assign(U)
    return quantizer


def _paper(backtrack=BACKTRACK, previous=PREVIOUS_WEIGHT, **kwargs):
    quantizer = _quantizer(**kwargs)
    quantizer.backtrack.assign(backtrack)
    quantizer.previous_weight.assign(previous)
    return quantizer


def _step(quantizer, w=W, upstream=UPSTREAM, training=True):
    out, losses, dw, (dalpha, du) = quantizer_step(quantizer, w, upstream,
                                                   [quantizer.alpha, quantizer.u], training)
    return out, losses, dw, dalpha.numpy(), du


def np_paper(kernel, backtrack, previous, alpha, u, upstream, lam, tau=0.6, clip=None,
             alpha_gradient="sign"):
    """Paper form, one training step, by eqs. 3.121-3.136 as docs/methods.md writes them:
    forward, loss, gradients and the new state (backtrack, previous weight)."""
    scale = np.abs(alpha)
    drelu = previous * np_selection(previous, alpha, tau)
    step = np.abs(u) * drelu
    w = kernel + backtrack + step
    b = np_sign(w)
    out = scale * b
    residual = w - scale * b
    loss = 0.5 * lam * (residual ** 2).sum()
    mask = np.ones_like(w) if clip is None else (np.abs(w) <= clip)
    task_dw = scale * upstream * mask
    dw = task_dw + lam * residual  # dW/dkernel = 1
    factor = b if alpha_gradient == "sign" else w
    dalpha = np.sign(alpha) * ((upstream * factor).sum(0) - lam * (residual * b).sum(0))
    du = np.sign(u) * (task_dw * drelu).sum(0)  # eq. 3.136: the task loss only
    return out, loss, dw, dalpha, du, backtrack + step, w


def np_code(w, alpha, u, g_prev, upstream, lam, tau=0.6, clip=None, alpha_gradient="sign"):
    """Code form, one training step, by the formulas of docs/methods.md."""
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


# ----------------------------------------------------------------------------- both forms

def test_alias_registry_and_forms():
    quantizer = q.get("rbonn_weight")
    assert isinstance(quantizer, RBONNWeight)
    assert quantizer.form == "paper"
    assert RBONNWeight.applies_to == "weights"
    for form in ("paper", "code"):
        config = RBONNWeight(form=form, tau=0.5).get_config()
        assert config["form"] == form
        restored = RBONNWeight.from_config(config)
        assert (restored.form, restored.tau) == (form, 0.5)


def test_config_without_form_loads_as_the_code_form():
    config = RBONNWeight(form="code", lam=2e-4).get_config()
    del config["form"]  # as saved before the option existed
    restored = RBONNWeight.from_config(config)
    assert (restored.form, restored.lam) == ("code", 2e-4)
    via_keras = keras.saving.deserialize_keras_object(
        {**keras.saving.serialize_keras_object(RBONNWeight(form="code")), "config": config})
    assert isinstance(via_keras, RBONNWeight) and via_keras.form == "code"
    # a partial config (an alias with a name, a hand-written dict) gets the default
    assert RBONNWeight.from_config({"name": "q", "lam": 1e-3}).form == "paper"
    assert q.get({"class_name": "rbonn_weight", "config": {"tau": 0.5}}).form == "paper"
    partial = {key: value for key, value in config.items() if key != "u_initializer"}
    assert RBONNWeight.from_config(partial).form == "paper"
    # a layer saved with the old config gets the old variables back
    keras.utils.set_random_seed(0)
    old = QuantDense(5, kernel_quantizer=RBONNWeight(form="code"), use_bias=False)
    old.build((None, 3))
    old.kernel_quantizer.previous_gradient.assign(PREVIOUS_GRADIENT)
    layer_config = old.get_config()
    del layer_config["kernel_quantizer"]["config"]["form"]
    new = QuantDense.from_config(layer_config)
    new.build((None, 3))
    assert new.kernel_quantizer.form == "code"
    assert [v.path.split("/")[-1] for v in new.weights] == \
        [v.path.split("/")[-1] for v in old.weights]
    new.set_weights(old.get_weights())
    np.testing.assert_array_equal(new.kernel_quantizer.previous_gradient.numpy(),
                                  PREVIOUS_GRADIENT)


def test_paper_and_code_forms_keep_different_state():
    paper, code = _quantizer(form="paper"), _quantizer(form="code")
    assert sorted(v.path.split("/")[-1] for v in paper.non_trainable_weights) == \
        ["alpha_ready", "backtrack", "previous_weight"]
    assert sorted(v.path.split("/")[-1] for v in code.non_trainable_weights) == \
        ["alpha_ready", "previous_gradient"]
    assert paper.dense_channels == 2  # 5 - int(5 * 0.6)
    assert code.backtracked_channels == 2  # int(5 * 0.4)


@pytest.mark.parametrize("kwargs, argument", [
    ({"lam": -1e-4}, "lam"),
    ({"tau": 1.5}, "tau"),
    ({"tau": -0.1}, "tau"),
    ({"form": "official"}, "form"),
    ({"u_initializer": "no_such_initializer"}, "u_initializer"),
    ({"alpha_gradient": "w"}, "alpha_gradient"),
])
def test_argument_errors_name_the_argument(kwargs, argument):
    with pytest.raises(ValueError, match=f"`{argument}` of RBONNWeight"):
        RBONNWeight(**kwargs)


# ----------------------------------------------------------------------------- paper form

def test_density_threshold_is_int_of_channels_times_tau():
    assert density_threshold(5, 0.6) == 3
    assert density_threshold(10, 0.6) == 6
    assert density_threshold(32, 0.6) == 19  # int(19.2): 13 dense channels
    assert density_threshold(64, 0.6) == 38  # int(38.4): 26 dense (the code backtracks 25)
    assert density_threshold(64, 1.0) == 64
    assert density_threshold(64, 0.0) == 0


def test_density_by_rank_with_ties():
    # ranks of [0.3, 0.1, 0.5, 0.2, 0.4]: [3, 1, 5, 2, 4]; T = 3: channels 2 and 4
    np.testing.assert_array_equal(density(np.float32([0.3, 0.1, 0.5, 0.2, 0.4]), 0.6),
                                  [0, 0, 1, 0, 1])
    # ties in channel order: [0.2, 0.2, 0.1] ranks [2, 3, 1]
    np.testing.assert_array_equal(density(np.float32([0.2, 0.2, 0.1]), 0.5), [1, 1, 0])  # T=1
    np.testing.assert_array_equal(density(np.float32([0.2, 0.2, 0.1]), 0.7), [0, 1, 0])  # T=2
    np.testing.assert_array_equal(density(np.float32([0.2, 0.2, 0.1]), 1.0), [0, 0, 0])
    np.testing.assert_array_equal(density(np.float32([0.2, 0.2, 0.1]), 0.0), [1, 1, 1])
    rng = np.random.default_rng(0)
    for tau in (0.3, 0.6, 0.9):
        values = rng.choice(np.float32([0.1, 0.2, 0.3, 0.4]), size=16)  # many ties
        np.testing.assert_array_equal(density(values, tau), np_density(values, tau))


def test_drelu_selects_dense_scale_and_sparse_weights():
    # worked by hand above: channel 3 only (channel 1 has a dense A but also dense weights)
    np.testing.assert_array_equal(drelu_selection(PREVIOUS_WEIGHT, np.abs(ALPHA), 0.6), SELECTED)
    np.testing.assert_array_equal(np_selection(PREVIOUS_WEIGHT, ALPHA, 0.6), SELECTED)
    # tau = 1: D is 0 everywhere; tau = 0: D is 1 everywhere, so not D(w') is 0: no channel
    np.testing.assert_array_equal(drelu_selection(PREVIOUS_WEIGHT, np.abs(ALPHA), 1.0),
                                  np.zeros(5))
    np.testing.assert_array_equal(drelu_selection(PREVIOUS_WEIGHT, np.abs(ALPHA), 0.0),
                                  np.zeros(5))
    # ties of |alpha| (the later channel ranks higher) and alpha = 0 (A infinite: the densest)
    scale = np.float32([0.2, 0.2, 0.0, 0.5])
    weights = np.float32([[0.1, 0.1, 0.1, 0.1]])  # all tied: the later channels are dense
    # T = int(4 * 0.5) = 2. A ranks: [2, 3, 4, 1] -> D(A) = channels 1, 2;
    # w' ranks [1, 2, 3, 4] -> D(w') = channels 2, 3 -> selection: channel 1
    np.testing.assert_array_equal(drelu_selection(weights, scale, 0.5), [0, 1, 0, 0])
    rng = np.random.default_rng(1)
    for tau in (0.2, 0.6):
        previous = rng.normal(size=(4, 16)).astype("float32")
        alpha = rng.uniform(0.05, 1.0, size=16).astype("float32")
        np.testing.assert_array_equal(drelu_selection(previous, alpha, tau),
                                      np_selection(previous, alpha, tau))


def test_paper_first_training_step_backtracks_nothing():
    quantizer = _paper(backtrack=np.zeros_like(W), previous=np.zeros_like(W))
    out, losses, dw, dalpha, du = _step(quantizer)
    zeros = np.zeros_like(W)
    e_out, e_loss, e_dw, e_dalpha, e_du, e_bt, e_prev = np_paper(W, zeros, zeros, ALPHA, U,
                                                                 UPSTREAM, LAM)
    np.testing.assert_array_equal(e_du, np.zeros(5))
    np.testing.assert_array_equal(e_bt, zeros)
    np.testing.assert_array_equal(e_prev, W)
    np.testing.assert_array_equal(out, np.abs(ALPHA) * np_sign(W))
    np.testing.assert_array_equal(out, e_out)
    np.testing.assert_allclose(losses, [e_loss], rtol=1e-6)
    np.testing.assert_allclose(dw, e_dw, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(dalpha, e_dalpha, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(du.numpy(), np.zeros(5))
    np.testing.assert_array_equal(quantizer.backtrack.numpy(), zeros)
    np.testing.assert_array_equal(quantizer.previous_weight.numpy(), W)  # W of this step


def test_paper_training_step_backtracks_and_writes_back():
    quantizer = _paper()
    out, losses, dw, dalpha, du = _step(quantizer)
    e_out, e_loss, e_dw, e_dalpha, e_du, e_bt, e_prev = np_paper(
        W, BACKTRACK, PREVIOUS_WEIGHT, ALPHA, U, UPSTREAM, LAM)
    # channel 3 by hand: W + backtrack = [1.5, 0.2, 0.05], + |u| w_prev = 1.5 * [0.1, -0.1, 0.1]
    # -> [1.65, 0.05, 0.2]: all +1 (the kernel alone has sign(-0.05) = -1)
    np.testing.assert_array_equal(out[:, 3], np.float32(0.2) * np.ones(3))
    # channel 0 by hand: the written-back -0.6 flips W[0, 0] = 0.5
    assert out[0, 0] == np.float32(-0.3)
    np.testing.assert_allclose(out, e_out, rtol=1e-6)
    np.testing.assert_allclose(losses, [e_loss], rtol=1e-5)
    np.testing.assert_allclose(dw, e_dw, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(dalpha, e_dalpha, rtol=1e-5, atol=1e-7)
    # du_3 by hand: |alpha_3| * sum(upstream[:, 3] * w_prev[:, 3])
    #             = 0.2 * (0.4 * 0.1 + -0.2 * -0.1 + 0.1 * 0.1) = 0.014; the others 0
    np.testing.assert_allclose(du.numpy(), [0, 0, 0, 0.014, 0], atol=1e-7)
    np.testing.assert_allclose(du.numpy(), e_du, atol=1e-7)
    # with the bilinear term U would get another gradient: the test does see the difference
    residual = e_prev - np.abs(ALPHA) * np_sign(e_prev)
    assert abs(LAM * (residual[:, 3] * PREVIOUS_WEIGHT[:, 3]).sum()) > 1e-3
    # write back: backtrack += |u| DReLU, previous weight = this step's W
    expected_backtrack = BACKTRACK.copy()
    expected_backtrack[:, 3] += 1.5 * PREVIOUS_WEIGHT[:, 3]
    np.testing.assert_allclose(quantizer.backtrack.numpy(), expected_backtrack, rtol=1e-6)
    np.testing.assert_allclose(quantizer.backtrack.numpy(), e_bt, rtol=1e-6)
    np.testing.assert_allclose(quantizer.previous_weight.numpy(), e_prev, rtol=1e-6)


def test_paper_u_acts_through_its_absolute_value():
    negative_u = -U
    quantizer = _paper()
    quantizer.u.assign(negative_u)
    out, _, _, _, du = _step(quantizer)
    e_out, _, _, _, e_du, e_bt, _ = np_paper(W, BACKTRACK, PREVIOUS_WEIGHT, ALPHA, negative_u,
                                             UPSTREAM, LAM)
    np.testing.assert_allclose(out, e_out, rtol=1e-6)
    np.testing.assert_allclose(du.numpy(), e_du, atol=1e-7)
    np.testing.assert_allclose(du.numpy(), [0, 0, 0, -0.014, 0], atol=1e-7)
    np.testing.assert_allclose(quantizer.backtrack.numpy(), e_bt, rtol=1e-6)


def test_paper_options_and_tau_one():
    quantizer = _paper(clip_value=1.0, alpha_gradient="latent")
    _, _, dw, dalpha, _ = _step(quantizer)
    _, _, e_dw, e_dalpha, _, _, _ = np_paper(W, BACKTRACK, PREVIOUS_WEIGHT, ALPHA, U, UPSTREAM,
                                             LAM, clip=1.0, alpha_gradient="latent")
    np.testing.assert_allclose(dw, e_dw, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(dalpha, e_dalpha, rtol=1e-5, atol=1e-7)
    # tau = 1: nothing backtracked; the written-back part still counts
    off = _paper(tau=1.0)
    out, _, _, _, du = _step(off)
    np.testing.assert_array_equal(out, np.abs(ALPHA) * np_sign(W + BACKTRACK))
    np.testing.assert_array_equal(du.numpy(), np.zeros(5))
    np.testing.assert_array_equal(off.backtrack.numpy(), BACKTRACK)


def test_paper_inference_uses_the_written_back_weights():
    quantizer = _paper()
    out, losses, dw, dalpha, _ = _step(quantizer, training=False)
    expected = np.abs(ALPHA) * np_sign(W + BACKTRACK)
    assert not np.array_equal(expected, np.abs(ALPHA) * np_sign(W))  # two signs flipped
    np.testing.assert_array_equal(out, expected)
    assert losses == []
    np.testing.assert_allclose(dw, np.abs(ALPHA) * UPSTREAM, rtol=1e-6)
    np.testing.assert_allclose(dalpha, np.sign(ALPHA) * (UPSTREAM * np_sign(W + BACKTRACK)).sum(0),
                               rtol=1e-6, atol=1e-7)
    form = quantizer.binary_form(tf.constant(W))
    np.testing.assert_array_equal(form(W), expected)
    np.testing.assert_array_equal(form.sign(W), np_sign(W + BACKTRACK))
    np.testing.assert_array_equal(form.numpy().scale, np.abs(ALPHA))
    # nothing is updated in inference
    np.testing.assert_array_equal(quantizer.backtrack.numpy(), BACKTRACK)
    np.testing.assert_array_equal(quantizer.previous_weight.numpy(), PREVIOUS_WEIGHT)


def test_paper_steps_inside_a_tf_function():
    quantizer = _quantizer(form="paper")
    w_var = tf.Variable(W)

    step = traced_training_step(quantizer, w_var, [quantizer.alpha, quantizer.u])

    zeros = np.zeros_like(W)
    first = step(tf.constant(UPSTREAM))
    _, _, e_dw1, _, _, e_bt1, e_prev1 = np_paper(W, zeros, zeros, ALPHA, U, UPSTREAM, LAM)
    np.testing.assert_allclose(first[0].numpy(), e_dw1, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(quantizer.previous_weight.numpy(), W)
    # an optimizer step on the kernel, then the second step backtracks from the first W
    kernel2 = W - 0.3 * e_dw1
    w_var.assign(kernel2)
    second = step(tf.constant(UPSTREAM[::-1].copy()))
    _, _, e_dw2, e_dalpha2, e_du2, e_bt2, e_prev2 = np_paper(
        kernel2, e_bt1, e_prev1, ALPHA, U, UPSTREAM[::-1], LAM)
    assert np.count_nonzero(np_selection(e_prev1, ALPHA, 0.6)) > 0  # something is backtracked
    np.testing.assert_allclose(second[0].numpy(), e_dw2, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(second[1].numpy(), e_dalpha2, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(second[2].numpy(), e_du2, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(quantizer.backtrack.numpy(), e_bt2, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(quantizer.previous_weight.numpy(), e_prev2, rtol=1e-5, atol=1e-7)


# ----------------------------------------------------------------------------- code form

def test_backtrack_count_is_int_of_channels_times_one_minus_tau():
    assert backtrack_count(32, 0.6) == 12  # int(12.8)
    assert backtrack_count(10, 0.6) == 4
    assert backtrack_count(5, 0.6) == 2
    assert backtrack_count(64, 1.0) == 0
    assert backtrack_count(64, 0.0) == 64


def test_code_indicator_uses_each_channels_rank():
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


def test_code_inference_is_abs_alpha_times_sign_without_backtracking():
    quantizer = _quantizer(form="code")
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


def test_code_first_training_step_has_nothing_to_backtrack():
    quantizer = _quantizer(form="code")
    out, losses, dw, dalpha, du = _step(quantizer)
    e_out, e_loss, e_dw, e_dalpha, e_du = np_code(W, ALPHA, U, np.zeros_like(W), UPSTREAM, LAM)
    np.testing.assert_array_equal(out, e_out)
    np.testing.assert_allclose(losses, [e_loss], rtol=1e-6)
    np.testing.assert_allclose(dw, e_dw, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(dalpha, e_dalpha, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(du, e_du, atol=1e-7)  # zero: g_prev = 0
    # the backward pass stored the gradient that reached W (task + bilinear term)
    np.testing.assert_allclose(quantizer.previous_gradient.numpy(), e_dw, rtol=1e-6, atol=1e-7)


def test_code_training_step_backtracks_the_low_scale_channels():
    quantizer = _quantizer(form="code")
    quantizer.previous_gradient.assign(PREVIOUS_GRADIENT)
    out, losses, dw, dalpha, du = _step(quantizer)
    e_out, e_loss, e_dw, e_dalpha, e_du = np_code(W, ALPHA, U, PREVIOUS_GRADIENT, UPSTREAM, LAM)
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
    quantizer = _quantizer(form="code", clip_value=1.0, alpha_gradient="latent")
    quantizer.previous_gradient.assign(PREVIOUS_GRADIENT)
    _, _, dw, dalpha, _ = _step(quantizer)
    _, _, e_dw, e_dalpha, _ = np_code(W, ALPHA, U, PREVIOUS_GRADIENT, UPSTREAM, LAM, clip=1.0,
                                      alpha_gradient="latent")
    np.testing.assert_allclose(dw, e_dw, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(dalpha, e_dalpha, rtol=1e-5, atol=1e-7)
    # tau = 1: nothing backtracked, the forward equals the inference form
    off = _quantizer(form="code", tau=1.0)
    off.previous_gradient.assign(PREVIOUS_GRADIENT)
    out, _, _, _, du = _step(off)
    np.testing.assert_array_equal(out, np.abs(ALPHA) * np_sign(W))
    np.testing.assert_array_equal(du.numpy(), np.zeros(5))


def test_code_previous_gradient_is_recorded_inside_a_tf_function():
    quantizer = _quantizer(form="code")
    w_var = tf.Variable(W)

    step = traced_training_step(quantizer, w_var, [quantizer.alpha, quantizer.u])

    first = step(tf.constant(UPSTREAM))
    _, _, e_dw1, _, _ = np_code(W, ALPHA, U, np.zeros_like(W), UPSTREAM, LAM)
    np.testing.assert_allclose(first[0].numpy(), e_dw1, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(quantizer.previous_gradient.numpy(), e_dw1, rtol=1e-5, atol=1e-7)
    second = step(tf.constant(UPSTREAM[::-1].copy()))
    _, _, e_dw2, e_dalpha2, e_du2 = np_code(W, ALPHA, U, e_dw1, UPSTREAM[::-1], LAM)
    np.testing.assert_allclose(second[0].numpy(), e_dw2, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(second[1].numpy(), e_dalpha2, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(second[2].numpy(), e_du2, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- under fit

@pytest.mark.parametrize("form", ["paper", "code"])
def test_rbonn_in_a_layer_under_fit(form):
    model, layer, x = fit_binary_dense(10, RBONNWeight(form=form), keras.optimizers.Adam(0.01))
    quantizer = layer.kernel_quantizer
    assert quantizer.form == form
    u = quantizer.u.numpy()
    moved = np.abs(u - 0.2) > 0
    assert 0 < moved.sum() <= 10  # u trains where channels were backtracked
    if form == "code":
        assert quantizer.backtracked_channels == 4
        assert np.abs(quantizer.previous_gradient.numpy()).max() > 0
    else:
        assert quantizer.dense_channels == 4  # 10 - int(10 * 0.6)
        kernel = layer.kernel.numpy()
        backtrack = quantizer.backtrack.numpy()
        assert np.abs(backtrack).max() > 0
        # only whole channels are written back
        touched = np.abs(backtrack).sum(0) > 0
        assert np.all(backtrack[:, ~touched] == 0)
        np.testing.assert_array_equal(quantizer.previous_weight.numpy() != 0,
                                      np.ones_like(kernel, bool))
        # the model's inference output uses kernel + backtrack
        expected = np_sign(x) @ (np.abs(quantizer.alpha.numpy()) * np_sign(kernel + backtrack))
        np.testing.assert_allclose(model.predict(x, verbose=0), expected, rtol=1e-5, atol=1e-5)
