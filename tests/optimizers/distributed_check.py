"""Run by test_distributed.py in a fresh process: two logical CPU devices must be configured
before TensorFlow initialises its devices. Trains the same kbnn model with Bop + Adam
(CaseOptimizer) on one device and under MirroredStrategy over the two logical CPUs, and prints
the results as JSON on the last line."""

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf

CPUS = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(CPUS[0], [tf.config.LogicalDeviceConfiguration()] * 2)

import keras
import numpy as np
from optimizer_helpers import bop_adam, conv_model, data

import kbnn


def train(strategy) -> dict:
    x, y = data(128, seed=1)
    with strategy.scope():
        model = conv_model(seed=0, batch_norm=False)
        optimizer = bop_adam(model, threshold=1e-5, gamma=1e-2)
        model.compile(optimizer, "sparse_categorical_crossentropy",
                      metrics=[kbnn.metrics.FlipRatio(model)])
    history = model.fit(x, y, batch_size=32, epochs=3, verbose=0, shuffle=False)
    binary = kbnn.optimizers.binary_variables(model)
    return {
        "replicas": strategy.num_replicas_in_sync,
        "loss": history.history["loss"],
        "flip_ratio": history.history["flip_ratio"],
        "iterations": int(optimizer.iterations.numpy()),
        "binary": [v.numpy().tolist() for v in binary],
        "float": [v.numpy().tolist() for v in model.trainable_variables
                  if not any(v is b for b in binary)],
        "routing": optimizer.routing(),
    }


def main():
    assert len(tf.config.list_logical_devices("CPU")) == 2
    one = train(tf.distribute.get_strategy())
    mirrored = train(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))
    print(json.dumps({"one": one, "mirrored": mirrored, "keras": keras.__version__,
                      "numpy": np.__version__}))


if __name__ == "__main__":
    main()
