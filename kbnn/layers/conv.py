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
            pads with the +1 level of the input quantizer (what LCE runs natively).
        **kwargs: every argument of `keras.layers.Conv2D`.
    """

    def __init__(self, filters, kernel_size, *args, input_quantizer=None, kernel_quantizer=None,
                 pad_values=0.0, **kwargs):
        super().__init__(filters, kernel_size, *args, **kwargs)
        self._init_quantizers(input_quantizer, kernel_quantizer=kernel_quantizer)
        self._init_pad_values(pad_values)

    def build(self, input_shape):
        super().build(input_shape)
        self._build_quantizers(input_shape, kernel_quantizer=self._kernel.shape)

    def get_config(self):
        return {**super().get_config(), **self._quantizer_config(), "pad_values": self.pad_values}


@_register
class QuantConv1D(QuantConvMixin, keras.layers.Conv1D):
    """1-D convolution with quantized input and kernel; `padding="causal"` pads on the left
    with `pad_values` after quantization. See `QuantConv2D` for the quantizer arguments."""

    def __init__(self, filters, kernel_size, *args, input_quantizer=None, kernel_quantizer=None,
                 pad_values=0.0, **kwargs):
        super().__init__(filters, kernel_size, *args, **kwargs)
        self._init_quantizers(input_quantizer, kernel_quantizer=kernel_quantizer)
        self._init_pad_values(pad_values)

    def build(self, input_shape):
        super().build(input_shape)
        self._build_quantizers(input_shape, kernel_quantizer=self._kernel.shape)

    def pad_inputs(self, x):
        if self.padding == "causal" and self.pad_values == 0.0:
            amounts = self.padding_amounts(tuple(x.shape))
            full = [(0, 0)] + amounts + [(0, 0)] if self._channels_last else [(0, 0), (0, 0)] + amounts
            return ops.pad(x, full), "valid"
        return super().pad_inputs(x)

    def get_config(self):
        return {**super().get_config(), **self._quantizer_config(), "pad_values": self.pad_values}


@_register
class QuantDepthwiseConv2D(QuantConvMixin, keras.layers.DepthwiseConv2D):
    """Depthwise 2-D convolution with quantized input and depthwise kernel.

    The kernel quantizer sees the kernel as (kh, kw, 1, channels * depth_multiplier), so its
    per-output-channel statistics are per depthwise output channel.
    Note: LCE has no binary depthwise op (a depthwise conv is a grouped conv with one channel
    per group), so a binary QuantDepthwiseConv2D does not lower to LCE bitpacked kernels.
    """

    def __init__(self, kernel_size, *args, input_quantizer=None, depthwise_quantizer=None,
                 pad_values=0.0, **kwargs):
        super().__init__(kernel_size, *args, **kwargs)
        self._init_quantizers(input_quantizer, depthwise_quantizer=depthwise_quantizer)
        self._init_pad_values(pad_values)

    _kernel_quantizer_args = ("depthwise_quantizer",)

    def build(self, input_shape):
        super().build(input_shape)
        kh, kw, cin, mult = self.kernel.shape
        self._build_quantizers(input_shape, depthwise_quantizer=(kh, kw, 1, cin * mult))

    def call(self, inputs):
        if self._export_call is not None:
            return self._export_call(inputs)
        x = self.quantize_input(inputs)
        x, padding = self.pad_inputs(x)
        kernel = self.quantize_depthwise_kernel(self.kernel)
        outputs = ops.depthwise_conv(
            x, kernel, strides=self.strides, padding=padding,
            dilation_rate=self.dilation_rate, data_format=self.data_format,
        )
        return self._finish(outputs)

    def get_config(self):
        return {**super().get_config(), **self._quantizer_config(), "pad_values": self.pad_values}


@_register
class QuantSeparableConv2D(QuantConvMixin, keras.layers.SeparableConv2D):
    """Separable 2-D convolution: quantized input, depthwise kernel and pointwise kernel.

    Args:
        input_quantizer: quantizer of the layer input (before the depthwise conv).
        depthwise_quantizer: quantizer of the depthwise kernel.
        pointwise_quantizer: quantizer of the pointwise (1x1) kernel.
        pad_values: see `QuantConv2D`; applies to the depthwise stage.
    """

    _kernel_quantizer_args = ("depthwise_quantizer", "pointwise_quantizer")

    def __init__(self, filters, kernel_size, *args, input_quantizer=None,
                 depthwise_quantizer=None, pointwise_quantizer=None, pad_values=0.0, **kwargs):
        super().__init__(filters, kernel_size, *args, **kwargs)
        self._init_quantizers(input_quantizer, depthwise_quantizer=depthwise_quantizer,
                              pointwise_quantizer=pointwise_quantizer)
        self._init_pad_values(pad_values)

    def build(self, input_shape):
        super().build(input_shape)
        kh, kw, cin, mult = self.depthwise_kernel.shape
        self._build_quantizers(
            input_shape,
            depthwise_quantizer=(kh, kw, 1, cin * mult),
            pointwise_quantizer=self.pointwise_kernel.shape,
        )

    def call(self, inputs):
        if self._export_call is not None:
            return self._export_call(inputs)
        x = self.quantize_input(inputs)
        x, padding = self.pad_inputs(x)
        dw = self.quantize_depthwise_kernel(self.depthwise_kernel)
        pw = self.quantize_kernel(self.pointwise_kernel, "pointwise_quantizer")
        outputs = ops.depthwise_conv(
            x, dw, strides=self.strides, padding=padding,
            dilation_rate=self.dilation_rate, data_format=self.data_format,
        )
        outputs = ops.conv(outputs, pw, strides=1, padding="valid", data_format=self.data_format)
        return self._finish(outputs)

    def get_config(self):
        return {**super().get_config(), **self._quantizer_config(), "pad_values": self.pad_values}
