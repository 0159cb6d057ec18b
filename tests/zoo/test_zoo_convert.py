"""Every zoo model converts with `kbnn.converters.convert(model, strict=True)`.

* slow: at 224x224x3 with 1000 classes, one `LceBconv2d` per binary convolution (binary
  convolutions counted from the model's structure: QuantConv2D layers whose input and kernel
  quantizers have precision 1; ops read from the flatbuffer with TensorFlow's schema);
* fast: narrow variants (96x96x3, width 0.25, random BN/quantizer parameters) convert and the
  LCE interpreter agrees with Keras.
"""

from __future__ import annotations

import collections

import numpy as np
import pytest
from blocks_helpers import binary_convs, flatbuffer_ops, randomize

from kbnn import zoo
from kbnn.converters import convert, verify

# Binary 3x3 (and ReActNet-A 1x1) convolutions of each architecture, from the papers.
BINARY_CONVS = {"QuickNetSmall": 16, "QuickNet": 16, "QuickNetLarge": 32, "ReActNetA": 31,
                "RepReActNetA": 31, "ReActNetResNet18": 16, "BiRealNet18": 16, "BiRealNet34": 32,
                "XnorResNet18": 16, "AdaBinResNet18": 16}


def op_counts(flatbuffer: bytes) -> collections.Counter:
    return collections.Counter(name for name, _ in flatbuffer_ops(flatbuffer))


@pytest.mark.slow
@pytest.mark.parametrize("name", list(BINARY_CONVS))
def test_converts_at_224_with_one_bconv_per_binary_conv(name):
    model = zoo.get(name)
    binary = binary_convs(model)
    assert len(binary) == BINARY_CONVS[name]
    ops = op_counts(convert(model, strict=True))
    assert ops["LceBconv2d"] == len(binary)
    assert ops["FULLY_CONNECTED"] == 1  # the float classifier


@pytest.mark.parametrize("name", list(BINARY_CONVS))
def test_narrow_variant_converts_and_matches_keras(name):
    """96x96 inputs keep every binary conv's input map at least 3x3 (see
    test_same_zero_padding_on_maps_smaller_than_the_kernel)."""
    model = zoo.get(name, input_shape=(96, 96, 3), classes=10, width_multiplier=0.25,
                    classifier_activation=None)
    randomize(model)
    flatbuffer = convert(model, strict=True)
    assert op_counts(flatbuffer)["LceBconv2d"] == len(binary_convs(model)) \
        == BINARY_CONVS[name]
    x = np.random.default_rng(0).normal(size=(3, 96, 96, 3)).astype("float32")
    report = verify(model, flatbuffer, x, atol=1e-3, rtol=1e-4)
    assert report.within_tolerance == 1.0, report
    assert report.top1_agreement == 1.0


def test_rep_reactnet_a_bconvs_have_a_quarter_of_the_channels_then_a_tile():
    """RepReActNet-A (RepBNN, beta = 4): each binary conv 2C -> C/2 is one LceBconv2d of C/2
    output channels followed by a TILE to 2C (31 of them, plus the stem's x2 TILE); its BN
    (one constant per replicated channel) stays after the tile. Width 0.25 at 96x96."""
    model = zoo.RepReActNetA(input_shape=(96, 96, 3), classes=10, width_multiplier=0.25,
                             classifier_activation=None)
    randomize(model)
    flatbuffer = convert(model, strict=True)
    ops = flatbuffer_ops(flatbuffer)
    convs = binary_convs(model)
    # LceBconv2d inputs: (input, filter (C_out, kh, kw, C_in), ...); C_out = kernel's last axis
    bconv_channels = sorted(shapes[1][0] for name, shapes in ops if name == "LceBconv2d")
    assert bconv_channels == sorted(int(c.kernel.shape[-1]) for c in convs)
    assert all(int(c.kernel.shape[-1]) * 4 == int(c.kernel.shape[-2]) for c in convs)
    assert len(convs) == 31 and op_counts(flatbuffer)["TILE"] == 32
    x = np.random.default_rng(0).normal(size=(3, 96, 96, 3)).astype("float32")
    report = verify(model, flatbuffer, x, atol=1e-3, rtol=1e-4)
    assert report.within_tolerance == 1.0 and report.top1_agreement == 1.0, report


# LCE 0.16's optimised bconv kernel (x86 interpreter) computes same-zero padding wrongly when
# the input map is smaller than the 3x3 kernel (1x1, 2x2); the converter pads with +1 and
# subtracts the border map there instead (tests/converters/test_small_maps.py).
def test_same_zero_padding_on_maps_smaller_than_the_kernel():
    model = zoo.BiRealNet18(input_shape=(32, 32, 3), classes=10, width_multiplier=0.25,
                            classifier_activation=None)  # stages 3-4 run on 2x2 and 1x1
    randomize(model)
    x = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype("float32")
    report = verify(model, convert(model, strict=True), x, atol=1e-3, rtol=1e-4)
    assert report.within_tolerance == 1.0


def test_same_one_padding_on_small_maps_matches_keras():
    model = zoo.BiRealNet18(input_shape=(32, 32, 3), classes=10, width_multiplier=0.25,
                            classifier_activation=None, pad_values=1.0)
    randomize(model)
    x = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype("float32")
    report = verify(model, convert(model, strict=True), x, atol=1e-3, rtol=1e-4)
    assert report.within_tolerance == 1.0
