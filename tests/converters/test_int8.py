"""FakeQuant (QAT) and int8 conversion: int8 stem/head, int8-output LceBconv2d, int8 in/out."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from convert_helpers import bconv_count, random_inputs, randomize_state, seeded
from kbnn.converters import convert, inspect, verify
from kbnn.converters.flatbuffer import read_flatbuffer

from kbnn import quantizers as q
from kbnn.layers import QuantConv2D, QuantDense
from kbnn.quantizers import FakeQuant


def _fake_quant_ref(x, lo, hi, bits=8, narrow=False):
    """numpy reference of TensorFlow's fake quantization (nudged range, round half up)."""
    qmin, qmax = (1 if narrow else 0), 2 ** bits - 1
    scale = (hi - lo) / (qmax - qmin)
    zp = np.clip(np.floor(qmin - lo / scale + 0.5), qmin, qmax)
    nmin, nmax = (qmin - zp) * scale, (qmax - zp) * scale
    return np.floor((np.clip(x, nmin, nmax) - nmin) / scale + 0.5) * scale + nmin


def test_forward_matches_reference_and_hand_values():
    fq = FakeQuant(mode="learned", init_min=-1.0, init_max=2.0)
    x = np.array([-3.0, -1.0, 0.0, 0.01, 0.5, 1.99, 5.0], "float32")
    y = np.asarray(fq(x, training=False))
    # range [-1, 2] on 255 steps: step 3/255, zero exactly representable (zero point 85)
    step = 3.0 / 255.0
    assert y[0] == pytest.approx(-1.0, abs=1e-6) and y[-1] == pytest.approx(2.0, abs=1e-6)
    assert y[2] == 0.0
    assert y[3] == pytest.approx(step, abs=1e-6)  # 0.01 / step = 0.85 -> 1 step
    np.testing.assert_allclose(y, _fake_quant_ref(x.astype("float64"), -1.0, 2.0), atol=1e-6)


def test_moving_average_updates_in_training_only():
    fq = FakeQuant(mode="moving_average", momentum=0.9)
    x = np.array([[-1.0, 0.5, 2.0]], "float32")
    fq(x, training=False)
    assert float(fq.min_var) == -6.0 and float(fq.max_var) == 6.0
    fq(x, training=True)
    assert float(fq.min_var) == pytest.approx(0.9 * -6.0 + 0.1 * -1.0)
    assert float(fq.max_var) == pytest.approx(0.9 * 6.0 + 0.1 * 2.0)
    assert fq.trainable_weights == []


def test_learned_range_gets_gradients():
    fq = FakeQuant(mode="learned", init_min=-0.5, init_max=0.5)
    x = tf.constant([-2.0, 0.1, 2.0])
    fq.build(x.shape)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(fq(x, training=True))
    g_min, g_max = tape.gradient(loss, [fq.min_var, fq.max_var])
    # values clipped at min / max pass their gradient to min / max (1 each)
    assert float(g_min) == pytest.approx(1.0) and float(g_max) == pytest.approx(1.0)
    assert len(fq.trainable_weights) == 2


def test_minmax_symmetric_narrow_for_weights():
    fq = FakeQuant(mode="minmax", symmetric=True, narrow_range=True)
    w = np.array([-0.5, 0.1, 1.27], "float32")
    y = np.asarray(fq(w))
    # range [-1.27, 1.27] on 254 steps of 0.01: values on the grid stay put
    np.testing.assert_allclose(y, [-0.5, 0.1, 1.27], atol=1e-6)


def test_float_emulation_equals_call():
    fq = FakeQuant(mode="learned", init_min=-2.3, init_max=3.1)
    x = np.random.default_rng(0).uniform(-4, 4, 1000).astype("float32")
    np.testing.assert_allclose(np.asarray(fq.float_emulation(x)), np.asarray(fq(x)), atol=1e-5)


@pytest.mark.parametrize("kwargs, arg", [
    ({"num_bits": 1}, "num_bits"), ({"num_bits": 17}, "num_bits"),
    ({"mode": "ema"}, "mode"), ({"momentum": 1.0}, "momentum"),
    ({"init_min": 1.0}, "init_min"),
])
def test_bad_arguments(kwargs, arg):
    with pytest.raises(ValueError, match=f"`{arg}`.*FakeQuant"):
        FakeQuant(**kwargs)


def test_alias_config_and_keras_roundtrip(tmp_path):
    assert isinstance(q.get("fake_quant"), FakeQuant)
    fq = FakeQuant(num_bits=4, mode="learned", init_min=-1.0, init_max=1.5, symmetric=True)
    clone = FakeQuant.from_config(fq.get_config())
    assert clone.get_config() == fq.get_config()
    inp = keras.Input((5,))
    model = keras.Model(inp, QuantDense(3, input_quantizer=fq, kernel_quantizer="fake_quant")(inp))
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    x = random_inputs((5,), n=4)
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(model(x)), atol=1e-6)


def _weights():
    return FakeQuant(mode="minmax", symmetric=True, narrow_range=True)


@pytest.fixture(scope="module")
def qat_model():
    """int8 stem and head (FakeQuant input/kernel, FakeQuant after), binary conv in between,
    ranges set by a short fit."""
    seeded()
    inp = keras.Input((8, 8, 3))
    x = QuantConv2D(32, 3, padding="same", input_quantizer=FakeQuant(init_min=-4, init_max=4),
                    kernel_quantizer=_weights(), name="stem")(inp)
    x = FakeQuant(name="fq_stem")(x)
    x = QuantConv2D(32, 3, padding="same", pad_values=1.0, input_quantizer="ste_sign",
                    kernel_quantizer="ste_sign", name="binary")(x)
    x = keras.layers.BatchNormalization()(x)
    x = FakeQuant(name="fq_binary")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = QuantDense(10, input_quantizer=FakeQuant(), kernel_quantizer=_weights(), name="head")(x)
    x = FakeQuant(name="fq_out")(x)
    model = keras.Model(inp, x)
    randomize_state(model)
    model.compile(optimizer="adam", loss="mse")
    xs = random_inputs((8, 8, 3), n=64)
    model.fit(xs, np.random.default_rng(0).normal(size=(64, 10)), epochs=2, batch_size=16,
              verbose=0)
    return model, convert(model, int8=True)


def _dtypes(fb):
    g = read_flatbuffer(fb)
    return [(op.name, g.tensors[op.inputs[0]].dtype, g.tensors[op.outputs[0]].dtype)
            for op in g.operators]


def test_int8_ops(qat_model):
    _, fb = qat_model
    ops = _dtypes(fb)
    assert ("CONV_2D", "INT8", "INT8") in ops
    assert ("FULLY_CONNECTED", "INT8", "INT8") in ops
    assert ("LceBconv2d", "INT32", "INT8") in ops  # int8-output binary conv
    assert ("LceQuantize", "INT8", "INT32") in ops
    assert bconv_count(fb) == 1
    assert inspect(fb).float_compute_ops == []


def test_int8_agrees_within_quantization_noise(qat_model):
    model, fb = qat_model
    rep = verify(model, fb, random_inputs((8, 8, 3), n=32), atol=0.15, rtol=0.05)
    assert rep.within_tolerance >= 0.98, rep.table()
    assert rep.top1_agreement >= 0.9


def test_int8_model_input_output(qat_model):
    model, _ = qat_model
    fb = convert(model, int8=True, inference_input_type=tf.int8, inference_output_type=tf.int8)
    rep = inspect(fb)
    assert rep.input_dtypes == ["INT8"] and rep.output_dtypes == ["INT8"]
    assert rep.count("QUANTIZE") == 0 and rep.count("DEQUANTIZE") == 0
    assert verify(model, fb, random_inputs((8, 8, 3), n=16), atol=0.15, rtol=0.05).top1_agreement >= 0.9


def test_without_int8_fake_quant_is_emulated_in_float(qat_model):
    model, _ = qat_model
    fb = convert(model)
    rep = inspect(fb)
    assert rep.int8_tensors == [] and rep.n_binary_convs == 1
    assert verify(model, fb, random_inputs((8, 8, 3), n=16)).max_rel_diff < 1e-4
