"""The Distiller (two teachers, a switched assistant, BNext's per-sample hard-knowledge
weighting, a ground-truth term) under tf.distribute.MirroredStrategy over two logical CPUs trains like one device: same
losses and weights. Runs this file as a script in a subprocess, because logical devices must be
set before TensorFlow initialises."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest


def _train(strategy) -> dict:
    import keras

    import kbnn
    from kbnn.training import AssistantTeacherSchedule, Distiller

    rng = np.random.default_rng(1)
    x = rng.normal(size=(64, 6)).astype(np.float32)
    y = rng.integers(0, 4, size=64)

    def model(seed, binary):
        keras.utils.set_random_seed(seed)
        quantizers = ({"input_quantizer": "ste_sign", "kernel_quantizer": "ste_sign"}
                      if binary else {})
        return keras.Sequential([keras.Input((6,)), keras.layers.Dense(16, activation="tanh"),
                                 kbnn.layers.QuantDense(4, **quantizers)])

    with strategy.scope():
        student = model(0, True)
        distiller = Distiller(student, model(1, False),
                              assistant_teachers=[model(2, False), model(3, False)],
                              teacher_weighting="hard_knowledge_per_sample",
                              ground_truth_weight=0.5)
        distiller.compile(keras.optimizers.Adam(0.01),
                          loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = distiller.fit(x, y, batch_size=16, epochs=4, verbose=0, shuffle=False,
                            callbacks=[AssistantTeacherSchedule(4)])
    return {"replicas": strategy.num_replicas_in_sync,
            "history": {k: [float(v) for v in vs] for k, vs in history.history.items()},
            "weights": [w.numpy().tolist() for w in student.trainable_variables]}


def _child() -> None:
    import tensorflow as tf

    cpus = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(cpus[0],
                                               [tf.config.LogicalDeviceConfiguration()] * 2)
    one = _train(tf.distribute.get_strategy())
    mirrored = _train(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))
    print(json.dumps({"one": one, "mirrored": mirrored}))


@pytest.fixture(scope="module")
def results():
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, str(Path(__file__).resolve())], cwd=root, env=env,
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_mirrored_trains_like_one_device(results):
    one, mirrored = results["one"], results["mirrored"]
    assert (one["replicas"], mirrored["replicas"]) == (1, 2)
    assert one["history"]["assistant_index"] == mirrored["history"]["assistant_index"] == [
        0, 0, 1, 1]
    for key in ("loss", "distillation_loss", "ground_truth_loss"):
        np.testing.assert_allclose(mirrored["history"][key], one["history"][key], rtol=1e-4)
    # Adam divides by sqrt(v): the replicas' summation order shows up at ~1e-4 after 16 steps.
    for a, b in zip(one["weights"], mirrored["weights"]):
        np.testing.assert_allclose(b, a, atol=1e-3)


if __name__ == "__main__":
    _child()
