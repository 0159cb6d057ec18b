"""kbnn.training.build_optimizer: the optimizer built before the first step, so Keras traces
the train step once (counted with a layer that counts its own traces), with the same maths."""

import keras
import numpy as np
import pytest

import kbnn
from kbnn.training import build_optimizer


class _TraceCounter(keras.layers.Layer):
    """Identity that counts how often its call runs in Python (once per trace)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.traces = 0

    def call(self, inputs):
        self.traces += 1
        return inputs


def _model():
    keras.utils.set_random_seed(3)
    counter = _TraceCounter()
    inputs = keras.Input((8,))
    x = counter(inputs)
    x = kbnn.layers.QuantDense(6, input_quantizer="ste_sign", kernel_quantizer="ste_sign",
                               kernel_constraint="weight_clip")(x)
    outputs = keras.layers.Dense(3, activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    return model, counter


def _batch():
    rng = np.random.default_rng(0)
    return rng.normal(size=(16, 8)).astype("float32"), rng.integers(0, 3, size=(16,))


def test_prebuilt_optimizer_traces_the_train_step_once_with_the_same_result():
    x, y = _batch()
    plain, plain_counter = _model()
    traces_before = plain_counter.traces
    plain.train_on_batch(x, y)
    plain.train_on_batch(x, y)
    # Keras 3 builds the optimizer inside the first trace, so the step is traced twice.
    assert plain_counter.traces - traces_before == 2

    built, built_counter = _model()
    assert build_optimizer(built) is built
    assert built.optimizer.built
    traces_before = built_counter.traces
    built.train_on_batch(x, y)
    built.train_on_batch(x, y)
    assert built_counter.traces - traces_before == 1

    for a, b in zip(plain.get_weights(), built.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    # The kernel constraint still ran: the binary kernel stays in [-1, 1].
    assert np.abs(built.layers[2].kernel.numpy()).max() <= 1.0


def test_build_optimizer_is_idempotent_and_checks_its_model():
    model, _ = _model()
    build_optimizer(model)
    variables = [v.path for v in model.optimizer.variables]
    build_optimizer(model)
    assert [v.path for v in model.optimizer.variables] == variables

    uncompiled = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    with pytest.raises(ValueError, match="no optimizer.*compile"):
        build_optimizer(uncompiled)
    unbuilt = keras.Sequential([keras.layers.Dense(1)])
    unbuilt.compile("adam", "mse")
    with pytest.raises(ValueError, match="not built"):
        build_optimizer(unbuilt)
    with pytest.raises(TypeError, match="keras.Model"):
        build_optimizer("model")
