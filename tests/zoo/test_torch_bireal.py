"""The official Bi-Real Net-18 checkpoint layout (liuzechun/Bi-Real-net,
pytorch_implementation/BiReal18_34/birealnet.py) loaded into `kbnn.zoo.BiRealNet18` through
the registered mapping: a real `torch.save` file (zip format, DataParallel keys) at 1/32 of the
published width, whose logits torch computed with the official padding (Conv2d(7, 2,
padding=3), MaxPool2d(3, 2, padding=1), padding=1 on the binary convs)."""

import gzip
import pathlib

import numpy as np
import pytest

from kbnn import zoo
from kbnn.converters import convert, verify
from kbnn.zoo import torch_checkpoint as tc

FIXTURES = pathlib.Path(__file__).resolve().parent / "fixtures"
NAME = "bireal_net18_w1_32"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("bireal18") / f"{NAME}.pth.tar"
    path.write_bytes(gzip.decompress((FIXTURES / f"{NAME}.pth.tar.gz").read_bytes()))
    return path


def test_every_tensor_and_variable_is_used(checkpoint):
    model = zoo.BiRealNet18(input_shape=(32, 32, 3), classes=10, width_multiplier=1 / 32)
    report = tc.load_torch_checkpoint(model, checkpoint, tc.bireal_mapping)
    assert not report.unused and not report.unfilled and not report.missing
    assert "layer2.0.downsample.1.weight" in report.loaded


def test_logits_match_torch_and_the_conversion(checkpoint):
    with np.load(FIXTURES / f"{NAME}.npz") as data:
        images, logits = data["input_nhwc"].astype(np.float32), data["logits"]
    model = zoo.BiRealNet18(input_shape=(32, 32, 3), classes=10, width_multiplier=1 / 32,
                            classifier_activation=None, weights=str(checkpoint))
    outputs = model.predict(images, verbose=0)
    np.testing.assert_allclose(outputs, logits, rtol=1e-4, atol=1e-4)
    assert np.abs(outputs - logits).max() / np.abs(logits).max() < 1e-4
    np.testing.assert_array_equal(outputs.argmax(-1), logits.argmax(-1))

    report = verify(model, convert(model, strict=True), images, atol=1e-3, rtol=1e-4)
    assert report.within_tolerance == 1.0 and report.top1_agreement == 1.0, report
