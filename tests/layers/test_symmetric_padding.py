"""QuantConv2D(symmetric_padding=True): PyTorch's padding=k//2 on both sides (TensorFlow's SAME
puts the odd pixel after), checked against a numpy convolution, and converted strictly."""

import keras
import numpy as np
import pytest

from kbnn.converters import convert, inspect, verify
from kbnn.layers import QuantConv2D


def _numpy_conv(x, w, stride, pad, level):
    """conv2d of x (N,H,W,C) with w (kh,kw,C,O), padding `pad` on every side with `level`."""
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), constant_values=level)
    kh, kw = w.shape[:2]
    out_h = (xp.shape[1] - kh) // stride + 1
    out_w = (xp.shape[2] - kw) // stride + 1
    y = np.zeros((x.shape[0], out_h, out_w, w.shape[-1]))
    for i in range(out_h):
        for j in range(out_w):
            patch = xp[:, i * stride:i * stride + kh, j * stride:j * stride + kw, :]
            y[:, i, j] = np.einsum("nhwc,hwco->no", patch, w)
    return y


@pytest.mark.parametrize("pad_values", [0.0, 1.0])
@pytest.mark.parametrize("size, stride", [(8, 2), (7, 2), (6, 1)])
def test_forward_is_pytorch_padding(pad_values, size, stride):
    layer = QuantConv2D(4, 3, strides=stride, padding="same", pad_values=pad_values,
                        symmetric_padding=True, use_bias=False, input_quantizer="ste_sign",
                        kernel_quantizer="ste_sign")
    x = np.random.default_rng(0).normal(size=(2, size, size, 3)).astype("float32")
    y = np.asarray(layer(x))
    sx = np.where(x < 0, -1.0, 1.0)
    sw = np.where(np.asarray(layer.kernel) < 0, -1.0, 1.0)
    expected = _numpy_conv(sx, sw, stride, 1, pad_values)
    assert y.shape == expected.shape == (2, -(-size // stride), -(-size // stride), 4)
    np.testing.assert_allclose(y, expected, atol=1e-5)
    if size % 2 == 0 and stride == 2:  # TensorFlow's SAME differs here: pads 0 before
        tf_same = QuantConv2D(4, 3, strides=stride, padding="same", pad_values=pad_values,
                              use_bias=False, input_quantizer="ste_sign",
                              kernel_quantizer="ste_sign")
        tf_same.build(x.shape)
        tf_same.kernel.assign(layer.kernel)
        assert not np.allclose(np.asarray(tf_same(x)), y)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="argument `symmetric_padding` of QuantConv2D.*padding="):
        QuantConv2D(4, 3, padding="valid", symmetric_padding=True)
    with pytest.raises(ValueError, match="argument `symmetric_padding`.*odd"):
        QuantConv2D(4, 2, padding="same", symmetric_padding=True)
    with pytest.raises(ValueError, match="Expected a bool"):
        QuantConv2D(4, 3, padding="same", symmetric_padding="yes")


@pytest.mark.parametrize("pad_values", [0.0, 1.0])
def test_converts_strictly_and_agrees(pad_values):
    keras.utils.set_random_seed(3)
    inputs = keras.Input((8, 8, 32))
    x = QuantConv2D(32, 3, strides=2, padding="same", pad_values=pad_values,
                    symmetric_padding=True, input_quantizer="ste_sign",
                    kernel_quantizer="ste_sign", name="s2")(inputs)
    x = QuantConv2D(32, 3, padding="same", pad_values=pad_values, symmetric_padding=True,
                    input_quantizer="ste_sign", kernel_quantizer="ste_sign", name="s1")(x)
    model = keras.Model(inputs, x)
    flatbuffer = convert(model, strict=True)
    assert inspect(flatbuffer).count("LceBconv2d") == 2
    x = np.random.default_rng(1).normal(size=(8, 8, 8, 32)).astype("float32")
    report = verify(model, flatbuffer, x, atol=1e-3, rtol=1e-5)
    assert report.within_tolerance == 1.0, report.table()
