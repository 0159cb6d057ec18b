"""The binary conv net on scikit-learn's 8x8 digits that the digits training tests (plain fit,
Bop + Adam, distillation) share, and test accuracy computed from a model's predictions."""

import keras
import numpy as np

import kbnn


def digits_convnet(stem: keras.layers.Layer, binary: dict, softmax: bool = True,
                   name: str | None = None) -> keras.Model:
    """Input(8, 8, 1) -> `stem` (a 32-filter conv, float or kernel-quantized) -> BN -> two
    binary 64-filter 3x3 convs (padded with +1), each followed by 2x2 max pooling and BN ->
    flatten -> binary dense(10) -> BN (the logits) [-> softmax]. `binary`: the keyword arguments
    of the binary layers."""
    layers = [
        keras.Input((8, 8, 1)),
        stem,
        keras.layers.BatchNormalization(),
        kbnn.layers.QuantConv2D(64, 3, padding="same", pad_values=1.0, **binary),
        keras.layers.MaxPooling2D(2),
        keras.layers.BatchNormalization(),
        kbnn.layers.QuantConv2D(64, 3, padding="same", pad_values=1.0, **binary),
        keras.layers.MaxPooling2D(2),
        keras.layers.BatchNormalization(),
        keras.layers.Flatten(),
        kbnn.layers.QuantDense(10, **binary),
        keras.layers.BatchNormalization(),
    ]
    if softmax:
        layers.append(keras.layers.Activation("softmax"))
    return keras.Sequential(layers, name=name)


def accuracy(model: keras.Model, x: np.ndarray, y: np.ndarray) -> float:
    """The fraction of `x` whose arg-max prediction is the label in `y`."""
    return float(np.mean(np.argmax(model.predict(x, verbose=0), -1) == y))
