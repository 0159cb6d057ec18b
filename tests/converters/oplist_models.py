"""A fixed set of small models that covers every export form of the converter.

`tests/converters/make_oplist_baseline.py` converted each of them with the converter as it was
before the export contract became public (commit 1efe7b7) and stored every flatbuffer's operator
list (op name and input tensor shapes) in `data/oplists_baseline.json`;
`test_oplist_baseline.py` converts them again and asserts the same lists, so a change to how
layers reach their export form cannot change what the flatbuffers hold.
"""

from __future__ import annotations

import keras

from kbnn.blocks import AdaBinBlock, BiRealBlock, ReActNetBlock, XnorBlock
from kbnn.layers import QuantConv1D, QuantConv2D, QuantDense
from kbnn.quantizers import FakeQuant


def _stem(shape=(8, 8, 1), channels=32):
    inputs = keras.Input(shape)
    x = keras.layers.Conv2D(channels, 3, padding="same", use_bias=False, name="stem")(inputs)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    return inputs, x


def _head(inputs, x, classes=10):
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, keras.layers.Dense(classes, name="classifier")(x))


def plain_sign_net():
    """ste_sign convs with pad 1 and pad 0, max-pool before a sign, binary Dense head."""
    inputs, x = _stem()
    x = QuantConv2D(32, 3, padding="same", pad_values=1.0, use_bias=False,
                    input_quantizer="ste_sign", kernel_quantizer="ste_sign", name="b1")(x)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.MaxPooling2D(2, name="pool")(x)
    x = QuantConv2D(64, 3, padding="same", pad_values=0.0, use_bias=False,
                    input_quantizer="ste_sign", kernel_quantizer="ste_sign", name="b2")(x)
    x = keras.layers.BatchNormalization(name="bn2")(x)
    x = keras.layers.Flatten(name="flat")(x)
    x = QuantDense(32, input_quantizer="ste_sign", kernel_quantizer="ste_sign", name="d1")(x)
    return keras.Model(inputs, keras.layers.Dense(10, name="out")(x))


def threshold_chain():
    """RSign after a binary conv (the threshold folds into the preceding bconv)."""
    inputs, x = _stem()
    for i in range(2):
        x = QuantConv2D(32, 3, padding="same", pad_values=1.0, use_bias=False,
                        input_quantizer="rsign", kernel_quantizer="scaled_sign", name=f"r{i}")(x)
        x = keras.layers.BatchNormalization(name=f"rbn{i}")(x)
    return _head(inputs, x)


def conv1d_causal():
    inputs = keras.Input((16, 32))
    x = QuantConv1D(32, 3, padding="causal", pad_values=0.0, input_quantizer="ste_sign",
                    kernel_quantizer="ste_sign", name="c1")(inputs)
    x = QuantConv1D(32, 3, padding="same", pad_values=1.0, dilation_rate=2,
                    input_quantizer="ste_sign", kernel_quantizer="ste_sign", name="c2")(x)
    return keras.Model(inputs, x)


def dense_3d():
    inputs = keras.Input((5, 64))
    x = QuantDense(32, input_quantizer="ste_sign", kernel_quantizer="ste_sign", name="d")(inputs)
    return keras.Model(inputs, x)


def adabin_bn_fold():
    """AdaBin convs (kernel offset: window sum) followed by a BN that folds in, zero padding."""
    inputs = keras.Input((8, 8, 32))
    x = QuantConv2D(32, 3, padding="same", pad_values=0.0, use_bias=False,
                    input_quantizer="adabin_activation", kernel_quantizer="adabin_weight",
                    name="a1")(inputs)
    x = keras.layers.BatchNormalization(name="abn1")(x)
    x = QuantConv2D(32, 3, strides=2, padding="same", pad_values=1.0, use_bias=False,
                    input_quantizer="adabin_activation", kernel_quantizer="adabin_weight",
                    name="a2")(x)
    x = keras.layers.BatchNormalization(name="abn2")(x)
    return keras.Model(inputs, x)


def grouped():
    inputs = keras.Input((8, 8, 64))
    x = QuantConv2D(64, 3, padding="same", pad_values=1.0, groups=2,
                    input_quantizer="ste_sign", kernel_quantizer="ste_sign", name="g")(inputs)
    return keras.Model(inputs, x)


def _block_net(*blocks):
    inputs, x = _stem()
    for block in blocks:
        x = block(x)
    return _head(inputs, x)


def reactnet_blocks():
    return _block_net(ReActNetBlock(64, strides=2, name="ra"), ReActNetBlock(64, name="rb"))


def bireal_blocks():
    return _block_net(BiRealBlock(32, name="ba"), BiRealBlock(64, strides=2, name="bb"))


def xnor_blocks():
    return _block_net(XnorBlock(32, name="xa"),
                      XnorBlock(64, strides=2, activation_scale=True, name="xb"))


def adabin_blocks():
    return _block_net(AdaBinBlock(32, name="aa"),
                      AdaBinBlock(64, strides=2, pad_values=1.0, name="ab"))


def int8_stem_head():
    """FakeQuant stem and head around a binary conv: converted with int8=True."""
    inputs = keras.Input((8, 8, 1))
    x = FakeQuant(name="in_fq")(inputs)
    x = QuantConv2D(32, 3, padding="same", use_bias=True,
                    kernel_quantizer=FakeQuant(symmetric=True, narrow_range=True, mode="minmax"),
                    name="stem")(x)
    x = FakeQuant(name="stem_fq")(x)
    x = QuantConv2D(32, 3, padding="same", pad_values=1.0, input_quantizer="ste_sign",
                    kernel_quantizer="ste_sign", name="b")(x)
    x = FakeQuant(name="b_fq")(x)
    x = keras.layers.Flatten(name="flat")(x)
    x = QuantDense(10, kernel_quantizer=FakeQuant(symmetric=True, narrow_range=True,
                                                  mode="minmax"), name="head")(x)
    return keras.Model(inputs, x)


# name -> (builder, convert keyword arguments)
MODELS = {
    "plain_sign_net": (plain_sign_net, {}),
    "threshold_chain": (threshold_chain, {}),
    "conv1d_causal": (conv1d_causal, {}),
    "dense_3d": (dense_3d, {}),
    "adabin_bn_fold": (adabin_bn_fold, {}),
    "grouped": (grouped, {}),
    "reactnet_blocks": (reactnet_blocks, {}),
    "bireal_blocks": (bireal_blocks, {}),
    "xnor_blocks": (xnor_blocks, {}),
    "adabin_blocks": (adabin_blocks, {}),
    "int8_stem_head": (int8_stem_head, {"int8": True}),
    "int8_stem_head_float": (int8_stem_head, {}),
}
