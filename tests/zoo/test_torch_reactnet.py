"""The official ReActNet-A checkpoint layout (liuzechun/ReActNet, mobilenet/2_step2/reactnet.py)
loaded into `kbnn.zoo.ReActNetA` through the registered mapping: a real `torch.save` file at 1/32
of the published width (legacy format, DataParallel keys, as the release), whose logits torch
computed, must come out of the Keras model. The reference computes with the official padding
(PyTorch's padding=1 on both sides of every stride-2 3x3 conv), which the builder reproduces;
TensorFlow's SAME padding would shift those windows by one pixel."""

import collections

import numpy as np
import pytest
from blocks_helpers import flatbuffer_ops
from torch_fixture_helpers import assert_converts_and_verifies, assert_logits_match, torch_fixtures

from kbnn import zoo
from kbnn.converters import convert
from kbnn.zoo import torch_checkpoint as tc
from kbnn.zoo import weights as zw

NAME = "reactnet_a_w1_32"

checkpoint, reference, build = torch_fixtures(NAME, zoo.ReActNetA)


def test_checkpoint_layout(checkpoint):
    obj = tc.read_torch_object(checkpoint)
    assert obj["epoch"] == 255
    assert obj["optimizer"]["param_groups"][0]["betas"] == (0.9, 0.999)
    state = tc.read_torch_checkpoint(checkpoint)
    assert state["feature.1.binary_3x3.weights"].shape == (9, 1)
    assert "feature.13.binary_pw.weights" in state and "fc.weight" in state


def test_logits_match_torch(checkpoint, reference):
    model = build(classifier_activation=None)
    report = tc.load_torch_checkpoint(model, checkpoint, tc.reactnet_a_mapping)
    assert not report.unfilled and not report.unused
    images, logits = reference
    assert_logits_match(model.predict(images, verbose=0), logits)


def test_imported_model_converts_and_matches(checkpoint, reference):
    model = build(classifier_activation=None, weights=str(checkpoint))
    images = reference[0]
    # At 1/32 width block 1's two channel-doubling 1x1 convs are 1 -> 1 channel, read the same
    # sign and this checkpoint's kernels binarize to the same sign: TFLite's converter merges
    # the two identical LceBconv2d ops into one (common subexpressions). The converter's count
    # check knows such merges, so strict conversion passes with 30 LceBconv2d for 31 binary
    # convs, and nothing but the stem is a float conv.
    first, second = model.get_layer("block1").convs1x1
    assert tuple(first.kernel.shape) == (1, 1, 1, 1)
    assert np.array_equal(np.sign(first.kernel), np.sign(second.kernel))
    assert_converts_and_verifies(model, images, strict=True)
    ops = collections.Counter(name for name, _ in flatbuffer_ops(convert(model, strict=True)))
    assert ops["LceBconv2d"] == 30 and ops["CONV_2D"] == 1


def test_builder_weights_argument_uses_the_registered_mapping(checkpoint, reference):
    model = build(classifier_activation=None, weights=str(checkpoint))
    images, logits = reference
    np.testing.assert_allclose(model.predict(images, verbose=0), logits, rtol=1e-4, atol=1e-4)


def test_without_top_the_classifier_is_left_out(checkpoint, reference):
    model = build(include_top=False, pooling="avg")
    zw.load_weights(model, checkpoint, architecture="ReActNetA")
    features = model.predict(reference[0], verbose=0)
    state = tc.read_torch_checkpoint(checkpoint)
    logits = features @ state["fc.weight"].T + state["fc.bias"]
    np.testing.assert_allclose(logits, reference[1], rtol=1e-4, atol=1e-4)


def test_other_input_quantizer_is_refused_with_a_reason(checkpoint):
    model = build(input_quantizer="ste_sign")
    with pytest.raises(ValueError, match="build the model with input_quantizer='rsign'"):
        tc.load_torch_checkpoint(model, checkpoint, tc.reactnet_a_mapping)


def test_wrong_width_names_the_mismatched_tensors(checkpoint):
    model = zoo.ReActNetA(input_shape=(32, 32, 3), classes=10, width_multiplier=1 / 16)
    with pytest.raises(ValueError, match=r"shape mismatch for 'feature.0.conv1.weight': "
                                         r"checkpoint \(1, 3, 3, 3\) \(transformed to "
                                         r"\(3, 3, 3, 1\)\) vs variable stem_conv/kernel "
                                         r"\(3, 3, 3, 2\)"):
        tc.load_torch_checkpoint(model, checkpoint, tc.reactnet_a_mapping)
