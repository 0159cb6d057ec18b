"""Shared machinery of the quantized layers: quantizer arguments, padding, export hook."""

from __future__ import annotations

import math
from typing import Callable, Sequence

import tensorflow as tf
from keras import ops

from kbnn import quantizers as q

__all__ = ["QuantizedLayerMixin", "QuantConvMixin", "same_padding", "validate_pad_values"]


def same_padding(
    spatial_shape: Sequence[int | None],
    kernel_size: Sequence[int],
    strides: Sequence[int],
    dilation_rate: Sequence[int],
) -> list[tuple[int, int]]:
    """(before, after) amounts that make a VALID conv give TensorFlow's SAME output.

    Out = ceil(in / stride); total = max((out - 1) * stride + (k - 1) * d + 1 - in, 0);
    before = total // 2 (TensorFlow puts the odd pixel after).
    """
    pads = []
    for size, k, s, d in zip(spatial_shape, kernel_size, strides, dilation_rate):
        if size is None:
            raise ValueError(
                "pad_values != 0 with padding='same' needs static spatial input dimensions; "
                f"received spatial shape {tuple(spatial_shape)}."
            )
        out = math.ceil(size / s)
        total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
        pads.append((total // 2, total - total // 2))
    return pads


def validate_pad_values(layer_name: str, pad_values, input_quantizer) -> float:
    pad_values = float(pad_values)
    if input_quantizer is not None and getattr(input_quantizer, "precision", 32) == 1:
        if pad_values not in (0.0, 1.0):
            raise ValueError(
                f"Invalid value for argument `pad_values` of {layer_name}. With a binarized "
                "input (input_quantizer of precision 1) it must be 0.0 (zero padding) or 1.0 "
                f"(pad with the +1 level). Received pad_values={pad_values}."
            )
    return pad_values


class QuantizedLayerMixin:
    """Holds an input quantizer and kernel quantizers; builds, serialises and applies them.

    Subclasses declare `_kernel_quantizer_args`: the constructor argument names of their kernel
    quantizers (``("kernel_quantizer",)``, or depthwise/pointwise for separable convs).
    """

    _kernel_quantizer_args: tuple[str, ...] = ("kernel_quantizer",)

    def _init_quantizers(self, input_quantizer, **kernel_quantizers):
        self.input_quantizer = q.get(input_quantizer, argument="input_quantizer")
        for name, value in kernel_quantizers.items():
            setattr(self, name, q.get(value, argument=name))
        # Set by kbnn.converters while exporting: a function replacing `call`.
        self._export_call: Callable | None = None

    @property
    def quantizers(self) -> dict:
        names = ("input_quantizer",) + self._kernel_quantizer_args
        return {n: getattr(self, n) for n in names if getattr(self, n) is not None}

    @property
    def is_binary(self) -> bool:
        """True when the input and every kernel are binarized (an LCE binary op candidate)."""
        iq = self.input_quantizer
        kqs = [getattr(self, n) for n in self._kernel_quantizer_args]
        return (
            iq is not None
            and iq.precision == 1
            and any(k is not None for k in kqs)
            and all(k is not None and k.precision == 1 for k in kqs[:1])
        )

    def _build_quantizers(self, input_shape, **kernel_shapes):
        if self.input_quantizer is not None and not self.input_quantizer.built:
            self.input_quantizer.build(tuple(input_shape))
        for name, shape in kernel_shapes.items():
            quantizer = getattr(self, name)
            if quantizer is not None and not quantizer.built:
                quantizer.build(tuple(shape))

    def quantize_input(self, inputs):
        if self.input_quantizer is None:
            return inputs
        return self.input_quantizer(inputs)

    def quantize_kernel(self, kernel, name: str = "kernel_quantizer"):
        quantizer = getattr(self, name)
        if quantizer is None:
            return kernel
        return quantizer(kernel)

    def _quantizer_config(self) -> dict:
        names = ("input_quantizer",) + self._kernel_quantizer_args
        return {n: q.serialize(getattr(self, n)) for n in names}

    def _finish(self, outputs):
        """Bias and activation, as the Keras layer does them."""
        if self.use_bias:
            outputs = ops.add(outputs, self._bias_for_broadcast())
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs

    def _bias_for_broadcast(self):
        return self.bias


class QuantConvMixin(QuantizedLayerMixin):
    """Convolution with input/kernel quantizers and `pad_values` for SAME/causal padding."""

    def _init_pad_values(self, pad_values):
        self.pad_values = validate_pad_values(type(self).__name__, pad_values, self.input_quantizer)

    @property
    def _channels_last(self) -> bool:
        return self.data_format == "channels_last"

    def _bias_for_broadcast(self):
        rank = len(self.kernel_size)
        if self._channels_last:
            return ops.reshape(self.bias, (1,) * (rank + 1) + (-1,))
        return ops.reshape(self.bias, (1, -1) + (1,) * rank)

    def pad_level(self, inputs):
        """The value padded in: 0.0, or the +1 level of the input quantizer for pad_values=1."""
        if self.pad_values == 0.0:
            return 0.0
        form = self.input_quantizer.binary_form(inputs) if self.input_quantizer else None
        if form is None:
            return self.pad_values
        return tf.cast(form.scale, inputs.dtype) + tf.cast(form.offset, inputs.dtype)

    def padding_amounts(self, input_shape) -> list[tuple[int, int]]:
        """Explicit (before, after) padding per spatial axis for this layer's padding mode."""
        rank = len(self.kernel_size)
        spatial = input_shape[1:-1] if self._channels_last else input_shape[2:]
        if self.padding == "causal":
            return [(self.dilation_rate[0] * (self.kernel_size[0] - 1), 0)]
        if self.padding == "same":
            return same_padding(spatial, self.kernel_size, self.strides, self.dilation_rate)
        return [(0, 0)] * rank

    def pad_inputs(self, x):
        """Apply explicit padding where needed; return the padded input and the conv padding."""
        padding = self.padding
        if padding == "valid" or (padding == "same" and self.pad_values == 0.0):
            return x, padding
        amounts = self.padding_amounts(tuple(x.shape))
        full = [(0, 0)] + amounts + [(0, 0)] if self._channels_last else [(0, 0), (0, 0)] + amounts
        level = self.pad_level(x)
        if isinstance(level, float):
            return ops.pad(x, full, constant_values=level), "valid"
        return ops.pad(x - level, full) + level, "valid"

    def quantize_depthwise_kernel(self, kernel):
        """Quantize a depthwise kernel (kh, kw, C, M) as (kh, kw, 1, C*M): one output channel
        per depthwise filter, so per-output-channel statistics are per filter."""
        if self.depthwise_quantizer is None:
            return kernel
        kh, kw, cin, mult = kernel.shape
        flat = ops.reshape(kernel, (kh, kw, 1, cin * mult))
        return ops.reshape(self.depthwise_quantizer(flat), (kh, kw, cin, mult))

    def call(self, inputs):
        if self._export_call is not None:
            return self._export_call(inputs)
        x = self.quantize_input(inputs)
        x, padding = self.pad_inputs(x)
        kernel = self.quantize_kernel(self.kernel)
        outputs = self.convolution_op_padded(x, kernel, padding)
        return self._finish(outputs)

    def convolution_op_padded(self, inputs, kernel, padding):
        return ops.conv(
            inputs,
            kernel,
            strides=list(self.strides),
            padding=padding,
            dilation_rate=self.dilation_rate,
            data_format=self.data_format,
        )

