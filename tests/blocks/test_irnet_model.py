"""IR-Net (arXiv 1909.10788) end to end: Libra-PB weights + EDE activations in a Bi-Real layout,
trained with model.fit and the EDE schedule on digits, round-tripped and converted.

IR-Net has no block of its own (the paper applies its quantizers to Bi-Real/ResNet blocks), so
this is the method's acceptance test: it trains, survives `.keras`, converts in strict mode with
one LceBconv2d per binary conv, and the flatbuffer agrees with Keras.
"""

import keras
import numpy as np
import pytest
from blocks_helpers import BATCH_SIZE, binary_convs, flatbuffer_ops, random_inputs
from kbnn.converters import convert, verify

from kbnn.data import load_digits_split
from kbnn.layers import QuantConv2D
from kbnn.training import EDESchedule

EPOCHS = 4
IRNET = {"input_quantizer": "ede_sign", "kernel_quantizer": "libra_weight", "use_bias": False,
         "padding": "same"}


def _irnet_model() -> keras.Model:
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(32, 3, padding="same", use_bias=False, name="stem")(inputs)
    x = keras.layers.BatchNormalization(momentum=0.9, name="stem_bn")(x)
    # Bi-Real layout: a real shortcut around every binary conv.
    y = QuantConv2D(32, 3, name="bconv1", **IRNET)(x)
    x = keras.layers.Add()([keras.layers.BatchNormalization(momentum=0.9)(y), x])
    y = QuantConv2D(32, 3, name="bconv2", pad_values=1.0, **IRNET)(x)
    x = keras.layers.Add()([keras.layers.BatchNormalization(momentum=0.9)(y), x])
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(10, name="classifier")(x))


@pytest.fixture(scope="module")
def trained():
    keras.utils.set_random_seed(0)
    data = load_digits_split()
    model = _irnet_model()
    steps = EPOCHS * -(-len(data.x_train) // BATCH_SIZE)
    model.compile(keras.optimizers.Adam(keras.optimizers.schedules.PolynomialDecay(1e-2, steps, 0)),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(data.x_train, data.y_train, batch_size=BATCH_SIZE, epochs=EPOCHS,
                        callbacks=[EDESchedule()], verbose=0)
    accuracy = float(np.mean(np.argmax(model.predict(data.x_test, verbose=0), -1) == data.y_test))
    return model, history.history, accuracy


def test_trains_with_the_ede_schedule(trained):
    model, history, accuracy = trained
    assert history["loss"][-1] < 0.5 * history["loss"][0], history["loss"]
    assert accuracy > 0.8, accuracy  # chance is 0.1
    # EDE schedule of §6.2 with N = 4 epochs: t = 0.1 * 100^(i/4), k = max(1/t, 1), i = 0..3
    expected_t = [0.1 * 100 ** (i / EPOCHS) for i in range(EPOCHS)]
    np.testing.assert_allclose(history["ede_t"], expected_t, rtol=1e-5)
    np.testing.assert_allclose(history["ede_k"], [max(1 / t, 1) for t in expected_t], rtol=1e-5)
    quantizer = model.get_layer("bconv1").input_quantizer
    np.testing.assert_allclose(float(quantizer.t), expected_t[-1], rtol=1e-5)


def test_round_trip_and_strict_conversion(trained, tmp_path):
    model = trained[0]
    model.save(tmp_path / "irnet.keras")
    loaded = keras.models.load_model(tmp_path / "irnet.keras")
    x = random_inputs(16)
    np.testing.assert_array_equal(np.asarray(loaded(x)), np.asarray(model(x)))
    assert float(loaded.get_layer("bconv1").input_quantizer.t) == float(
        model.get_layer("bconv1").input_quantizer.t)

    flatbuffer = convert(model, strict=True)
    ops = [name for name, _ in flatbuffer_ops(flatbuffer)]
    assert len(binary_convs(model)) == 2
    assert ops.count("LceBconv2d") == 2
    assert ops.count("CONV_2D") == 1  # the float stem only
    report = verify(model, flatbuffer, random_inputs(200))
    assert report.top1_agreement >= 0.99, report.table()
    assert report.max_abs_diff < 1e-3, report.table()
