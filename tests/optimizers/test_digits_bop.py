"""A binary conv net trains on scikit-learn's digits with Bop for the binary kernels and Adam
for the rest (through CaseOptimizer) to more than 90% test accuracy, within a minute."""

import time

import keras
import numpy as np
from digits_helpers import accuracy, digits_convnet

import kbnn
from kbnn.data import load_digits_split
from kbnn.optimizers import Bop, CaseOptimizer, binary_predicate, binary_variables


def binary_convnet() -> keras.Model:
    binary = {"input_quantizer": "ste_sign", "kernel_quantizer": "ste_sign", "use_bias": False}
    stem = kbnn.layers.QuantConv2D(32, 3, padding="same", kernel_quantizer="ste_sign",
                                   use_bias=False)
    return digits_convnet(stem, binary)


def test_bop_and_adam_reach_90_percent_on_digits():
    split = load_digits_split()
    model = binary_convnet()
    bop = Bop(threshold=1e-6, gamma=1e-3)
    adam = keras.optimizers.Adam(0.01)
    optimizer = CaseOptimizer((binary_predicate(model), bop), default_optimizer=adam)
    model.compile(optimizer, loss="sparse_categorical_crossentropy",
                  metrics=[kbnn.metrics.FlipRatio(model)])
    start = time.perf_counter()
    history = model.fit(split.x_train, split.y_train, batch_size=64, epochs=12, verbose=0)
    elapsed = time.perf_counter() - start
    test_accuracy = accuracy(model, split.x_test, split.y_test)
    assert test_accuracy > 0.90, test_accuracy
    assert elapsed < 60, elapsed
    # Bop owns exactly the four binary kernels, which stay +-1; Adam owns the BN parameters.
    routing = optimizer.routing()
    assert sorted(p for p, name in routing.items() if name == bop.name) == sorted(
        v.path for v in binary_variables(model))
    assert len(binary_variables(model)) == 4
    assert all(set(np.unique(v.numpy())) <= {-1.0, 1.0} for v in binary_variables(model))
    # Flipping slows down as training converges.
    flips = history.history["flip_ratio"]
    assert 0 < flips[-1] < flips[0]
