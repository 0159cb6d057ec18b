"""pad_values: padding amounts (TensorFlow's SAME rule, causal), pad levels, dynamic shapes and
the graph LCE sees. References: amounts worked out by hand, numpy padding, Keras' VALID conv."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from kbnn.layers import QuantConv1D, QuantConv2D, QuantDepthwiseConv2D
from kbnn.layers.base import same_padding
from kbnn.quantizers import BinaryForm, Quantizer, binary_sign


def np_sign(x):
    return np.where(x >= 0, 1.0, -1.0)


# (size, kernel, stride, dilation) -> (before, after), by hand:
# out = ceil(size / stride), total = (out - 1) * stride + (kernel - 1) * dilation + 1 - size.
SAME_CASES = [
    ((7, 3, 1, 1), (1, 1)),  # out 7, total 2
    ((8, 2, 1, 1), (0, 1)),  # out 8, total 1: the odd pixel goes after
    ((7, 3, 2, 1), (1, 1)),  # out 4, total 6 + 3 - 7 = 2
    ((8, 3, 2, 1), (0, 1)),  # out 4, total 6 + 3 - 8 = 1
    ((8, 2, 2, 1), (0, 0)),  # out 4, total 6 + 2 - 8 = 0
    ((7, 2, 2, 1), (0, 1)),  # out 4, total 6 + 2 - 7 = 1
    ((7, 3, 1, 2), (2, 2)),  # effective kernel 5, total 4
    ((6, 2, 1, 2), (1, 1)),  # effective kernel 3, total 2
    ((6, 2, 1, 3), (1, 2)),  # effective kernel 4, total 3
    ((7, 3, 2, 2), (2, 2)),  # out 4, total 6 + 5 - 7 = 4
    ((6, 1, 2, 1), (0, 0)),  # out 3, total 4 + 1 - 6 = -1 -> 0
    ((5, 5, 3, 1), (1, 2)),  # out 2, total 3 + 5 - 5 = 3: 1 before, 2 after
]


@pytest.mark.parametrize("args, expected", SAME_CASES, ids=str)
def test_same_padding_by_hand(args, expected):
    size, k, s, d = args
    assert same_padding([size], [k], [s], [d]) == [expected]
    # The same with a dynamic (tensor) size.
    dynamic = same_padding([tf.constant(size)], [k], [s], [d])
    assert tuple(int(v) for v in dynamic[0]) == expected


def test_padding_amounts_per_mode():
    same = QuantConv2D(2, (3, 2), strides=2, padding="same", pad_values=1.0,
                       input_quantizer="ste_sign")
    assert same.padding_amounts((1, 7, 7, 4)) == [(1, 1), (0, 1)]
    causal = QuantConv1D(2, 3, dilation_rate=2, padding="causal", input_quantizer="ste_sign")
    assert causal.padding_amounts((1, 9, 4)) == [(4, 0)]
    valid = QuantConv2D(2, 3, padding="valid")
    assert valid.padding_amounts((1, 7, 7, 4)) == [(0, 0), (0, 0)]
    with pytest.raises(ValueError, match="spatial"):
        same.padding_amounts((1, None, 7, 4))


def _valid_conv_reference(xq_padded, kernel, strides=1, dilation_rate=1):
    """Keras' own VALID Conv2D on an input padded by numpy: independent of kbnn padding."""
    ref = keras.layers.Conv2D(kernel.shape[-1], kernel.shape[:2], strides=strides,
                              dilation_rate=dilation_rate, use_bias=False)
    ref.build(xq_padded.shape)
    ref.kernel.assign(kernel)
    return ref(xq_padded).numpy()


def test_dynamic_spatial_shapes_in_a_compiled_model(rng):
    """SAME + pad_values=1 with unknown H, W: padding computed in the graph."""
    inputs = keras.Input((None, None, 3))
    layer = QuantConv2D(4, 3, strides=2, padding="same", pad_values=1.0, use_bias=False,
                        input_quantizer="ste_sign", kernel_quantizer="ste_sign")
    model = keras.Model(inputs, layer(inputs))
    predict = tf.function(model, input_signature=[tf.TensorSpec((None, None, None, 3))])
    wq = np_sign(layer.kernel.numpy())
    for h, w, pads in [(7, 8, ((1, 1), (0, 1))), (6, 5, ((0, 1), (1, 1)))]:
        x = rng.normal(size=(2, h, w, 3)).astype("float32")
        xp = np.pad(np_sign(x), ((0, 0), pads[0], pads[1], (0, 0)), constant_values=1.0)
        expected = _valid_conv_reference(xp, wq, strides=2)
        np.testing.assert_allclose(predict(x).numpy(), expected, atol=1e-5)


def test_pad_is_a_constant_padv2_before_a_valid_conv():
    """The graph LCE matches for same-one padding: PadV2 with scalar 1.0, then VALID Conv2D."""
    layer = QuantConv2D(4, 3, padding="same", pad_values=1.0, input_quantizer="ste_sign",
                        kernel_quantizer="ste_sign")
    fn = tf.function(lambda x: layer(x))
    graph = fn.get_concrete_function(tf.TensorSpec((1, 6, 6, 3))).graph
    ops = {op.type: op for op in graph.get_operations()}
    assert "PadV2" in ops
    pad_value = tf.get_static_value(ops["PadV2"].inputs[2])
    assert pad_value == 1.0
    assert tf.get_static_value(ops["PadV2"].inputs[1]).tolist() == [[0, 0], [1, 1], [1, 1], [0, 0]]
    assert ops["Conv2D"].get_attr("padding") == b"VALID"


def test_zero_pad_same_uses_native_same_padding():
    layer = QuantConv2D(4, 3, padding="same", input_quantizer="ste_sign",
                        kernel_quantizer="ste_sign")
    graph = tf.function(lambda x: layer(x)).get_concrete_function(
        tf.TensorSpec((1, 6, 6, 3))).graph
    types = [op.type for op in graph.get_operations()]
    assert "Pad" not in types and "PadV2" not in types
    conv = next(op for op in graph.get_operations() if op.type == "Conv2D")
    assert conv.get_attr("padding") == b"SAME"


class _ScaledSign(Quantizer):
    """Test-only binarizer with per-channel levels: scale * sign(x) + offset."""

    precision = 1

    def __init__(self, scale, offset, **kwargs):
        super().__init__(**kwargs)
        self.scale = np.asarray(scale, dtype="float32")
        self.offset = np.asarray(offset, dtype="float32")

    def call(self, inputs, training=None):
        return self.scale * binary_sign(inputs) + self.offset

    def binary_form(self, inputs):
        return BinaryForm(scale=tf.constant(self.scale), offset=tf.constant(self.offset))


@pytest.mark.parametrize("scale, offset", [([1.0, 2.0, 0.5], [0.0, 0.25, -1.0]), (3.0, 0.5)])
def test_pad_with_the_plus_one_level_of_the_input_quantizer(scale, offset, rng):
    """pad_values=1 pads with scale + offset (per channel), the +1 level of the quantizer."""
    x = rng.normal(size=(2, 5, 6, 3)).astype("float32")
    layer = QuantConv2D(2, 3, padding="same", pad_values=1.0, use_bias=False,
                        input_quantizer=_ScaledSign(scale, offset), kernel_quantizer="ste_sign")
    layer.build(x.shape)
    wq = np_sign(layer.kernel.numpy())
    scale_np = np.broadcast_to(np.asarray(scale, "float32"), (3,))
    offset_np = np.broadcast_to(np.asarray(offset, "float32"), (3,))
    xq = scale_np * np_sign(x) + offset_np
    xp = np.stack([np.pad(xq[..., c], ((0, 0), (1, 1), (1, 1)),
                          constant_values=scale_np[c] + offset_np[c]) for c in range(3)], axis=-1)
    np.testing.assert_allclose(layer(x).numpy(), _valid_conv_reference(xp, wq), atol=1e-5)


@pytest.mark.parametrize("pad_values", [0.5, -1.0, 1.0])
def test_non_binary_input_pads_with_the_given_value(pad_values, rng):
    class _Halve(Quantizer):
        precision = 8

        def call(self, inputs, training=None):
            return inputs * 0.5

    x = rng.normal(size=(1, 5, 5, 2)).astype("float32")
    layer = QuantConv2D(3, 3, strides=2, padding="same", pad_values=pad_values, use_bias=False,
                        input_quantizer=_Halve())
    layer.build(x.shape)
    kernel = layer.kernel.numpy()
    xp = np.pad(x * 0.5, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=pad_values)
    np.testing.assert_allclose(layer(x).numpy(), _valid_conv_reference(xp, kernel, strides=2),
                               rtol=1e-5, atol=1e-5)


def test_no_input_quantizer_pads_with_the_given_value(rng):
    x = rng.normal(size=(1, 6, 6, 2)).astype("float32")
    layer = QuantConv2D(2, 2, dilation_rate=2, padding="same", pad_values=-0.25, use_bias=False)
    layer.build(x.shape)
    # Effective kernel 3 -> total 2 -> (1, 1).
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-0.25)
    np.testing.assert_allclose(
        layer(x).numpy(), _valid_conv_reference(xp, layer.kernel.numpy(), dilation_rate=2),
        rtol=1e-5, atol=1e-5)


def test_causal_padding_pads_on_the_left_only(rng):
    x = rng.normal(size=(1, 6, 2)).astype("float32")
    layer = QuantConv1D(1, 3, padding="causal", pad_values=1.0, use_bias=False,
                        input_quantizer="ste_sign", kernel_quantizer="ste_sign",
                        kernel_initializer="ones")
    out = layer(x).numpy()[0, :, 0]
    s = np_sign(x[0]).sum(axis=1)  # per-time-step sum over the 2 channels
    padded = np.concatenate([[2.0, 2.0], s])  # two padded steps of +1 in both channels
    np.testing.assert_array_equal(out, padded[:-2] + padded[1:-1] + padded[2:])
    # Changing the last input step changes only the last output (causality).
    x2 = x.copy()
    x2[0, -1] = -x2[0, -1] + 0.1 * np.sign(-x2[0, -1])
    out2 = layer(x2).numpy()[0, :, 0]
    np.testing.assert_array_equal(out[:-1], out2[:-1])


def test_depthwise_stride_and_dilation_same_padding(rng):
    """Keras allows stride 2 with dilation 2 for depthwise convs; +1 padding follows TF SAME."""
    x = rng.normal(size=(1, 9, 8, 2)).astype("float32")
    layer = QuantDepthwiseConv2D(3, strides=2, dilation_rate=2, padding="same", pad_values=1.0,
                                 use_bias=False, input_quantizer="ste_sign",
                                 depthwise_quantizer="ste_sign")
    layer.build(x.shape)
    w = np_sign(layer.kernel.numpy())[..., 0]  # (3, 3, 2)
    # H: size 9, out 5, total 8 + 5 - 9 = 4 -> (2, 2); W: size 8, out 4, total 6 + 5 - 8 = 3.
    xp = np.pad(np_sign(x), ((0, 0), (2, 2), (1, 2), (0, 0)), constant_values=1.0)
    expected = np.zeros((1, 5, 4, 2))
    for i in range(5):
        for j in range(4):
            patch = xp[0, 2 * i:2 * i + 5:2, 2 * j:2 * j + 5:2]  # (3, 3, 2)
            expected[0, i, j] = (patch * w).sum(axis=(0, 1))
    np.testing.assert_array_equal(layer(x).numpy(), expected)


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_pad_inputs_per_channel_level_in_both_data_formats(data_format, rng):
    """pad_inputs on its own (TensorFlow has no NCHW conv on CPU): the per-channel +1 level
    lands on the channel axis of either layout."""
    scale, offset = [1.0, 2.0, 0.5], [0.0, 0.25, -1.0]
    layer = QuantConv2D(2, 3, strides=2, padding="same", pad_values=1.0, data_format=data_format,
                        input_quantizer=_ScaledSign(scale, offset))
    xq = rng.normal(size=(1, 3, 4, 5)).astype("float32")  # already "quantized" values, NCHW
    x = xq if data_format == "channels_first" else np.transpose(xq, (0, 2, 3, 1))
    padded, padding = layer.pad_inputs(tf.constant(x))
    assert padding == "valid"
    # H = 4: out 2, total 2 + 3 - 4 = 1 -> (0, 1); W = 5: out 3, total 4 + 3 - 5 = 2 -> (1, 1).
    levels = np.add(scale, offset)
    expected = np.stack([np.pad(xq[0, c], ((0, 1), (1, 1)), constant_values=levels[c])
                         for c in range(3)])[None]
    if data_format == "channels_last":
        expected = np.transpose(expected, (0, 2, 3, 1))
    np.testing.assert_allclose(padded.numpy(), expected, rtol=1e-6)


class _LearntLevels(Quantizer):
    """Test-only binarizer alpha * sign(x) + beta with learnt scalars (AdaBin-like)."""

    precision = 1

    def build(self, input_shape):
        self.alpha = self.add_weight(shape=(), initializer=keras.initializers.Constant(1.5),
                                     name="alpha")
        self.beta = self.add_weight(shape=(), initializer=keras.initializers.Constant(-0.25),
                                    name="beta")

    def call(self, inputs, training=None):
        return self.alpha * binary_sign(inputs) + self.beta

    def binary_form(self, inputs):
        return BinaryForm(scale=self.alpha, offset=self.beta)


def test_learnt_pad_level_is_exact_and_gets_a_gradient(rng):
    """Padding with alpha + beta: d sum(out) / d alpha counts sign(x) inside and +1 on the
    border of every window; d / d beta counts every tap (9 per output pixel)."""
    x = rng.normal(size=(1, 4, 5, 1)).astype("float32")
    layer = QuantConv2D(1, 3, padding="same", pad_values=1.0, use_bias=False,
                        kernel_initializer="ones", input_quantizer=_LearntLevels())
    with tf.GradientTape() as tape:
        out = layer(x)
        loss = tf.reduce_sum(out)
    quantizer = layer.input_quantizer
    g_alpha, g_beta = tape.gradient(loss, [quantizer.alpha, quantizer.beta])
    sign_padded = np.pad(np_sign(x)[0, ..., 0], 1, constant_values=1.0)
    window_sums = np.array([[sign_padded[i:i + 3, j:j + 3].sum() for j in range(5)]
                            for i in range(4)])
    np.testing.assert_allclose(out.numpy()[0, ..., 0], 1.5 * window_sums - 0.25 * 9, rtol=1e-6)
    assert float(g_alpha) == window_sums.sum()
    assert float(g_beta) == 4 * 5 * 9
