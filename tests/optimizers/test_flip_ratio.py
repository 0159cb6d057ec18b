"""kbnn.metrics.FlipRatio: values on hand-made steps, the sign convention, use as a compiled
metric under fit, and its errors."""

import keras
import numpy as np
import pytest
from optimizer_helpers import bop_adam, conv_model, data

import kbnn
from kbnn.metrics import FlipRatio
from kbnn.optimizers import binary_variables


def two_layer_model():
    """Binary kernels of 4*3 = 12 and 3*2 = 6 weights (18 in all), a float bias each."""
    keras.utils.set_random_seed(3)
    return keras.Sequential([
        keras.Input((4,)),
        kbnn.layers.QuantDense(3, kernel_quantizer="ste_sign"),
        kbnn.layers.QuantDense(2, input_quantizer="ste_sign", kernel_quantizer="ste_sign"),
    ])


def set_signs(variable, signs):
    variable.assign(np.asarray(signs, np.float32) * 0.5)


def test_hand_made_steps():
    model = two_layer_model()
    first, second = (layer.kernel for layer in model.layers)
    set_signs(first, np.ones((4, 3)))
    set_signs(second, np.ones((3, 2)))
    metric = FlipRatio(model)
    assert metric.size == 18
    metric.update_state()  # nothing to compare with yet: not counted
    assert float(metric.result()) == 0.0

    signs = np.ones((4, 3))
    signs[0, :] = -1  # 3 flips
    set_signs(first, signs)
    signs2 = np.ones((3, 2))
    signs2[2, 1] = -1  # 1 flip
    set_signs(second, signs2)
    metric.update_state()
    assert float(metric.result()) == pytest.approx(4 / 18)

    # Magnitudes change, signs do not: 0 flips; the mean over two counted steps is 2/18.
    first.assign(first.numpy() * 3.0)
    metric.update_state()
    assert float(metric.result()) == pytest.approx(2 / 18)

    # reset_state zeroes the mean but keeps the signs seen last.
    metric.reset_state()
    assert float(metric.result()) == 0.0
    set_signs(first, -signs)  # all 12 flip
    metric.update_state()
    assert float(metric.result()) == pytest.approx(12 / 18)


def test_zero_counts_as_plus_one():
    """A binary weight's sign is its binarizer's: sign(0) = +1, so 0 -> 0.5 is no flip and
    0 -> -0.5 is one."""
    model = two_layer_model()
    first = model.layers[0].kernel
    first.assign(np.zeros((4, 3), np.float32))
    metric = FlipRatio(model)
    metric.update_state()
    first.assign(np.full((4, 3), 0.5, np.float32))
    metric.update_state()
    assert float(metric.result()) == 0.0
    values = np.full((4, 3), 0.5, np.float32)
    values[1, 1] = -0.5
    first.assign(values)
    metric.update_state()
    assert float(metric.result()) == pytest.approx((0 + 1 / 18) / 2)


@pytest.mark.parametrize("jit_compile", [False, True])
def test_compiled_metric_counts_the_flips_of_each_step(jit_compile):
    """Under fit the metric is updated after each optimizer step. An independent count of the
    flips of one epoch (signs saved by a callback before and after every batch) gives the same
    mean."""
    x, y = data(64)
    model = conv_model()
    binary = binary_variables(model)
    size = sum(int(np.prod(v.shape)) for v in binary)
    ratios = []

    class Count(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            self.before = [np.where(v.numpy() >= 0, 1, -1) for v in binary]

        def on_train_batch_end(self, batch, logs=None):
            after = [np.where(v.numpy() >= 0, 1, -1) for v in binary]
            ratios.append(sum(int(np.sum(a != b)) for a, b in zip(after, self.before)) / size)

    model.compile(bop_adam(model, threshold=1e-6, gamma=1e-2), "sparse_categorical_crossentropy",
                  metrics=[FlipRatio(model)], jit_compile=jit_compile)
    history = model.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[Count()])
    # Epoch 1: its first update has nothing to compare with; epoch 2: all 4 steps count.
    assert history.history["flip_ratio"][0] == pytest.approx(np.mean(ratios[1:4]), rel=1e-5)
    assert history.history["flip_ratio"][1] == pytest.approx(np.mean(ratios[4:8]), rel=1e-5)
    assert max(ratios) > 0


def test_no_flips_without_bop():
    """SGD with a tiny rate moves latent weights far from zero by less than their magnitude."""
    x, y = data(32)
    model = conv_model()
    for variable in binary_variables(model):
        variable.assign(np.where(variable.numpy() >= 0, 1.0, -1.0))
    model.compile(keras.optimizers.SGD(1e-6), "sparse_categorical_crossentropy",
                  metrics=[FlipRatio(model)])
    history = model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert history.history["flip_ratio"] == [0.0]


def test_errors():
    float_model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="no binary weights"):
        FlipRatio(float_model)
    model = two_layer_model()
    metric = FlipRatio(model)
    with pytest.raises(ValueError, match="already bound"):
        metric.bind(model)
    restored = FlipRatio.from_config(metric.get_config())
    assert restored.name == "flip_ratio"
    with pytest.raises(ValueError, match="not bound"):
        restored.update_state()
    restored.bind(model)
    restored.update_state()
    assert float(restored.result()) == 0.0
