"""XnorBlock (XNOR-Net, arXiv 1603.05279, METHODS.md §9.1): BN -> sign -> binary conv with XNOR
weights, the optional activation scale K, training on digits, .keras round trip, LCE conversion
and BOP/FLOP counts."""

import keras
import numpy as np
import pytest
from blocks_helpers import (
    STEM_FLOPS,
    binary_convs,
    classifier_flops,
    conv_macs,
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
from kbnn.blocks import XnorBlock

EPOCHS = 3


def _reference(block, x):
    """out = conv(sign(BN(x)), alpha sign(W)) [* K], K = mean_c|BN(x)| (*) box(kh, kw)."""
    y = np_bn(x, block.bn)
    w = np.asarray(block.conv.kernel, np.float64)
    out = np_conv2d_same(np_sign(y), np_channel_scaled_sign(w), block.strides, block.pad_values)
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
    inputs = keras.Input(shape)
    model = keras.Model(inputs, block(inputs))
    randomize(model)
    x = rng.normal(size=(2,) + shape).astype("float32")
    np.testing.assert_allclose(np.asarray(model(x, training=False)),
                               _reference(block, x.astype(np.float64)), rtol=1e-4, atol=1e-4)


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


# --- two blocks on digits: 8x8x32 -> XnorBlock(32) -> XnorBlock(64, s2, with K) -> 4x4x64

@pytest.fixture(scope="module")
def trained():
    keras.utils.set_random_seed(0)
    model = two_block_model(XnorBlock(32, name="plain"),
                            XnorBlock(64, strides=2, activation_scale=True, name="scaled"))
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
    path = str(tmp_path / "xnor.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    x = random_inputs(32)
    np.testing.assert_array_equal(np.asarray(loaded(x)), np.asarray(model(x)))
    assert loaded.get_layer("scaled").get_config() == model.get_layer("scaled").get_config()


def test_converts_to_one_bconv_per_binary_conv(trained, flatbuffer):
    model = trained[0]
    assert len(binary_convs(model)) == 2
    report = inspect(flatbuffer)
    assert report.count("LceBconv2d") == len(binary_convs(model))
    # float convs: the stem and K's one-channel box filter
    assert report.count("CONV_2D") == 2


def test_verify_agrees_with_keras(trained, flatbuffer):
    result = verify(trained[0], flatbuffer, random_inputs(200))
    assert result.top1_agreement >= 0.99
    assert result.max_abs_diff < 1e-3


def test_profile_counts_bops_and_flops_by_hand(trained):
    counts = kbnn.profile(trained[0])
    bops = conv_macs(3, 32, 32, 8, 8) + conv_macs(3, 32, 64, 4, 4)
    # K's box filter is not a layer and, as in the published XNOR-Net counts, not counted
    flops = STEM_FLOPS + classifier_flops(64)
    assert (counts.bops, counts.flops) == (bops, flops) == (884_736, 19_072)
