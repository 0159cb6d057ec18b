"""BiMLP (Xu, Chen, Wang, arXiv 2212.14158; docs/methods.md, section 'BiMLP'): the uni-shortcut,
the multi-branch binary block and the downsampling layer against numpy references written from
the official code's structure, argument checks, the binary depthwise option (refused by a strict
conversion), and the digits contract with hand-counted BOPs and FLOPs."""

import keras
import numpy as np
import pytest
from blocks_helpers import (
    STEM_FLOPS,
    as_f64,
    binary_convs,
    conv_macs,
    np_bn,
    np_rprelu,
    np_same_pads,
    np_sign,
    random_inputs,
    randomize,
)
from methods2_helpers import (
    assert_converts_and_agrees,
    assert_round_trip_exact,
    fit_digits,
    stem_model,
)

import kbnn
from kbnn.blocks import BiMLPBlock, BiMLPDownsample
from kbnn.blocks.bimlp import uni_shortcut
from kbnn.converters import ConversionError, convert, verify


def test_uni_shortcut_tiles_and_averages_groups(rng):
    x = rng.normal(size=(2, 3, 3, 8))
    np.testing.assert_array_equal(np.asarray(uni_shortcut(x, 32)), np.concatenate([x] * 4, -1))
    # the official (x[:, ::4] + x[:, 1::4] + x[:, 2::4] + x[:, 3::4]) / 4 on the channel axis
    official = (x[..., ::4] + x[..., 1::4] + x[..., 2::4] + x[..., 3::4]) / 4
    np.testing.assert_allclose(np.asarray(uni_shortcut(x, 2)), official, rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(uni_shortcut(x, 8)), x)
    with pytest.raises(ValueError, match="multiple or a divisor"):
        uni_shortcut(x, 12)


def _rprelu(layer, x):
    return np_rprelu(x, *(as_f64(getattr(layer, n)) for n in ("gamma", "beta", "zeta")))


def _bias(layer, x):
    return x + as_f64(layer.bias)


def _np_fc(conv, x):
    """1x1 binary conv: sign(x) times mean|W| sign(W) per output channel."""
    w = as_f64(conv.kernel)[0, 0]
    return np_sign(x) @ (np.abs(w).mean(axis=0) * np_sign(w))


def _np_depthwise(conv, x, binary):
    """Depthwise conv, SAME zero padding; binary: sign(x) and mean|w| sign(w) per channel."""
    w = as_f64(conv.kernel)[..., 0]  # (kh, kw, C)
    if binary:
        x = np_sign(x)
        w = np.abs(w).mean(axis=(0, 1)) * np_sign(w)
    kh, kw, _ = w.shape
    _, h, wd, _ = x.shape
    (pt, pb), (pl, pr) = np_same_pads(h, kh, 1), np_same_pads(wd, kw, 1)
    xp = np.pad(x, [(0, 0), (pt, pb), (pl, pr), (0, 0)])
    out = np.zeros_like(x)
    for i in range(h):
        for j in range(wd):
            out[:, i, j] = np.einsum("nhwc,hwc->nc", xp[:, i:i + kh, j:j + kw], w)
    return out


def _reference(block, x, binary_depthwise=False):
    """The official `WaveBlock` channel mixing (MindSpore port), inference mode, in numpy."""
    mid = np_bn(x, block.norm)
    c = x.shape[-1]
    r = block.mlp_ratio
    inp = _rprelu(block.expand_act, np_bn(np.concatenate([mid] * r, -1), block.expand_bn))
    h = _rprelu(block.fc1_act, np_bn(_np_fc(block.fc1, _bias(block.fc1_bias, mid)),
                                     block.fc1_bn) + inp)
    groups = h.reshape(*h.shape[:-1], c, r).mean(axis=-1)
    a = _rprelu(block.fc2_act, np_bn(_np_fc(block.fc2, _bias(block.fc2_bias, h)),
                                     block.fc2_bn) + groups)
    mh, mw = _bias(block.h_bias, mid), _bias(block.w_bias, mid)
    b = _rprelu(block.h_act, np_bn(_np_depthwise(block.h_conv, mh, binary_depthwise),
                                   block.h_bn) + mh)
    cc = _rprelu(block.w_act, np_bn(_np_depthwise(block.w_conv, mw, binary_depthwise),
                                    block.w_bn) + mw)
    w0, w1 = as_f64(block.mix_h), as_f64(block.mix_w)
    return x + w0 * b + w1 * cc + (1 - w0 - w1) * a


@pytest.mark.parametrize("mlp_ratio, kernel_size, binary_depthwise", [
    (4, 7, False), (2, 3, True)])
def test_block_matches_numpy_reference(mlp_ratio, kernel_size, binary_depthwise, rng):
    block = BiMLPBlock(mlp_ratio=mlp_ratio, kernel_size=kernel_size,
                       binary_depthwise=binary_depthwise)
    inputs = keras.Input((5, 5, 8))
    model = keras.Model(inputs, block(inputs))
    randomize(model)
    assert float(block.mix_h) != 0 and float(block.mix_w) != 0  # every branch contributes
    x = rng.normal(size=(2, 5, 5, 8)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(model(x, training=False)),
                               _reference(block, x.astype(np.float64), binary_depthwise),
                               rtol=1e-4, atol=1e-4)


def test_structure_binary_layers_and_pairs():
    block = BiMLPBlock()
    block.build((None, 4, 4, 16))
    assert block.binary_layers == [block.fc1, block.fc2]
    assert block.batch_norm_pairs() == [(block.fc1, block.fc1_bn), (block.fc2, block.fc2_bn)]
    assert tuple(block.fc1.kernel.shape) == (1, 1, 16, 64)
    assert tuple(block.fc2.kernel.shape) == (1, 1, 64, 16)
    assert type(block.fc1.input_quantizer).__name__ == "SteSign"
    assert type(block.fc1.kernel_quantizer).__name__ == "ScaledSign"
    assert block.h_conv.input_quantizer is None and block.h_conv.depthwise_quantizer is None
    assert block.h_conv.kernel_size == (1, 7) and block.w_conv.kernel_size == (7, 1)
    assert (float(block.mix_h), float(block.mix_w)) == (0.0, 0.0)
    assert block.compute_output_shape((None, 4, 4, 16)) == (None, 4, 4, 16)


@pytest.mark.parametrize("kwargs, argument", [
    ({"mlp_ratio": 0}, "mlp_ratio"), ({"kernel_size": 0}, "kernel_size"),
    ({"binary_depthwise": 1}, "binary_depthwise"), ({"pad_values": 0.5}, "pad_values")])
def test_bad_arguments(kwargs, argument):
    with pytest.raises(ValueError, match=f"`{argument}` of BiMLPBlock"):
        BiMLPBlock(**kwargs)
    with pytest.raises(ValueError, match="`filters` of BiMLPDownsample"):
        BiMLPDownsample(0)


def _np_maxpool_same(x, k):
    n, h, w, c = x.shape
    (pt, pb), (pl, pr) = np_same_pads(h, k, 2), np_same_pads(w, k, 2)
    xp = np.pad(x, [(0, 0), (pt, pb), (pl, pr), (0, 0)], constant_values=-np.inf)
    ho, wo = -(-h // 2), -(-w // 2)
    out = np.zeros((n, ho, wo, c))
    for i in range(ho):
        for j in range(wo):
            out[:, i, j] = xp[:, 2 * i:2 * i + k, 2 * j:2 * j + k].max(axis=(1, 2))
    return out


@pytest.mark.parametrize("size", [8, 7])
def test_downsample_matches_numpy_reference(size, rng):
    layer = BiMLPDownsample(6)
    inputs = keras.Input((size, size, 4))
    model = keras.Model(inputs, layer(inputs))
    randomize(model)
    x = rng.normal(size=(2, size, size, 4))
    y = x @ as_f64(layer.proj.kernel)[0, 0] + as_f64(layer.proj.bias)
    y = _rprelu(layer.act, np_bn(y, layer.bn))
    expected = sum(_np_maxpool_same(y, k) for k in (2, 3, 5, 7)) / 4
    np.testing.assert_allclose(np.asarray(model(x.astype(np.float32), training=False)),
                               expected, rtol=1e-4, atol=1e-4)
    half = -(-size // 2)
    assert layer.compute_output_shape((None, size, size, 4)) == (None, half, half, 6)


def test_binary_depthwise_is_refused_by_strict_conversion_only(rng):
    keras.utils.set_random_seed(4)
    inputs = keras.Input((6, 6, 32))
    model = keras.Model(inputs, BiMLPBlock(binary_depthwise=True, name="mbb")(inputs))
    randomize(model)
    with pytest.raises(ConversionError, match="mbb_[hw]_conv.*binary depthwise"):
        convert(model, strict=True)
    with pytest.warns(UserWarning, match="mbb_[hw]_conv: kept as float ops"):
        flatbuffer = convert(model, strict=False)
    assert kbnn.converters.inspect(flatbuffer).count("LceBconv2d") == 2
    report = verify(model, flatbuffer, rng.normal(size=(16, 6, 6, 32)).astype(np.float32))
    assert report.max_abs_diff < 1e-3, report.table()


def test_untrained_blocks_convert_strictly_and_agree(rng):
    """The conversion contract without training (the digits test below is slow): a downsampling
    between two blocks, every parameter randomized."""
    keras.utils.set_random_seed(5)
    inputs = keras.Input((8, 8, 32))
    x = BiMLPBlock(name="mbb1")(inputs)
    x = BiMLPDownsample(64, name="down")(x)
    model = keras.Model(inputs, BiMLPBlock(name="mbb2")(x))
    randomize(model)
    flatbuffer = convert(model, strict=True)
    ops = kbnn.converters.inspect(flatbuffer)
    assert ops.count("LceBconv2d") == len(binary_convs(model)) == 4
    report = verify(model, flatbuffer, rng.normal(size=(16, 8, 8, 32)).astype(np.float32))
    assert report.max_abs_diff < 1e-3, report.table()


@pytest.mark.slow  # ~15 s on an idle 2-core machine, up to ~55 s under load (tracing)
def test_digits_fit_round_trip_strict_conversion_verify_and_costs(tmp_path):
    """stem (32) -> BiMLPBlock -> BiMLPDownsample(64) -> BiMLPBlock -> GAP -> Dense(10)."""

    def body(x):
        x = BiMLPBlock(name="mbb1")(x)
        x = BiMLPDownsample(64, name="down")(x)
        return BiMLPBlock(name="mbb2")(x)

    run = fit_digits(stem_model(body), epochs=3)
    assert run.losses[-1] < 0.5 * run.losses[0], run.losses
    assert run.accuracy > 0.8, run.accuracy
    assert_round_trip_exact(run.model, tmp_path)
    assert len(binary_convs(run.model)) == 4
    _, _, ops = assert_converts_and_agrees(run.model, strict=True)
    assert ops.count("LceBconv2d") == 4
    assert ops.count("DEPTHWISE_CONV_2D") == 4  # the float 1x7 / 7x1 branches
    assert ops.count("MAX_POOL_2D") == 4  # the downsampling's four pools
    # by hand (METHODS.md §0): binary 1x1 convs 32 -> 128 -> 32 on 8x8 and 64 -> 256 -> 64
    # on 4x4; FLOPs: the stem, the depthwise 1x7 and 7x1 convs, the downsampling's real 1x1
    # conv (at 8x8, before pooling) and the classifier
    bops = 2 * conv_macs(1, 32, 128, 8, 8) + 2 * conv_macs(1, 64, 256, 4, 4)
    flops = (STEM_FLOPS + 2 * 7 * 32 * 64 + 2 * 7 * 64 * 16 + conv_macs(1, 32, 64, 8, 8)
             + 64 * 10)
    counts = kbnn.profile(run.model)
    assert (counts.bops, counts.flops) == (bops, flops) == (1_048_576, 193_152)
    assert random_inputs(1).shape == (1, 8, 8, 1)
