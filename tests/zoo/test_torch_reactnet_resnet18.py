"""The official ReActNet ResNet-18 checkpoint layout (liuzechun/ReActNet,
resnet/2_step2/birealnet.py) loaded into `kbnn.zoo.ReActNetResNet18` through the registered
mapping: a real `torch.save` file (zip format, DataParallel keys) at 1/32 of the published width,
whose logits torch computed with the official padding (Conv2d(7, 2, padding=3),
MaxPool2d(3, 2, padding=1), padding=1 on the stride-2 binary convs), which the builder
reproduces."""

from torch_fixture_helpers import (
    assert_every_tensor_is_used,
    assert_matches_torch_and_converts,
    torch_fixtures,
)

from kbnn import zoo
from kbnn.zoo import torch_checkpoint as tc

NAME = "reactnet_resnet18_w1_32"

checkpoint, reference, build = torch_fixtures(NAME, zoo.ReActNetResNet18)


def test_logits_match_torch(checkpoint, reference):
    model = build(classifier_activation=None, weights=str(checkpoint))
    assert_matches_torch_and_converts(model, reference, strict=True)


def test_every_tensor_and_variable_is_used(checkpoint):
    model = build()
    assert_every_tensor_is_used(
        tc.load_torch_checkpoint(model, checkpoint, tc.reactnet_resnet18_mapping))
