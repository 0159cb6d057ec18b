"""A BatchNormalization right after a binary layer whose export needs correction terms (AdaBin:
kernel offset -> window sum; zero padding of an affine input -> border map) folds into that
layer's export: the flatbuffer has exactly the ops of the same model without the BN (one
LceBconv2d, no float MUL + ADD left for the BN) and still agrees with Keras.

Ops are read with TensorFlow's flatbuffer schema; the reference is the Keras model itself.
"""

import keras
import numpy as np
import pytest
from convert_helpers import bconv_count, random_inputs, randomize_state, seeded
from kbnn.converters import convert, verify

from kbnn.blocks import AdaBinBlock
from kbnn.layers import QuantConv2D, QuantDense

SHAPE = (8, 8, 32)


def op_names(flatbuffer: bytes) -> list[str]:
    """Operator names of subgraph 0 in execution order (TF schema, not kbnn.converters)."""
    from tensorflow.lite.python import schema_py_generated as schema

    builtin = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(bytearray(flatbuffer), 0))
    names = [c.customCode.decode() if c.customCode
             else builtin[max(c.builtinCode, c.deprecatedBuiltinCode)]
             for c in model.operatorCodes]
    return [names[op.opcodeIndex] for op in model.subgraphs[0].operators]


def _randomize_bns(model, seed: int = 3) -> None:
    """BN statistics far from identity, with gammas of both signs."""
    rng = np.random.default_rng(seed)
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.gamma.assign(rng.choice([-1.0, 1.0], n) * rng.uniform(0.5, 2.0, n))
            layer.beta.assign(rng.normal(0, 0.5, n))
            layer.moving_mean.assign(rng.normal(0, 2.0, n))
            layer.moving_variance.assign(rng.uniform(0.3, 4.0, n))


def _adabin_conv(strides: int, pad_values: float, name: str = "conv") -> QuantConv2D:
    return QuantConv2D(32, 3, strides=strides, padding="same", pad_values=pad_values,
                       use_bias=False, input_quantizer="adabin_activation",
                       kernel_quantizer="adabin_weight", name=name)


def _prepare(model) -> keras.Model:
    randomize_state(model)  # AdaBin alpha/beta away from their init, BN statistics
    _randomize_bns(model)
    return model


def _assert_verifies(model, flatbuffer) -> None:
    rep = verify(model, flatbuffer, random_inputs(model.input_shape[1:], n=8))
    assert rep.max_rel_diff < 1e-4, rep.table()


def _kernel_offsets_nonzero(conv) -> None:
    """The AdaBin weight centre (kernel offset) is what keeps LCE from folding the BN."""
    assert np.all(np.abs(np.asarray(conv.kernel).mean(axis=(0, 1, 2))) > 0)


@pytest.mark.parametrize("strides", [1, 2])
@pytest.mark.parametrize("pad_values", [0.0, 1.0])
def test_functional_adabin_conv_bn_folds(strides, pad_values):
    seeded()
    inp = keras.Input(SHAPE)
    y = _adabin_conv(strides, pad_values)(inp)
    with_bn = _prepare(keras.Model(inp, keras.layers.BatchNormalization(name="bn")(y)))
    without_bn = keras.Model(inp, y)  # the same conv, no BN
    _kernel_offsets_nonzero(with_bn.get_layer("conv"))

    fb_bn, fb_plain = convert(with_bn), convert(without_bn)
    assert bconv_count(fb_bn) == 1
    assert sorted(op_names(fb_bn)) == sorted(op_names(fb_plain)), (op_names(fb_bn),
                                                                   op_names(fb_plain))
    _assert_verifies(with_bn, fb_bn)
    _assert_verifies(without_bn, fb_plain)


class _AdaBinBlockWithoutBN(AdaBinBlock):
    """AdaBinBlock with the BN after the conv left out: the op-count reference."""

    def call(self, inputs, training=None):
        shortcut = inputs if self.shortcut is None else self.shortcut(inputs, training=training)
        return self.maxout(self.conv(inputs) + shortcut)

    def batch_norm_pairs(self):
        return []  # no BN follows the conv here


@pytest.mark.parametrize("strides", [1, 2])
@pytest.mark.parametrize("pad_values", [0.0, 1.0])
def test_adabin_block_bn_folds(strides, pad_values):
    fbs = []
    for cls in (AdaBinBlock, _AdaBinBlockWithoutBN):
        seeded()
        inp = keras.Input(SHAPE)
        model = _prepare(keras.Model(inp, cls(32, strides=strides, pad_values=pad_values,
                                              name="block")(inp)))
        _kernel_offsets_nonzero(model.get_layer("block").conv)
        fbs.append(convert(model))
        assert bconv_count(fbs[-1]) == 1
        _assert_verifies(model, fbs[-1])
    assert sorted(op_names(fbs[0])) == sorted(op_names(fbs[1])), [op_names(f) for f in fbs]


def test_bn_whose_input_has_two_consumers_is_not_folded():
    """conv -> BN and conv -> Add(BN(conv), conv): the BN stays a float MUL + ADD."""
    seeded()
    inp = keras.Input(SHAPE)
    y = _adabin_conv(1, 0.0)(inp)
    bn = keras.layers.BatchNormalization(name="bn_two")
    two = _prepare(keras.Model(inp, keras.layers.Add(name="add")([bn(y), y])))
    # The same graph where the Add takes the conv output twice (no BN) gives the reference ops.
    plain = keras.Model(inp, keras.layers.Add()([y, y]))
    with pytest.warns(UserWarning, match=r"bn_two: the BatchNormalization after conv is not "
                                         r"folded.*output of conv also feeds add"):
        fb_two = convert(two)
    fb_plain = convert(plain)
    assert bconv_count(fb_two) == 1
    extra = sorted(op_names(fb_two))
    for op in op_names(fb_plain):
        extra.remove(op)
    assert extra == ["ADD", "MUL"], (op_names(fb_two), op_names(fb_plain))
    _assert_verifies(two, fb_two)


def test_bn_on_a_model_output_conv_is_not_folded():
    """The conv output is both the BN's input and a model output: nothing is folded."""
    seeded()
    inp = keras.Input(SHAPE)
    y = _adabin_conv(1, 1.0)(inp)
    model = _prepare(keras.Model(inp, [y, keras.layers.BatchNormalization(name="bn_out")(y)]))
    with pytest.warns(UserWarning, match=r"bn_out: .*not folded.*also a model output"):
        flatbuffer = convert(model)
    assert bconv_count(flatbuffer) == 1
    x = random_inputs(SHAPE, n=4)
    from larq_compute_engine.tflite.python.interpreter import Interpreter

    got = Interpreter(flatbuffer).predict(x)
    expected = [np.asarray(t) for t in model(x, training=False)]
    # Output order of the flatbuffer is not guaranteed: match by closeness.
    for e in expected:
        assert any(g.shape == e.shape and np.abs(g - e).max() <= 1e-4 * np.abs(e).max()
                   for g in got)


def test_dense_with_kernel_offset_and_bn_folds():
    seeded()
    inp = keras.Input((64,))
    y = QuantDense(32, use_bias=True, input_quantizer="adabin_activation",
                   kernel_quantizer="adabin_weight", name="dense")(inp)
    with_bn = _prepare(keras.Model(inp, keras.layers.BatchNormalization()(y)))
    without_bn = keras.Model(inp, y)
    fb_bn, fb_plain = convert(with_bn), convert(without_bn)
    assert bconv_count(fb_bn) == 1
    assert sorted(op_names(fb_bn)) == sorted(op_names(fb_plain))
    _assert_verifies(with_bn, fb_bn)


def test_bn_on_another_axis_is_not_folded():
    """A BN over the height axis is not a per-output-channel map: it stays, and still verifies."""
    seeded()
    inp = keras.Input(SHAPE)
    y = _adabin_conv(1, 1.0)(inp)
    model = _prepare(keras.Model(inp, keras.layers.BatchNormalization(axis=1, name="bn_h")(y)))
    with pytest.warns(UserWarning, match=r"bn_h: .*not folded.*normalises axis 1"):
        flatbuffer = convert(model)
    assert bconv_count(flatbuffer) == 1
    _assert_verifies(model, flatbuffer)


def test_export_mode_leaves_no_hook_on_the_bn():
    """After converting, the folded BN computes its normal inference output again."""
    seeded()
    inp = keras.Input(SHAPE)
    bn = keras.layers.BatchNormalization()
    model = _prepare(keras.Model(inp, bn(_adabin_conv(1, 0.0)(inp))))
    convert(model)
    x = np.random.default_rng(0).normal(size=(2, 4, 4, 32)).astype("float32")
    gamma, beta = np.asarray(bn.gamma), np.asarray(bn.beta)
    mean, var = np.asarray(bn.moving_mean), np.asarray(bn.moving_variance)
    expected = gamma * (x - mean) / np.sqrt(var + bn.epsilon) + beta
    np.testing.assert_allclose(np.asarray(bn(x, training=False)), expected, rtol=1e-5, atol=1e-5)
    assert "call" not in vars(bn)


class _OpaqueBlock(keras.layers.Layer):
    """A custom block that applies a BN after an AdaBin conv without declaring the pair."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.conv = _adabin_conv(1, 0.0, name="inner_conv")
        self.bn = keras.layers.BatchNormalization(name="inner_bn")

    def call(self, inputs, training=None):
        return self.bn(self.conv(inputs), training=training)


def test_bn_in_an_undeclared_block_is_not_folded_and_warns():
    seeded()
    inp = keras.Input(SHAPE)
    model = _prepare(keras.Model(inp, _OpaqueBlock(name="opaque")(inp)))
    with pytest.warns(UserWarning, match=r"inner_conv: .*cannot see what follows it inside "
                                         r"opaque .*batch_norm_pairs"):
        flatbuffer = convert(model)
    assert bconv_count(flatbuffer) == 1
    assert "MUL" in op_names(flatbuffer)  # the BN stayed float
    _assert_verifies(model, flatbuffer)


def test_bn_after_a_shared_layer_is_not_folded_and_warns():
    seeded()
    inp = keras.Input(SHAPE)
    conv = _adabin_conv(1, 1.0, name="shared")
    y = keras.layers.BatchNormalization(name="bn_shared")(conv(inp))
    other = conv(keras.layers.Activation("tanh")(inp))  # a second call on another tensor
    model = _prepare(keras.Model(inp, keras.layers.Add()([y, other])))
    with pytest.warns(UserWarning, match=r"bn_shared: .*not folded.*shared is called 2 times"):
        flatbuffer = convert(model)
    assert bconv_count(flatbuffer) == 2
    _assert_verifies(model, flatbuffer)
