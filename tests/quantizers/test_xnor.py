"""XNOR-Net weights (METHODS.md §9.1, §13) and the activation scale K."""

import keras
import numpy as np
from reference_values import XNOR_ROWS, value_and_grad

import kbnn
from kbnn.layers import QuantConv2D
from kbnn.quantizers import XnorWeight, xnor_activation_scale


def test_xnor_alphas_forward_and_gradient_match_reference():
    w = XNOR_ROWS.T  # (4, 2): kernels are (..., C_out)
    upstream = np.arange(1, 9, dtype=np.float32).reshape(4, 2)
    y, g = value_and_grad(XnorWeight(), w, upstream)
    alpha = np.array([0.5, 0.625])
    np.testing.assert_allclose(y, alpha * np.where(w >= 0, 1.0, -1.0), rtol=1e-6)
    # dW = g * (1/n + alpha * 1[|W| < 1]), n = 4; |W| = 1 and |W| = 2 get only 1/n
    np.testing.assert_allclose(g, upstream * (1 / 4 + alpha * (np.abs(w) < 1)), rtol=1e-6)
    np.testing.assert_allclose(g[1, 0], 3 * 0.25, rtol=1e-6)  # W = -1 (upstream 3): 1/n only
    np.testing.assert_allclose(g[0, 0], 1 * (0.25 + 0.5), rtol=1e-6)


def test_xnor_conv_kernel_per_output_channel_and_binary_form(rng):
    w = rng.normal(size=(3, 3, 2, 4)).astype(np.float32)
    upstream = rng.normal(size=w.shape).astype(np.float32)
    q = XnorWeight()
    y, g = value_and_grad(q, w, upstream)
    alpha = np.abs(w).reshape(-1, 4).mean(axis=0)
    np.testing.assert_allclose(y, alpha * np.where(w >= 0, 1.0, -1.0), rtol=1e-6)
    np.testing.assert_allclose(g, upstream * (1 / 18 + alpha * (np.abs(w) < 1)), rtol=1e-5)
    form = q.binary_form(w)
    np.testing.assert_allclose(form.scale, alpha, rtol=1e-6)
    np.testing.assert_array_equal(form(w).numpy(), y)
    assert q.precision == 1


def test_xnor_activation_scale_is_box_filtered_channel_mean_abs(rng):
    x = rng.normal(size=(2, 5, 5, 3)).astype(np.float32)
    a = np.abs(x).mean(axis=-1)
    k_valid = xnor_activation_scale(x, 3).numpy()
    assert k_valid.shape == (2, 3, 3, 1)
    expected = np.array([[[a[n, i:i + 3, j:j + 3].mean() for j in range(3)] for i in range(3)]
                         for n in range(2)])
    np.testing.assert_allclose(k_valid[..., 0], expected, rtol=1e-5)
    k_same = xnor_activation_scale(x, (3, 3), strides=2, padding="same").numpy()
    padded = np.pad(a, ((0, 0), (1, 1), (1, 1)))  # zeros count in the box mean
    expected = np.array([[[padded[n, i:i + 3, j:j + 3].sum() / 9 for j in (0, 2, 4)]
                          for i in (0, 2, 4)] for n in range(2)])
    np.testing.assert_allclose(k_same[..., 0], expected, rtol=1e-5)


def test_alias_and_keras_round_trip(tmp_path, rng):
    assert isinstance(kbnn.quantizers.get("xnor_weight"), XnorWeight)
    inputs = keras.Input((5, 5, 3))
    conv = QuantConv2D(4, 3, input_quantizer="ste_sign", kernel_quantizer="xnor_weight")
    model = keras.Model(inputs, conv(inputs))
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert isinstance(loaded.layers[-1].kernel_quantizer, XnorWeight)
    x = rng.normal(size=(2, 5, 5, 3)).astype(np.float32)
    np.testing.assert_array_equal(loaded(x).numpy(), model(x).numpy())
