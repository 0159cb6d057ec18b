"""DIR-Net (Qin et al., arXiv 2109.12338; docs/methods.md, section 'DIR-Net'): DTESign's
forward and distribution-sensitive two-stage gradient, IMBWeight's forward and gradient through
the standardisation, both at the start, middle and end of EDESchedule, and the digits contract.
The representation distillation loss is tested in tests/training/test_losses_dirnet_lcr.py.
Every expected value is computed here with numpy or by hand."""

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
from reference_values import EDE_GRAD_END, EDE_GRAD_MIDDLE, EDE_GRAD_START, X

from kbnn.blocks import BiRealBlock
from kbnn.quantizers import DTESign, EDEQuantizer, IMBWeight, dte_sign, get
from kbnn.training import EDESchedule, ede_schedule_values

# (t, k) at the start, middle and end of EDESchedule(t_min=0.1, t_max=10), by hand
STAGES = {"start": (0.1, 10.0), "middle": (1.0, 1.0), "end": (10.0, 1.0)}
EDE_REFERENCE = {"start": EDE_GRAD_START, "middle": EDE_GRAD_MIDDLE, "end": EDE_GRAD_END}


def np_dte(u, k, t, sigma=1.0):
    return k * t / np.cosh(t * u / sigma) ** 2


def _grad(quantizer, x):
    x = tf.constant(np.asarray(x, np.float32))
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = quantizer(x, training=True)
    return y.numpy(), tape.gradient(y, x).numpy()


@pytest.mark.parametrize("stage", list(STAGES))
def test_dte_without_distribution_is_ede_at_each_stage(stage):
    t, k = STAGES[stage]
    q = DTESign(distribution_sensitive=False)
    q.build((9,))
    q.set_ede(t=t, k=k)
    y, g = _grad(q, X)
    assert y.tolist() == [-1, -1, -1, -1, 1, 1, 1, 1, 1]
    np.testing.assert_allclose(g, EDE_REFERENCE[stage], atol=6e-4)


@pytest.mark.parametrize("stage", list(STAGES))
def test_dte_measures_the_input_in_units_of_its_spread(stage, rng):
    t, k = STAGES[stage]
    q = DTESign()
    x = (rng.normal(size=(6, 5, 3)) * np.array([0.5, 2.0, 4.0])).astype(np.float32)
    q.build(x.shape)
    q.set_ede(t=t, k=k)
    y, g = _grad(q, x)
    np.testing.assert_array_equal(y, np.where(x >= 0, 1.0, -1.0))
    sigma = x.reshape(-1, 3).astype(np.float64).std(axis=0)  # per channel, population std
    np.testing.assert_allclose(g, np_dte(x.astype(np.float64), k, t, sigma), rtol=2e-4,
                               atol=1e-6)


def test_dte_gradient_is_invariant_to_the_input_scale(rng):
    q = DTESign()
    x = rng.normal(size=(40, 4)).astype(np.float32)
    q.build(x.shape)
    q.set_ede(t=2.0, k=1.0)
    _, g1 = _grad(q, x)
    _, g2 = _grad(q, 7.0 * x)
    np.testing.assert_allclose(g1, g2, rtol=1e-4, atol=1e-6)


def test_dte_function_form_and_alias():
    x = tf.constant(X)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = dte_sign(x, k=1.0, t=1.0, sigma=2.0)
    np.testing.assert_allclose(tape.gradient(y, x).numpy(), np_dte(X, 1.0, 1.0, 2.0), rtol=1e-5)
    assert type(get("dte_sign")) is DTESign and type(get("imb_weight")) is IMBWeight
    assert isinstance(get("dte_sign"), EDEQuantizer) and isinstance(get("imb_weight"),
                                                                    EDEQuantizer)


# ----------------------------------------------------------------------------------- IMB

W = np.array([0.5, -1.0, 0.25, -0.25])  # one output channel (METHODS.md §13)
W_HAT = np.array([0.9449, -1.3229, 0.5669, -0.1890])  # unbiased std, by hand


@pytest.mark.parametrize("scale, factor", [("power_of_two", 1.0), ("mean_abs", 0.7559),
                                           ("none", 1.0)])
def test_imb_forward_and_binary_form(scale, factor):
    q = IMBWeight(scale=scale)
    kernel = W.reshape(4, 1).astype(np.float32)
    q.build(kernel.shape)
    out = q(kernel, training=True).numpy().ravel()
    np.testing.assert_allclose(out, factor * np.array([1, -1, 1, -1]), rtol=1e-4)
    form = q.binary_form(tf.constant(kernel)).numpy()
    assert float(form.threshold) == pytest.approx(-0.125)  # the mean
    assert float(form.scale) == pytest.approx(factor, rel=1e-4)


def _np_imb_grad(w, upstream, k, t, s):
    """dL/dw of L = sum(upstream * s sign(w_hat)) with DTE on w_hat (sigma 1), through
    w_hat = (w - mean) / std (unbiased std): the Jacobian written out by hand."""
    n = w.size
    centred = w - w.mean()
    std = np.sqrt((centred ** 2).sum() / (n - 1))
    w_hat = centred / std
    d_hat = upstream * s * np_dte(w_hat, k, t)
    jacobian = (np.eye(n) - 1.0 / n) / std - np.outer(centred, centred) / ((n - 1) * std ** 3)
    return jacobian.T @ d_hat, w_hat


@pytest.mark.parametrize("stage", list(STAGES))
def test_imb_gradient_through_the_standardisation(stage, rng):
    t, k = STAGES[stage]
    w = rng.normal(size=(12,)) * 0.05 + 0.01
    upstream = rng.normal(size=(12,))
    q = IMBWeight(scale="mean_abs")
    q.build((12, 1))
    q.set_ede(t=t, k=k)
    wt = tf.constant(w.reshape(12, 1).astype(np.float32))
    with tf.GradientTape() as tape:
        tape.watch(wt)
        loss = tf.reduce_sum(q(wt, training=True) * upstream.reshape(12, 1).astype(np.float32))
    centred = w - w.mean()
    s = np.abs(centred / np.sqrt((centred ** 2).sum() / 11)).mean()
    expected, _ = _np_imb_grad(w, upstream, k, t, s)
    np.testing.assert_allclose(tape.gradient(loss, wt).numpy().ravel(), expected, rtol=2e-3,
                               atol=1e-4 * np.abs(expected).max())


def test_imb_refuses_one_element_channels_and_bad_scale():
    with pytest.raises(ValueError, match="IMBWeight needs a kernel with at least 2 elements"):
        IMBWeight().build((1, 8))
    with pytest.raises(ValueError, match="`scale` of IMBWeight"):
        IMBWeight(scale="l1")
    with pytest.raises(ValueError, match="`distribution_sensitive` of DTESign"):
        DTESign(distribution_sensitive="yes")


def test_configs_round_trip():
    for q in (DTESign(k=5.0, t=0.2, distribution_sensitive=False), IMBWeight(scale="none")):
        assert type(q).from_config(q.get_config()).get_config() == q.get_config()


# ----------------------------------------------------------------------------------- digits

def test_digits_fit_round_trip_strict_conversion_and_verify(tmp_path):
    """Bi-Real layout with DTESign activations and IMB weights, k and t moved by EDESchedule."""

    def body(x):
        x = BiRealBlock(32, input_quantizer="dte_sign", kernel_quantizer="imb_weight",
                        name="b1")(x)
        return BiRealBlock(64, strides=2, input_quantizer="dte_sign",
                           kernel_quantizer="imb_weight", name="b2")(x)

    run = fit_digits(stem_model(body), epochs=3, callbacks=[EDESchedule()])
    assert run.losses[-1] < 0.5 * run.losses[0], run.losses
    assert run.accuracy > 0.8, run.accuracy
    expected_t = [ede_schedule_values(e, 3)[0] for e in range(3)]
    np.testing.assert_allclose(run.history["ede_t"], expected_t)
    conv = run.model.get_layer("b2").conv
    for quantizer in (conv.input_quantizer, conv.kernel_quantizer):
        assert float(quantizer.t.numpy()) == pytest.approx(expected_t[-1], rel=1e-6)
    assert_round_trip_exact(run.model, tmp_path)
    _, _, ops = assert_converts_and_agrees(run.model, strict=True)
    assert ops.count("LceBconv2d") == 2
    assert keras.saving.get_registered_name(DTESign) == "kbnn>DTESign"
