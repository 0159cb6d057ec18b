"""Train the zoo's digits weights: narrow variants of kbnn.zoo builders on scikit-learn's 8x8
digits, saved as zoo/weights/<architecture>_digits.weights.h5 and registered in
kbnn.zoo.digits (``weights="digits"``) with the test accuracy printed here.

    .venv/bin/python examples/train_zoo_digits.py [ARCHITECTURE ...]

Reproducible: fixed seeds (`keras.utils.set_random_seed`), the fixed stratified split of
`kbnn.data.load_digits_split` (1437 train / 360 test), single-threaded TensorFlow ops.
"""

from __future__ import annotations

import os
import pathlib
import sys

os.environ.setdefault("TF_DETERMINISTIC_OPS", "1")

import keras
import numpy as np
import tensorflow as tf

from kbnn import zoo
from kbnn.data import load_digits_split
from kbnn.zoo.digits import DIGITS_MODELS

OUT = pathlib.Path(__file__).resolve().parents[1] / "zoo" / "weights"
EPOCHS = 30
BATCH_SIZE = 32
LEARNING_RATE = 1e-2


def train(architecture: str, seed: int = 0) -> float:
    tf.config.threading.set_inter_op_parallelism_threads(1)
    tf.config.threading.set_intra_op_parallelism_threads(1)
    keras.utils.set_random_seed(seed)
    data = load_digits_split()
    entry = DIGITS_MODELS[architecture]
    model = zoo.get(architecture, **entry.options)
    steps = EPOCHS * -(-len(data.x_train) // BATCH_SIZE)
    schedule = keras.optimizers.schedules.PolynomialDecay(LEARNING_RATE, steps, 0.0)
    model.compile(keras.optimizers.Adam(schedule),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(data.x_train, data.y_train, batch_size=BATCH_SIZE, epochs=EPOCHS, verbose=0,
              shuffle=True)
    accuracy = float(np.mean(model.predict(data.x_test, verbose=0).argmax(-1) == data.y_test))
    OUT.mkdir(exist_ok=True)
    path = OUT / entry.file_name
    # saved from an uncompiled copy: the model's variables only, without the optimizer's
    clean = zoo.get(architecture, **entry.options)
    clean.set_weights(model.get_weights())
    clean.save_weights(path)
    print(f"{architecture}: test accuracy {100 * accuracy:.2f}% -> {path} "
          f"({path.stat().st_size / 1024:.0f} KiB)")
    return accuracy


if __name__ == "__main__":
    for name in sys.argv[1:] or list(DIGITS_MODELS):
        train(name)
