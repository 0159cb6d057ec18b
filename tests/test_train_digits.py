"""Issue 2 acceptance: a binary conv net trains on scikit-learn's digits with plain model.fit."""

import time

import keras
import numpy as np
from digits_helpers import accuracy, digits_convnet
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import kbnn


def _digits():
    digits = load_digits()
    x = (digits.images.astype("float32") / 8.0 - 1.0)[..., None]  # [0, 16] -> [-1, 1]
    return train_test_split(x, digits.target, test_size=0.25, random_state=0,
                            stratify=digits.target)


def _binary_convnet() -> keras.Model:
    binary = {"input_quantizer": "ste_sign", "kernel_quantizer": "ste_sign",
              "kernel_constraint": "weight_clip", "use_bias": False}
    stem = kbnn.layers.QuantConv2D(32, 3, padding="same", kernel_quantizer="ste_sign",
                                   kernel_constraint="weight_clip", use_bias=False)
    return digits_convnet(stem, binary)


def test_binary_convnet_reaches_90_percent_on_digits_within_a_minute():
    x_train, x_test, y_train, y_test = _digits()
    model = _binary_convnet()
    # Every conv/dense after the first has binarized input and kernel.
    quant = [layer for layer in model.layers if isinstance(layer, kbnn.layers.QuantConv2D)]
    assert [layer.is_binary for layer in quant] == [False, True, True]
    model.compile(keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
    start = time.perf_counter()
    model.fit(x_train, y_train, batch_size=64, epochs=12, verbose=0)
    elapsed = time.perf_counter() - start
    # Accuracy computed here from the predictions, not read from Keras' metric.
    test_accuracy = accuracy(model, x_test, y_test)
    assert test_accuracy > 0.90, test_accuracy
    assert elapsed < 60, elapsed
    # The trained binary layers really binarize: the effective kernels are +-1.
    kernel = keras.ops.convert_to_numpy(quant[1].kernel_quantizer(quant[1].kernel))
    assert set(np.unique(kernel)) <= {-1.0, 1.0}
