"""Generic affine folding: x_q = a*s(x - t) + b and W = scale_o*S + offset_o (AdaBin-style).

Test-only quantizers: the converter knows them only through `binary_form`. Allowed extra ops per
binary layer (documented in kbnn.converters.binary_conv): one window-sum LceBconv2d + one ADD
when the kernel has an offset, one ADD_N (constant border map) for zero padding of an affine
input; everything else folds into the LceBconv2d multiplier/bias.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf
from convert_helpers import bconv_count, random_inputs, seeded, walk_binary_layers
from kbnn.converters import convert, inspect, verify

from kbnn.layers import QuantConv2D, QuantDense
from kbnn.quantizers import BinaryForm, Quantizer


class AffineAct(Quantizer):
    """0.7 * s(x - 0.1) + b (b = 0.2, or one value per channel)."""

    precision = 1

    def __init__(self, b=0.2, **kwargs):
        super().__init__(**kwargs)
        self.b = b

    def call(self, inputs, training=None):
        b = tf.constant(self.b, inputs.dtype)
        return 0.7 * tf.where(inputs >= 0.1, 1.0, -1.0) + b

    def binary_form(self, inputs):
        return BinaryForm(threshold=0.1, scale=0.7, offset=self.b)


class CenteredWeight(Quantizer):
    """Per output channel: centre c = mean(W), W_q = mean|W - c| * s(W - c) + c."""

    precision = 1

    def _stats(self, w):
        axes = tuple(range(len(w.shape) - 1))
        centre = tf.reduce_mean(w, axis=axes)
        return centre, tf.reduce_mean(tf.abs(w - centre), axis=axes)

    def call(self, inputs, training=None):
        centre, scale = self._stats(inputs)
        return scale * tf.where(inputs >= centre, 1.0, -1.0) + centre

    def binary_form(self, inputs):
        centre, scale = self._stats(inputs)
        return BinaryForm(threshold=centre, scale=scale, offset=centre)


def _model(pad_values, kernel_quantizer, act=None):
    seeded()
    act = act or AffineAct()
    kw = {"input_quantizer": act, "kernel_quantizer": kernel_quantizer}
    inp = keras.Input((9, 9, 32))
    x = QuantConv2D(32, 3, padding="same", pad_values=pad_values, name="a1", **kw)(inp)
    x = keras.layers.BatchNormalization()(x)
    x = QuantConv2D(32, 3, strides=2, padding="same", pad_values=pad_values, name="a2", **kw)(x)
    x = keras.layers.Flatten()(x)
    x = QuantDense(8, name="a3", **kw)(x)
    model = keras.Model(inp, x)
    for w in model.weights:  # kernels with a clear non-zero mean per channel
        if "kernel" in w.path:
            w.assign(np.asarray(w) + np.random.default_rng(3).normal(0.05, 0.05, w.shape[-1]))
    return model


@pytest.fixture(scope="module", params=[0.0, 1.0], ids=["pad0", "pad1"])
def centred(request):
    model = _model(request.param, CenteredWeight())
    return request.param, model, convert(model)


def test_affine_with_offset_matches_keras(centred):
    _, model, fb = centred
    rep = verify(model, fb, random_inputs((9, 9, 32), n=24))
    assert rep.max_rel_diff <= 1e-4, rep.table()
    assert rep.top1_agreement >= 0.99


def test_affine_with_offset_ops(centred):
    pad_values, model, fb = centred
    layers = walk_binary_layers(model)
    assert len(layers) == 3
    ops = inspect(fb).op_counts
    # one main bconv + one window-sum bconv per layer (every kernel has an offset)
    assert bconv_count(fb) == 2 * len(layers)
    assert ops.get("ADD") == len(layers)  # main + window sum
    # zero padding of the affine input: one constant border map per padded conv (a1, a2)
    assert ops.get("ADD_N", 0) == (2 if pad_values == 0.0 else 0)
    assert ops.get("CONV_2D", 0) == 0 and ops.get("FULLY_CONNECTED", 0) == 0
    # the BN after a1 follows a float ADD (main + window sum), so its multiply cannot fold;
    # its shift merges with the next threshold SUB (t = 0.1 gives one SUB per layer)
    assert ops.get("MUL", 0) == 1 and ops.get("SUB", 0) == len(layers)
    allowed = {"LceQuantize", "LceBconv2d", "ADD", "ADD_N", "RESHAPE", "SUB", "MUL"}
    assert set(ops) <= allowed, ops


@pytest.mark.parametrize("pad_values", [0.0, 1.0])
def test_affine_input_plain_kernel_is_one_bconv(pad_values):
    model = _model(pad_values, "ste_sign")
    fb = convert(model)
    assert bconv_count(fb) == len(walk_binary_layers(model)) == 3
    ops = inspect(fb).op_counts
    assert ops.get("ADD", 0) == 0  # a, b*sum(W), bias and BN all fold into the bconv
    rep = verify(model, fb, random_inputs((9, 9, 32), n=16))
    assert rep.max_rel_diff <= 1e-4, rep.table()


def test_per_channel_input_offset():
    """b per input channel folds into a per-output constant (and into the border map)."""
    seeded()
    b = np.linspace(-0.3, 0.4, 32).astype("float32")
    inp = keras.Input((7, 7, 32))
    x = QuantConv2D(16, 3, padding="same", pad_values=0.0, input_quantizer=AffineAct(b=b),
                    kernel_quantizer=CenteredWeight())(inp)
    model = keras.Model(inp, x)
    fb = convert(model)
    assert bconv_count(fb) == 2
    rep = verify(model, fb, random_inputs((7, 7, 32), n=16))
    assert rep.max_rel_diff <= 1e-4, rep.table()
