"""QuantDense: forward against numpy, gradients by hand, config coverage."""

import inspect

import keras
import numpy as np
import pytest
from reference_values import value_and_grads

from kbnn.layers import QuantDense


def np_sign(x):
    return np.where(x >= 0, 1.0, -1.0)


@pytest.mark.parametrize("use_bias, activation", [(False, None), (True, "relu")])
@pytest.mark.parametrize("shape", [(3, 5), (2, 3, 5)])
def test_forward_matches_numpy(shape, use_bias, activation, rng):
    x = rng.normal(size=shape).astype("float32")
    x.flat[::4] = 0.0
    layer = QuantDense(4, use_bias=use_bias, activation=activation, input_quantizer="ste_sign",
                       kernel_quantizer="ste_sign", bias_initializer="random_normal")
    layer.build(shape)
    w = rng.normal(size=(5, 4)).astype("float32")
    layer.kernel.assign(w)
    expected = np_sign(x) @ np_sign(w)
    if use_bias:
        expected = np.maximum(expected + layer.bias.numpy(), 0.0)
    np.testing.assert_allclose(layer(x).numpy(), expected, rtol=1e-6, atol=1e-6)


def test_forward_by_hand():
    x = np.array([[0.0, -0.5, 2.0]], dtype="float32")  # sign: [+1, -1, +1]
    w = np.array([[0.2, -0.1], [0.3, 0.0], [-4.0, 0.5]], dtype="float32")  # [[1,-1],[1,1],[-1,1]]
    layer = QuantDense(2, use_bias=False, input_quantizer="ste_sign", kernel_quantizer="ste_sign")
    layer.build(x.shape)
    layer.kernel.assign(w)
    np.testing.assert_array_equal(layer(x).numpy(), [[1 - 1 - 1, -1 - 1 + 1]])


def test_gradients_by_hand():
    """d sum(out) / d x[j] = 1[|x_j| <= 1] * sum_k sign(W[j, k]);
    d sum(out) / d W[j, k] = 1[|W_jk| <= 1] * sum_i sign(x[i, j])."""
    x = np.array([[0.5, -1.5, 0.0], [-0.2, 0.9, 3.0]], dtype="float32")
    w = np.array([[0.4, 0.3], [-0.6, 0.1], [1.2, -0.3]], dtype="float32")
    layer = QuantDense(2, use_bias=True, input_quantizer="ste_sign", kernel_quantizer="ste_sign")
    layer.build(x.shape)
    layer.kernel.assign(w)
    _, gx, (gw, gb) = value_and_grads(layer, x, [layer.kernel, layer.bias])
    # Row sums of sign(W): [2, 0, 0]; masks |x| <= 1: [[1, 0, 1], [1, 1, 0]].
    np.testing.assert_array_equal(gx, [[2.0, 0.0, 0.0], [2.0, 0.0, 0.0]])
    # Column sums of sign(x): [1 - 1, -1 + 1, 1 + 1] = [0, 0, 2]; W[2, 0] = 1.2 is clipped.
    np.testing.assert_array_equal(gw, [[0.0, 0.0], [0.0, 0.0], [0.0, 2.0]])
    np.testing.assert_array_equal(gb, [2.0, 2.0])


def test_gradients_match_numpy(rng):
    x = (rng.normal(size=(6, 7)) * 1.5).astype("float32")
    w = (rng.normal(size=(7, 3)) * 1.2).astype("float32")
    layer = QuantDense(3, input_quantizer="ste_sign", kernel_quantizer="ste_sign")
    layer.build(x.shape)
    layer.kernel.assign(w)
    _, gx, (gw,) = value_and_grads(layer, x, [layer.kernel])
    expected_gx = np.broadcast_to(np_sign(w).sum(axis=1), x.shape) * (np.abs(x) <= 1)
    expected_gw = np_sign(x).sum(axis=0)[:, None] * (np.abs(w) <= 1)
    assert (np.abs(x) > 1).any() and (np.abs(w) > 1).any()
    np.testing.assert_array_equal(gx, expected_gx)
    np.testing.assert_array_equal(gw, expected_gw)


def test_without_quantizers_matches_keras_dense(rng):
    x = rng.normal(size=(4, 6)).astype("float32")
    ref = keras.layers.Dense(3, activation="tanh", bias_initializer="random_normal")
    quant = QuantDense(3, activation="tanh")
    ref.build(x.shape)
    quant.build(x.shape)
    quant.set_weights(ref.get_weights())
    np.testing.assert_allclose(quant(x).numpy(), ref(x).numpy(), rtol=1e-6, atol=1e-6)


def test_is_binary_and_quantizers():
    assert QuantDense(2, input_quantizer="ste_sign", kernel_quantizer="ste_sign").is_binary
    assert not QuantDense(2, kernel_quantizer="ste_sign").is_binary
    layer = QuantDense(2, kernel_quantizer="approx_sign")
    assert set(layer.quantizers) == {"kernel_quantizer"}


def test_get_config_covers_every_argument():
    layer = QuantDense(3, activation="relu", use_bias=False, kernel_initializer="ones",
                       bias_initializer="ones", kernel_regularizer="l2", bias_regularizer="l1",
                       activity_regularizer="l2", bias_constraint="non_neg", lora_rank=2,
                       lora_alpha=4, input_quantizer="approx_sign", kernel_quantizer="ste_sign",
                       name="dense_custom")
    config = layer.get_config()
    names = set()
    for klass in (QuantDense, keras.layers.Dense):
        names |= {p.name for p in inspect.signature(klass.__init__).parameters.values()
                  if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and p.name != "self"}
    assert {"units", "activity_regularizer", "lora_rank", "input_quantizer"} <= names
    missing = names - set(config)
    assert not missing, f"QuantDense.get_config() lacks {sorted(missing)}"
    rebuilt = QuantDense.from_config(config)
    assert rebuilt.get_config() == config
    assert rebuilt.lora_rank == 2 and rebuilt.lora_alpha == 4
    assert rebuilt.activity_regularizer is not None
    assert type(rebuilt.input_quantizer).__name__ == "ApproxSign"
    assert type(rebuilt.kernel_quantizer).__name__ == "SteSign"


def test_lora_kernel_is_quantized(rng):
    """LoRA (a Keras Dense argument) still works: the quantizer sees kernel + delta."""
    x = rng.normal(size=(2, 4)).astype("float32")
    layer = QuantDense(3, use_bias=False, lora_rank=1, kernel_quantizer="ste_sign")
    layer.build(x.shape)
    layer.lora_kernel_b.assign(np.full((1, 3), 5.0, dtype="float32"))
    effective = layer.kernel.numpy()
    a = layer.lora_kernel_a.numpy()
    np.testing.assert_allclose(effective, layer._kernel.numpy() + a @ np.full((1, 3), 5.0),
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(layer(x).numpy(), x @ np_sign(effective), rtol=1e-5, atol=1e-5)
