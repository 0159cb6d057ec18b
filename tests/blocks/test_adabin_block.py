"""AdaBinBlock (AdaBin, arXiv 2208.08084, METHODS.md §3.3): structure against a numpy reference
with both padding semantics, training on digits, .keras round trip, LCE conversion and BOP/FLOP
counts."""

import keras
import numpy as np
import pytest
from blocks_helpers import (
    STEM_FLOPS,
    binary_convs,
    classifier_flops,
    conv_macs,
    np_avgpool2_same,
    np_bn,
    np_conv2d_same,
    np_sign,
    random_inputs,
    randomize,
    train_on_digits,
    two_block_model,
)
from kbnn.converters import convert, inspect, verify

import kbnn
from kbnn.blocks import AdaBinBlock

EPOCHS = 3


def _np(variable):
    return np.asarray(variable, np.float64)


def _adabin_kernel(w):
    """Per output channel: centre = mean, half-distance = population std (§3.1)."""
    centre = w.mean(axis=(0, 1, 2))
    spread = np.sqrt(((w - centre) ** 2).mean(axis=(0, 1, 2)))
    return spread * np_sign(w - centre) + centre


def _reference(block, x):
    """out = Maxout(BN(conv(alpha sign(x - beta) + beta, W_b)) + shortcut(x)).

    The binarized activation is padded with 0 (pad_values=0) or its +1 level alpha + beta."""
    act = block.conv.input_quantizer
    alpha, beta = float(act.alpha), float(act.beta)
    a = alpha * np_sign(x - beta) + beta
    pad = 0.0 if block.pad_values == 0.0 else alpha + beta
    out = np_conv2d_same(a, _adabin_kernel(_np(block.conv.kernel)), block.strides, pad)
    out = np_bn(out, block.bn)
    if block.shortcut is None:
        out = out + x
    else:
        pooled = np_avgpool2_same(x) if block.strides == 2 else x
        out = out + np_bn(np_conv2d_same(pooled, _np(block.shortcut.conv.kernel)),
                          block.shortcut.bn)
    g_plus, g_minus = _np(block.maxout.gamma_plus), _np(block.maxout.gamma_minus)
    return g_plus * np.maximum(out, 0) - g_minus * np.maximum(-out, 0)


@pytest.mark.parametrize("filters, strides, pad_values, shape", [
    (8, 1, 0.0, (5, 5, 8)),     # identity shortcut, zero padding (official)
    (8, 1, 1.0, (5, 5, 8)),     # identity shortcut, +1-level padding
    (16, 2, 0.0, (5, 5, 8)),    # downsampling shortcut, odd size
    (16, 2, 1.0, (6, 6, 8)),
])
def test_forward_matches_numpy_reference(filters, strides, pad_values, shape, rng):
    block = AdaBinBlock(filters, strides=strides, pad_values=pad_values)
    inputs = keras.Input(shape)
    model = keras.Model(inputs, block(inputs))
    randomize(model)
    x = rng.normal(size=(2,) + shape).astype("float32")
    np.testing.assert_allclose(np.asarray(model(x, training=False)),
                               _reference(block, x.astype(np.float64)), rtol=1e-4, atol=1e-4)


def test_padding_semantics_differ_only_at_the_border(rng):
    """Zero padding and +1-level padding agree wherever the 3x3 window is inside the image."""
    x = rng.normal(size=(1, 6, 6, 8)).astype("float32")
    outputs = []
    for pad_values in (0.0, 1.0):
        keras.utils.set_random_seed(5)  # the same kernels for both
        block = AdaBinBlock(8, pad_values=pad_values)
        inputs = keras.Input((6, 6, 8))
        model = keras.Model(inputs, block(inputs))
        randomize(model)
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
])
def test_bad_arguments_raise_value_error(kwargs, argument):
    with pytest.raises(ValueError, match=f"`{argument}` of AdaBinBlock"):
        AdaBinBlock(**kwargs)


# --- two blocks on digits: 8x8x32 -> AdaBinBlock(32) [zero pad] -> AdaBinBlock(64, s2) [+1 pad]

@pytest.fixture(scope="module")
def trained():
    keras.utils.set_random_seed(0)
    model = two_block_model(AdaBinBlock(32, name="zero_pad"),
                            AdaBinBlock(64, strides=2, pad_values=1.0, name="one_pad"))
    losses, accuracy, _ = train_on_digits(model, EPOCHS)
    return model, losses, accuracy


@pytest.fixture(scope="module")
def flatbuffer(trained):
    return convert(trained[0], strict=True)


def test_two_block_model_trains_on_digits(trained):
    _, losses, accuracy = trained
    assert losses[-1] < 0.5 * losses[0], losses
    assert accuracy > 0.8, accuracy  # chance is 0.1; about 0.95 measured


def test_keras_round_trip_gives_identical_outputs(trained, tmp_path):
    model = trained[0]
    path = str(tmp_path / "adabin.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    x = random_inputs(32)
    np.testing.assert_array_equal(np.asarray(loaded(x)), np.asarray(model(x)))
    assert loaded.get_layer("zero_pad").get_config() == model.get_layer("zero_pad").get_config()
    assert loaded.get_layer("one_pad").pad_values == 1.0


def test_converts_every_binary_conv_to_bconvs(trained, flatbuffer):
    """Each AdaBin conv is an LceBconv2d on sign(x - beta) and sign(W - centre); its non-zero
    weight centre adds the window-sum correction, itself a bconv with a +-constant filter of the
    same width (kbnn.converters); nothing binary is left as a float CONV_2D."""
    model = trained[0]
    convs = binary_convs(model)
    assert len(convs) == 2
    centres = [np.asarray(c.kernel).mean(axis=(0, 1, 2)) for c in convs]
    assert all(np.all(centre != 0.0) for centre in centres)
    report = inspect(flatbuffer)
    assert report.count("LceBconv2d") == 2 * len(convs)
    assert sorted(b["filter_shape"][0] for b in report.bconvs) == [32, 32, 64, 64]
    assert report.count("CONV_2D") == 2  # the stem and the shortcut's 1x1 conv


def test_verify_agrees_with_keras(trained, flatbuffer):
    result = verify(trained[0], flatbuffer, random_inputs(200))
    assert result.top1_agreement >= 0.99
    assert result.max_abs_diff < 1e-3


def test_profile_counts_bops_and_flops_by_hand(trained):
    counts = kbnn.profile(trained[0])
    bops = conv_macs(3, 32, 32, 8, 8) + conv_macs(3, 32, 64, 4, 4)
    flops = STEM_FLOPS + conv_macs(1, 32, 64, 4, 4) + classifier_flops(64)
    assert (counts.bops, counts.flops) == (bops, flops) == (884_736, 51_840)
