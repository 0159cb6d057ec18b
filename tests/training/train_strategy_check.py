"""Run by test_multiworker.py in a fresh process (two logical CPU devices must be configured
before TensorFlow initialises): trains the same kbnn student with Bop + Adam (CaseOptimizer)
and a Distiller through `kbnn_apps.train.run_training` (``kbnn train --strategy mirrored``),
once with MirroredStrategy on one device and once over the two logical CPUs, and prints the
results as JSON on the last line.

Both runs use MirroredStrategy because Keras takes one batch from the data before training
under any tf.distribute strategy (``TensorFlowTrainer._maybe_symbolic_build``), so a
strategy-less run would see the shuffled batches in another order.

    python train_strategy_check.py WORK_DIR
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf

CPUS = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(CPUS[0], [tf.config.LogicalDeviceConfiguration()] * 2)

import keras
import numpy as np
from training_helpers import student  # this folder: the script's own, first on sys.path

import kbnn
from kbnn_apps.train import TrainConfig, run_training


def teacher() -> keras.Model:
    keras.utils.set_random_seed(1)
    return keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
                             keras.layers.Dense(32, activation="relu"), keras.layers.Dense(10)],
                            name="teacher")


def train(work: str, devices: list[str]) -> dict:
    config = TrainConfig(
        model=os.path.join(work, "student.keras"), teacher=os.path.join(work, "teacher.keras"),
        dataset="digits", epochs=2, batch_size=64, steps_per_epoch=6, optimizer="bop",
        bop_threshold=1e-6, bop_gamma=1e-2, learning_rate=1e-2, strategy="mirrored",
        out_dir=os.path.join(work, f"{len(devices)}-devices"), seed=3)
    results = run_training(config, devices=devices, convert=False, verbose=0, log=None)
    model = results["model"]
    binary = kbnn.optimizers.binary_variables(model)
    initial = kbnn.optimizers.binary_variables(
        keras.models.load_model(os.path.join(work, "student.keras")))
    flipped = [float(np.mean(np.sign(v.numpy()) != np.where(w.numpy() >= 0, 1.0, -1.0)))
               for v, w in zip(binary, initial)]
    return {
        "flipped": flipped,
        "replicas": results["replicas"],
        "history": results["histories"][0][1],
        "binary": [v.numpy().tolist() for v in binary],
        "float": [v.numpy().tolist() for v in model.trainable_variables
                  if not any(v is b for b in binary)],
    }


def main():
    work = sys.argv[1]
    assert len(tf.config.list_logical_devices("CPU")) == 2
    student().save(os.path.join(work, "student.keras"))
    teacher().save(os.path.join(work, "teacher.keras"))
    one = train(work, ["/cpu:0"])
    mirrored = train(work, ["/cpu:0", "/cpu:1"])
    print(json.dumps({"one": one, "mirrored": mirrored, "numpy": np.__version__}))


if __name__ == "__main__":
    main()
