"""ReActNetBlock (ReActNet-A, arXiv 2003.03488, METHODS.md §1.4): structure against a numpy
reference (both widths, stride 1 and 2), training on digits, .keras round trip, LCE conversion
and BOP/FLOP counts."""

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
    np_rprelu,
    np_sign,
    random_inputs,
    randomize,
    train_on_digits,
    two_block_model,
)
from kbnn.converters import convert, inspect, verify

import kbnn
from kbnn.blocks import ReActNetBlock

EPOCHS = 3


def _np(variable):
    return np.asarray(variable, np.float64)


def _rprelu(layer, x):
    return np_rprelu(x, _np(layer.gamma), _np(layer.beta), _np(layer.zeta))


def _binary_conv(conv, signs, strides=1, pad_values=0.0):
    return np_conv2d_same(signs, np_channel_scaled_sign(_np(conv.kernel)), strides, pad_values)


def _reference(block, x):
    """METHODS.md §1.4, written out with numpy."""
    t3 = _np(block.conv3x3.input_quantizer.threshold)
    out1 = np_bn(_binary_conv(block.conv3x3, np_sign(x - t3), block.strides, block.pad_values),
                 block.bn3x3)
    out1 = _rprelu(block.rprelu1, out1 + (np_avgpool2_same(x) if block.strides == 2 else x))
    if block.out_channels == x.shape[-1]:
        (conv,), (bn,) = block.convs1x1, block.bns1x1
        t = np_sign(out1 - _np(conv.input_quantizer.threshold))
        out2 = np_bn(_binary_conv(conv, t), bn) + out1
    else:  # one shared sign (official `move21`), two convs, the shortcut duplicated
        t = np_sign(out1 + _np(block.move.bias))
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
    inputs = keras.Input(shape)
    model = keras.Model(inputs, block(inputs))
    randomize(model)
    x = rng.normal(size=(2,) + shape).astype("float32")
    got = np.asarray(model(x, training=False))
    assert got.shape == (2, -(-shape[0] // strides), -(-shape[1] // strides), out_channels)
    np.testing.assert_allclose(got, _reference(block, x.astype(np.float64)), rtol=1e-4,
                               atol=1e-4)


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


# --- two blocks on digits: 8x8x32 -> ReActNetBlock(64, s2) [doubling] -> ReActNetBlock(64)

@pytest.fixture(scope="module")
def trained():
    keras.utils.set_random_seed(0)
    model = two_block_model(ReActNetBlock(64, strides=2, name="double"),
                            ReActNetBlock(64, name="same"))
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
    path = str(tmp_path / "reactnet.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    x = random_inputs(32)
    np.testing.assert_array_equal(np.asarray(loaded(x)), np.asarray(model(x)))
    assert loaded.get_layer("double").get_config() == model.get_layer("double").get_config()


def test_converts_to_one_bconv_per_binary_conv(trained, flatbuffer):
    model = trained[0]
    assert len(binary_convs(model)) == 5  # 3x3 + two 1x1, then 3x3 + 1x1
    report = inspect(flatbuffer)
    assert report.count("LceBconv2d") == len(binary_convs(model))
    assert report.count("CONV_2D") == 1  # only the float stem


def test_verify_agrees_with_keras(trained, flatbuffer):
    result = verify(trained[0], flatbuffer, random_inputs(200))
    assert result.top1_agreement >= 0.99
    assert result.max_abs_diff < 1e-3


def test_profile_counts_bops_and_flops_by_hand(trained):
    counts = kbnn.profile(trained[0])
    bops = (conv_macs(3, 32, 32, 4, 4) + 2 * conv_macs(1, 32, 32, 4, 4)   # doubling block, s2
            + conv_macs(3, 64, 64, 4, 4) + conv_macs(1, 64, 64, 4, 4))    # same-width block
    flops = STEM_FLOPS + classifier_flops(64)  # ReActNet-A shortcuts have no convs
    assert (counts.bops, counts.flops) == (bops, flops) == (835_584, 19_072)
