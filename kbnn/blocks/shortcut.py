"""The real-valued downsampling shortcut shared by the Bi-Real, ReActNet-ResNet and AdaBin blocks."""

from __future__ import annotations

import keras

from kbnn.blocks._common import (
    batch_norm,
    build_chain,
    check_positive_int,
    check_strides,
    downsampled,
)

__all__ = ["AvgPoolShortcut"]


@keras.saving.register_keras_serializable(package="kbnn")
class AvgPoolShortcut(keras.layers.Layer):
    """Real-valued downsampling shortcut: AvgPool 2x2 (stride 2) -> real 1x1 conv -> BN.

    The shortcut of Bi-Real Net (arXiv 1808.00278), ReActNet's ResNet variant and AdaBin
    (arXiv 2208.08084) wherever a block changes the resolution or the width. With strides=1
    (width change only) the pooling is left out. The pooling uses SAME padding and averages
    over the pixels inside the image (PyTorch's `ceil_mode=True, count_include_pad=False`), so
    odd sizes give the same output size as the block's SAME-padded stride-2 convolution.

    Args:
        filters: output channels of the 1x1 convolution.
        strides: 1 or 2.
    """

    def __init__(self, filters: int, strides: int = 1, **kwargs):
        super().__init__(**kwargs)
        self.filters = check_positive_int("AvgPoolShortcut", "filters", filters)
        self.strides = check_strides("AvgPoolShortcut", strides)

    def build(self, input_shape):
        self.pool = (keras.layers.AveragePooling2D(2, strides=2, padding="same",
                                                   name=f"{self.name}_pool")
                     if self.strides == 2 else None)
        self.conv = keras.layers.Conv2D(self.filters, 1, use_bias=False, name=f"{self.name}_conv")
        self.bn = batch_norm(f"{self.name}_bn")
        build_chain([self.pool, self.conv, self.bn], input_shape)

    def call(self, inputs, training=None):
        x = inputs if self.pool is None else self.pool(inputs)
        return self.bn(self.conv(x), training=training)

    def compute_output_shape(self, input_shape):
        batch, height, width, _ = tuple(input_shape)
        return (batch, downsampled(height, self.strides), downsampled(width, self.strides),
                self.filters)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "strides": self.strides}
