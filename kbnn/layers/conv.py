"""Quantized convolution layers: QuantConv1D, QuantConv2D, QuantDepthwiseConv2D,
QuantSeparableConv2D. Each subclasses the Keras layer, so every Keras argument keeps working."""

from __future__ import annotations

from typing import ClassVar

import keras
from keras import ops

from kbnn.layers.base import QuantConvMixin, validate_size_argument
from kbnn.layers.export import BinaryConvForm, ExportRefusal, register_export_form

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
        symmetric_padding: with padding="same", pad ``dilation * (k - 1) / 2`` on both sides of
            each spatial axis (PyTorch's ``padding=k // 2``) instead of TensorFlow's SAME, which
            puts the odd pixel after (for a stride-2 conv of an even input: 0 before, 1 after).
            The output size is the same; use it to compute exactly what a PyTorch-trained
            model computes. Needs odd (dilated) kernel sizes.
        replicate: RepBNN's channel replication (arXiv 2207.09049): the output (after bias and
            activation) is tiled `replicate` times along the channel axis, ``[y, y, ...]``, so
            the layer outputs ``filters * replicate`` channels from a kernel of `filters`
            output channels (1: no replication). It converts to one `LceBconv2d` of `filters`
            channels followed by the tile.
        **kwargs: every argument of `keras.layers.Conv2D` (`groups` included).
    """

    def __init__(self, filters, kernel_size, *args, input_quantizer=None, kernel_quantizer=None,
                 pad_values=0.0, symmetric_padding=False, replicate=1, **kwargs):
        filters = validate_size_argument(type(self).__name__, "filters", filters)
        replicate = validate_size_argument(type(self).__name__, "replicate", replicate)
        super().__init__(filters, kernel_size, *args, **kwargs)
        self.replicate = replicate
        self._init_quantizers(input_quantizer, kernel_quantizer=kernel_quantizer)
        self._init_pad_values(pad_values, symmetric_padding)

    def call(self, inputs):
        outputs = super().call(inputs)
        if self.replicate == 1:
            return outputs
        axis = -1 if self.data_format == "channels_last" else 1
        reps = [1] * len(outputs.shape)
        reps[axis] = self.replicate
        return ops.tile(outputs, reps)

    def compute_output_shape(self, input_shape):
        shape = list(super().compute_output_shape(input_shape))
        axis = -1 if self.data_format == "channels_last" else 1
        shape[axis] = shape[axis] * self.replicate
        return tuple(shape)

    def get_config(self):
        return {**super().get_config(), "symmetric_padding": self.symmetric_padding,
                "replicate": self.replicate}


@_register
class QuantConv1D(QuantConvMixin, keras.layers.Conv1D):
    """1-D convolution with quantized input and kernel; `padding="causal"` pads on the left
    with `pad_values` after quantization. See `QuantConv2D` for the quantizer arguments
    (BinaryNet, arXiv 1602.02830)."""

    def __init__(self, filters, kernel_size, *args, input_quantizer=None, kernel_quantizer=None,
                 pad_values=0.0, **kwargs):
        filters = validate_size_argument(type(self).__name__, "filters", filters)
        super().__init__(filters, kernel_size, *args, **kwargs)
        self._init_quantizers(input_quantizer, kernel_quantizer=kernel_quantizer)
        self._init_pad_values(pad_values)

    def call(self, inputs):
        # keras.layers.Conv1D.call pads causally and convolves itself, without the
        # `convolution_op` seam; here the seam pads after quantizing (with `pad_values`).
        return self._finish(self.convolution_op(inputs, self.kernel))


class _DepthwiseViewMixin:
    """A depthwise kernel (kh, kw, C, M) is quantized as (kh, kw, 1, C*M): one output channel
    per depthwise filter, so per-output-channel statistics are per filter."""

    def _quantizer_view_shape(self, argument, shape):
        if argument != "depthwise_quantizer":
            return tuple(shape)
        kh, kw, cin, mult = shape
        return (kh, kw, 1, cin * mult)

    def _depthwise(self, inputs, kernel):
        x, padding = self.quantized_input(inputs)
        return ops.depthwise_conv(
            x, self.quantize_weight("depthwise_quantizer", kernel), strides=self.strides,
            padding=padding, dilation_rate=self.dilation_rate, data_format=self.data_format,
        )


@_register
class QuantDepthwiseConv2D(_DepthwiseViewMixin, QuantConvMixin, keras.layers.DepthwiseConv2D):
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

    quantized_weight_attributes: ClassVar[dict[str, str]] = {"depthwise_quantizer": "kernel"}

    def __init__(self, kernel_size, *args, input_quantizer=None, depthwise_quantizer=None,
                 pad_values=0.0, **kwargs):
        super().__init__(kernel_size, *args, **kwargs)
        self._init_quantizers(input_quantizer, depthwise_quantizer=depthwise_quantizer)
        self._init_pad_values(pad_values)

    def call(self, inputs):
        # keras.layers.DepthwiseConv2D.call has no convolution seam.
        return self._finish(self._depthwise(inputs, self.kernel))


@_register
class QuantSeparableConv2D(_DepthwiseViewMixin, QuantConvMixin, keras.layers.SeparableConv2D):
    """Separable 2-D convolution (Xception, arXiv 1610.02357) with quantized input, depthwise
    kernel and pointwise kernel.

    Args:
        input_quantizer: quantizer of the layer input (before the depthwise conv).
        depthwise_quantizer: quantizer of the depthwise kernel.
        pointwise_quantizer: quantizer of the pointwise (1x1) kernel.
        pad_values: see `QuantConv2D`; applies to the depthwise stage.
        **kwargs: every argument of `keras.layers.SeparableConv2D`.
    """

    quantized_weight_attributes: ClassVar[dict[str, str]] = {
        "depthwise_quantizer": "depthwise_kernel", "pointwise_quantizer": "pointwise_kernel"}

    def __init__(self, filters, kernel_size, *args, input_quantizer=None,
                 depthwise_quantizer=None, pointwise_quantizer=None, pad_values=0.0, **kwargs):
        filters = validate_size_argument(type(self).__name__, "filters", filters)
        super().__init__(filters, kernel_size, *args, **kwargs)
        self._init_quantizers(input_quantizer, depthwise_quantizer=depthwise_quantizer,
                              pointwise_quantizer=pointwise_quantizer)
        self._init_pad_values(pad_values)

    def call(self, inputs):
        # keras.layers.SeparableConv2D.call has no convolution seam.
        outputs = self._depthwise(inputs, self.depthwise_kernel)
        pointwise = self.quantize_weight("pointwise_quantizer", self.pointwise_kernel)
        return self._finish(ops.conv(outputs, pointwise, strides=1, padding="valid",
                                     data_format=self.data_format))


# ------------------------------------------------------------------------------ export forms

_CHANNELS_LAST_FIX = "use data_format='channels_last'"


def conv_export_form(layer) -> BinaryConvForm | ExportRefusal:
    """Export form of `QuantConv2D` / `QuantConv1D`: one binary 2-D convolution (a 1-D conv as
    a height-1 2-D conv), read from the layer's public attributes."""
    if layer.data_format != "channels_last":
        return ExportRefusal("LCE binary convolutions need channels_last (NHWC) data",
                             fix=_CHANNELS_LAST_FIX)
    return BinaryConvForm(
        input_quantizer=layer.input_quantizer,
        kernel=layer.quantized_weights()["kernel_quantizer"],
        layout="nhwc" if len(layer.kernel_size) == 2 else "nwc",
        strides=tuple(layer.strides),
        dilation_rate=tuple(layer.dilation_rate),
        groups=int(layer.groups),
        padding="explicit" if layer.symmetric_padding else layer.padding,
        pad_values=float(layer.pad_values),
        padding_amounts=layer.padding_amounts,
        bias=layer.bias if layer.use_bias else None,
        activation=layer.activation,
        replicate=int(getattr(layer, "replicate", 1)),
    )


_DEPTHWISE_FIX = ("keep the depthwise convolution full precision (no input/depthwise "
                  "quantizer), or use QuantConv2D(groups=G) with C/G a multiple of 32")


def depthwise_export_form(layer) -> ExportRefusal:
    """A binary depthwise (or separable) conv has no LCE binary op: LCE needs >= 32 input
    channels per group, and a depthwise conv has one."""
    kind = "separable" if isinstance(layer, keras.layers.SeparableConv2D) else "depthwise"
    return ExportRefusal(
        f"LCE has no binary {kind} convolution: a depthwise conv is a grouped conv with 1 input "
        "channel per group, and LCE needs >= 32 input channels per group (multiple of 32)",
        fix=_DEPTHWISE_FIX)


register_export_form(QuantConv2D, conv_export_form)
register_export_form(QuantConv1D, conv_export_form)
register_export_form(QuantDepthwiseConv2D, depthwise_export_form)
register_export_form(QuantSeparableConv2D, depthwise_export_form)
