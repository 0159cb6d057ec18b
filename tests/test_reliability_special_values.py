"""Keras and the LCE flatbuffer agree on special inputs of a binarizer: NaN (both signs),
+inf, -inf, -0.0 and +0.0 (issue 11). LCE's `LceQuantize` gives -1 only where x < 0 (probed
with its interpreter, see docs/methods.md); kbnn's sign follows that rule."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from larq_compute_engine.tflite.python.interpreter import Interpreter

from kbnn.converters import convert, inspect
from kbnn.layers import QuantConv2D, QuantDense
from kbnn.quantizers import DoReFa, binary_sign, sign_with_surrogate_grad

NEG_NAN = np.array(0xFFC00000, np.uint32).view(np.float32)  # a NaN with the sign bit set
SPECIAL = {"nan": np.float32(np.nan), "-nan": NEG_NAN, "+inf": np.float32(np.inf),
           "-inf": np.float32(-np.inf), "-0.0": np.float32(-0.0), "+0.0": np.float32(0.0)}
# LceQuantize's value at each input (x < 0 -> -1, else +1), written out by hand.
LCE_SIGN = {"nan": 1.0, "-nan": 1.0, "+inf": 1.0, "-inf": -1.0, "-0.0": 1.0, "+0.0": 1.0}


def test_special_inputs_are_what_they_are():
    assert np.isnan(NEG_NAN) and np.signbit(NEG_NAN)
    assert np.signbit(SPECIAL["-0.0"]) and not np.signbit(SPECIAL["+0.0"])


@pytest.mark.parametrize("name", sorted(SPECIAL))
def test_binary_sign_follows_lce_rule(name):
    x = tf.fill([4], SPECIAL[name])
    assert binary_sign(x).numpy().tolist() == [LCE_SIGN[name]] * 4
    # with a threshold: -1 only where x < t (NaN - t is NaN: +1, as LceQuantize(x - t))
    t = tf.constant([0.0, 0.5, -0.5, 2.0])
    expected = [(-1.0 if SPECIAL[name] < v else 1.0) for v in (0.0, 0.5, -0.5, 2.0)]
    assert binary_sign(x, t).numpy().tolist() == expected


def test_surrogate_sign_forward_at_special_values():
    x = tf.constant([SPECIAL[n] for n in sorted(SPECIAL)])
    y = sign_with_surrogate_grad(x, tf.ones_like).numpy()
    assert y.tolist() == [LCE_SIGN[n] for n in sorted(SPECIAL)]


def _conv_model(input_quantizer):
    keras.utils.set_random_seed(3)
    inputs = keras.Input((2, 2, 32))
    outputs = QuantConv2D(32, 1, input_quantizer=input_quantizer, kernel_quantizer="ste_sign",
                          use_bias=False, name="bconv")(inputs)
    return keras.Model(inputs, outputs)


@pytest.fixture(scope="module")
def plain():
    model = _conv_model("ste_sign")
    flatbuffer = convert(model)
    assert inspect(flatbuffer).count("LceBconv2d") == 1
    assert inspect(flatbuffer).count("LceQuantize") == 1
    return model, Interpreter(flatbuffer)


@pytest.mark.parametrize("name", sorted(SPECIAL))
def test_keras_and_flatbuffer_agree_on_every_special_input(plain, name):
    model, interpreter = plain
    x = np.full((1, 2, 2, 32), SPECIAL[name], np.float32)
    x[0, 1, 1, :16] = 0.5  # a finite pixel and a mixed one next to the special values
    x[0, 1, 1, 16:] = -0.5
    keras_out = np.asarray(model(x))
    lce_out = interpreter.predict(x)
    np.testing.assert_array_equal(keras_out, lce_out)
    # An all-special pixel is sign s in every channel: output = s * sum of the kernel signs.
    kernel_signs = np.where(model.get_layer("bconv").kernel.numpy() < 0, -1.0, 1.0)
    expected = LCE_SIGN[name] * kernel_signs[0, 0].sum(axis=0)
    np.testing.assert_array_equal(keras_out[0, 0, 0], expected)


def test_mixed_special_values_per_channel(plain):
    model, interpreter = plain
    rng = np.random.default_rng(0)
    x = rng.choice(np.array(list(SPECIAL.values()) + [1.0, -1.0], np.float32),
                   size=(1, 2, 2, 32))
    np.testing.assert_array_equal(np.asarray(model(x)), interpreter.predict(x))


@pytest.mark.parametrize("quantizer", ["rsign", "approx_sign", "ede_sign", "swish_sign",
                                       "ste_heaviside", "adabin_activation", "dorefa_1bit"])
def test_other_activation_binarizers_agree_on_special_inputs(quantizer):
    model = _conv_model(DoReFa(k_bit=1) if quantizer == "dorefa_1bit" else quantizer)
    interpreter = Interpreter(convert(model))
    x = np.stack([np.full((2, 2, 32), v, np.float32) for v in SPECIAL.values()])
    keras_out = np.asarray(model(x))
    lce_out = np.concatenate([interpreter.predict(x[i:i + 1]) for i in range(len(x))])
    np.testing.assert_allclose(keras_out, lce_out, rtol=1e-6, atol=1e-5)
    assert np.isfinite(keras_out).all()


def test_binary_dense_agrees_on_nan():
    keras.utils.set_random_seed(1)
    inputs = keras.Input((64,))
    model = keras.Model(inputs, QuantDense(8, input_quantizer="ste_sign",
                                           kernel_quantizer="ste_sign")(inputs))
    x = np.full((1, 64), np.nan, np.float32)
    lce_out = Interpreter(convert(model)).predict(x)
    np.testing.assert_array_equal(np.asarray(model(x)), lce_out)


def test_one_bit_dorefa_activations_keep_their_gradient():
    # 0.5 * s(x - 0.5) + 0.5 with the DoReFa STE: gradient 1 on [0, 1], 0 outside.
    x = tf.constant([-0.5, 0.0, 0.25, 0.5, 0.75, 1.0, 1.5, np.nan])
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = DoReFa(k_bit=1)(x)
    assert y.numpy().tolist() == [0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    assert tape.gradient(y, x).numpy().tolist() == [0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0]
