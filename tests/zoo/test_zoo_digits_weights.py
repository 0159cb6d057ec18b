"""The digits weights shipped in kbnn.zoo (zoo/weights/, registered as weights="digits" by
kbnn.zoo.digits, trained by examples/train_zoo_digits.py): each loads, reaches the registered
test accuracy on the digits test split, and so does its converted flatbuffer run by LCE's
interpreter."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest

from kbnn import zoo
from kbnn.converters import convert
from kbnn.converters.verify import run_flatbuffer
from kbnn.data import load_digits_split
from kbnn.zoo import weights as zw
from kbnn.zoo.digits import DIGITS_MODELS

TOLERANCE = 0.5  # percent


@pytest.fixture(scope="module")
def data():
    return load_digits_split()


@pytest.mark.parametrize("architecture", list(DIGITS_MODELS))
def test_entry_is_registered_and_shipped(architecture):
    entry = zw.get_weights_entry(architecture, "digits")
    assert entry.top1 == DIGITS_MODELS[architecture].top1 > 80
    path, _ = zw.resolve_weights("digits", architecture=architecture)
    assert os.path.isfile(path) and os.path.getsize(path) < 1_000_000  # < 1 MB


@pytest.mark.parametrize("architecture", list(DIGITS_MODELS))
def test_weights_reach_the_registered_accuracy_in_keras_and_lce(architecture, data):
    model = zoo.get(architecture, weights="digits")
    top1 = DIGITS_MODELS[architecture].top1
    accuracy = 100 * np.mean(model.predict(data.x_test, verbose=0).argmax(-1) == data.y_test)
    assert abs(accuracy - top1) <= TOLERANCE, (accuracy, top1)
    outputs = run_flatbuffer(convert(model, strict=True), data.x_test)
    lce_accuracy = 100 * np.mean(np.asarray(outputs).argmax(-1) == data.y_test)
    assert abs(lce_accuracy - top1) <= TOLERANCE, (lce_accuracy, top1)


def test_bnext_digits_weights_are_binary():
    # BNext's weights are binary, and convert, only once their temperature tau < 1e-7
    # (examples/train_zoo_digits.py anneals it within the training); the file keeps tau.
    model = zoo.get("BNextTiny", weights="digits")
    taus = [float(w.numpy()) for w in model.weights if w.path.endswith("/tau")]
    assert len(taus) == 31 and max(taus) < 1e-7, taus


def test_other_options_name_the_needed_ones():
    architecture = next(iter(DIGITS_MODELS))
    with pytest.raises(ValueError, match=r"weights='digits' need the builder options"):
        zoo.get(architecture, weights="digits", classes=5)
    with pytest.raises(ValueError, match=r"weights='digits' need the builder options"):
        zoo.get(architecture, weights="digits", input_shape=(32, 32, 3))
    # a builder called directly with other builder options (here the width)
    options = {**DIGITS_MODELS[architecture].options, "width_multiplier": 0.25}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ValueError, match=r"weights='digits' need the builder options"):
            getattr(zoo, architecture)(weights="digits", **options)
    # the error says it all: Keras' per-layer warnings of the failed load are not shown
    assert not [w for w in caught if "Skipping" in str(w.message)]


def test_architecture_without_digits_weights_is_refused():
    with pytest.raises(ValueError, match="no 'digits' weights"):
        zoo.get("QuickNetSmall", weights="digits")
