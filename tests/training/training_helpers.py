"""Models shared by the tests of this folder: the student that the tf.distribute tests train
(test_multiworker.py and the subprocess it runs, train_strategy_check.py; importing this module
configures nothing in TensorFlow), and the nested EDE model of the quantizer schedule tests."""

import keras

import kbnn
from kbnn.layers import QuantConv2D, QuantDense
from kbnn.quantizers import EDESign, LibraSign

BINARY = {"input_quantizer": "ste_sign", "kernel_quantizer": "ste_sign", "use_bias": False}


def student() -> keras.Model:
    """A small binary net on 8x8x1 (two binary kernels, float stem and head), seeded. No batch
    norm: each replica would normalise with the statistics of its own part of the batch."""
    keras.utils.set_random_seed(0)
    return keras.Sequential([
        keras.Input((8, 8, 1)),
        keras.layers.Conv2D(8, 3, use_bias=False),
        kbnn.layers.QuantConv2D(16, 3, **BINARY),
        keras.layers.Flatten(),
        kbnn.layers.QuantDense(16, **BINARY),
        keras.layers.Dense(10),
        keras.layers.Activation("softmax"),
    ], name="student")


def nested_ede_model(**conv_kwargs) -> keras.Model:
    """Input(4) -> a nested model "inner" of one QuantDense(18) with EDESign inputs and
    LibraSign kernels -> reshape to 3x3x2 -> QuantConv2D(2, 3, **conv_kwargs) -> flatten."""
    inner_in = keras.Input((4,))
    inner = keras.Model(inner_in, QuantDense(18, input_quantizer=EDESign(),
                                             kernel_quantizer=LibraSign())(inner_in),
                        name="inner")
    inputs = keras.Input((4,))
    x = keras.layers.Reshape((3, 3, 2))(inner(inputs))
    x = QuantConv2D(2, 3, **conv_kwargs)(x)
    return keras.Model(inputs, keras.layers.Flatten()(x))
