"""BNN layers RPReLU, LearnableBias (ReActNet, METHODS.md §1.2) and Maxout (AdaBin, §3.2)."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from reference_values import X, value_and_grads

from kbnn.layers import LearnableBias, Maxout, RPReLU


def grads(layer, x, upstream):
    """Output and gradients of sum(upstream * layer(x)) w.r.t. x and each layer weight, by name."""
    if not layer.built:
        layer.build(np.shape(x))
    y, dx, dw = value_and_grads(layer, x, layer.trainable_weights, upstream)
    return y, dx, {w.path.split("/")[-1]: g for w, g in zip(layer.trainable_weights, dw)}


def constant(value):
    return keras.initializers.Constant(value)


def test_rprelu_defaults():
    layer = RPReLU()
    layer.build((None, 3))
    np.testing.assert_array_equal(layer.gamma.numpy(), np.zeros(3))
    np.testing.assert_array_equal(layer.beta.numpy(), np.full(3, 0.25))
    np.testing.assert_array_equal(layer.zeta.numpy(), np.zeros(3))


def test_rprelu_matches_methods_reference_values_and_gradients():
    layer = RPReLU(gamma_initializer=constant(0.1), beta_initializer=constant(0.25),
                   zeta_initializer=constant(0.2))
    upstream = np.arange(1, 10, dtype=np.float32).reshape(9, 1)
    y, dx, dw = grads(layer, X.reshape(9, 1), upstream)
    np.testing.assert_allclose(y.ravel(), [-0.2, -0.075, 0.05, 0.1125, 0.175, 0.35, 0.6, 1.1, 1.6],
                               atol=1e-6)
    # METHODS.md §1.2: dy/dx = 1[x > g] + b 1[x <= g]; dy/dbeta = (x - g) 1[x <= g];
    # dy/dgamma = -1[x > g] - b 1[x <= g]; dy/dzeta = 1
    u = upstream.ravel().astype(np.float64)
    above = X > 0.1
    slope = np.where(above, 1.0, 0.25)
    np.testing.assert_allclose(dx.ravel(), u * slope, rtol=1e-6)
    np.testing.assert_allclose(dw["beta"], [np.sum(u * (X - 0.1) * ~above)], rtol=1e-5)
    np.testing.assert_allclose(dw["gamma"], [-np.sum(u * slope)], rtol=1e-6)
    np.testing.assert_allclose(dw["zeta"], [np.sum(u)], rtol=1e-6)


def test_rprelu_is_per_channel(rng):
    gamma, beta, zeta = (rng.normal(size=4).astype(np.float32) for _ in range(3))
    layer = RPReLU(gamma_initializer=constant(gamma), beta_initializer=constant(beta),
                   zeta_initializer=constant(zeta))
    x = rng.normal(size=(2, 3, 3, 4)).astype(np.float32)
    z = x - gamma
    np.testing.assert_allclose(layer(x).numpy(), np.where(z > 0, z, beta * z) + zeta, rtol=1e-5,
                               atol=1e-6)


def test_learnable_bias_adds_per_channel_bias_with_unit_gradient(rng):
    layer = LearnableBias()
    x = rng.normal(size=(2, 5, 3)).astype(np.float32)
    np.testing.assert_array_equal(layer(x).numpy(), x)  # init 0
    layer.bias.assign([0.5, -1.0, 2.0])
    upstream = rng.normal(size=(2, 5, 3)).astype(np.float32)
    y, dx, dw = grads(layer, x, upstream)
    np.testing.assert_allclose(y, x + np.array([0.5, -1.0, 2.0]), rtol=1e-6)
    np.testing.assert_allclose(dx, upstream, rtol=1e-6)
    np.testing.assert_allclose(dw["bias"], upstream.sum(axis=(0, 1)), rtol=1e-5)


def test_maxout_defaults_values_and_gradients(rng):
    layer = Maxout()
    y, dx, _ = grads(layer, X.reshape(9, 1), np.ones((9, 1), np.float32))
    np.testing.assert_allclose(y.ravel(), np.where(X > 0, X, 0.25 * X), rtol=1e-6)
    gp = np.array([1.5, 0.5], np.float32)
    gm = np.array([0.25, -0.75], np.float32)
    layer = Maxout(gamma_plus_initializer=constant(gp), gamma_minus_initializer=constant(gm))
    x = rng.normal(size=(6, 2)).astype(np.float32)
    upstream = rng.normal(size=(6, 2)).astype(np.float32)
    y, dx, dw = grads(layer, x, upstream)
    relu_pos, relu_neg = np.maximum(x, 0), np.maximum(-x, 0)
    np.testing.assert_allclose(y, gp * relu_pos - gm * relu_neg, rtol=1e-6)
    np.testing.assert_allclose(dx, upstream * np.where(x > 0, gp, gm), rtol=1e-6)
    np.testing.assert_allclose(dw["gamma_plus"], (upstream * relu_pos).sum(0), rtol=1e-5)
    np.testing.assert_allclose(dw["gamma_minus"], -(upstream * relu_neg).sum(0), rtol=1e-5)


@pytest.mark.parametrize("cls", [RPReLU, LearnableBias, Maxout])
def test_layers_round_trip_through_keras_file(cls, tmp_path, rng):
    inputs = keras.Input((4, 4, 3))
    layer = cls()
    model = keras.Model(inputs, layer(inputs))
    for w in layer.weights:
        w.assign(rng.normal(size=w.shape).astype(np.float32))
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded.layers[-1]) is cls
    x = rng.normal(size=(2, 4, 4, 3)).astype(np.float32)
    np.testing.assert_array_equal(loaded(x).numpy(), model(x).numpy())


def test_layer_config_keeps_initializers():
    layer = RPReLU(beta_initializer=constant(0.5))
    clone = RPReLU.from_config(layer.get_config())
    clone.build((None, 2))
    np.testing.assert_array_equal(clone.beta.numpy(), [0.5, 0.5])


def test_unknown_channel_dimension_is_rejected():
    with pytest.raises(ValueError, match="Maxout"):
        Maxout().build((None, None))


@pytest.mark.filterwarnings("ignore:.*tf.lite.Interpreter is deprecated")
def test_rprelu_exports_a_single_tflite_prelu(tmp_path):
    """The Keras PReLU form with (1, 1, C) slopes is what TFLite fuses into one PRELU op."""
    from larq_compute_engine.mlir.python.converter import convert_saved_model

    inputs = keras.Input((4, 4, 8), batch_size=1)
    model = keras.Model(inputs, RPReLU()(inputs))
    model.export(str(tmp_path / "sm"), verbose=False)
    interpreter = tf.lite.Interpreter(model_content=convert_saved_model(str(tmp_path / "sm")))
    ops = {d["op_name"] for d in interpreter._get_ops_details()}
    assert ops == {"PRELU"}
