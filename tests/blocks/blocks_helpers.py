"""Shared helpers of the block tests: the digits two-block model, training, counting layers,
reading a flatbuffer's ops, numpy references.

Every count here is computed in the test from the model's structure, from the flatbuffer read
with TensorFlow's schema, or by hand, never read from the block's or the converter's own
bookkeeping.
"""

from __future__ import annotations

import keras
import numpy as np
from bnext_reference import avgpool2_same, conv2d_same, same_pads

from kbnn._keras_compat import flatten_layers
from kbnn.data import load_digits_split
from kbnn.layers import QuantConv2D

STEM_CHANNELS = 32
NUM_CLASSES = 10


def two_block_model(block1, block2, stem: int = STEM_CHANNELS) -> keras.Model:
    """Input(8, 8, 1) -> float 3x3 stem conv + BN -> block1 -> block2 -> GAP -> Dense(10).

    The stem BN uses momentum 0.9 like the blocks' BNs: a short fit has ~100 steps, too few for
    Keras' default 0.99 to settle the moving statistics.
    """
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(stem, 3, padding="same", use_bias=False, name="stem")(inputs)
    x = keras.layers.BatchNormalization(momentum=0.9, name="stem_bn")(x)
    x = block2(block1(x))
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = keras.layers.Dense(NUM_CLASSES, name="classifier")(x)
    return keras.Model(inputs, outputs)


BATCH_SIZE = 64


def train_on_digits(model: keras.Model, epochs: int, learning_rate: float = 1e-2, seed: int = 0):
    """Fit on the digits training split with Adam and a learning rate decaying linearly to 0
    (the ReActNet / Bi-Real recipe; it also lets the BN moving statistics settle on the final
    binary weights). Returns (per-epoch losses, test accuracy, data)."""
    keras.utils.set_random_seed(seed)
    data = load_digits_split()
    steps = epochs * -(-len(data.x_train) // BATCH_SIZE)
    schedule = keras.optimizers.schedules.PolynomialDecay(learning_rate, steps, 0.0)
    model.compile(keras.optimizers.Adam(schedule),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(data.x_train, data.y_train, batch_size=BATCH_SIZE, epochs=epochs, verbose=0)
    predictions = np.argmax(model.predict(data.x_test, verbose=0), axis=-1)
    accuracy = float(np.mean(predictions == data.y_test))
    return history.history["loss"], accuracy, data


def _is_one_bit(quantizer) -> bool:
    return quantizer is not None and getattr(quantizer, "precision", 32) == 1


def binary_convs(model: keras.Model) -> list:
    """Every QuantConv2D in the model (walked recursively) whose input and kernel are 1-bit."""
    return [layer for layer in flatten_layers(model, include_self=False, recursive=True)
            if isinstance(layer, QuantConv2D)
            and _is_one_bit(layer.input_quantizer) and _is_one_bit(layer.kernel_quantizer)]


def flatbuffer_graph(flatbuffer: bytes) -> tuple[list[str], object]:
    """(the op name of every opcode index, subgraph 0 as a `SubGraphT`), read with TensorFlow's
    flatbuffer schema directly (not through kbnn.converters)."""
    from tensorflow.lite.python import schema_py_generated as schema

    builtin = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(bytearray(flatbuffer), 0))
    names = [c.customCode.decode() if c.customCode
             else builtin[max(c.builtinCode, c.deprecatedBuiltinCode)]
             for c in model.operatorCodes]
    return names, model.subgraphs[0]


def flatbuffer_ops(flatbuffer: bytes) -> list[tuple[str, list[tuple[int, ...]]]]:
    """(op name, input tensor shapes) of every op of subgraph 0 (see `flatbuffer_graph`)."""
    names, graph = flatbuffer_graph(flatbuffer)
    return [(names[op.opcodeIndex],
             [tuple(int(d) for d in graph.tensors[i].shape) if i >= 0 else () for i in op.inputs])
            for op in graph.operators]


def random_inputs(n: int = 200, seed: int = 1) -> np.ndarray:
    """Inputs in the digits value range [-1, 1]."""
    return np.random.default_rng(seed).uniform(-1, 1, (n, 8, 8, 1)).astype("float32")


def conv_macs(k: int, c_in: int, c_out: int, h_out: int, w_out: int) -> int:
    """METHODS.md §0: k*k*C_in*C_out*H_out*W_out."""
    return k * k * c_in * c_out * h_out * w_out


# Costs shared by every two-block digits model: the float stem (3x3, 1 -> 32 on 8x8) and the
# classifier Dense(C -> 10).
STEM_FLOPS = conv_macs(3, 1, STEM_CHANNELS, 8, 8)


def classifier_flops(channels: int) -> int:
    return channels * NUM_CLASSES


# ---------------------------------------------------------------------------------------------
# numpy references (inference mode), written from METHODS.md, independent of kbnn's code.

def as_f64(variable) -> np.ndarray:
    return np.asarray(variable, np.float64)


def single_block_model(block, shape) -> keras.Model:
    """Input(shape) -> block, every BN/quantizer/activation parameter randomized."""
    inputs = keras.Input(shape)
    model = keras.Model(inputs, block(inputs))
    randomize(model)
    return model


def assert_matches_reference(block, shape, reference, rng) -> np.ndarray:
    """Run `block` (randomized, inference mode) on two normal samples of `shape` and compare with
    `reference(block, x)` computed in float64; returns the block's output."""
    model = single_block_model(block, shape)
    x = rng.normal(size=(2, *shape)).astype("float32")
    got = np.asarray(model(x, training=False))
    np.testing.assert_allclose(got, reference(block, x.astype(np.float64)), rtol=1e-4, atol=1e-4)
    return got


def np_sign(x):
    """sign with sign(0) = +1."""
    return np.where(x >= 0, 1.0, -1.0)


# The numpy SAME convolution and pooling references are shared with the BNext reference.
np_same_pads, np_conv2d_same, np_avgpool2_same = same_pads, conv2d_same, avgpool2_same


def np_bn(x, layer, epsilon: float = 1e-5):
    """Inference batch norm with the layer's variables (epsilon as the blocks use)."""
    g, b, m, v = (np.asarray(w, np.float64) for w in layer.get_weights())
    return (x - m) / np.sqrt(v + epsilon) * g + b


def np_channel_scaled_sign(w):
    """mean|W| per output channel (last axis) times sign(W): ScaledSign / XNOR / Bi-Real."""
    return np.abs(w).mean(axis=(0, 1, 2)) * np_sign(w)


def np_shortcut(block, x):
    """Bi-Real / AdaBin shortcut: x itself, or BN(conv1x1(avgpool2(x) if strided else x))."""
    if block.shortcut is None:
        return x
    pooled = np_avgpool2_same(x) if block.strides == 2 else x
    return np_bn(np_conv2d_same(pooled, as_f64(block.shortcut.conv.kernel)), block.shortcut.bn)


def np_rprelu(x, gamma, beta, zeta):
    z = x - gamma
    return np.where(z > 0, z, beta * z) + zeta


def randomize(model: keras.Model, seed: int = 3) -> None:
    """Give every BN, RPReLU, Maxout, LearnableBias and RSign/AdaBin parameter a random,
    non-default value (BN variances stay positive, AdaBin alpha > 0), so a reference check
    exercises each of them."""
    rng = np.random.default_rng(seed)
    for layer in flatten_layers(model, include_self=False, recursive=True):
        for var in layer.weights:
            name = var.path.split("/")[-1]
            shape = tuple(var.shape)
            if name in ("kernel", "k", "t"):  # kernels keep their init; EDE k, t: gradient only
                continue
            positive = ("moving_variance", "alpha", "gamma_plus", "gamma_minus")
            if name in positive or (name == "gamma"
                                    and isinstance(layer, keras.layers.BatchNormalization)):
                value = rng.uniform(0.5, 1.5, shape)
            else:
                value = rng.normal(0.0, 0.3, shape)
            var.assign(value.astype("float32"))
