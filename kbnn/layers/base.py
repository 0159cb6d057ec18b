"""Shared machinery of the quantized layers: quantizer arguments, the quantized-weights map,
padding, and the dispatch to the export form while the converter's export mode is active."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import ClassVar

import keras
import tensorflow as tf
from keras import ops

from kbnn import quantizers as q
from kbnn.checks import argument_error, check_bool, check_positive_int
from kbnn.layers.export import QuantizedWeight, export_override
from kbnn.quantizers.base import as_numeric_input

__all__ = ["QuantConvMixin", "QuantizedLayerMixin", "build_chain", "check_quantizer_role",
           "downsampled", "same_padding", "validate_pad_values", "validate_size_argument"]


def validate_size_argument(layer_name: str, name: str, value) -> int:
    """`filters`/`units` as an int: a strictly positive integer (not a bool), checked before
    Keras sees it (Keras accepts True and fails later, or with an unrelated message)."""
    return check_positive_int(layer_name, name, value)


def check_quantizer_role(layer_name: str, argument: str, quantizer, value) -> None:
    """Refuse a weights-only quantizer (`Quantizer.applies_to` "weights") as
    `input_quantizer`, naming the argument and why. (Activation quantizers stay valid as
    kernel quantizers: their forms hold per output channel, as in larq.)"""
    if quantizer is None:
        return
    role = getattr(quantizer, "applies_to", "both")
    shown = value if isinstance(value, str) else type(quantizer).__name__
    if argument == "input_quantizer" and role == "weights":
        raise ValueError(
            f"Invalid value for argument `input_quantizer` of {layer_name}. "
            f"{type(quantizer).__name__} quantizes weights (its statistics are per output "
            "channel of a kernel, over every axis but the last), not a layer's inputs. "
            "Expected an activation quantizer such as 'ste_sign', 'approx_sign' or 'rsign'; "
            f"use {type(quantizer).__name__} as a kernel quantizer. "
            f"Received input_quantizer={shown!r}.")


def same_padding(
    spatial_shape: Sequence,
    kernel_size: Sequence[int],
    strides: Sequence[int],
    dilation_rate: Sequence[int],
) -> list[tuple]:
    """(before, after) amounts that make a VALID conv give TensorFlow's SAME output.

    Out = ceil(in / stride); total = max((out - 1) * stride + (k - 1) * d + 1 - in, 0);
    before = total // 2 (TensorFlow puts the odd pixel after). Sizes may be Python ints
    (static shapes, the result is ints) or scalar tensors (dynamic shapes).
    """
    pads = []
    for size, k, s, d in zip(spatial_shape, kernel_size, strides, dilation_rate):
        if size is None:
            raise ValueError(
                "same_padding needs known spatial sizes (ints or scalar tensors); received "
                f"spatial shape {tuple(spatial_shape)}. Pass tf.shape(x) for dynamic sizes."
            )
        out = (size + s - 1) // s
        total = (out - 1) * s + (k - 1) * d + 1 - size
        total = max(total, 0) if isinstance(total, int) else tf.maximum(total, 0)
        pads.append((total // 2, total - total // 2))
    return pads


def validate_pad_values(layer_name: str, pad_values, input_quantizer) -> float:
    """`pad_values` as a float; 0.0 or 1.0 only when the input quantizer binarizes."""
    try:
        value = float(pad_values)
    except (TypeError, ValueError):
        raise argument_error(layer_name, "pad_values", "a number (0.0 or 1.0 for a binarized "
                             "input)", pad_values) from None
    if input_quantizer is not None and input_quantizer.precision == 1 and value not in (0.0, 1.0):
        raise ValueError(
            f"Invalid value for argument `pad_values` of {layer_name}. With a binarized "
            f"input (input_quantizer {type(input_quantizer).__name__} of precision 1) it must "
            "be 0.0 (zero padding) or 1.0 (pad with the +1 level of the input quantizer). "
            f"Received pad_values={pad_values!r}."
        )
    return value


def build_chain(layers: Iterable[keras.layers.Layer | None], input_shape) -> tuple:
    """Build `layers` (None entries skipped) one after the other from `input_shape`; return the
    last output shape.

    Composite layers and blocks build their sub-layers here, in `build()`, so every variable
    exists before a `.keras` file's weights are loaded.
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
    """A spatial size after SAME-style striding (ceil(size / strides)); None stays None."""
    return None if size is None else math.ceil(size / strides)


def _shape_with_dynamic_dims(x) -> list:
    """Static dimensions as ints, unknown ones as scalar tensors."""
    static = list(x.shape)
    if all(d is not None for d in static):
        return static
    dynamic = tf.shape(x)
    return [d if d is not None else dynamic[i] for i, d in enumerate(static)]


class QuantizedLayerMixin:
    """Holds an input quantizer and weight quantizers; builds, serialises and applies them.

    Mixed into a Keras layer class (``class QuantConv2D(QuantConvMixin, keras.layers.Conv2D)``).
    Subclasses declare the class attribute `quantized_weight_attributes`, which maps each
    weight-quantizer constructor argument to the attribute holding the weight it quantizes (``{"kernel_quantizer":
    "kernel"}``); a subclass whose quantizer sees the weight in another shape overrides
    `_quantizer_view_shape`.

    While `kbnn.layers.export_scope` names the layer (the converter's export mode), a call
    computes the layer's export function instead of its training form.
    """

    quantized_weight_attributes: ClassVar[dict[str, str]] = {"kernel_quantizer": "kernel"}

    def _init_quantizers(self, input_quantizer, **kernel_quantizers):
        """Resolve the quantizer arguments. Quantizers compute in the layer's dtype policy
        (e.g. "mixed_float16"), as sub-layers of Keras layers do."""
        quantizers = {"input_quantizer": input_quantizer, **kernel_quantizers}
        for name, value in quantizers.items():
            quantizer = q.get(value, argument=name, owner=type(self).__name__)
            check_quantizer_role(type(self).__name__, name, quantizer, value)
            if quantizer is not None and self.dtype_policy.quantization_mode is None:
                quantizer.dtype_policy = self.dtype_policy.name
            setattr(self, name, quantizer)

    def __call__(self, *args, **kwargs):
        export_call = export_override(self)
        if export_call is None:
            return super().__call__(*args, **kwargs)
        inputs = args[0] if args else kwargs["inputs"]
        with keras.name_scope(self.name, caller=self):
            return export_call(inputs)

    @property
    def quantizers(self) -> dict:
        """The quantizers that are set, by constructor argument name."""
        names = ("input_quantizer", *self.quantized_weight_attributes)
        return {n: getattr(self, n) for n in names if getattr(self, n) is not None}

    @property
    def is_binary(self) -> bool:
        """True when the input and every kernel are binarized (an LCE binary op candidate)."""
        quantizers = [self.input_quantizer]
        quantizers += [getattr(self, n) for n in self.quantized_weight_attributes]
        return all(k is not None and k.precision == 1 for k in quantizers)

    def _quantizer_view_shape(self, argument: str, shape: tuple) -> tuple:
        """The shape the quantizer of `argument` sees a weight of `shape` in."""
        return tuple(shape)

    def quantized_weights(self) -> dict[str, QuantizedWeight]:
        """Every quantized weight of the layer, by quantizer argument: the latent variable,
        its quantizer (None when unset) and the shape the quantizer sees. The one map that the
        converter, `kbnn.summary`, the benchmarks and the optimizers read. Needs a built layer.
        """
        if not self.built:
            raise ValueError(
                f"Layer {self.name!r} ({type(self).__name__}) is not built: "
                "quantized_weights() needs its variables. Call the layer on data (or build it) "
                "first.")
        return self._collect_quantized_weights()

    def _collect_quantized_weights(self) -> dict[str, QuantizedWeight]:
        weights = {}
        for argument, attribute in self.quantized_weight_attributes.items():
            variable = getattr(self, attribute, None)
            if variable is None or not hasattr(variable, "shape"):
                raise ValueError(
                    f"{type(self).__name__} {self.name!r} declares that `{argument}` quantizes "
                    f"its attribute `{attribute}`, but it has no such weight (received "
                    f"{attribute}={variable!r}). Fix `quantized_weight_attributes`.")
            shape = self._quantizer_view_shape(argument, tuple(variable.shape))
            weights[argument] = QuantizedWeight(argument, variable, getattr(self, argument),
                                                shape)
        return weights

    def build(self, input_shape):
        super().build(input_shape)
        if self.input_quantizer is not None and not self.input_quantizer.built:
            self.input_quantizer.build(tuple(input_shape))
        for weight in self._collect_quantized_weights().values():
            if weight.quantizer is not None and not weight.quantizer.built:
                weight.quantizer.build(weight.shape)

    def quantize_input(self, inputs):
        """`inputs` through the input quantizer. Integer and bool inputs are cast to the
        layer's compute dtype first (as Keras layers cast theirs); strings are refused with a
        TypeError naming the layer."""
        if self.input_quantizer is None:
            return inputs
        inputs = as_numeric_input(inputs, self.compute_dtype,
                                  f"{type(self).__name__} {self.name!r}")
        return self.input_quantizer(inputs)

    def quantize_weight(self, argument: str, value):
        """`value` (a weight as stored) through the quantizer of `argument`, in the shape that
        quantizer sees, and back to the stored shape."""
        quantizer = getattr(self, argument)
        if quantizer is None:
            return value
        shape = tuple(value.shape)
        view = self._quantizer_view_shape(argument, shape)
        if view == shape:
            return quantizer(value)
        return ops.reshape(quantizer(ops.reshape(value, view)), shape)

    def _quantizer_config(self) -> dict:
        names = ("input_quantizer", *self.quantized_weight_attributes)
        config = {}
        for name in names:
            serialized = q.serialize(getattr(self, name))
            if serialized is not None:
                # The layer builds its quantizers itself (with the right shapes).
                serialized.pop("build_config", None)
            config[name] = serialized
        return config

    def get_config(self) -> dict:
        return {**super().get_config(), **self._quantizer_config()}

    def _finish(self, outputs):
        """Bias and activation, as the Keras layer does them (for the layers whose Keras `call`
        skips the `convolution_op` seam and is therefore written out here)."""
        if self.use_bias:
            outputs = ops.add(outputs, self._bias_for_broadcast())
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs

    def _bias_for_broadcast(self):
        return self.bias


class QuantConvMixin(QuantizedLayerMixin):
    """Convolution with input/kernel quantizers and `pad_values` for SAME/causal padding.

    `convolution_op` is Keras' convolution seam (`keras.layers.Conv2D.call` uses it and adds
    bias and activation itself); subclasses whose Keras `call` skips the seam (Conv1D,
    DepthwiseConv2D, SeparableConv2D) write `call` out with `quantized_input`, `quantize_weight`
    and `_finish`.
    """

    symmetric_padding: bool = False

    def _init_pad_values(self, pad_values, symmetric_padding: bool = False):
        owner = type(self).__name__
        self.pad_values = validate_pad_values(owner, pad_values, self.input_quantizer)
        check_bool(owner, "symmetric_padding", symmetric_padding, "a bool")
        if symmetric_padding:
            extents = [d * (k - 1) for k, d in zip(self.kernel_size, self.dilation_rate)]
            if self.padding != "same" or any(e % 2 for e in extents):
                raise ValueError(
                    f"Invalid value for argument `symmetric_padding` of {owner}. It needs "
                    "padding='same' and odd (dilated) kernel sizes, so that the same amount "
                    f"pads both sides. Received padding={self.padding!r}, "
                    f"kernel_size={self.kernel_size}, dilation_rate={self.dilation_rate}.")
        self.symmetric_padding = symmetric_padding

    @property
    def _channels_last(self) -> bool:
        return self.data_format == "channels_last"

    def _bias_for_broadcast(self):
        rank = len(self.kernel_size)
        if self._channels_last:
            return ops.reshape(self.bias, (1,) * (rank + 1) + (-1,))
        return ops.reshape(self.bias, (1, -1) + (1,) * rank)

    def pad_level(self, inputs):
        """The value padded in: 0.0, or for pad_values=1 the +1 level ``scale + offset`` of
        the input quantizer's binary form (a float, or a tensor along the channel axis); the
        literal `pad_values` when the input is not binarized."""
        if self.pad_values == 0.0:
            return 0.0
        form = self.input_quantizer.binary_form(inputs) if self.input_quantizer else None
        if form is None:
            return self.pad_values
        if all(isinstance(v, (int, float)) for v in (form.scale, form.offset)):
            return float(form.scale) + float(form.offset)
        return ops.cast(form.scale, inputs.dtype) + ops.cast(form.offset, inputs.dtype)

    def padding_amounts(self, input_shape) -> list[tuple]:
        """Explicit (before, after) padding per spatial axis for this layer's padding mode.

        `input_shape` is the full input shape (batch and channels included); its spatial sizes
        must be known (ints or, inside a graph, scalar tensors).
        """
        rank = len(self.kernel_size)
        if self.padding == "causal":
            return [(self.dilation_rate[0] * (self.kernel_size[0] - 1), 0)]
        if self.padding == "same" and self.symmetric_padding:
            return [(d * (k - 1) // 2,) * 2 for k, d in zip(self.kernel_size, self.dilation_rate)]
        if self.padding == "same":
            spatial = input_shape[1:-1] if self._channels_last else input_shape[2:]
            return same_padding(spatial, self.kernel_size, self.strides, self.dilation_rate)
        return [(0, 0)] * rank

    def pad_inputs(self, x):
        """Pad explicitly where Keras' own padding would not pad with `pad_values`.

        Returns the (possibly padded) input and the padding mode for the convolution. Causal
        padding and SAME padding with ``pad_values != 0`` become an explicit pad + VALID;
        a constant pad level is a constant `tf.pad` (the pattern LCE fuses into its bconv).
        """
        if self.padding == "valid" or (self.padding == "same" and self.pad_values == 0.0
                                       and not self.symmetric_padding):
            return x, self.padding
        amounts = self.padding_amounts(_shape_with_dynamic_dims(x))
        if self._channels_last:
            full = [(0, 0)] + amounts + [(0, 0)]
        else:
            full = [(0, 0), (0, 0)] + amounts
        level = self.pad_level(x)
        if isinstance(level, float):
            return tf.pad(x, full, constant_values=level), "valid"
        # A tensor level (per channel, or learnt): zero-pad, then add level * border mask, so
        # the values stay exact and the gradient reaches the variables behind the level.
        if not self._channels_last:
            level = ops.reshape(level, (-1,) + (1,) * len(amounts))
        border = tf.pad(tf.zeros_like(x), full, constant_values=1.0)
        return tf.pad(x, full) + border * level, "valid"

    def quantized_input(self, inputs):
        """The input quantized and explicitly padded, with the padding mode left for the
        convolution (see `pad_inputs`)."""
        return self.pad_inputs(self.quantize_input(inputs))

    def convolution_op(self, inputs, kernel):
        """Keras' convolution seam: quantize and pad the input, quantize the kernel, convolve.
        Keras' own `call` adds the bias and applies the activation."""
        x, padding = self.quantized_input(inputs)
        return ops.conv(
            x,
            self.quantize_weight("kernel_quantizer", kernel),
            strides=list(self.strides),
            padding=padding,
            dilation_rate=self.dilation_rate,
            data_format=self.data_format,
        )

    def get_config(self) -> dict:
        return {**super().get_config(), "pad_values": self.pad_values}
