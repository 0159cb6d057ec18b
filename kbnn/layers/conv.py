"""Quantized convolution layers: QuantConv1D, QuantConv2D, QuantDepthwiseConv2D,
QuantSeparableConv2D. Each subclasses the Keras layer, so every Keras argument keeps working."""

from __future__ import annotations

import keras
from keras import ops

from kbnn.layers.base import QuantConvMixin

__all__ = ["QuantConv1D", "QuantConv2D", "QuantDepthwiseConv2D", "QuantSeparableConv2D"]


def _register(cls):
    return keras.saving.register_keras_serializable(package="kbnn")(cls)


@_register
class QuantConv2D(QuantConvMixin, keras.layers.Conv2D):
    """2-D convolution with quantized input and kernel (larq's QuantConv2D for Keras 3).

    BinaryNet (Hubara et al., arXiv 1602.02830) and XNOR-Net (arXiv 1603.05279) binarize both:
    ``QuantConv2D(64, 3, input_quantizer="ste_sign", kernel_quantizer="ste_sign")``.

    Args:
        input_quantizer: quantizer applied to the input (alias, config, instance or None).
        kernel_quantizer: quantizer applied to the kernel; per output channel reductions run
            over every kernel axis but the last.
        pad_values: value used for SAME padding: 0.0 pads the quantized input with zeros; 1.0
            pads with the +1 level of the input quantizer (what LCE runs natively). With a
            binarized input only 0.0 and 1.0 are allowed; otherwise any number, padded as is.
        **kwargs: every argument of `keras.layers.Conv2D` (`groups` included).
    """

    def __init__(self, filters, kernel_size, *args, input_quantizer=None, kernel_quantizer=None,
                 pad_values=0.0, **kwargs):
        super().__init__(filters, kernel_size, *args, **kwargs)
        self._init_quantizers(input_quantizer, kernel_quantizer=kernel_quantizer)
        self._init_pad_values(pad_values)


@_register
class QuantConv1D(QuantConvMixin, keras.layers.Conv1D):
    """1-D convolution with quantized input and kernel; `padding="causal"` pads on the left
    with `pad_values` after quantization. See `QuantConv2D` for the quantizer arguments
    (BinaryNet, arXiv 1602.02830)."""

    def __init__(self, filters, kernel_size, *args, input_quantizer=None, kernel_quantizer=None,
                 pad_values=0.0, **kwargs):
        super().__init__(filters, kernel_size, *args, **kwargs)
        self._init_quantizers(input_quantizer, kernel_quantizer=kernel_quantizer)
        self._init_pad_values(pad_values)


def _depthwise_quantizer_shape(kernel) -> tuple:
    kh, kw, cin, mult = kernel.shape
    return (kh, kw, 1, cin * mult)


@_register
class QuantDepthwiseConv2D(QuantConvMixin, keras.layers.DepthwiseConv2D):
    """Depthwise 2-D convolution with quantized input and depthwise kernel (MobileNet-style
    depthwise conv, arXiv 1704.04861, binarized as in BinaryNet, arXiv 1602.02830).

    The depthwise quantizer sees the kernel as (kh, kw, 1, channels * depth_multiplier), so its
    per-output-channel statistics are per depthwise output channel.
    Note: LCE has no binary depthwise op (a depthwise conv is a grouped conv with one channel
    per group), so a binary QuantDepthwiseConv2D does not lower to LCE bitpacked kernels.

    Args:
        input_quantizer: quantizer of the input.
        depthwise_quantizer: quantizer of the depthwise kernel.
        pad_values: see `QuantConv2D`.
        **kwargs: every argument of `keras.layers.DepthwiseConv2D`.
    """

    _kernel_quantizer_args = ("depthwise_quantizer",)

    def __init__(self, kernel_size, *args, input_quantizer=None, depthwise_quantizer=None,
                 pad_values=0.0, **kwargs):
        super().__init__(kernel_size, *args, **kwargs)
        self._init_quantizers(input_quantizer, depthwise_quantizer=depthwise_quantizer)
        self._init_pad_values(pad_values)

    def _kernel_quantizer_shapes(self):
        return {"depthwise_quantizer": _depthwise_quantizer_shape(self.kernel)}

    def _quantized_conv(self, x, padding):
        return ops.depthwise_conv(
            x, self.quantize_depthwise_kernel(self.kernel), strides=self.strides,
            padding=padding, dilation_rate=self.dilation_rate, data_format=self.data_format,
        )


@_register
class QuantSeparableConv2D(QuantConvMixin, keras.layers.SeparableConv2D):
    """Separable 2-D convolution (Xception, arXiv 1610.02357) with quantized input, depthwise
    kernel and pointwise kernel.

    Args:
        input_quantizer: quantizer of the layer input (before the depthwise conv).
        depthwise_quantizer: quantizer of the depthwise kernel.
        pointwise_quantizer: quantizer of the pointwise (1x1) kernel.
        pad_values: see `QuantConv2D`; applies to the depthwise stage.
        **kwargs: every argument of `keras.layers.SeparableConv2D`.
    """

    _kernel_quantizer_args = ("depthwise_quantizer", "pointwise_quantizer")

    def __init__(self, filters, kernel_size, *args, input_quantizer=None,
                 depthwise_quantizer=None, pointwise_quantizer=None, pad_values=0.0, **kwargs):
        super().__init__(filters, kernel_size, *args, **kwargs)
        self._init_quantizers(input_quantizer, depthwise_quantizer=depthwise_quantizer,
                              pointwise_quantizer=pointwise_quantizer)
        self._init_pad_values(pad_values)

    def _kernel_quantizer_shapes(self):
        return {
            "depthwise_quantizer": _depthwise_quantizer_shape(self.depthwise_kernel),
            "pointwise_quantizer": tuple(self.pointwise_kernel.shape),
        }

    def _quantized_conv(self, x, padding):
        outputs = ops.depthwise_conv(
            x, self.quantize_depthwise_kernel(self.depthwise_kernel), strides=self.strides,
            padding=padding, dilation_rate=self.dilation_rate, data_format=self.data_format,
        )
        pointwise = self.quantize_kernel(self.pointwise_kernel, "pointwise_quantizer")
        return ops.conv(outputs, pointwise, strides=1, padding="valid",
                        data_format=self.data_format)
