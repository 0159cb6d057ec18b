"""Bad arguments of the quantized layers raise ValueError at construction, Keras style."""

import re

import pytest

from kbnn.layers import (
    QuantConv1D,
    QuantConv2D,
    QuantDense,
    QuantDepthwiseConv2D,
    QuantSeparableConv2D,
)
from kbnn.quantizers import Quantizer, known_aliases

CONV_LAYERS = {
    QuantConv1D: {"filters": 2, "kernel_size": 3},
    QuantConv2D: {"filters": 2, "kernel_size": 3},
    QuantDepthwiseConv2D: {"kernel_size": 3},
    QuantSeparableConv2D: {"filters": 2, "kernel_size": 3},
}
ALL_LAYERS = {**CONV_LAYERS, QuantDense: {"units": 2}}


def _kernel_args(cls):
    return tuple(cls.quantized_weight_attributes)


class _EightBit(Quantizer):
    """Test-only non-binary quantizer."""

    precision = 8

    def call(self, inputs, training=None):
        return inputs


@pytest.mark.parametrize("cls", CONV_LAYERS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("pad_values", [2.0, -1.0, 0.5])
def test_pad_values_must_be_zero_or_one_for_a_binary_input(cls, pad_values):
    with pytest.raises(ValueError) as info:
        cls(**CONV_LAYERS[cls], padding="same", input_quantizer="ste_sign", pad_values=pad_values)
    message = str(info.value)
    assert "`pad_values`" in message
    assert cls.__name__ in message
    assert "0.0" in message and "1.0" in message
    assert f"Received pad_values={pad_values}" in message


@pytest.mark.parametrize("cls", CONV_LAYERS, ids=lambda c: c.__name__)
def test_pad_values_must_be_a_number(cls):
    with pytest.raises(ValueError, match=r"`pad_values`.*Expected a number.*'one'"):
        cls(**CONV_LAYERS[cls], pad_values="one")


@pytest.mark.parametrize("cls", CONV_LAYERS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("pad_values", [2.0, -1.0, 0.5])
def test_other_pad_values_allowed_without_a_binary_input(cls, pad_values):
    for input_quantizer in (None, _EightBit()):
        layer = cls(**CONV_LAYERS[cls], padding="same", input_quantizer=input_quantizer,
                    pad_values=pad_values)
        assert layer.pad_values == pad_values


@pytest.mark.parametrize("cls", CONV_LAYERS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("pad_values", [0, 1, 0.0, 1.0])
def test_zero_and_one_allowed_for_a_binary_input(cls, pad_values):
    layer = cls(**CONV_LAYERS[cls], padding="same", input_quantizer="approx_sign",
                pad_values=pad_values)
    assert layer.pad_values == float(pad_values)
    assert isinstance(layer.pad_values, float)


@pytest.mark.parametrize("cls", ALL_LAYERS, ids=lambda c: c.__name__)
def test_unknown_alias_lists_the_known_ones(cls):
    for argument in ("input_quantizer",) + _kernel_args(cls):
        with pytest.raises(ValueError) as info:
            cls(**ALL_LAYERS[cls], **{argument: "ste_sgn"})
        message = str(info.value)
        assert f"`{argument}`" in message
        assert "'ste_sgn'" in message
        assert "ste_sign" in message and "approx_sign" in message
        for alias in known_aliases():
            assert re.search(rf"\b{re.escape(alias)}\b", message), alias


@pytest.mark.parametrize("cls", ALL_LAYERS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("bad", [3, 1.5, ["ste_sign"]])
def test_quantizer_of_the_wrong_type(cls, bad):
    argument = _kernel_args(cls)[-1]
    with pytest.raises(ValueError, match=rf"`{argument}`.*Received: {re.escape(repr(bad))}"):
        cls(**ALL_LAYERS[cls], **{argument: bad})


def test_config_dict_of_a_non_quantizer_is_rejected():
    import keras

    config = keras.saving.serialize_keras_object(keras.layers.ReLU())
    with pytest.raises(ValueError, match="`kernel_quantizer`.*does not describe a kbnn quantizer"):
        QuantDense(2, kernel_quantizer=config)


@pytest.mark.parametrize("cls", CONV_LAYERS, ids=lambda c: c.__name__)
def test_keras_arguments_are_still_validated(cls):
    """Arguments of the Keras parent keep Keras' own checks."""
    with pytest.raises(ValueError, match="padding"):
        cls(**CONV_LAYERS[cls], padding="full")
