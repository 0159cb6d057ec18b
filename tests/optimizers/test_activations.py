"""kbnn.activations: hard_tanh and leaky_tanh (larq's definitions) against numpy, their
gradients, the string names, and a layer using them saved and loaded."""

import tempfile
from pathlib import Path

import keras
import numpy as np
import pytest
from reference_values import X, value_and_grad

import kbnn
from kbnn.activations import hard_tanh, leaky_tanh

GRID = np.concatenate([X, np.array([-3.0, -1.0001, 1.0001, 2.0, 3.0], np.float32)])


def leaky_tanh_np(x, alpha=0.2):
    """x on [-1, 1], alpha x + (1 - alpha) sign(x) outside."""
    return np.where(np.abs(x) <= 1, x, alpha * x + (1 - alpha) * np.sign(x))


def test_hard_tanh():
    y, dy = value_and_grad(hard_tanh, GRID)
    np.testing.assert_allclose(y, np.clip(GRID, -1, 1))
    inside = np.abs(GRID) < 1
    np.testing.assert_array_equal(dy[inside], 1.0)
    np.testing.assert_array_equal(dy[np.abs(GRID) > 1], 0.0)


@pytest.mark.parametrize("alpha", [0.2, 0.05])
def test_leaky_tanh(alpha):
    y, dy = value_and_grad(lambda x: leaky_tanh(x, alpha), GRID)
    np.testing.assert_allclose(y, leaky_tanh_np(GRID, alpha), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(dy, np.where(np.abs(GRID) <= 1, 1.0, alpha), rtol=1e-6)
    # Continuous at +-1, slope alpha outside: leaky_tanh(3) = 1 + 2 alpha.
    assert float(leaky_tanh(np.float32(3.0), alpha)) == pytest.approx(1 + 2 * alpha)


def test_string_names_resolve():
    assert keras.activations.get("leaky_tanh") is leaky_tanh
    np.testing.assert_allclose(keras.activations.get("hard_tanh")(GRID), np.clip(GRID, -1, 1))


def test_layer_with_leaky_tanh_saves_and_loads():
    model = keras.Sequential([keras.Input((3,)),
                              kbnn.layers.QuantDense(4, kernel_quantizer="ste_sign",
                                                     activation="leaky_tanh"),
                              keras.layers.Dense(2, activation=kbnn.activations.hard_tanh)])
    x = np.random.default_rng(0).normal(size=(5, 3)).astype("float32") * 3
    with tempfile.TemporaryDirectory() as folder:
        path = str(Path(folder) / "m.keras")
        model.save(path)
        loaded = keras.models.load_model(path)
    assert loaded.layers[0].activation is leaky_tanh
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
