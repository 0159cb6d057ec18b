"""Bi-Real Net block: a real-valued shortcut around every binary convolution."""

from __future__ import annotations

import keras

from kbnn.blocks._common import (
    BinaryBlock,
    batch_norm,
    binary_conv,
    build_chain,
    check_pad_values,
    check_positive_int,
    check_strides,
    check_symmetric_padding,
)
from kbnn.blocks.shortcut import AvgPoolShortcut

__all__ = ["BiRealBlock"]


@keras.saving.register_keras_serializable(package="kbnn")
class BiRealBlock(BinaryBlock):
    """Bi-Real Net block (Liu et al., "Bi-Real Net: Enhancing the Performance of 1-bit CNNs
    With Improved Representational Capability and Advanced Training Algorithm", arXiv 1808.00278;
    see docs/methods.md, section 'Bi-Real Net'):

        out = BN(BinConv3x3_s(ApproxSign(x))) + shortcut(x)

    By default the 3x3 convolution binarizes its input with `ApproxSign` ("approx_sign": sign forward,
    Bi-Real's piecewise-polynomial gradient) and its kernel with `MagnitudeAwareSign`
    ("magnitude_aware_sign": sign times the per-output-channel mean |W|; the paper's gradient
    ``mean|W| * 1[|W| <= 1]``, the scale held constant). The official PyTorch code detaches the
    scale, i.e. drops the mean|W| factor from the gradient (that is "scaled_sign"). No bias; no
    activation after the add (the Caffe original; ReActNet's ResNet variant adds RPReLU there).

    The shortcut is the identity, or, when the block changes the resolution (strides=2) or the
    width, `AvgPoolShortcut`: AvgPool 2x2 -> real 1x1 conv -> BN.

    The latent kernel uses Keras' default init (glorot uniform), not the official
    `HardBinaryConv`'s ``rand * 0.001`` (uniform in [0, 0.001), all positive).

    Other methods reuse the layout with their own quantizers, e.g. IR-Net (arXiv 1909.10788):
    ``BiRealBlock(64, input_quantizer="ede_sign", kernel_quantizer="libra_weight")``.
    `batch_norm_pairs()` lists (conv, bn) when the conv is binary.

    Args:
        filters: output channels.
        strides: 1 or 2 (stride of the 3x3 convolution and of the shortcut's pooling).
        pad_values: SAME padding of the binarized input: 0.0 pads with zeros (the official
            code), 1.0 pads with +1 (LCE's native "same-one", faster and bitpacked-output
            friendly).
        symmetric_padding: False (default): TensorFlow's SAME padding of the 3x3
            convolution, which for a stride-2 window on an even size pads 0 before and 1 after;
            True: PyTorch's padding=1 on both sides, as the official PyTorch code (what
            `kbnn.zoo` builds, so that PyTorch checkpoints compute the same windows).
        input_quantizer: quantizer of the convolution's input (alias, config dict, `Quantizer`
            instance, or None for a float input); default "approx_sign".
        kernel_quantizer: quantizer of its kernel (same forms); default
            "magnitude_aware_sign".
    """

    def __init__(self, filters: int, strides: int = 1, pad_values: float = 0.0, symmetric_padding: bool = False,
                 input_quantizer="approx_sign", kernel_quantizer="magnitude_aware_sign",
                 **kwargs):
        super().__init__(**kwargs)
        self.filters = check_positive_int("BiRealBlock", "filters", filters)
        self.strides = check_strides("BiRealBlock", strides)
        self.pad_values = check_pad_values("BiRealBlock", pad_values)
        self.symmetric_padding = check_symmetric_padding("BiRealBlock", symmetric_padding)
        self._init_quantizers(input_quantizer, kernel_quantizer)

    def build(self, input_shape):
        channels = input_shape[-1]
        self.conv = binary_conv(self.filters, 3, self.strides, self._input_quantizer_spec.new(),
                                self._kernel_quantizer_spec.new(), self.pad_values,
                                symmetric_padding=self.symmetric_padding,
                                name=f"{self.name}_conv")
        self.bn = batch_norm(f"{self.name}_bn")
        self.shortcut = (AvgPoolShortcut(self.filters, self.strides, name=f"{self.name}_shortcut")
                         if self.strides != 1 or channels != self.filters else None)
        build_chain([self.conv, self.bn], input_shape)
        build_chain([self.shortcut], input_shape)

    def _sublayers(self) -> list:
        return [self.conv, self.bn, self.shortcut]

    def _conv_batch_norms(self) -> list[tuple]:
        return [(self.conv, self.bn)]

    def _output_channels(self, input_channels: int) -> int:
        return self.filters

    def call(self, inputs, training=None):
        out = self._conv_bn(self.conv, self.bn, inputs, training)
        shortcut = inputs if self.shortcut is None else self.shortcut(inputs, training=training)
        return out + shortcut

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "strides": self.strides,
                "pad_values": self.pad_values,
                "symmetric_padding": self.symmetric_padding, **self._quantizer_config()}
