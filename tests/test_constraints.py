"""WeightClip and its "weight_clip" alias in Keras constraint arguments."""

import keras
import numpy as np
import pytest

import kbnn
from kbnn.constraints import WeightClip


def test_clips_to_the_range(rng):
    w = rng.normal(0.0, 2.0, size=(3, 4)).astype(np.float32)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(WeightClip()(w)), np.clip(w, -1, 1))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(WeightClip(0.25)(w)),
                                  np.clip(w, -0.25, 0.25))


@pytest.mark.parametrize("clip_value", [0.0, -1.0, "1", float("nan")])
def test_bad_clip_value_raises(clip_value):
    with pytest.raises(ValueError, match="`clip_value` of WeightClip.*Received clip_value="):
        WeightClip(clip_value)


def test_alias_resolves_through_keras_and_kbnn():
    for get in (keras.constraints.get, kbnn.constraints.get):
        obj = get("weight_clip")
        assert type(obj) is WeightClip and obj.clip_value == 1.0
    config = keras.constraints.serialize(WeightClip(0.3))
    assert config["registered_name"] == "kbnn>WeightClip"
    restored = keras.constraints.get(config)
    assert type(restored) is WeightClip and restored.clip_value == 0.3
    # Keras' own identifiers still resolve.
    assert type(keras.constraints.get("non_neg")) is keras.constraints.NonNeg


def test_plain_keras_layer_accepts_the_alias():
    layer = keras.layers.Dense(2, kernel_constraint="weight_clip")
    assert type(layer.kernel_constraint) is WeightClip


def test_constraint_is_applied_during_fit(rng):
    x = rng.normal(size=(16, 6, 6, 2)).astype(np.float32)
    y = rng.normal(size=(16, 4)).astype(np.float32)
    model = keras.Sequential([
        keras.Input((6, 6, 2)),
        kbnn.layers.QuantConv2D(4, 3, kernel_quantizer="ste_sign", kernel_constraint="weight_clip"),
        keras.layers.GlobalAveragePooling2D(),
    ])
    conv = model.layers[0]
    assert type(conv.kernel_constraint) is WeightClip
    conv.kernel.assign(np.full(conv.kernel.shape, 0.9, np.float32))
    model.compile(optimizer=keras.optimizers.SGD(100.0), loss="mse")
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    kernel = keras.ops.convert_to_numpy(conv.kernel)
    assert np.abs(kernel).max() <= 1.0
    assert np.isclose(np.abs(kernel), 1.0).any()  # the huge step pushed weights to the bound


def test_quant_conv_with_alias_survives_keras_file(tmp_path, rng):
    inputs = keras.Input((5, 5, 3))
    outputs = kbnn.layers.QuantConv2D(
        4, 3, input_quantizer="ste_sign", kernel_quantizer="ste_sign",
        kernel_constraint="weight_clip", bias_constraint=WeightClip(0.5))(inputs)
    model = keras.Model(inputs, outputs)
    path = tmp_path / "clip.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    conv = loaded.layers[-1]
    assert type(conv.kernel_constraint) is WeightClip and conv.kernel_constraint.clip_value == 1.0
    assert type(conv.bias_constraint) is WeightClip and conv.bias_constraint.clip_value == 0.5
    x = rng.normal(size=(2, 5, 5, 3)).astype(np.float32)
    np.testing.assert_array_equal(loaded(x).numpy(), model(x).numpy())
