"""BiRealBlock (Bi-Real Net, arXiv 1808.00278, METHODS.md §8.3): structure against a numpy
reference, sub-layers, argument checks. Training, .keras round trip, conversion and BOP/FLOP
counts: test_block_contract.py."""

import keras
import pytest
from blocks_helpers import (
    as_f64,
    assert_matches_reference,
    np_bn,
    np_channel_scaled_sign,
    np_conv2d_same,
    np_shortcut,
    np_sign,
)

from kbnn.blocks import BiRealBlock


def _reference(block, x):
    """out = BN(conv3x3_s(sign(x), mean|W| sign(W))) + shortcut(x), §8.3."""
    w = np_channel_scaled_sign(as_f64(block.conv.kernel))
    out = np_conv2d_same(np_sign(x), w, block.strides, block.pad_values)
    return np_bn(out, block.bn) + np_shortcut(block, x)


@pytest.mark.parametrize("filters, strides, pad_values, shape", [
    (8, 1, 0.0, (5, 5, 8)),     # identity shortcut, zero padding
    (16, 2, 1.0, (5, 5, 8)),    # downsampling shortcut, odd size, +1 padding
    (16, 1, 0.0, (4, 4, 8)),    # width change only: 1x1 conv + BN, no pooling
])
def test_forward_matches_numpy_reference(filters, strides, pad_values, shape, rng):
    block = BiRealBlock(filters, strides=strides, pad_values=pad_values)
    assert_matches_reference(block, shape, _reference, rng)
    assert (block.shortcut is None) == (strides == 1 and filters == shape[-1])


def test_binary_layers_and_quantizers():
    block = BiRealBlock(16, strides=2)
    block.build((None, 8, 8, 8))
    assert block.binary_layers == [block.conv]
    conv = block.conv
    assert (conv.kernel_size, conv.strides, conv.use_bias) == ((3, 3), (2, 2), False)
    assert type(conv.input_quantizer).__name__ == "ApproxSign"
    assert type(conv.kernel_quantizer).__name__ == "MagnitudeAwareSign"
    # the shortcut's 1x1 conv is real-valued
    assert type(block.shortcut.conv) is keras.layers.Conv2D


@pytest.mark.parametrize("kwargs, argument", [
    ({"filters": 0}, "filters"),
    ({"filters": 8, "strides": 3}, "strides"),
    ({"filters": 8, "pad_values": 0.5}, "pad_values"),
    ({"filters": 8, "pad_values": True}, "pad_values"),  # a bool is not 1.0
    ({"filters": 8, "pad_values": False}, "pad_values"),
])
def test_bad_arguments_raise_value_error(kwargs, argument):
    with pytest.raises(ValueError, match=f"`{argument}` of BiRealBlock"):
        BiRealBlock(**kwargs)


def test_config_round_trip():
    block = BiRealBlock(24, strides=2, pad_values=1.0, name="b")
    clone = BiRealBlock.from_config(block.get_config())
    assert (clone.filters, clone.strides, clone.pad_values, clone.name) == (24, 2, 1.0, "b")
