"""Sign binarizers: forward values and surrogate gradients at the METHODS.md §13 points."""

import numpy as np
import pytest
import tensorflow as tf
from reference_values import SIGN_X, STE_GRAD, X, value_and_grad

from kbnn.quantizers import (
    ApproxSign,
    BinaryForm,
    MagnitudeAwareSign,
    SteHeaviside,
    SteSign,
    SwishSign,
)


def test_ste_sign_values_and_clipped_gradient():
    y, g = value_and_grad(SteSign(), X)
    np.testing.assert_array_equal(y, SIGN_X)
    np.testing.assert_array_equal(g, STE_GRAD)


def test_ste_sign_clip_value_moves_the_gradient_window():
    _, g = value_and_grad(SteSign(clip_value=0.5), X)
    np.testing.assert_array_equal(g, [0, 0, 1, 1, 1, 1, 1, 0, 0])
    _, g = value_and_grad(SteSign(clip_value=2.0), X)
    np.testing.assert_array_equal(g, np.ones(9))


def test_ste_sign_unclipped_passes_the_upstream_gradient_unchanged():
    x = tf.constant(X)
    upstream = np.linspace(-2.0, 3.0, len(X)).astype("float32")
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = SteSign(clip_value=None)(x)
    np.testing.assert_array_equal(tape.gradient(y, x, output_gradients=tf.constant(upstream)),
                                  upstream)


def test_ste_sign_gradient_window_multiplies_the_upstream_gradient():
    # The window is applied as a select: the upstream gradient inside |x| <= 1, exact 0 outside.
    x = tf.constant(X)
    upstream = np.linspace(-2.0, 3.0, len(X)).astype("float32")
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = SteSign()(x)
    expected = np.where(np.abs(np.asarray(X)) <= 1.0, upstream, 0.0)
    np.testing.assert_array_equal(tape.gradient(y, x, output_gradients=tf.constant(upstream)),
                                  expected)


def test_approx_sign_matches_methods_reference():
    y, g = value_and_grad(ApproxSign(), X)
    np.testing.assert_array_equal(y, SIGN_X)
    np.testing.assert_allclose(g, [0, 0, 1, 1.5, 2, 1.5, 1, 0, 0], atol=1e-6)


def _sign_swish(x, beta):
    """SignSwish of BNN+ (arXiv 1812.11800), float64 numpy."""
    s = 1.0 / (1.0 + np.exp(-beta * x))
    return 2.0 * s * (1.0 + beta * x * (1.0 - s)) - 1.0


@pytest.mark.parametrize("beta", [5.0, 2.0, 10.0])
def test_swish_sign_gradient_is_derivative_of_sign_swish(beta):
    y, g = value_and_grad(SwishSign(beta=beta), X)
    np.testing.assert_array_equal(y, SIGN_X)
    x64 = X.astype(np.float64)
    h = 1e-6
    numeric = (_sign_swish(x64 + h, beta) - _sign_swish(x64 - h, beta)) / (2 * h)
    np.testing.assert_allclose(g, numeric, rtol=1e-4, atol=1e-5)
    assert g[4] == pytest.approx(beta)  # the peak of the derivative is beta at x = 0


def test_swish_sign_gradient_has_no_nan_far_from_zero():
    _, g = value_and_grad(SwishSign(beta=5.0), np.array([-100.0, -30.0, 30.0, 100.0], np.float32))
    assert np.all(np.isfinite(g))
    np.testing.assert_allclose(g, 0.0, atol=1e-30)


def test_ste_heaviside_values_gradient_and_zero_convention():
    y, g = value_and_grad(SteHeaviside(), X)
    np.testing.assert_array_equal(y, [0, 0, 0, 0, 1, 1, 1, 1, 1])  # x = 0 maps to 1
    np.testing.assert_array_equal(g, STE_GRAD)
    _, g = value_and_grad(SteHeaviside(clip_value=0.25), X)
    np.testing.assert_array_equal(g, [0, 0, 0, 1, 1, 1, 0, 0, 0])


def test_ste_heaviside_binary_form():
    form = SteHeaviside().binary_form(tf.constant(X))
    assert (form.threshold, form.scale, form.offset) == (0.0, 0.5, 0.5)


def test_magnitude_aware_sign_xnor_reference_rows():
    # METHODS.md §13: rows [0.5, -1, 0.25, -0.25] -> alpha 0.5; [2, -0.1, 0.1, 0.3] -> 0.625.
    # As a kernel (n_in=4, C_out=2): one output channel per column.
    w = np.array([[0.5, 2.0], [-1.0, -0.1], [0.25, 0.1], [-0.25, 0.3]], np.float32)
    y, g = value_and_grad(MagnitudeAwareSign(), w)
    np.testing.assert_allclose(
        y, [[0.5, 0.625], [-0.5, -0.625], [0.5, 0.625], [-0.5, 0.625]], rtol=1e-6)
    # dW = alpha * 1[|W| <= 1]: the 2.0 entry gets no gradient, -1.0 (on the edge) does.
    np.testing.assert_allclose(g, [[0.5, 0], [0.5, 0.625], [0.5, 0.625], [0.5, 0.625]],
                               rtol=1e-6)
    np.testing.assert_allclose(MagnitudeAwareSign().binary_form(tf.constant(w)).scale,
                               [0.5, 0.625], rtol=1e-6)


def test_magnitude_aware_sign_conv_kernel_against_numpy(rng):
    w = rng.normal(0.0, 0.8, size=(3, 3, 4, 5)).astype(np.float32)
    w[0, 0, 0, 0] = 0.0  # sign(0) = +1
    dy = rng.normal(size=w.shape).astype(np.float32)
    for clip in (1.0, 0.5):
        y, g = value_and_grad(MagnitudeAwareSign(clip_value=clip), w, upstream=dy)
        scale = np.abs(w.astype(np.float64)).mean(axis=(0, 1, 2))
        np.testing.assert_allclose(y, scale * np.where(w >= 0, 1.0, -1.0), rtol=1e-5)
        np.testing.assert_allclose(g, dy * scale * (np.abs(w) <= clip), rtol=1e-5, atol=1e-7)
        assert (np.abs(w) > clip).any() and (np.abs(w) <= clip).any()
    assert y[0, 0, 0, 0] > 0


@pytest.mark.parametrize("cls", [SteSign, ApproxSign, SwishSign])
def test_plain_binarizers_have_the_identity_binary_form(cls):
    q = cls()
    assert q.precision == 1 and q.is_binary
    assert q.binary_form(tf.constant(X)) == BinaryForm(threshold=0.0, scale=1.0, offset=0.0)


def test_get_config_lists_every_argument():
    assert SteSign(clip_value=0.5).get_config()["clip_value"] == 0.5
    assert SwishSign(beta=3.0).get_config()["beta"] == 3.0
    assert SteHeaviside(clip_value=2.0).get_config()["clip_value"] == 2.0
    assert MagnitudeAwareSign(clip_value=0.7).get_config()["clip_value"] == 0.7
    assert SteSign.from_config(SteSign(clip_value=0.5).get_config()).clip_value == 0.5
    assert SwishSign.from_config(SwishSign(beta=3.0).get_config()).beta == 3.0


@pytest.mark.parametrize(
    "make, argument",
    [
        (lambda: SteSign(clip_value=0.0), "clip_value"),
        (lambda: SteSign(clip_value=-1.0), "clip_value"),
        (lambda: SwishSign(beta=0.0), "beta"),
        (lambda: SwishSign(beta="5"), "beta"),
        (lambda: SteHeaviside(clip_value=float("nan")), "clip_value"),
        (lambda: MagnitudeAwareSign(clip_value=-0.5), "clip_value"),
        (lambda: MagnitudeAwareSign(clip_value=float("inf")), "clip_value"),
    ],
)
def test_bad_arguments_raise_value_error_naming_the_argument(make, argument):
    with pytest.raises(ValueError, match=f"`{argument}`.*Received {argument}="):
        make()
