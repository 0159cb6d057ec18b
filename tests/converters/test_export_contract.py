"""The public export contract: conversion leaves the model untouched, runs concurrently, and a
binary layer class defined outside kbnn converts through the public registry alone."""

import threading
from typing import ClassVar

import keras
import numpy as np
import pytest
import tensorflow as tf
from convert_helpers import bconv_count, random_inputs, seeded
from kbnn.converters import ConversionError, convert, verify
from oplist_models import MODELS

from kbnn import _keras_compat as compat
from kbnn.layers import BinaryConvForm, QuantizedLayerMixin, register_export_form


def _state(model) -> dict:
    """Every layer's (recursively, quantizers included) instance attributes."""
    return {id(layer): (layer.name, dict(vars(layer)))
            for layer in compat.flatten_layers(model, include_self=True, recursive=True)}


def _assert_same_state(before: dict, after: dict) -> None:
    assert before.keys() == after.keys()
    for key, (name, attrs) in before.items():
        now = after[key][1]
        assert now.keys() == attrs.keys(), (name, set(now) ^ set(attrs))
        changed = [k for k in attrs if now[k] is not attrs[k] and not _equal(now[k], attrs[k])]
        assert not changed, (name, changed)


def _equal(a, b) -> bool:
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001 - arrays and tensors: compare by identity only
        return False


@pytest.mark.parametrize("name", ["plain_sign_net", "adabin_bn_fold", "reactnet_blocks",
                                  "int8_stem_head", "int8_stem_head_float"])
def test_convert_changes_no_instance_attribute(name):
    build, kwargs = MODELS[name]
    seeded()
    model = build()
    x = random_inputs(model.input_shape[1:], n=4)
    expected = np.asarray(model(x, training=False))
    before = _state(model)
    with pytest.warns(UserWarning) if kwargs.get("int8") else _nothing():
        convert(model, **kwargs)
    _assert_same_state(before, _state(model))
    np.testing.assert_array_equal(np.asarray(model(x, training=False)), expected)


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_two_conversions_run_concurrently_in_threads():
    seeded()
    models = [MODELS["adabin_bn_fold"][0](), MODELS["plain_sign_net"][0]()]
    sequential = [convert(m) for m in models]
    results, errors = [None, None], []

    def run(i):
        try:
            results[i] = convert(models[i])
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors
    # Each thread's flatbuffer is byte for byte the one converted alone.
    assert results == sequential
    assert [bconv_count(f) for f in results] == [2, 3]


# --------------------------------------------------------------- a layer defined outside kbnn


class SignConv(QuantizedLayerMixin, keras.layers.Layer):
    """A 3x3 VALID binary convolution written here, not in kbnn: sign(x) * (mean|W| sign(W))."""

    quantized_weight_attributes: ClassVar[dict[str, str]] = {"kernel_quantizer": "kernel"}

    def __init__(self, filters, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self._init_quantizers("ste_sign", kernel_quantizer="scaled_sign")

    def build(self, input_shape):
        self.kernel = self.add_weight(shape=(3, 3, input_shape[-1], self.filters),
                                      initializer="glorot_uniform", name="kernel")
        super().build(input_shape)

    def call(self, inputs):
        kernel = self.quantize_weight("kernel_quantizer", self.kernel)
        return tf.nn.conv2d(self.quantize_input(inputs), kernel, 1, "VALID")


class UnregisteredSignConv(QuantizedLayerMixin, keras.layers.Layer):
    """The same kind of layer with no registered export form."""

    quantized_weight_attributes: ClassVar[dict[str, str]] = {"kernel_quantizer": "kernel"}

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._init_quantizers("ste_sign", kernel_quantizer="ste_sign")

    def build(self, input_shape):
        self.kernel = self.add_weight(shape=(1, 1, input_shape[-1], 32), name="kernel")
        super().build(input_shape)

    def call(self, inputs):
        kernel = self.quantize_weight("kernel_quantizer", self.kernel)
        return tf.nn.conv2d(self.quantize_input(inputs), kernel, 1, "VALID")


register_export_form(SignConv, lambda layer: BinaryConvForm(
    input_quantizer=layer.input_quantizer, kernel=layer.quantized_weights()["kernel_quantizer"]))


def test_custom_layer_converts_strictly_through_the_registry():
    seeded()
    inp = keras.Input((8, 8, 32))
    model = keras.Model(inp, SignConv(16, name="custom")(inp))
    x = random_inputs((8, 8, 32), n=8)
    # The layer computes what it says: numpy reference of sign(x) conv (mean|W| sign(W)).
    w = np.asarray(model.get_layer("custom").kernel)
    wq = np.abs(w).mean(axis=(0, 1, 2)) * np.where(w >= 0, 1.0, -1.0)
    sx = np.where(x >= 0, 1.0, -1.0)
    ref = np.zeros((len(x), 6, 6, 16))
    for i in range(3):
        for j in range(3):
            ref += np.einsum("nhwc,co->nhwo", sx[:, i:i + 6, j:j + 6], wq[i, j])
    np.testing.assert_allclose(np.asarray(model(x)), ref, rtol=1e-5, atol=1e-4)

    flatbuffer = convert(model, strict=True)
    assert bconv_count(flatbuffer) == 1
    report = verify(model, flatbuffer, x)
    assert report.within_tolerance == 1.0, report.table()


def test_binary_layer_without_registered_form_is_refused_naming_it():
    seeded()
    inp = keras.Input((4, 4, 32))
    model = keras.Model(inp, UnregisteredSignConv(name="mystery")(inp))
    with pytest.raises(ConversionError, match="no export form is registered") as info:
        convert(model)
    assert info.value.layer == "mystery"


def test_registry_refuses_a_class_the_export_mode_cannot_reach():
    with pytest.raises(TypeError, match="QuantizedLayerMixin"):
        register_export_form(keras.layers.Conv2D, lambda layer: None)
