"""A narrow zoo model trains on the 8x8 digits (small-input support), saves, loads and
converts: the same builder code as the ImageNet model, at width 0.5 and 8x8x1 inputs."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from blocks_helpers import binary_convs, flatbuffer_ops, train_on_digits

from kbnn import zoo
from kbnn.converters import convert, verify


@pytest.mark.slow
def test_narrow_reactnet_resnet18_learns_digits(tmp_path):
    # pad_values=1.0: the last stages run on 1x1 maps, where LCE's x86 same-zero kernel is
    # wrong (tests/zoo/test_zoo_convert.py); same-one padding converts exactly.
    model = zoo.ReActNetResNet18(input_shape=(8, 8, 1), classes=10, width_multiplier=0.5,
                                 classifier_activation=None, pad_values=1.0)
    losses, accuracy, data = train_on_digits(model, epochs=10)
    assert losses[-1] < 0.5 * losses[0]
    assert accuracy > 0.8, accuracy

    path = tmp_path / "digits.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(np.asarray(loaded(data.x_test[:16])),
                                  np.asarray(model(data.x_test[:16])))

    flatbuffer = convert(model, strict=True)
    assert sum(name == "LceBconv2d" for name, _ in flatbuffer_ops(flatbuffer)) == \
        len(binary_convs(model)) == 16
    report = verify(model, flatbuffer, data.x_test[:64], atol=1e-3, rtol=1e-4)
    assert report.top1_agreement == 1.0 and report.within_tolerance == 1.0
