"""Make `optimizer_helpers` (shared by these test modules) importable under
``--import-mode=importlib``, which does not put test folders on sys.path; reset the global dtype
policy after every test (the mixed-precision tests set it)."""

import pathlib
import sys

import keras
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))


@pytest.fixture(autouse=True)
def _float32_policy():
    yield
    keras.mixed_precision.set_global_policy("float32")
