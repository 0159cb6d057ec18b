"""Generic affine folding: x_q = a*s(x - t) + b and W = scale_o*S + offset_o (AdaBin-style).

Test-only quantizers: the converter knows them only through `binary_form`. Every binary layer is
exactly one LceBconv2d. Allowed extra ops per layer (documented in kbnn.converters.binary_conv):
for a kernel offset, the window sum of the binary input as float ops on ONE channel (the channel
sum: SUM, PADV2 where s pads with +1, AVERAGE_POOL_2D for a window larger than 1x1 or a stride,
or a float CONV_2D when dilated or grouped) times a per-output-channel MUL, joined to the bconv
output by one ADD; one ADD_N (constant border map) for zero padding of an affine input;
everything else folds into the LceBconv2d multiplier/bias.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf
from convert_helpers import bconv_count, random_inputs, seeded, walk_binary_layers
from kbnn.converters import convert, inspect, run_flatbuffer, verify
from tensorflow.lite.python import schema_py_generated as schema

from kbnn.layers import QuantConv2D, QuantDense
from kbnn.quantizers import BinaryForm, Quantizer


class AffineAct(Quantizer):
    """0.7 * s(x - t) + b (t = 0.1, b = 0.2, or one value per channel each)."""

    precision = 1

    def __init__(self, b=0.2, t=0.1, **kwargs):
        super().__init__(**kwargs)
        self.b, self.t = b, t

    def call(self, inputs, training=None):
        b, t = tf.constant(self.b, inputs.dtype), tf.constant(self.t, inputs.dtype)
        return 0.7 * tf.where(inputs >= t, 1.0, -1.0) + b

    def binary_form(self, inputs):
        return BinaryForm(threshold=self.t, scale=0.7, offset=self.b)


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


def _ops(flatbuffer: bytes) -> list[tuple[str, str, tuple]]:
    """(op name, output type, output shape) per operator, read with TF's schema directly."""
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(bytearray(flatbuffer), 0))
    ops_by_code = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    types = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    graph, found = model.subgraphs[0], []
    for op in graph.operators:
        code = model.operatorCodes[op.opcodeIndex]
        name = code.customCode or ops_by_code[max(code.builtinCode, code.deprecatedBuiltinCode)]
        name = name.decode() if isinstance(name, bytes) else name
        out = graph.tensors[op.outputs[0]]
        found.append((name, types[out.type], tuple(int(d) for d in out.shape)))
    return found


def _shift_kernels(model) -> None:
    """Kernels with a clear non-zero mean per output channel."""
    for w in model.weights:
        if "kernel" in w.path:
            w.assign(np.asarray(w) + np.random.default_rng(3).normal(0.05, 0.05, w.shape[-1]))


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
    _shift_kernels(model)
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
    # exactly one bconv per binary layer (every kernel has an offset)
    assert bconv_count(fb) == len(layers) == 3
    # window sums: a channel sum per layer, padded with +Cin (= 32) for the two padded convs
    # (the affine input always pads s with +1), box-summed for the two 3x3 convs (the dense
    # layer's 1x1 window is the channel sum itself), times a*offset_o
    assert ops.get("SUM") == 3 and ops.get("PADV2") == 2 and ops.get("AVERAGE_POOL_2D") == 2
    assert ops.get("LceDequantize") == 3  # the float s the channel sums read
    # joined to the bconv output: ADD, or one ADD_N with the border map for zero padding (a1, a2)
    assert ops.get("ADD_N", 0) == (2 if pad_values == 0.0 else 0)
    assert ops.get("ADD") == (1 if pad_values == 0.0 else 3)
    assert ops.get("CONV_2D", 0) == 0 and ops.get("FULLY_CONNECTED", 0) == 0
    # MUL: the 3 window-sum constants; the BN after a1 (which LCE cannot fold after the float
    # ADD) folds into a1's export (test_bn_fold.py); t = 0.1 gives one SUB per layer
    assert ops.get("MUL", 0) == 3 and ops.get("SUB", 0) == len(layers)
    allowed = {"LceQuantize", "LceDequantize", "LceBconv2d", "SUM", "PADV2", "AVERAGE_POOL_2D",
               "MUL", "ADD", "ADD_N", "RESHAPE", "SUB"}
    assert set(ops) <= allowed, ops


def test_window_sum_ops_are_one_channel_float(centred):
    """The window sum is computed on one float channel; only its final MUL is O channels wide."""
    _, _, fb = centred
    ops = _ops(fb)
    # a1: 9x9 -> 9x9 (stride 1), a2: 9x9 -> 5x5 (stride 2), a3: dense on [1, 1, 1, 800]
    assert [shape for name, _, shape in ops if name == "SUM"] == [
        (1, 9, 9, 1), (1, 9, 9, 1), (1, 1, 1, 1)]
    assert [shape for name, _, shape in ops if name == "PADV2"] == [(1, 11, 11, 1)] * 2
    assert [shape for name, _, shape in ops if name == "AVERAGE_POOL_2D"] == [
        (1, 9, 9, 1), (1, 5, 5, 1)]
    muls = [shape for name, _, shape in ops if name == "MUL"]
    # the window-sum MULs only: the BN after a1 folds into a1's export (test_bn_fold.py)
    assert sorted(muls) == sorted([(1, 9, 9, 32), (1, 5, 5, 32), (1, 1, 1, 8)])
    assert all(dtype == "FLOAT32" for name, dtype, _ in ops
               if name in ("SUM", "PADV2", "AVERAGE_POOL_2D", "MUL", "ADD", "ADD_N"))
    # the window-sum path reads the float signs, not the bconv output
    names = [name for name, _, _ in ops]
    assert names.index("SUM") > names.index("LceDequantize")


def _window_sum_reference(x, t, a, b, kernel, bias, strides, pad_values, k):
    """The layer by numpy: x_q = a*s(x - t) + b, W_q = AdaBin-style centred kernel (scale = mean
    |W - c|, offset = c per output channel), padded with 0 or the +1 level, then a conv."""
    xq = a * np.where(x - t >= 0.0, 1.0, -1.0) + b
    centre = kernel.mean(axis=(0, 1, 2))
    scale = np.abs(kernel - centre).mean(axis=(0, 1, 2))
    wq = scale * np.where(kernel >= centre, 1.0, -1.0) + centre
    n, h, w, _ = x.shape
    out_hw = -(-h // strides)
    total = max((out_hw - 1) * strides + k - h, 0)
    lo = total // 2
    pad_level = 0.0 if pad_values == 0.0 else a + b
    padded = np.zeros((n, h + total, w + total, x.shape[-1])) + pad_level
    padded[:, lo:lo + h, lo:lo + w] = xq
    y = np.zeros((n, out_hw, out_hw, kernel.shape[-1]))
    for i in range(out_hw):
        for j in range(out_hw):
            patch = padded[:, i * strides:i * strides + k, j * strides:j * strides + k]
            y[:, i, j] = np.einsum("nhwc,hwco->no", patch, wq)
    return y + bias


@pytest.mark.parametrize("pad_values", [0.0, 1.0], ids=["pad0", "pad1"])
@pytest.mark.parametrize("strides", [1, 2])
@pytest.mark.parametrize("k", [3, 1])
def test_window_sum_per_channel_threshold(pad_values, strides, k):
    """Per-channel threshold and offset input, centred kernel: one bconv, float window sum,
    the flatbuffer matches a numpy reference of the layer to 1e-4 relative."""
    seeded()
    t = np.linspace(-0.5, 0.4, 32).astype("float32")
    b = np.linspace(0.3, -0.2, 32).astype("float32")
    inp = keras.Input((7, 7, 32))
    layer = QuantConv2D(16, k, strides=strides, padding="same", pad_values=pad_values,
                        input_quantizer=AffineAct(b=b, t=t), kernel_quantizer=CenteredWeight(),
                        bias_initializer="random_normal")
    model = keras.Model(inp, layer(inp))
    _shift_kernels(model)
    fb = convert(model)
    assert bconv_count(fb) == 1
    names = [name for name, _, _ in _ops(fb)]
    assert names.count("SUM") == names.count("MUL") == 1
    assert names.count("AVERAGE_POOL_2D") == int(k > 1 or strides > 1)
    assert "CONV_2D" not in names
    x = random_inputs((7, 7, 32), n=8)
    kernel = np.asarray(layer.kernel, np.float64)
    bias = np.asarray(layer.bias, np.float64)
    expected = _window_sum_reference(x.astype(np.float64), t, 0.7, b, kernel, bias, strides,
                                     pad_values, k)
    got = run_flatbuffer(fb, x)
    assert np.abs(got - expected).max() <= 1e-4 * np.abs(expected).max()
    rep = verify(model, fb, x)
    assert rep.max_rel_diff <= 1e-4, rep.table()


@pytest.mark.parametrize("kwargs", [{"dilation_rate": 2}, {"groups": 2}], ids=["dilated", "groups"])
def test_window_sum_conv_fallback(kwargs):
    """Dilated or grouped convs: the box sum is one float CONV_2D of the [N, H, W, groups]
    channel sums (an average pool has no dilation, one channel per group no O-wide output)."""
    seeded()
    inp = keras.Input((8, 8, 64))
    x = QuantConv2D(64, 3, padding="same", pad_values=0.0, input_quantizer=AffineAct(),
                    kernel_quantizer=CenteredWeight(), **kwargs)(inp)
    model = keras.Model(inp, x)
    _shift_kernels(model)
    fb = convert(model)
    assert bconv_count(fb) == 1
    ops = _ops(fb)
    groups = kwargs.get("groups", 1)
    assert [shape for name, _, shape in ops if name == "SUM"] == [(1, 8, 8, groups)]
    assert [(dtype, shape) for name, dtype, shape in ops if name == "CONV_2D"] == [
        ("FLOAT32", (1, 8, 8, 64))]
    assert "AVERAGE_POOL_2D" not in [name for name, _, _ in ops]
    rep = verify(model, fb, random_inputs((8, 8, 64), n=8))
    assert rep.max_rel_diff <= 1e-4, rep.table()


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
    assert bconv_count(fb) == 1
    rep = verify(model, fb, random_inputs((7, 7, 32), n=16))
    assert rep.max_rel_diff <= 1e-4, rep.table()
