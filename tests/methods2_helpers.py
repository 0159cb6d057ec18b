"""The digits contract of the "Methods II" tests (FDA, DIR-Net, binarizing by classification,
LCR, RepBNN, BiMLP): a small model trains with `model.fit` on scikit-learn's digits, its
`.keras` round trip is exact, `convert(strict=True)` gives one `LceBconv2d` per binary conv
(binary convs counted by walking the model, ops read from the flatbuffer with TensorFlow's
schema), and LCE's interpreter agrees with Keras. Importable under --import-mode=importlib
because tests/conftest.py puts this folder on sys.path."""

from __future__ import annotations

import pathlib
import sys
import time
from dataclasses import dataclass

import keras
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent / "blocks"))
from blocks_helpers import (
    BATCH_SIZE,
    binary_convs,
    flatbuffer_ops,
    random_inputs,
)

from kbnn.data import load_digits_split


@dataclass
class DigitsRun:
    model: keras.Model
    losses: list
    accuracy: float
    history: dict
    seconds: float


def fit_digits(model: keras.Model, epochs: int = 3, learning_rate: float = 1e-2,
               callbacks=(), seed: int = 0, make_optimizer=None) -> DigitsRun:
    """Adam with a linear decay to 0, batch 64 (the blocks' digits recipe), plus `callbacks`;
    ``make_optimizer(schedule)`` builds another optimizer around that schedule."""
    keras.utils.set_random_seed(seed)
    data = load_digits_split()
    steps = epochs * -(-len(data.x_train) // BATCH_SIZE)
    schedule = keras.optimizers.schedules.PolynomialDecay(learning_rate, steps, 0.0)
    optimizer = (keras.optimizers.Adam(schedule) if make_optimizer is None
                 else make_optimizer(schedule))
    model.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    start = time.perf_counter()
    history = model.fit(data.x_train, data.y_train, batch_size=BATCH_SIZE, epochs=epochs,
                        verbose=0, callbacks=list(callbacks))
    seconds = time.perf_counter() - start
    predictions = np.argmax(model.predict(data.x_test, verbose=0), axis=-1)
    accuracy = float(np.mean(predictions == data.y_test))
    return DigitsRun(model, history.history["loss"], accuracy, history.history, seconds)


def fit_binary_dense(units: int, kernel_quantizer, optimizer, epochs: int = 2):
    """Seed 0; Input(5) -> QuantDense(units) with an "ste_sign" input, `kernel_quantizer` and no
    bias, fitted with `optimizer` on the MSE to random normal targets (32 examples, batch 8).
    Returns (model, layer, inputs)."""
    from kbnn.layers import QuantDense

    keras.utils.set_random_seed(0)
    inputs = keras.Input((5,))
    layer = QuantDense(units, input_quantizer="ste_sign", kernel_quantizer=kernel_quantizer,
                       use_bias=False)
    model = keras.Model(inputs, layer(inputs))
    model.compile(optimizer, "mse")
    x = np.random.default_rng(0).normal(size=(32, 5)).astype("float32")
    y = np.random.default_rng(1).normal(size=(32, units)).astype("float32")
    model.fit(x, y, batch_size=8, epochs=epochs, verbose=0)
    return model, layer, x


def stem_model(body, stem: int = 32) -> keras.Model:
    """Input(8, 8, 1) -> float 3x3 stem + BN -> body(x) -> GAP -> Dense(10)."""
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(stem, 3, padding="same", use_bias=False, name="stem")(inputs)
    x = keras.layers.BatchNormalization(momentum=0.9, name="stem_bn")(x)
    x = body(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, keras.layers.Dense(10, name="classifier")(x))


def assert_round_trip_exact(model: keras.Model, tmp_path) -> keras.Model:
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    x = random_inputs(32)
    np.testing.assert_array_equal(np.asarray(loaded(x, training=False)),
                                  np.asarray(model(x, training=False)))
    assert len(loaded.weights) == len(model.weights)
    for a, b in zip(model.weights, loaded.weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a),
                                      keras.ops.convert_to_numpy(b))
    return loaded


def bconv_widths(flatbuffer: bytes) -> list[int]:
    """Output channels of each LceBconv2d (its filter is (C_out, kh, kw, C_in packed))."""
    return [shapes[1][0] for name, shapes in flatbuffer_ops(flatbuffer) if name == "LceBconv2d"]


def assert_converts_and_agrees(model: keras.Model, strict: bool = True, n: int = 200):
    """convert(strict) -> one LceBconv2d per binary conv of the model (of its kernel's width)
    and verify's top-1 agreement >= 99%, with at least 95% of the outputs within verify's
    tolerance (a few samples may differ more: an activation within float rounding of a sign's
    threshold, e.g. 1.2e-7, can binarize differently in Keras and in LCE); returns (flatbuffer,
    report, op names)."""
    from kbnn.converters import convert, verify

    flatbuffer = convert(model, strict=strict)
    convs = binary_convs(model)
    assert sorted(bconv_widths(flatbuffer)) == sorted(int(c.kernel.shape[-1]) for c in convs)
    report = verify(model, flatbuffer, random_inputs(n))
    assert report.top1_agreement >= 0.99, report.table()
    assert report.within_tolerance >= 0.95, report.table()
    return flatbuffer, report, [name for name, _ in flatbuffer_ops(flatbuffer)]
