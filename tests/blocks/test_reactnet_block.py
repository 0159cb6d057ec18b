"""ReActNetBlock (ReActNet-A, arXiv 2003.03488, METHODS.md §1.4): structure against a numpy
reference (both widths, stride 1 and 2), sub-layers of both forms, argument checks. Training,
.keras round trip, conversion and BOP/FLOP counts: test_block_contract.py."""

import keras
import numpy as np
import pytest
from blocks_helpers import (
    as_f64,
    assert_matches_reference,
    np_avgpool2_same,
    np_bn,
    np_channel_scaled_sign,
    np_conv2d_same,
    np_rprelu,
    np_sign,
)

from kbnn.blocks import ReActNetBlock


def _rprelu(layer, x):
    return np_rprelu(x, as_f64(layer.gamma), as_f64(layer.beta), as_f64(layer.zeta))


def _binary_conv(conv, signs, strides=1, pad_values=0.0):
    return np_conv2d_same(signs, np_channel_scaled_sign(as_f64(conv.kernel)), strides, pad_values)


def _reference(block, x):
    """METHODS.md §1.4, written out with numpy."""
    t3 = as_f64(block.conv3x3.input_quantizer.threshold)
    out1 = np_bn(_binary_conv(block.conv3x3, np_sign(x - t3), block.strides, block.pad_values),
                 block.bn3x3)
    out1 = _rprelu(block.rprelu1, out1 + (np_avgpool2_same(x) if block.strides == 2 else x))
    if block.out_channels == x.shape[-1]:
        (conv,), (bn,) = block.convs1x1, block.bns1x1
        t = np_sign(out1 - as_f64(conv.input_quantizer.threshold))
        out2 = np_bn(_binary_conv(conv, t), bn) + out1
    else:  # one shared sign (official `move21`), two convs, the shortcut duplicated
        t = np_sign(out1 + as_f64(block.move.bias))
        out2 = np.concatenate([np_bn(_binary_conv(conv, t), bn) + out1
                               for conv, bn in zip(block.convs1x1, block.bns1x1)], axis=-1)
    return _rprelu(block.rprelu2, out2)


@pytest.mark.parametrize("out_channels, strides, pad_values, shape", [
    (8, 1, 0.0, (5, 5, 8)),      # same width
    (16, 2, 0.0, (6, 6, 8)),     # channel doubling + stride 2
    (16, 1, 1.0, (5, 5, 8)),     # channel doubling, +1 padding
    (8, 2, 1.0, (5, 5, 8)),      # same width, stride 2 on an odd size
])
def test_forward_matches_numpy_reference(out_channels, strides, pad_values, shape, rng):
    block = ReActNetBlock(out_channels, strides=strides, pad_values=pad_values)
    got = assert_matches_reference(block, shape, _reference, rng)
    assert got.shape == (2, -(-shape[0] // strides), -(-shape[1] // strides), out_channels)


def test_binary_layers_of_both_forms():
    same = ReActNetBlock(16)
    same.build((None, 8, 8, 16))
    double = ReActNetBlock(32, strides=2)
    double.build((None, 8, 8, 16))
    assert same.binary_layers == [same.conv3x3, same.convs1x1[0]]
    assert double.binary_layers == [double.conv3x3, *double.convs1x1]
    for conv in double.binary_layers:  # every binary conv is C_in -> C_in, no bias
        assert (conv.filters, conv.use_bias) == (16, False)
        assert type(conv.kernel_quantizer).__name__ == "ScaledSign"
    assert [c.kernel_size for c in double.binary_layers] == [(3, 3), (1, 1), (1, 1)]
    assert double.conv3x3.strides == (2, 2)
    assert type(double.conv3x3.input_quantizer).__name__ == "RSign"
    assert not same.doubles_channels and double.doubles_channels


@pytest.mark.parametrize("out_channels", [8, 24, 64])
def test_out_channels_other_than_c_or_2c_is_refused_at_build(out_channels):
    block = ReActNetBlock(out_channels)
    with pytest.raises(ValueError, match=r"`out_channels` of ReActNetBlock.*\(16\).*\(32\)"):
        block(keras.Input((8, 8, 16)))


@pytest.mark.parametrize("kwargs, argument", [
    ({"out_channels": -1}, "out_channels"),
    ({"out_channels": 8, "strides": 4}, "strides"),
    ({"out_channels": 8, "pad_values": -1.0}, "pad_values"),
])
def test_bad_arguments_raise_value_error(kwargs, argument):
    with pytest.raises(ValueError, match=f"`{argument}` of ReActNetBlock"):
        ReActNetBlock(**kwargs)
