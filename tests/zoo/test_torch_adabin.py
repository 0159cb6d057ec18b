"""The official AdaBin ResNet-18 checkpoint layout (huawei-noah/Efficient-Computing,
BinaryNetworks/AdaBin/imagenet/nets/resnet18.py and utils/binarylib.py) loaded into
`kbnn.zoo.AdaBinResNet18(activation_form="code")` through the registered mapping: a real
`torch.save` file (zip format, DataParallel keys under 'state_dict', as the official main.py
saves) at 1/32 of the published width, whose logits a PyTorch reference computed
(tests/zoo/make_torch_fixtures.py) with the official padding (Conv2d(7, 2, padding=3),
MaxPool2d(3, 2, padding=1), padding=1 on the binary convs, zero padding of the binarized
activations) and every alpha_a != 1, beta_a != 0 (so the code's activation form matters)."""

import numpy as np
import pytest
from torch_fixture_helpers import assert_matches_torch_and_converts, torch_fixtures

from kbnn import zoo
from kbnn.zoo import torch_checkpoint as tc
from kbnn.zoo import weights as zw

NAME = "adabin_resnet18_w1_32"

checkpoint, reference, build = torch_fixtures(NAME, zoo.AdaBinResNet18, activation_form="code")


def test_checkpoint_layout(checkpoint):
    state = tc.read_torch_checkpoint(checkpoint)
    assert state["layer2.0.conv1.weight"].shape == (4, 2, 3, 3)
    assert state["layer2.0.conv1.binary_a.alpha_a"].shape == ()
    assert state["layer4.1.nonlinear2.pos_scale"].shape == (16,)
    assert "layer2.0.downsample.1.weight" in state and "layer1.0.downsample.1.weight" not in state
    assert state["bn2.running_var"].shape == (16,)
    # created by the official module, never called: listed as known unused
    assert {"nonlinear2.pos_scale", "bn3.weight"} <= set(state)
    assert set(tc.ADABIN_UNUSED) <= set(state)


def test_logits_match_torch_and_the_conversion(checkpoint, reference):
    model = build(classifier_activation=None, weights=str(checkpoint))
    assert len(set(reference[1].argmax(-1).tolist())) > 1  # the top-1 check is not vacuous
    assert_matches_torch_and_converts(model, reference, strict=True)


def test_every_tensor_and_variable_is_used(checkpoint):
    model = build()
    report = tc.load_torch_checkpoint(model, checkpoint, tc.adabin_resnet18_mapping)
    assert not report.unused and not report.unfilled and not report.missing
    assert {"layer2.0.downsample.1.weight", "layer3.1.conv2.binary_a.beta_a",
            "nonlinear1.neg_scale", "bn2.weight", "fc.weight"} <= set(report.loaded)
    assert not set(tc.ADABIN_UNUSED) & set(report.loaded)
    alpha = model.get_layer("stage3_block4").conv.input_quantizer.alpha
    state = tc.read_torch_checkpoint(checkpoint)
    assert float(np.asarray(alpha)) == pytest.approx(
        float(state["layer3.1.conv2.binary_a.alpha_a"]))
    # the EDE constants of the weight sign's backward pass are not in the state dict: kept
    quantizer = model.get_layer("stage3_block4").conv.kernel_quantizer
    assert (float(np.asarray(quantizer.k)), float(np.asarray(quantizer.t))) == (
        pytest.approx(10.0), pytest.approx(0.1))


def test_without_top_the_head_is_unused(checkpoint, reference):
    images, logits = reference
    features = build(include_top=False, pooling="avg")
    zw.load_weights(features, checkpoint, architecture="AdaBinResNet18")
    state = tc.read_torch_checkpoint(checkpoint)
    pooled = features.predict(images, verbose=0)
    bn = (pooled - state["bn2.running_mean"]) / np.sqrt(state["bn2.running_var"] + 1e-5)
    out = (bn * state["bn2.weight"] + state["bn2.bias"]) @ state["fc.weight"].T + state["fc.bias"]
    np.testing.assert_allclose(out, logits, rtol=1e-4, atol=1e-4 * np.abs(logits).max())


def test_paper_form_is_refused_with_the_options_to_pass(checkpoint):
    with pytest.raises(ValueError, match="activation_form='code'"):
        build(activation_form="paper", weights=str(checkpoint))
    with pytest.raises(ValueError, match="pad_values=1.0"):
        tc.load_torch_checkpoint(build(pad_values=1.0), checkpoint, tc.adabin_resnet18_mapping)


def test_strict_errors_name_keys_and_shapes(checkpoint):
    state = tc.read_torch_checkpoint(checkpoint)
    del state["layer1.0.nonlinear1.pos_scale"]
    state["extra.weight"] = np.zeros(3, np.float32)
    state["layer4.1.conv2.weight"] = np.zeros((16, 16, 1, 1), np.float32)
    with pytest.raises(ValueError) as err:
        tc.load_torch_checkpoint(build(), state, tc.adabin_resnet18_mapping)
    message = str(err.value)
    assert "missing in the checkpoint (1): ['layer1.0.nonlinear1.pos_scale']" in message
    assert "unused checkpoint tensors (1): ['extra.weight']" in message
    assert "shape mismatch for 'layer4.1.conv2.weight': checkpoint (16, 16, 1, 1)" in message
    assert "(3, 3, 16, 16)" in message


def test_no_published_imagenet_checkpoint_is_registered():
    """Neither the official README nor the MindSpore port publishes ImageNet weights (the
    MindSpore port ships a CIFAR-10 ResNet-20 only): no registered name, and asking for
    "imagenet" names what is registered (nothing)."""
    assert zw.list_weights("AdaBinResNet18") == []
    with pytest.raises(ValueError, match="'AdaBinResNet18'. Registered: none"):
        zw.resolve_weights("imagenet", architecture="AdaBinResNet18")
