"""FusedBatchNormalization computes what keras.layers.BatchNormalization computes (numpy
reference of batch norm in training mode, and Keras' own layer), with the fused kernel."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from kbnn.layers import FusedBatchNormalization


def _pair(**kwargs):
    fused, plain = FusedBatchNormalization(**kwargs), keras.layers.BatchNormalization(**kwargs)
    for layer in (fused, plain):
        layer.build((None, 5, 4, 3))
    rng = np.random.default_rng(0)
    for f, p in zip(fused.weights, plain.weights):
        value = rng.uniform(0.5, 1.5, f.shape).astype("float32")
        f.assign(value)
        p.assign(value)
    return fused, plain


def _call_with_unknown_batch(layer, x):
    """The layer called in a graph where the batch size is unknown (as under `fit` on a
    dataset), so the moving-variance correction cannot be a constant."""

    @tf.function(input_signature=[tf.TensorSpec((None, *x.shape[1:]), tf.float32)])
    def call(inputs):
        return layer(inputs, training=True)

    return call(x)


@pytest.mark.parametrize("unknown_batch", [False, True], ids=["static", "unknown_batch"])
@pytest.mark.parametrize("kwargs", [{}, {"momentum": 0.9, "epsilon": 1e-5},
                                    {"scale": False}, {"center": False}])
def test_training_step_matches_numpy_and_keras(kwargs, unknown_batch):
    fused, plain = _pair(**kwargs)
    x = np.random.default_rng(1).normal(2.0, 3.0, size=(6, 5, 4, 3)).astype("float32")
    eps, momentum = fused.epsilon, fused.momentum
    gamma = np.asarray(fused.gamma) if fused.scale else 1.0
    beta = np.asarray(fused.beta) if fused.center else 0.0
    moving_mean, moving_var = np.asarray(fused.moving_mean), np.asarray(fused.moving_variance)
    mean, var = x.mean(axis=(0, 1, 2)), x.var(axis=(0, 1, 2))  # biased, as Keras
    expected = gamma * (x - mean) / np.sqrt(var + eps) + beta

    if unknown_batch:
        for layer in (fused, plain):
            y = _call_with_unknown_batch(layer, tf.constant(x))
            np.testing.assert_allclose(np.asarray(y), expected, rtol=1e-4, atol=1e-4)
            np.testing.assert_allclose(np.asarray(layer.moving_variance),
                                       momentum * moving_var + (1 - momentum) * var, rtol=1e-5)
        return
    for layer in (fused, plain):
        xt = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(xt)
            y = layer(xt, training=True)
            loss = tf.reduce_sum(y * tf.constant(np.arange(y.shape[-1], dtype="float32") + 1))
        grads = tape.gradient(loss, [xt, *layer.trainable_weights])
        np.testing.assert_allclose(np.asarray(y), expected, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(np.asarray(layer.moving_mean),
                                   momentum * moving_mean + (1 - momentum) * mean, rtol=1e-5)
        np.testing.assert_allclose(np.asarray(layer.moving_variance),
                                   momentum * moving_var + (1 - momentum) * var, rtol=1e-5)
        if layer is fused:
            fused_grads = [np.asarray(g) for g in grads]
        else:
            for a, b in zip(fused_grads, grads):
                np.testing.assert_allclose(a, np.asarray(b), rtol=1e-3, atol=1e-4)


def test_inference_and_other_shapes_use_keras_path():
    fused, plain = _pair()
    x = np.random.default_rng(2).normal(size=(2, 5, 4, 3)).astype("float32")
    np.testing.assert_array_equal(np.asarray(fused(x, training=False)),
                                  np.asarray(plain(x, training=False)))
    dense_bn = FusedBatchNormalization()
    y = dense_bn(np.ones((4, 3), "float32") * np.arange(3), training=True)  # 2-D: Keras' path
    np.testing.assert_allclose(np.asarray(y), 0.0, atol=1e-3)


def test_round_trip_and_jit(tmp_path):
    inputs = keras.Input((4, 4, 2))
    model = keras.Model(inputs, FusedBatchNormalization(name="bn")(inputs))
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded.get_layer("bn"), FusedBatchNormalization)
    model.compile("sgd", "mse", jit_compile=True)
    x = np.random.default_rng(3).normal(size=(8, 4, 4, 2)).astype("float32")
    model.fit(x, x, epochs=1, verbose=0)  # compiles and runs under XLA
    assert np.all(np.isfinite(np.asarray(model.get_layer("bn").moving_variance)))
