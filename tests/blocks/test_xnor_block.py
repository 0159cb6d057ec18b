"""XnorBlock (XNOR-Net, arXiv 1603.05279, METHODS.md §9.1): BN -> sign -> binary conv with XNOR
weights, the optional activation scale K against a numpy reference and hand values, structure,
argument checks. Training, .keras round trip, conversion and BOP/FLOP counts:
test_block_contract.py."""

import numpy as np
import pytest
from blocks_helpers import (
    as_f64,
    assert_matches_reference,
    np_bn,
    np_channel_scaled_sign,
    np_conv2d_same,
    np_sign,
)

from kbnn.blocks import XnorBlock


def _reference(block, x):
    """out = conv(sign(BN(x)), alpha sign(W)) [* K], K = mean_c|BN(x)| (*) box(kh, kw)."""
    y = np_bn(x, block.bn)
    w = np_channel_scaled_sign(as_f64(block.conv.kernel))
    out = np_conv2d_same(np_sign(y), w, block.strides, block.pad_values)
    if block.activation_scale:
        kh, kw = block.kernel_size
        a = np.abs(y).mean(axis=-1, keepdims=True)
        out = out * np_conv2d_same(a, np.full((kh, kw, 1, 1), 1.0 / (kh * kw)), block.strides)
    return out


@pytest.mark.parametrize("filters, kernel_size, strides, activation_scale, pad_values, shape", [
    (8, 3, 1, False, 0.0, (5, 5, 4)),
    (8, 3, 2, True, 0.0, (5, 5, 4)),
    (6, (3, 1), 1, True, 1.0, (4, 6, 4)),
    (8, 5, 2, True, 1.0, (6, 6, 4)),
])
def test_forward_matches_numpy_reference(filters, kernel_size, strides, activation_scale,
                                         pad_values, shape, rng):
    block = XnorBlock(filters, kernel_size, strides=strides, activation_scale=activation_scale,
                      pad_values=pad_values)
    assert_matches_reference(block, shape, _reference, rng)


def test_xnor_weight_scale_hand_values():
    """METHODS.md §13: filters [0.5, -1, 0.25, -0.25] (alpha 0.5) and [2, -0.1, 0.1, 0.3]
    (alpha 0.625) on sign(BN(x)) = [1, -1, 1, -1] give 0.5 * 4 = 2 and 0.625 * 2 = 1.25."""
    block = XnorBlock(2, kernel_size=1)
    block.build((None, 1, 1, 4))
    block.bn.set_weights([np.ones(4), np.zeros(4), np.zeros(4), np.ones(4) - 1e-5])
    block.conv.kernel.assign(np.array([[0.5, -1, 0.25, -0.25], [2, -0.1, 0.1, 0.3]],
                                      "float32").T.reshape(1, 1, 4, 2))
    x = np.array([0.3, -2.0, 1.5, -0.1], "float32").reshape(1, 1, 1, 4)
    np.testing.assert_allclose(np.asarray(block(x, training=False)).ravel(), [2.0, 1.25],
                               rtol=1e-6)


def test_activation_scale_hand_values():
    """x = [1, 1] on a 3x3 map, identity BN, one all-ones 3x3 filter, zero padding: the binary
    conv counts 2 x (pixels in the window) = 18 / 12 / 8 (centre / edge / corner) and
    K = A (*) box = 1 / (6/9) / (4/9), so out = 18, 8 and 32/9."""
    block = XnorBlock(1, kernel_size=3, activation_scale=True)
    block.build((None, 3, 3, 2))
    block.bn.set_weights([np.ones(2), np.zeros(2), np.zeros(2), np.ones(2) - 1e-5])
    block.conv.kernel.assign(np.ones((3, 3, 2, 1), "float32"))
    out = np.asarray(block(np.ones((1, 3, 3, 2), "float32"), training=False))[0, :, :, 0]
    corner, edge = 32 / 9, 8.0
    np.testing.assert_allclose(out, [[corner, edge, corner], [edge, 18.0, edge],
                                     [corner, edge, corner]], rtol=1e-5)


def test_structure_and_weight_clip():
    block = XnorBlock(8, strides=2)
    block.build((None, 8, 8, 4))
    assert block.binary_layers == [block.conv]
    conv = block.conv
    assert type(conv.input_quantizer).__name__ == "SteSign"
    assert type(conv.kernel_quantizer).__name__ == "XnorWeight"
    assert conv.use_bias is False and conv.strides == (2, 2)
    # latent weights are clipped to [-1, 1] after each update, as in the official code
    clipped = conv.kernel_constraint(np.array([-3.0, -0.5, 0.25, 2.0], "float32"))
    np.testing.assert_array_equal(np.asarray(clipped), [-1.0, -0.5, 0.25, 1.0])


@pytest.mark.parametrize("kwargs, argument", [
    ({"filters": 0}, "filters"),
    ({"filters": 8, "kernel_size": 0}, "kernel_size"),
    ({"filters": 8, "kernel_size": (3, 3, 3)}, "kernel_size"),
    ({"filters": 8, "strides": 0}, "strides"),
    ({"filters": 8, "activation_scale": "yes"}, "activation_scale"),
    ({"filters": 8, "pad_values": 2.0}, "pad_values"),
])
def test_bad_arguments_raise_value_error(kwargs, argument):
    with pytest.raises(ValueError, match=f"`{argument}` of XnorBlock"):
        XnorBlock(**kwargs)
