"""Identical binary convs (same input, same ±1 kernel, same attributes) are merged into one
LceBconv2d by the TFLite converter; the converter's count check must accept that, and only
that, as a smaller LceBconv2d count."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from convert_helpers import bconv_count

from kbnn.converters import convert, verify
from kbnn.converters.graph_duplicates import merged_binary_ops
from kbnn.layers import QuantConv2D


def _graph_def(fn, *specs):
    return tf.function(fn).get_concrete_function(*specs).graph.as_graph_def()


SPEC = tf.TensorSpec((1, 6, 6, 4), tf.float32)
PLUS_MINUS = np.where(np.random.default_rng(0).random((3, 3, 4, 8)) < 0.5, -1.0, 1.0)


def test_value_numbering_counts_identical_binary_convs_only():
    # Constants are made inside the traced functions, as they are in the frozen export graph.
    def const(sign=1.0, scale=1.0):
        return tf.constant(sign * scale * PLUS_MINUS, tf.float32)

    def two_identical(x):
        return (tf.nn.conv2d(tf.where(x < 0, -1.0, 1.0), const(), 1, "VALID"),
                tf.nn.conv2d(tf.where(x < 0, -1.0, 1.0), const(), 1, "VALID"))

    def different_kernels(x):
        s = tf.where(x < 0, -1.0, 1.0)
        return tf.nn.conv2d(s, const(), 1, "VALID"), tf.nn.conv2d(s, const(-1.0), 1, "VALID")

    def different_strides(x):
        s = tf.where(x < 0, -1.0, 1.0)
        return tf.nn.conv2d(s, const(), 1, "VALID"), tf.nn.conv2d(s, const(), 2, "VALID")

    def float_kernels(x):
        return (tf.nn.conv2d(x, const(scale=0.5), 1, "VALID"),
                tf.nn.conv2d(x, const(scale=0.5), 1, "VALID"))

    def two_inputs(x, y):
        return tf.nn.conv2d(x, const(), 1, "VALID"), tf.nn.conv2d(y, const(), 1, "VALID")

    assert merged_binary_ops(_graph_def(two_identical, SPEC)) == 1
    assert merged_binary_ops(_graph_def(different_kernels, SPEC)) == 0
    assert merged_binary_ops(_graph_def(different_strides, SPEC)) == 0
    assert merged_binary_ops(_graph_def(float_kernels, SPEC)) == 0
    assert merged_binary_ops(_graph_def(two_inputs, SPEC, SPEC)) == 0


def _siblings(same_kernel: bool):
    keras.utils.set_random_seed(1)
    inputs = keras.Input((8, 8, 32))
    convs = [QuantConv2D(32, 3, padding="valid", input_quantizer="ste_sign",
                         kernel_quantizer="ste_sign", name=f"conv_{i}") for i in range(2)]
    outputs = [conv(inputs) for conv in convs]
    model = keras.Model(inputs, keras.layers.Concatenate()(
        [outputs[0], keras.layers.Rescaling(2.0)(outputs[1])]))
    kernel = np.asarray(convs[0].kernel)
    convs[1].kernel.assign(kernel if same_kernel else -kernel)
    return model


@pytest.mark.parametrize("same_kernel", [True, False])
def test_identical_sibling_convs_convert_strictly(same_kernel):
    model = _siblings(same_kernel)
    flatbuffer = convert(model, strict=True)
    # TFLite keeps one LceBconv2d for two identical ones; different kernels give two.
    assert bconv_count(flatbuffer) == (1 if same_kernel else 2)
    x = np.random.default_rng(2).normal(size=(4, 8, 8, 32)).astype("float32")
    assert verify(model, flatbuffer, x).top1_agreement == 1.0

