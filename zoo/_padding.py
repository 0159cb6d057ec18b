"""PyTorch's padding for the real-valued convolutions and poolings of the zoo's PyTorch-derived
builders (ReActNet-A, the ResNet family): an explicit pad of ``k // 2`` on both sides, then a
VALID window.

TensorFlow's SAME padding puts the odd pixel after: a stride-2 window on an even size pads 0
before and 1 after, where PyTorch's ``padding=k // 2`` pads the same amount on both sides, so
every window of the official checkpoints would be shifted by one pixel. The output sizes agree
(``ceil(n / s)`` for odd k), so the figures do not change. PyTorch's `MaxPool2d` pads with
-inf: `ConstantPadding2D` pads with the lowest float32 instead (never the maximum of a window,
which always holds at least one pixel of the map), which converts to one TFLite PADV2.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

__all__ = ["ConstantPadding2D", "torch_conv2d", "torch_max_pool2d"]

LOWEST = float(np.finfo(np.float32).min)


@keras.saving.register_keras_serializable(package="kbnn.zoo")
class ConstantPadding2D(keras.layers.Layer):
    """Pads the two spatial axes of an NHWC map by `padding` pixels on every side with the
    constant `value` (`keras.layers.ZeroPadding2D` with another value; the default is the lowest
    float32, PyTorch's -inf padding of a max-pool)."""

    def __init__(self, padding: int = 1, value: float = LOWEST, **kwargs):
        super().__init__(**kwargs)
        if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
            raise ValueError(
                "Invalid value for argument `padding` of ConstantPadding2D. Expected a "
                f"non-negative integer. Received padding={padding!r}.")
        self.padding = padding
        self.value = float(value)

    def call(self, inputs):
        p = self.padding
        return ops.pad(inputs, [(0, 0), (p, p), (p, p), (0, 0)], constant_values=self.value)

    def compute_output_shape(self, input_shape):
        batch, height, width, channels = tuple(input_shape)
        grow = 2 * self.padding
        return (batch, None if height is None else height + grow,
                None if width is None else width + grow, channels)

    def get_config(self):
        return {**super().get_config(), "padding": self.padding, "value": self.value}


def _torch_pads(size, kernel_size: int, strides: int) -> tuple[int, int]:
    """(before, after) pixels of PyTorch's ``padding=k // 2`` that the windows read: k // 2
    before, and after only as many as the last window reaches (for a stride-2 window on an
    even size, one fewer than PyTorch pads, a pixel no window reads). The unbalanced amounts
    keep LCE 0.16's pad fusion (`IsSamePadding1D`, which checks the output size and the split
    of the total but not the total) from turning the pad + VALID conv into a SAME conv, which
    pads 0 before and would shift the windows; a balanced pad is only left where it is
    TensorFlow's SAME (odd sizes) or the size is unknown."""
    before = kernel_size // 2
    if size is None:
        return before, before
    out = -(-size // strides)
    return before, max(0, (out - 1) * strides + kernel_size - before - size)


def torch_conv2d(x, filters: int, kernel_size: int, strides: int, name: str, **kwargs):
    """PyTorch's ``Conv2d(kernel_size, strides, padding=kernel_size // 2, bias=False)``:
    "{name}_pad" (`ZeroPadding2D` of the amounts the windows read, `_torch_pads`; left out when
    k == 1) -> "{name}" (VALID `Conv2D`)."""
    if kernel_size > 1:
        pads = tuple(_torch_pads(size, kernel_size, strides) for size in x.shape[1:3])
        x = keras.layers.ZeroPadding2D(pads, name=f"{name}_pad")(x)
    return keras.layers.Conv2D(filters, kernel_size, strides=strides, padding="valid",
                               use_bias=False, name=name, **kwargs)(x)


def torch_max_pool2d(x, pool_size: int, strides: int, name: str):
    """PyTorch's ``MaxPool2d(pool_size, strides, padding=pool_size // 2)``: "{name}_pad"
    (`ConstantPadding2D` with the lowest float32, PyTorch's -inf) -> "{name}" (VALID
    `MaxPooling2D`)."""
    x = ConstantPadding2D(pool_size // 2, name=f"{name}_pad")(x)
    return keras.layers.MaxPooling2D(pool_size, strides=strides, padding="valid", name=name)(x)
