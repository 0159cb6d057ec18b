"""Bop + CaseOptimizer under tf.distribute.MirroredStrategy over two logical CPUs train a kbnn
model to the same losses, flips and weights as one device (distributed_check.py, run in a
subprocess because logical devices must be set before TensorFlow initialises)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def results():
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run([sys.executable, str(HERE / "distributed_check.py")], cwd=HERE,
                          env=env, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_two_replicas_train_like_one_device(results):
    one, mirrored = results["one"], results["mirrored"]
    assert (one["replicas"], mirrored["replicas"]) == (1, 2)
    assert one["iterations"] == mirrored["iterations"] == 12
    np.testing.assert_allclose(mirrored["loss"], one["loss"], rtol=1e-4)
    np.testing.assert_allclose(mirrored["flip_ratio"], one["flip_ratio"], rtol=1e-4, atol=1e-6)
    assert min(one["flip_ratio"]) > 0  # Bop did flip weights
    for a, b in zip(one["binary"], mirrored["binary"]):
        assert np.mean(np.asarray(a) == np.asarray(b)) > 0.999
    for a, b in zip(one["float"], mirrored["float"]):
        np.testing.assert_allclose(b, a, atol=1e-4)
    # Same routing (Adam's auto-generated name differs between the two runs).
    assert ([name == "Bop" for name in one["routing"].values()]
            == [name == "Bop" for name in mirrored["routing"].values()])
    assert list(one["routing"].values()).count("Bop") == 3
