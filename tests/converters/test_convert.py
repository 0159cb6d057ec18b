"""convert/inspect/verify on models covering every layer kind, stride, padding and binarizer."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from convert_helpers import bconv_count, random_inputs, randomize_state, seeded, walk_binary_layers
from kbnn.converters import ConversionError, convert, inspect, verify

from kbnn import quantizers as q
from kbnn.layers import QuantConv1D, QuantConv2D, QuantDense

SIGN = {"input_quantizer": "ste_sign", "kernel_quantizer": "ste_sign"}


def _conv_kinds_model():
    """Float stem, then binary convs: same pad 1 (s1), maxpool, same pad 0 (s2), valid + relu,
    same pad 1 (s2), and a binary dense head; BN after the convs."""
    seeded()
    inp = keras.Input((12, 12, 3))
    x = keras.layers.Conv2D(32, 3, padding="same", name="stem")(inp)
    x = keras.layers.BatchNormalization()(x)
    x = QuantConv2D(32, 3, padding="same", pad_values=1.0, use_bias=False, name="b_same1", **SIGN)(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.MaxPool2D(2)(x)  # max-pool before the next binarizer
    x = QuantConv2D(40, 3, strides=2, padding="same", pad_values=0.0, name="b_same0_s2", **SIGN)(x)
    x = keras.layers.BatchNormalization()(x)
    x = QuantConv2D(32, 1, padding="valid", activation="relu", name="b_valid", **SIGN)(x)
    x = QuantConv2D(24, 3, strides=2, padding="same", pad_values=1.0, name="b_same1_s2", **SIGN)(x)
    x = keras.layers.Flatten()(x)
    x = QuantDense(10, name="b_dense", **SIGN)(x)
    model = keras.Model(inp, x)
    randomize_state(model)
    return model


@pytest.fixture(scope="module")
def kinds():
    model = _conv_kinds_model()
    result = convert(model, return_report=True)
    return model, result


def test_every_binary_layer_becomes_one_bconv(kinds):
    model, result = kinds
    assert len(walk_binary_layers(model)) == 5
    assert bconv_count(result.flatbuffer) == 5
    assert result.report.n_binary_convs == 5
    assert result.warnings == []


def test_flatbuffer_agrees_with_keras(kinds):
    model, result = kinds
    x = random_inputs((12, 12, 3), n=48)
    rep = verify(model, result.flatbuffer, x)
    assert rep.within_tolerance == 1.0, rep.table()
    assert rep.max_rel_diff < 1e-4
    assert rep.top1_agreement >= 0.99
    # independent check of the comparison itself: the Keras outputs are not all alike
    assert np.std(np.asarray(model(x))) > 0.1


def test_padding_stride_maxpool_and_bn_lower(kinds):
    _, result = kinds
    rep = result.report
    pads = sorted((b["padding"], b["pad_values"]) for b in rep.bconvs)
    # SAME is 0 and VALID is 1 in LCE's options; same-one twice, same-zero once (arm),
    # valid for the 1x1 conv and the dense head
    assert pads == [(0, 0), (0, 1), (0, 1), (1, 0), (1, 0)]
    assert sorted(b["stride_height"] for b in rep.bconvs) == [1, 1, 1, 2, 2]
    assert rep.count("LceBMaxPool2d") == 1 and rep.count("MAX_POOL_2D") == 0
    # BN after every binary conv is fused (no float MUL/ADD); only the stem is a float conv
    assert rep.count("MUL") == 0 and rep.count("ADD") == 0
    assert rep.count("CONV_2D") == 1 and rep.count("FULLY_CONNECTED") == 0
    # bconv -> BN -> maxpool -> sign: the first bconv writes bitpacked int32
    assert rep.bconvs[0]["output_dtype"] == "INT32"


def test_inspect_sizes(kinds):
    _, result = kinds
    rep = inspect(result.flatbuffer)
    assert rep.size_bytes == len(result.flatbuffer)
    assert sum(rep.op_counts.values()) == len(rep.op_sequence)
    # bitpacked filters: O * kh * kw * ceil(Cin / 32) int32 words, by hand
    words = 32 * 9 * 1 + 40 * 9 * 1 + 32 * 1 * 2 + 24 * 9 * 1 + 10 * 1 * 3  # dense: 72 -> 3
    assert rep.bitpacked_weight_bytes == 4 * words
    text = rep.table()
    assert "LceBconv2d" in text and f"{len(result.flatbuffer):,}" in text
    assert rep.input_dtypes == ["FLOAT32"] and rep.output_dtypes == ["FLOAT32"]
    assert len(rep.float_tensors) >= 1


def test_xcore_target_same_zero_via_border_map():
    model = _conv_kinds_model()
    fb = convert(model, target="xcore")
    assert bconv_count(fb) == 5
    # xcore has no LceBMaxPool2d and no same-zero: padding stays same-one + a constant border map
    rep = inspect(fb)
    assert all(b["pad_values"] == 1 or b["padding"] == 1 for b in rep.bconvs)
    assert verify(model, fb, random_inputs((12, 12, 3), n=16)).within_tolerance == 1.0


def test_conv1d_paddings_and_dense_on_sequences():
    seeded()
    inp = keras.Input((16, 8))
    x = QuantConv1D(32, 3, padding="same", pad_values=1.0, name="c1_same1", **SIGN)(inp)
    x = QuantConv1D(32, 3, padding="same", pad_values=0.0, strides=2, name="c1_same0", **SIGN)(x)
    x = QuantConv1D(16, 3, padding="causal", pad_values=1.0, name="c1_causal1", **SIGN)(x)
    x = QuantConv1D(16, 2, padding="causal", pad_values=0.0, dilation_rate=2, name="c1_causal0",
                    **SIGN)(x)
    x = QuantConv1D(16, 3, padding="valid", name="c1_valid", **SIGN)(x)
    x = QuantDense(6, name="dense_seq", **SIGN)(x)  # rank-3 input
    model = keras.Model(inp, x)
    fb = convert(model)
    assert bconv_count(fb) == len(walk_binary_layers(model)) == 6
    rep = verify(model, fb, random_inputs((16, 8), n=16))
    assert rep.within_tolerance == 1.0, rep.table()


def test_grouped_conv_with_32_channels_per_group():
    seeded()
    inp = keras.Input((6, 6, 64))
    x = QuantConv2D(64, 3, groups=2, padding="same", pad_values=1.0, name="grouped", **SIGN)(inp)
    model = keras.Model(inp, x)
    fb = convert(model)
    assert bconv_count(fb) == 1
    rep = verify(model, fb, random_inputs((6, 6, 64), n=8))  # needs use_indirect_bgemm
    assert rep.within_tolerance == 1.0, rep.table()


class ResBlock(keras.layers.Layer):
    """A custom block holding a binary conv and BN (a nested kbnn layer)."""

    def __init__(self, filters, **kwargs):
        super().__init__(**kwargs)
        self.conv = QuantConv2D(filters, 3, padding="same", pad_values=1.0, **SIGN)
        self.bn = keras.layers.BatchNormalization()

    def call(self, x):
        return self.bn(self.conv(x)) + x


def test_nested_block_layers_are_converted():
    seeded()
    inp = keras.Input((8, 8, 32))
    x = ResBlock(32)(inp)
    x = ResBlock(32)(x)
    model = keras.Model(inp, x)
    randomize_state(model)
    fb = convert(model)
    assert bconv_count(fb) == len(walk_binary_layers(model)) == 2
    assert verify(model, fb, random_inputs((8, 8, 32), n=8)).within_tolerance == 1.0


def _binary_aliases():
    return [a for a in q.known_aliases() if q.get(a).precision == 1]


# Quantizers whose binary form depends on their state: the config that makes them binary.
_BINARY_STATE = {"bnext_weight": {"tau": 1e-8}}  # BNext weights are binary once tau < 1e-7


def _binary(alias) -> dict:
    return {"class_name": alias, "config": _BINARY_STATE.get(alias, {})}


def _input_independent(alias) -> bool:
    """An activation binarizer: its binary form does not depend on the input values."""
    quantizer = q.get(_binary(alias))
    if quantizer.applies_to == "weights":
        return False
    x1, x2 = (tf.random.normal((2, 4, 6), seed=s) for s in (1, 2))
    quantizer.build(x1.shape)
    f1, f2 = quantizer.binary_form(x1).numpy(), quantizer.binary_form(x2).numpy()
    return all(np.array_equal(np.asarray(u), np.asarray(v)) for u, v in
               zip((f1.threshold, f1.scale, f1.offset), (f2.threshold, f2.scale, f2.offset)))


@pytest.mark.parametrize("alias", _binary_aliases())
def test_each_binarizer_converts(alias):
    """`alias` as kernel quantizer (and as input quantizer where it is an activation
    binarizer); exactly one LceBconv2d per binary layer, and a float window sum (one channel
    SUM) for each layer whose kernel has an offset."""
    seeded()
    act = alias if _input_independent(alias) else "ste_sign"
    inp = keras.Input((8, 8, 32))
    x = QuantConv2D(32, 3, padding="same", pad_values=1.0, input_quantizer="ste_sign",
                    kernel_quantizer=_binary(alias), name="k")(inp)
    x = keras.layers.BatchNormalization()(x)
    x = QuantConv2D(32, 3, strides=2, padding="same", pad_values=0.0, input_quantizer=act,
                    kernel_quantizer=_binary(alias), name="ka")(x)
    x = keras.layers.BatchNormalization()(x)
    model = keras.Model(inp, x)
    randomize_state(model)
    layers = walk_binary_layers(model)
    for layer in layers:  # randomize_state moves state variables too: binary again
        for name, value in _BINARY_STATE.get(alias, {}).items():
            getattr(layer.kernel_quantizer, name).assign(value)
    offsets = sum(bool(np.any(np.asarray(l.kernel_quantizer.binary_form(l.kernel).numpy().offset)))
                  for l in layers)
    fb = convert(model)
    assert bconv_count(fb) == len(layers) == 2
    assert inspect(fb).count("SUM") == offsets
    rep = verify(model, fb, random_inputs((8, 8, 32), n=16))
    assert rep.max_rel_diff < 1e-4, rep.table()


def test_bad_arguments_are_keras_style_errors():
    model = keras.Sequential([keras.Input((4,)), QuantDense(2, **SIGN)])
    with pytest.raises(ValueError, match=r"argument `target` of convert.*Received target='gpu'"):
        convert(model, target="gpu")
    with pytest.raises(ValueError, match=r"argument `int8`.*needs int8=True"):
        convert(model, inference_input_type=tf.int8)
    with pytest.raises(ValueError, match=r"argument `inference_output_type`.*Received"):
        convert(model, inference_output_type="int32")
    with pytest.raises(TypeError, match=r"argument `strict` of convert. Expected a bool"):
        convert(model, strict="yes")
    with pytest.raises(TypeError, match=r"argument `model`.*keras.models.load_model"):
        convert("model.keras")
    # A model that cannot be converted as asked stays a ConversionError.
    with pytest.raises(ConversionError, match="FakeQuant"):
        convert(model, int8=True)
