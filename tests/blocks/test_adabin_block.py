"""AdaBinBlock (AdaBin, arXiv 2208.08084, METHODS.md §3.3): forward against a numpy reference
with both padding semantics, sub-layers, argument checks. Training, .keras round trip, conversion
(one LceBconv2d per conv despite the weight centre) and BOP/FLOP counts: test_block_contract.py."""

import keras
import numpy as np
import pytest
from blocks_helpers import (
    as_f64,
    assert_matches_reference,
    flatbuffer_ops,
    np_bn,
    np_conv2d_same,
    np_shortcut,
    np_sign,
    single_block_model,
)
from kbnn.converters import convert, verify

from kbnn.blocks import AdaBinBlock


def _adabin_kernel(w):
    """Per output channel: centre = mean, half-distance = population std (§3.1)."""
    centre = w.mean(axis=(0, 1, 2))
    spread = np.sqrt(((w - centre) ** 2).mean(axis=(0, 1, 2)))
    return spread * np_sign(w - centre) + centre


def _reference(block, x):
    """out = Maxout(BN(conv(a, W_b)) + shortcut(x)) with a = alpha sign(x - beta) + beta (paper
    form) or alpha (sign(x - beta) + beta) (official code's form).

    The binarized activation is padded with 0 (pad_values=0) or its +1 level (sign = +1)."""
    act = block.conv.input_quantizer
    alpha, beta = float(act.alpha), float(act.beta)
    if block.activation_form == "paper":
        a, plus_one = alpha * np_sign(x - beta) + beta, alpha + beta
    else:
        a, plus_one = alpha * (np_sign(x - beta) + beta), alpha * (1 + beta)
    pad = 0.0 if block.pad_values == 0.0 else plus_one
    out = np_conv2d_same(a, _adabin_kernel(as_f64(block.conv.kernel)), block.strides, pad)
    out = np_bn(out, block.bn) + np_shortcut(block, x)
    g_plus, g_minus = as_f64(block.maxout.gamma_plus), as_f64(block.maxout.gamma_minus)
    return g_plus * np.maximum(out, 0) - g_minus * np.maximum(-out, 0)


@pytest.mark.parametrize("filters, strides, pad_values, shape, form", [
    (8, 1, 0.0, (5, 5, 8), "paper"),     # identity shortcut, zero padding (official)
    (8, 1, 1.0, (5, 5, 8), "paper"),     # identity shortcut, +1-level padding
    (16, 2, 0.0, (5, 5, 8), "paper"),    # downsampling shortcut, odd size
    (16, 2, 1.0, (6, 6, 8), "paper"),
    (8, 1, 0.0, (5, 5, 8), "code"),      # the official code's activation set and padding
    (16, 2, 1.0, (6, 6, 8), "code"),
])
def test_forward_matches_numpy_reference(filters, strides, pad_values, shape, form, rng):
    block = AdaBinBlock(filters, strides=strides, pad_values=pad_values, activation_form=form)
    assert_matches_reference(block, shape, _reference, rng)


@pytest.mark.parametrize("pad_values", [0.0, 1.0])
def test_code_form_converts_to_one_bconv_and_verifies(pad_values, rng):
    block = AdaBinBlock(32, pad_values=pad_values, activation_form="code")
    model = single_block_model(block, (6, 6, 32))
    block.conv.input_quantizer.alpha.assign(1.3)
    block.conv.input_quantizer.beta.assign(0.4)  # alpha * beta != beta: differs from the paper
    flatbuffer = convert(model, strict=True)
    assert [name for name, _ in flatbuffer_ops(flatbuffer)].count("LceBconv2d") == 1
    x = rng.normal(size=(8, 6, 6, 32)).astype("float32")
    report = verify(model, flatbuffer, x)
    assert report.max_rel_diff < 1e-4, report.table()


def test_padding_semantics_differ_only_at_the_border(rng):
    """Zero padding and +1-level padding agree wherever the 3x3 window is inside the image."""
    x = rng.normal(size=(1, 6, 6, 8)).astype("float32")
    outputs = []
    for pad_values in (0.0, 1.0):
        keras.utils.set_random_seed(5)  # the same kernels for both
        block = AdaBinBlock(8, pad_values=pad_values)
        model = single_block_model(block, (6, 6, 8))
        block.conv.input_quantizer.beta.assign(0.5)  # +1 level alpha + beta != 0
        outputs.append(np.asarray(model(x, training=False)))
    zero, one = outputs
    np.testing.assert_allclose(zero[:, 1:-1, 1:-1], one[:, 1:-1, 1:-1], rtol=1e-5, atol=1e-5)
    assert np.abs(zero[:, 0] - one[:, 0]).max() > 1e-3


def test_structure():
    block = AdaBinBlock(16, strides=2, pad_values=1.0)
    block.build((None, 8, 8, 8))
    assert block.binary_layers == [block.conv]
    conv = block.conv
    assert type(conv.input_quantizer).__name__ == "AdaBinActivation"
    assert type(conv.kernel_quantizer).__name__ == "AdaBinWeight"
    assert (conv.kernel_size, conv.strides, conv.use_bias, conv.pad_values) == (
        (3, 3), (2, 2), False, 1.0)
    assert type(block.shortcut.conv) is keras.layers.Conv2D
    assert type(block.maxout).__name__ == "Maxout"


@pytest.mark.parametrize("kwargs, argument", [
    ({"filters": 2.5}, "filters"),
    ({"filters": 8, "strides": -1}, "strides"),
    ({"filters": 8, "pad_values": "same"}, "pad_values"),
    ({"filters": 8, "activation_form": "torch"}, "activation_form"),
])
def test_bad_arguments_raise_value_error(kwargs, argument):
    with pytest.raises(ValueError, match=f"`{argument}` of AdaBinBlock"):
        AdaBinBlock(**kwargs)
