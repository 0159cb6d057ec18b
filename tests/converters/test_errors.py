"""Layers LCE cannot run as binary ops: refused in strict mode, warnings with strict=False."""

import keras
import pytest
from convert_helpers import bconv_count, random_inputs, seeded
from kbnn.converters import ConversionError, ConversionResult, convert, inspect, verify

from kbnn.layers import QuantConv2D, QuantDepthwiseConv2D, QuantSeparableConv2D

SIGN = {"input_quantizer": "ste_sign", "kernel_quantizer": "ste_sign"}


def _depthwise_model():
    seeded()
    inp = keras.Input((8, 8, 32))
    x = QuantConv2D(32, 3, padding="same", pad_values=1.0, name="ok_conv", **SIGN)(inp)
    x = QuantDepthwiseConv2D(3, padding="same", pad_values=1.0, input_quantizer="ste_sign",
                             depthwise_quantizer="ste_sign", name="bin_dw")(x)
    return keras.Model(inp, x)


def _grouped_model():
    seeded()
    inp = keras.Input((6, 6, 64))
    x = QuantConv2D(64, 3, groups=4, padding="valid", name="g16", **SIGN)(inp)
    return keras.Model(inp, x)


def test_binary_depthwise_is_refused_in_strict_mode():
    with pytest.raises(ConversionError) as info:
        convert(_depthwise_model())
    err = info.value
    assert err.layer == "bin_dw"
    assert "32 input channels per group" in err.reason and "depthwise" in err.reason
    assert err.fix and "bin_dw" in str(err)


def test_grouped_conv_with_16_channels_per_group_is_refused():
    with pytest.raises(ConversionError, match=r"16 input channels per group \(4 groups\)") as info:
        convert(_grouped_model())
    assert info.value.layer == "g16"
    assert "multiple of 32" in str(info.value)


def test_binary_separable_is_refused():
    seeded()
    inp = keras.Input((8, 8, 32))
    x = QuantSeparableConv2D(32, 3, input_quantizer="ste_sign", depthwise_quantizer="ste_sign",
                             pointwise_quantizer="ste_sign", name="sep")(inp)
    with pytest.raises(ConversionError, match="separable") as info:
        convert(keras.Model(inp, x))
    assert info.value.layer == "sep"


def test_non_strict_lists_warnings_and_still_agrees():
    model = _depthwise_model()
    with pytest.warns(UserWarning, match="bin_dw"):
        result = convert(model, strict=False, return_report=True)
    assert isinstance(result, ConversionResult)
    assert len(result.warnings) == 1 and result.warnings[0].startswith("bin_dw")
    assert bconv_count(result.flatbuffer) == 1  # only the regular binary conv
    assert inspect(result.flatbuffer).count("DEPTHWISE_CONV_2D") == 1
    rep = verify(model, result.flatbuffer, random_inputs((8, 8, 32), n=8))
    assert rep.within_tolerance == 1.0, rep.table()


def test_non_strict_grouped_returns_bytes():
    model = _grouped_model()
    with pytest.warns(UserWarning, match="g16"):
        fb = convert(model, strict=False)
    assert isinstance(fb, bytes) and bconv_count(fb) == 0
    rep = verify(model, fb, random_inputs((6, 6, 64), n=4))
    assert rep.within_tolerance == 1.0, rep.table()


def test_channels_first_is_refused_with_the_fix():
    seeded()
    layer = QuantConv2D(8, 3, data_format="channels_first", name="cf", **SIGN)
    model = keras.Sequential([keras.Input((32, 6, 6)), layer])
    with pytest.raises(ConversionError, match="channels_last") as info:
        convert(model)
    assert info.value.layer == "cf"


def test_unbuilt_model_is_refused():
    model = keras.Sequential([QuantConv2D(8, 3, name="nb", **SIGN)])
    with pytest.raises(ValueError, match="argument `model` of convert.*unbuilt model"):
        convert(model)


def test_strict_post_check_names_a_layer_lce_did_not_lower(monkeypatch):
    """If the export graph of one layer is not a form LCE lowers (here: plain tf.sign, which
    stays a float SIGN + CONV_2D), the flatbuffer check names that layer."""
    import kbnn.converters.layers as lowering
    import numpy as np
    import tensorflow as tf

    real = lowering.binary_conv2d

    def broken(x, form, spec, *, target, name):
        if "bad" not in name:
            return real(x, form, spec, target=target, name=name)
        filters = tf.constant(spec.kernel.sign.astype(np.float32))
        return tf.nn.conv2d(tf.sign(x), filters, 1, "VALID")

    monkeypatch.setattr(lowering, "binary_conv2d", broken)
    seeded()
    inp = keras.Input((6, 6, 32))
    x = QuantConv2D(32, 3, name="good", **SIGN)(inp)
    x = QuantConv2D(32, 1, name="bad", **SIGN)(x)
    model = keras.Model(inp, x)
    with pytest.raises(ConversionError, match="float ops: bad") as info:
        convert(model)
    assert info.value.layer == "bad"
    with pytest.warns(UserWarning, match="bad"):
        result = convert(model, strict=False, return_report=True)
    assert bconv_count(result.flatbuffer) == 1 and len(result.warnings) == 1
