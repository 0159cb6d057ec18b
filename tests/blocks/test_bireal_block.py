"""BiRealBlock (Bi-Real Net, arXiv 1808.00278, METHODS.md §8.3): structure against a numpy
reference, training on digits, .keras round trip, LCE conversion and BOP/FLOP counts."""

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
    np_channel_scaled_sign,
    np_conv2d_same,
    np_sign,
    random_inputs,
    randomize,
    train_on_digits,
    two_block_model,
)
from kbnn.converters import convert, inspect, verify

import kbnn
from kbnn.blocks import BiRealBlock

EPOCHS = 3


def _single_block(block, shape):
    inputs = keras.Input(shape)
    model = keras.Model(inputs, block(inputs))
    randomize(model)
    return model


def _reference(block, x):
    """out = BN(conv3x3_s(sign(x), mean|W| sign(W))) + shortcut(x), §8.3."""
    w = np.asarray(block.conv.kernel, np.float64)
    out = np_conv2d_same(np_sign(x), np_channel_scaled_sign(w), block.strides, block.pad_values)
    out = np_bn(out, block.bn)
    if block.shortcut is None:
        return out + x
    pooled = np_avgpool2_same(x) if block.strides == 2 else x
    short = np_conv2d_same(pooled, np.asarray(block.shortcut.conv.kernel, np.float64))
    return out + np_bn(short, block.shortcut.bn)


@pytest.mark.parametrize("filters, strides, pad_values, shape", [
    (8, 1, 0.0, (5, 5, 8)),     # identity shortcut, zero padding
    (16, 2, 1.0, (5, 5, 8)),    # downsampling shortcut, odd size, +1 padding
    (16, 1, 0.0, (4, 4, 8)),    # width change only: 1x1 conv + BN, no pooling
])
def test_forward_matches_numpy_reference(filters, strides, pad_values, shape, rng):
    block = BiRealBlock(filters, strides=strides, pad_values=pad_values)
    model = _single_block(block, shape)
    x = rng.normal(size=(2,) + shape).astype("float32")
    got = np.asarray(model(x, training=False))
    np.testing.assert_allclose(got, _reference(block, x.astype(np.float64)), rtol=1e-4,
                               atol=1e-4)
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
])
def test_bad_arguments_raise_value_error(kwargs, argument):
    with pytest.raises(ValueError, match=f"`{argument}` of BiRealBlock"):
        BiRealBlock(**kwargs)


def test_config_round_trip():
    block = BiRealBlock(24, strides=2, pad_values=1.0, name="b")
    clone = BiRealBlock.from_config(block.get_config())
    assert (clone.filters, clone.strides, clone.pad_values, clone.name) == (24, 2, 1.0, "b")


# --- a two-block model on digits: 8x8x32 -> BiRealBlock(32) -> BiRealBlock(64, s2) -> 4x4x64

@pytest.fixture(scope="module")
def trained():
    keras.utils.set_random_seed(0)
    model = two_block_model(BiRealBlock(32, name="same"),
                            BiRealBlock(64, strides=2, name="down"))
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
    path = str(tmp_path / "bireal.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    x = random_inputs(32)
    np.testing.assert_array_equal(np.asarray(loaded(x)), np.asarray(model(x)))
    assert isinstance(loaded.get_layer("down"), BiRealBlock)
    assert loaded.get_layer("down").get_config() == model.get_layer("down").get_config()


def test_converts_to_one_bconv_per_binary_conv(trained, flatbuffer):
    model = trained[0]
    assert len(binary_convs(model)) == 2  # one binary 3x3 conv per block
    report = inspect(flatbuffer)
    assert report.count("LceBconv2d") == len(binary_convs(model))
    # float convs: the stem and the 1x1 shortcut conv only
    assert report.count("CONV_2D") == 2


def test_verify_agrees_with_keras(trained, flatbuffer):
    result = verify(trained[0], flatbuffer, random_inputs(200))
    assert result.top1_agreement >= 0.99
    assert result.max_abs_diff < 1e-3


def test_profile_counts_bops_and_flops_by_hand(trained):
    counts = kbnn.profile(trained[0])
    bops = conv_macs(3, 32, 32, 8, 8) + conv_macs(3, 32, 64, 4, 4)
    flops = STEM_FLOPS + conv_macs(1, 32, 64, 4, 4) + classifier_flops(64)
    assert (counts.bops, counts.flops) == (bops, flops) == (884_736, 51_840)
