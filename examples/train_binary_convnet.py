"""Train a binary conv net on scikit-learn's digits with plain `model.fit` (the README example)."""

import os

# Before TensorFlow loads: hide its C++ log lines (e.g. "failed call to cuInit" on a machine
# without a GPU, which is harmless), so that the output below is the training's own.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
from sklearn.datasets import load_digits

import kbnn

digits = load_digits()
x, y = (digits.images / 8.0 - 1.0)[..., None].astype("float32"), digits.target
binary = {"input_quantizer": "ste_sign", "kernel_quantizer": "ste_sign",
          "kernel_constraint": "weight_clip", "use_bias": False, "padding": "same"}
model = keras.Sequential([
    keras.Input((8, 8, 1)),
    kbnn.layers.QuantConv2D(32, 3, padding="same", kernel_quantizer="ste_sign", use_bias=False),
    keras.layers.BatchNormalization(), kbnn.layers.QuantConv2D(64, 3, pad_values=1.0, **binary),
    keras.layers.MaxPooling2D(2), keras.layers.BatchNormalization(), keras.layers.Flatten(),
    keras.layers.Dense(10, activation="softmax")])
model.compile("adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
model.fit(x[:1400], y[:1400], epochs=10, validation_data=(x[1400:], y[1400:]))
kbnn.summary(model)   # bits, parameters by precision, binary and float MACs, OPs
