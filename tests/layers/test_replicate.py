"""RepBNN's channel replication (arXiv 2207.09049; docs/methods.md, section 'RepBNN'):
`ChannelReplicate` and `QuantConv2D(replicate=beta)` against numpy, their gradients, configs,
and the digits contract: one `LceBconv2d` of C channels per replicated conv, followed by a TILE,
zero extra BOPs."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from methods2_helpers import (
    assert_converts_and_agrees,
    assert_round_trip_exact,
    fit_digits,
    stem_model,
)

import kbnn
from kbnn.converters import convert, verify
from kbnn.layers import BinaryConvForm, ChannelReplicate, QuantConv2D

SIGN = {"input_quantizer": "ste_sign", "kernel_quantizer": "ste_sign"}


def np_sign(x):
    return np.where(x >= 0, 1.0, -1.0)


def np_conv_valid(x, w):
    n, h, wd, _ = x.shape
    kh, kw, _, out = w.shape
    y = np.zeros((n, h - kh + 1, wd - kw + 1, out))
    for i in range(y.shape[1]):
        for j in range(y.shape[2]):
            y[:, i, j] = np.einsum("nhwc,hwco->no", x[:, i:i + kh, j:j + kw], w)
    return y


@pytest.mark.parametrize("beta", [1, 2, 4])
def test_channel_replicate_concatenates_copies(beta, rng):
    x = rng.normal(size=(2, 3, 3, 5)).astype(np.float32)
    layer = ChannelReplicate(beta)
    out = layer(x).numpy()
    np.testing.assert_array_equal(out, np.concatenate([x] * beta, axis=-1))
    assert out[..., 5 % 5].tolist() == out[..., 5 * (beta - 1)].tolist()  # not interleaved
    assert layer.compute_output_shape((None, 3, 3, 5)) == (None, 3, 3, 5 * beta)
    assert ChannelReplicate.from_config(layer.get_config()).beta == beta
    # the gradient of a copy sums over the copies
    xt = tf.constant(x)
    upstream = rng.normal(size=(2, 3, 3, 5 * beta)).astype(np.float32)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        loss = tf.reduce_sum(layer(xt) * upstream)
    np.testing.assert_allclose(tape.gradient(loss, xt).numpy(),
                               upstream.reshape(2, 3, 3, beta, 5).sum(axis=3), rtol=1e-6)


@pytest.mark.parametrize("bad", [0, -2, 1.5, True])
def test_bad_replication_factors(bad):
    with pytest.raises(ValueError, match="`beta` of ChannelReplicate"):
        ChannelReplicate(bad)
    with pytest.raises(ValueError, match="`replicate` of QuantConv2D"):
        QuantConv2D(8, 3, replicate=bad)
    with pytest.raises(ValueError, match="`replicate` of BinaryConvForm"):
        BinaryConvForm(input_quantizer=None, kernel=None, replicate=bad)


def test_replicated_conv_forward_and_gradient(rng):
    layer = QuantConv2D(3, 2, replicate=4, use_bias=True, bias_initializer="ones", **SIGN)
    x = rng.normal(size=(2, 4, 4, 5)).astype(np.float32)
    out = layer(x).numpy()
    assert out.shape == (2, 3, 3, 12) and tuple(layer.kernel.shape) == (2, 2, 5, 3)
    assert layer.filters == 3 and layer.compute_output_shape((None, 4, 4, 5)) == (None, 3, 3, 12)
    y = np_conv_valid(np_sign(x), np_sign(np.asarray(layer.kernel))) + 1.0
    np.testing.assert_allclose(out, np.concatenate([y] * 4, axis=-1), rtol=1e-6)
    # kernel gradient = that of the plain conv for the upstream summed over the copies
    upstream = rng.normal(size=out.shape).astype(np.float32)
    twin = QuantConv2D(3, 2, use_bias=True, **SIGN)
    twin.build(x.shape)
    twin.set_weights(layer.get_weights())
    grads = []
    for conv, up in ((layer, upstream), (twin, upstream.reshape(2, 3, 3, 4, 3).sum(axis=3))):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(conv(x) * up)
        grads.append(tape.gradient(loss, conv.trainable_weights))
    for a, b in zip(*grads):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-5)


def test_config_round_trip_keeps_the_factor():
    layer = QuantConv2D(8, 3, replicate=2, padding="same", pad_values=1.0, **SIGN)
    config = layer.get_config()
    assert config["replicate"] == 2 and config["filters"] == 8
    assert QuantConv2D.from_config(config).get_config() == config
    assert QuantConv2D(8, 3).get_config()["replicate"] == 1


def test_replicated_conv_with_correction_terms_keeps_its_bn_after_the_tile(rng):
    """AdaBin weights (an offset: a window-sum correction) with zero padding: the BN that
    follows cannot fold into a bconv of 16 channels when its 32 channels are two copies."""
    keras.utils.set_random_seed(3)
    inputs = keras.Input((6, 6, 32))
    x = QuantConv2D(16, 3, padding="same", use_bias=False, replicate=2, name="rep",
                    input_quantizer="ste_sign", kernel_quantizer="adabin_weight")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    model = keras.Model(inputs, x)
    bn = model.get_layer("bn")
    bn.set_weights([rng.uniform(0.5, 1.5, 32), rng.normal(size=32), rng.normal(size=32),
                    rng.uniform(0.5, 1.5, 32)])
    flatbuffer = convert(model, strict=True)
    ops = kbnn.converters.inspect(flatbuffer)
    assert ops.count("LceBconv2d") == 1 and ops.count("TILE") == 1
    report = verify(model, flatbuffer, rng.normal(size=(16, 6, 6, 32)).astype(np.float32))
    assert report.max_abs_diff < 1e-3, report.table()


def test_digits_fit_round_trip_strict_conversion_and_verify(tmp_path):
    """stem (16) -> ChannelReplicate(2) -> QuantConv2D(16, replicate=4) [32 -> 64] -> BN ->
    QuantConv2D(16, s2, replicate=4) [64 -> 64] -> BN: two LceBconv2d of 16 channels and three
    TILE ops (RepBNN's stem replication and the two convs)."""

    def body(x):
        x = ChannelReplicate(2, name="stem_rep")(x)
        x = QuantConv2D(16, 3, padding="same", use_bias=False, replicate=4, name="rep1",
                        **SIGN)(x)
        x = keras.layers.BatchNormalization(momentum=0.9, name="bn1")(x)
        x = QuantConv2D(16, 3, strides=2, padding="same", pad_values=1.0, use_bias=False,
                        replicate=4, name="rep2", **SIGN)(x)
        return keras.layers.BatchNormalization(momentum=0.9, name="bn2")(x)

    run = fit_digits(stem_model(body, stem=16), epochs=3)
    assert run.losses[-1] < 0.5 * run.losses[0], run.losses
    assert run.accuracy > 0.8, run.accuracy
    assert_round_trip_exact(run.model, tmp_path)
    _, _, ops = assert_converts_and_agrees(run.model, strict=True)
    assert ops.count("LceBconv2d") == 2 and ops.count("TILE") == 3
    # zero extra binary cost: 3x3 convs 32 -> 16 on 8x8 and 64 -> 16 on 4x4, by hand
    assert kbnn.profile(run.model).bops == 9 * 32 * 16 * 64 + 9 * 64 * 16 * 16 == 442_368
