"""Shared fixtures. TensorFlow's C++ logging is quietened before TF is imported."""

import os
import pathlib
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Make `reference_values` (shared by the test modules) importable under --import-mode=importlib,
# which does not put test folders on sys.path.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import keras
import numpy as np
import pytest


@pytest.fixture(autouse=True)
def _seed():
    """Every test starts from the same seeds, so failures reproduce."""
    keras.utils.set_random_seed(1234)
    np.random.seed(1234)
    yield


@pytest.fixture
def rng():
    return np.random.default_rng(0)
