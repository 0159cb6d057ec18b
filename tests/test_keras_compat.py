"""`kbnn._keras_compat.kernel_variable`: the kernel variable `kbnn.profile` counts, whatever Keras'
`kernel` property returns. Fails loudly (with the Keras version) when a release moves `_kernel`."""

import keras
import pytest

from kbnn._keras_compat import kernel_variable

VERSION = f"(Keras {keras.__version__})"


def _built(layer, shape):
    layer.build(shape)
    return layer


@pytest.mark.parametrize("layer, shape", [
    (keras.layers.Dense(4), (None, 6)),
    (keras.layers.Conv2D(4, 3), (None, 5, 5, 2)),
    (keras.layers.Conv1D(4, 3), (None, 5, 2)),
])
def test_lora_kernel_gives_the_stored_variable(layer, shape):
    layer = _built(layer, shape)
    plain = kernel_variable(layer)
    assert isinstance(plain, keras.Variable) and plain is layer.kernel
    layer.enable_lora(2)
    assert not isinstance(layer.kernel, keras.Variable), VERSION  # a computed tensor
    variable = kernel_variable(layer)
    assert variable is plain, VERSION
    assert any(variable is w for w in layer.weights), VERSION
    assert tuple(variable.shape) == tuple(layer.kernel.shape)


@pytest.mark.parametrize("layer, shape", [
    (keras.layers.DepthwiseConv2D(3), (None, 5, 5, 2)),
    (keras.layers.Conv2DTranspose(4, 3), (None, 5, 5, 2)),
])
def test_plain_kernel_attribute_is_returned(layer, shape):
    layer = _built(layer, shape)
    assert kernel_variable(layer) is layer.kernel
    assert isinstance(kernel_variable(layer), keras.Variable)


def test_layers_without_kernel_give_none():
    assert kernel_variable(keras.layers.Dense(3)) is None  # not built
    assert kernel_variable(_built(keras.layers.BatchNormalization(), (None, 3))) is None
