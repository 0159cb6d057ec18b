"""Shared parts of the kbnn blocks: argument checks, the block base class, the binary
convolution and batch-norm factories (the shortcut is in `shortcut.py`)."""

from __future__ import annotations

import math
from collections.abc import Iterable

import keras

from kbnn.layers.conv import QuantConv2D

__all__ = [
    "BinaryBlock",
    "batch_norm",
    "binary_conv",
    "build_chain",
    "check_pad_values",
    "check_positive_int",
    "check_strides",
    "downsampled",
]

# PyTorch's BatchNorm2d defaults (momentum 0.1 there = 0.9 here, eps 1e-5), as in the official
# PyTorch code of ReActNet, Bi-Real Net and AdaBin. The official Lua XNOR-Net code differs (eps
# 1e-4, no affine parameters, in the BN before each binary activation); kbnn uses these
# defaults for every block.
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


def check_positive_int(owner: str, argument: str, value) -> int:
    """`value` as an int if it is a strictly positive integer, else a Keras-style ValueError."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(
            f"Invalid value for argument `{argument}` of {owner}. Expected a strictly positive "
            f"integer. Received {argument}={value!r}."
        )
    return int(value)


def check_strides(owner: str, strides) -> int:
    """Blocks downsample by 2 or not at all (the shortcut pools 2x2)."""
    if isinstance(strides, (tuple, list)) and len(set(strides)) == 1:
        strides = strides[0]
    if isinstance(strides, bool) or strides not in (1, 2):
        raise ValueError(
            f"Invalid value for argument `strides` of {owner}. Expected 1 or 2. "
            f"Received strides={strides!r}."
        )
    return int(strides)


def check_pad_values(owner: str, pad_values) -> float:
    """0.0 (zero padding of the binarized input) or 1.0 (pad with its +1 level); bools are
    rejected (True would otherwise read as 1.0)."""
    try:
        value = None if isinstance(pad_values, bool) else float(pad_values)
    except (TypeError, ValueError):
        value = None
    if value not in (0.0, 1.0):
        raise ValueError(
            f"Invalid value for argument `pad_values` of {owner}. Expected 0.0 (zero padding "
            f"of the binarized input) or 1.0 (pad with its +1 level). "
            f"Received pad_values={pad_values!r}."
        )
    return value


def batch_norm(name: str) -> keras.layers.BatchNormalization:
    """Batch norm with PyTorch's defaults (momentum 0.1 = Keras 0.9, epsilon 1e-5)."""
    return keras.layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=name)


def binary_conv(
    filters: int,
    kernel_size: int | tuple[int, int],
    strides: int,
    input_quantizer,
    kernel_quantizer,
    pad_values: float,
    name: str,
    **kwargs,
) -> QuantConv2D:
    """A binary `QuantConv2D` as every block uses it: SAME padding, no bias (a BN follows)."""
    return QuantConv2D(
        filters,
        kernel_size,
        strides=strides,
        padding="same",
        use_bias=False,
        input_quantizer=input_quantizer,
        kernel_quantizer=kernel_quantizer,
        pad_values=pad_values,
        name=name,
        **kwargs,
    )


def build_chain(layers: Iterable[keras.layers.Layer | None], input_shape) -> tuple:
    """Build `layers` one after the other from `input_shape`; return the last output shape.

    Blocks build their sub-layers here, in `build()`, so every variable exists before a
    `.keras` file's weights are loaded.
    """
    shape = tuple(input_shape)
    for layer in layers:
        if layer is None:
            continue
        if not layer.built:
            layer.build(shape)
        shape = tuple(layer.compute_output_shape(shape))
    return shape


def downsampled(size, strides: int):
    return None if size is None else math.ceil(size / strides)


class BinaryBlock(keras.layers.Layer):
    """Base class of the kbnn blocks (channels-last, NHWC).

    Sub-classes create their sub-layers in `build()` (the layout depends on the number of input
    channels) and list them in `_sublayers()`. `binary_layers` lists the binary convolutions
    (binarized input and kernel), each of which converts to one LCE `LceBconv2d`.
    """

    def _sublayers(self) -> list:
        raise NotImplementedError

    @property
    def binary_layers(self) -> list:
        """The block's binary `QuantConv2D` layers, in call order."""
        return [layer for layer in self._sublayers()
                if isinstance(layer, QuantConv2D) and layer.is_binary]

    def _output_channels(self, input_channels: int) -> int:
        raise NotImplementedError

    def compute_output_shape(self, input_shape):
        batch, height, width, channels = tuple(input_shape)
        strides = getattr(self, "strides", 1)
        return (batch, downsampled(height, strides), downsampled(width, strides),
                self._output_channels(channels))
