"""`symmetric_padding` of the blocks: False keeps TensorFlow's SAME padding (the default),
True gives the binary convolutions PyTorch's padding=k // 2 on both sides (what kbnn.zoo's
PyTorch-derived builders use); serialised, and converted exactly."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from blocks_helpers import randomize

from kbnn.blocks import AdaBinBlock, BiRealBlock, ReActNetBlock, XnorBlock
from kbnn.converters import convert, verify

BLOCKS = [(ReActNetBlock, 8), (BiRealBlock, 8), (XnorBlock, 8), (AdaBinBlock, 8)]


def model(block_class, filters, symmetric, **kwargs):
    x = keras.Input((8, 8, 4))
    block = block_class(filters, strides=2, symmetric_padding=symmetric, name="block", **kwargs)
    return keras.Model(x, block(x))


@pytest.mark.parametrize("block_class, filters", BLOCKS)
def test_default_is_same_padding_and_option_is_serialised(block_class, filters):
    assert block_class(filters).symmetric_padding is False
    m = model(block_class, filters, True)
    block = m.get_layer("block")
    assert block.get_config()["symmetric_padding"] is True
    assert block_class.from_config(block.get_config()).symmetric_padding is True
    conv = block.conv3x3 if block_class is ReActNetBlock else block.conv
    assert conv.symmetric_padding
    with pytest.raises(ValueError, match="symmetric_padding"):
        block_class(filters, symmetric_padding="yes")


@pytest.mark.parametrize("block_class, filters", BLOCKS)
def test_symmetric_padding_changes_stride_2_windows_and_converts(block_class, filters):
    same, symmetric = (model(block_class, filters, s) for s in (False, True))
    randomize(same)
    symmetric.set_weights(same.get_weights())
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 4)).astype("float32")
    assert not np.allclose(same.predict(x, verbose=0), symmetric.predict(x, verbose=0))
    report = verify(symmetric, convert(symmetric, strict=True), x, atol=1e-3, rtol=1e-4)
    assert report.within_tolerance == 1.0


def test_symmetric_binary_conv_equals_explicit_padding():
    """BiRealBlock's conv with symmetric_padding is sign(x) padded by 1 on each side, VALID."""
    m = model(BiRealBlock, 8, True, input_quantizer="ste_sign", kernel_quantizer="ste_sign")
    conv = m.get_layer("block").conv
    x = np.random.default_rng(1).normal(size=(1, 8, 8, 4)).astype("float32")
    padded = np.pad(np.where(x >= 0, 1.0, -1.0), [(0, 0), (1, 1), (1, 1), (0, 0)])
    kernel = np.where(conv.kernel.numpy() >= 0, 1.0, -1.0)
    expected = keras.ops.conv(padded, kernel, strides=2, padding="valid")
    np.testing.assert_allclose(conv(x), expected, atol=1e-5)
