"""Shared parts of the kbnn blocks: argument checks (the generic ones re-exported from
`kbnn.checks`), the block base class, the binary convolution and batch-norm factories (the
shortcut is in `shortcut.py`)."""

from __future__ import annotations

import copy

import keras

from kbnn import quantizers as kq
from kbnn.checks import check_bool, check_pad_values, check_positive_int, check_strides
from kbnn.export_mode import call_layer
from kbnn.layers.base import build_chain, downsampled
from kbnn.layers.conv import QuantConv2D
from kbnn.layers.normalization import FusedBatchNormalization

__all__ = [
    "BinaryBlock",
    "QuantizerSpec",
    "batch_norm",
    "binary_conv",
    "build_chain",
    "check_pad_values",
    "check_positive_int",
    "check_quantizer",
    "check_same_or_double_width",
    "check_strides",
    "check_symmetric_padding",
    "downsampled",
]

# PyTorch's BatchNorm2d defaults (momentum 0.1 there = 0.9 here, eps 1e-5), as in the official
# PyTorch code of ReActNet, Bi-Real Net and AdaBin. The official Lua XNOR-Net code differs (eps
# 1e-4, no affine parameters, in the BN before each binary activation); kbnn uses these
# defaults for every block.
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


def check_same_or_double_width(block, channels) -> int:
    """The input channels of a block whose `out_channels` must equal them or twice them (the
    ReActNet-A and BNext blocks); a Keras-style ValueError naming the block otherwise."""
    if channels is None or block.out_channels not in (channels, 2 * channels):
        raise ValueError(
            f"Invalid value for argument `out_channels` of {type(block).__name__} "
            f"{block.name!r}. Expected the number of input channels ({channels}) or twice it "
            f"({None if channels is None else 2 * channels}). "
            f"Received out_channels={block.out_channels}."
        )
    return int(channels)


def check_symmetric_padding(owner: str, symmetric_padding) -> bool:
    """A bool (False: TensorFlow's SAME padding; True: PyTorch's ``padding=k // 2`` on both
    sides), else a Keras-style ValueError."""
    return check_bool(owner, "symmetric_padding", symmetric_padding,
                      "True (pad k // 2 on both sides, as PyTorch's padding=k // 2) or False "
                      "(TensorFlow's SAME padding)")


class QuantizerSpec:
    """A block's quantizer argument, resolved once: the quantizer class and its serialised
    config (`kbnn.quantizers.serialize` without "build_config" and without the instance name),
    or nothing (None: a float convolution).

    `new()` builds a fresh quantizer from it for each convolution, so two convolutions never
    share a quantizer layer (or its variables). A plain Python object, not a Keras layer, so the
    block does not track an unbuilt prototype quantizer.
    """

    def __init__(self, quantizer: kq.Quantizer | None):
        self.cls = None if quantizer is None else type(quantizer)
        self._serialized = None
        if quantizer is not None:
            serialized = kq.serialize_recipe(quantizer)
            self._serialized = serialized

    @property
    def is_float(self) -> bool:
        return self.cls is None

    def new(self, name: str | None = None) -> kq.Quantizer | None:
        """A fresh quantizer instance (``type(q).from_config(q.get_config())``), or None.
        Without `name` it gets Keras' automatic name, as ``kbnn.quantizers.get(alias)``
        gives."""
        if self.cls is None:
            return None
        config = copy.deepcopy(self._serialized["config"])
        if name is not None:
            config["name"] = name
        return self.cls.from_config(config)

    def serialize(self) -> dict | None:
        """What the block's `get_config` stores (a dict `kbnn.quantizers.get` accepts)."""
        return copy.deepcopy(self._serialized)

    def config(self) -> dict:
        """The quantizer's constructor config (without its name); {} for None."""
        return {} if self._serialized is None else copy.deepcopy(self._serialized["config"])


_PROTOTYPE = "kbnn_block_quantizer_prototype"


def _named(value):
    """`value` such that resolving it gives the prototype an explicit name: the prototype and
    the check copy then leave Keras' automatic layer names alone, so each convolution's
    quantizer is named as ``kbnn.quantizers.get(alias)`` would name it."""
    if isinstance(value, str) and value in kq.known_aliases():
        return {"class_name": value, "config": {"name": _PROTOTYPE}}
    if isinstance(value, dict) and isinstance(value.get("config", {}), dict):
        return {**value, "config": {**value.get("config", {}), "name": _PROTOTYPE}}
    if isinstance(value, type) and issubclass(value, kq.Quantizer):
        return value(name=_PROTOTYPE)
    return value


def check_quantizer(owner: str, argument: str, value) -> QuantizerSpec:
    """Resolve a block's quantizer argument (anything `kbnn.quantizers.get` accepts: an alias
    string, a config dict, a `Quantizer` instance or subclass, or None) once, else a
    Keras-style ValueError naming `owner` and `argument`."""
    try:
        quantizer = kq.get(_named(value), argument=argument, owner=owner)
    except (TypeError, ValueError) as first:
        failure: Exception = first
        try:  # the registry's reason, for the argument as given
            kq.get(value, argument=argument, owner=owner)
        except (TypeError, ValueError) as original:
            failure = original
        reason = str(failure).split(f"`{argument}` of {owner}", 1)[-1].lstrip(":. ")
        reason = "" if reason.startswith("Expected") else f"; {reason.rstrip('.')}"
        raise ValueError(
            f"Invalid value for argument `{argument}` of {owner}. Expected a quantizer alias "
            f"string, a quantizer config dict, a kbnn.quantizers.Quantizer instance, or None "
            f"(a float convolution){reason}. Received {argument}={value!r}."
        ) from None
    try:
        spec = QuantizerSpec(quantizer)
        spec.new(name=_PROTOTYPE)  # the copy each convolution gets must be constructible
    except Exception as err:  # noqa: BLE001 (any failure of a user quantizer's config)
        raise ValueError(
            f"Invalid value for argument `{argument}` of {owner}. Expected a quantizer that "
            f"can be rebuilt from its config (`type(q).from_config(q.get_config())`), since "
            f"each convolution of the block gets its own copy [{type(err).__name__}: {err}]. "
            f"Received {argument}={value!r}."
        ) from None
    return spec


def batch_norm(name: str) -> keras.layers.BatchNormalization:
    """Batch norm with PyTorch's defaults (momentum 0.1 = Keras 0.9, epsilon 1e-5), on the fused
    training kernel (`kbnn.layers.FusedBatchNormalization`: same maths and inference graph)."""
    return FusedBatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=name)


def binary_conv(
    filters: int,
    kernel_size: int | tuple[int, int],
    strides: int,
    input_quantizer,
    kernel_quantizer,
    pad_values: float,
    name: str,
    symmetric_padding: bool = False,
    **kwargs,
) -> QuantConv2D:
    """A binary `QuantConv2D` as every block uses it: SAME padding, no bias (a BN follows).
    ``symmetric_padding=True`` pads k // 2 on both sides instead (PyTorch's ``padding=k // 2``;
    TensorFlow's SAME pads 0 before and 1 after a stride-2 window on an even size); 1x1
    convolutions pad nothing either way, so they keep the plain SAME form."""
    symmetric = symmetric_padding and any(k > 1 for k in (
        kernel_size if isinstance(kernel_size, (tuple, list)) else (kernel_size,)))
    return QuantConv2D(
        filters,
        kernel_size,
        strides=strides,
        padding="same",
        use_bias=False,
        input_quantizer=input_quantizer,
        kernel_quantizer=kernel_quantizer,
        pad_values=pad_values,
        symmetric_padding=symmetric,
        name=name,
        **kwargs,
    )


class BinaryBlock(keras.layers.Layer):
    """Base class of the kbnn blocks (channels-last, NHWC).

    Sub-classes create their sub-layers in `build()` (the layout depends on the number of input
    channels) and list them in `_sublayers()`. `binary_layers` lists the binary convolutions
    (binarized input and kernel), each of which converts to one LCE `LceBconv2d`.

    Every block takes its quantizers as `input_quantizer` and `kernel_quantizer` (anything
    `kbnn.quantizers.get` accepts; None leaves that side of every convolution float). The
    block resolves each argument once (`check_quantizer`) and gives each of its convolutions a
    fresh copy (`QuantizerSpec.new`), so no two convolutions share a quantizer layer.

    `batch_norm_pairs()` declares, by structure, each (binary conv, BatchNormalization) pair
    whose BN reads that conv's output directly and alone; the block applies exactly those BNs
    through `kbnn.export_mode.call_layer`, so the converter can fold them into the conv's
    export.
    """

    def _init_quantizers(self, input_quantizer, kernel_quantizer) -> None:
        """Resolve and check the two quantizer arguments (Keras-style errors)."""
        owner = type(self).__name__
        self._input_quantizer_spec = check_quantizer(owner, "input_quantizer", input_quantizer)
        self._kernel_quantizer_spec = check_quantizer(owner, "kernel_quantizer",
                                                      kernel_quantizer)

    def _sublayers(self) -> list:
        raise NotImplementedError

    @property
    def binary_layers(self) -> list:
        """The block's binary `QuantConv2D` layers, in call order."""
        return [layer for layer in self._sublayers()
                if isinstance(layer, QuantConv2D) and layer.is_binary]

    def _conv_batch_norms(self) -> list[tuple]:
        """Every (conv, BN) pair of the block's structure in which the BN is applied directly
        to the conv's output and nothing else reads that output, binary or not (a sub-class
        hook; the default is none)."""
        return []

    def batch_norm_pairs(self) -> list[tuple[keras.layers.Layer, keras.layers.BatchNormalization]]:
        """The (binary conv, BatchNormalization) pairs of the block, in call order: each BN is
        applied directly to its conv's output, and nothing else reads that output, so the
        converter may fold the BN into the conv's export. Pairs whose conv is not binary (a
        float twin, a real-weight first training step) are not listed. Needs a built block.
        """
        if not self.built:
            raise ValueError(
                f"Block {self.name!r} ({type(self).__name__}) is not built: batch_norm_pairs() "
                "needs its sub-layers. Call the block on data (or build it) first.")
        return [(conv, bn) for conv, bn in self._conv_batch_norms()
                if isinstance(conv, QuantConv2D) and conv.is_binary]

    def _conv_bn(self, conv, bn, inputs, training=None):
        """``bn(conv(inputs))``; the BN goes through `call_layer` when the pair is one of
        `batch_norm_pairs()` (a binary conv), so the converter's export scope can replace it."""
        outputs = conv(inputs)
        if isinstance(conv, QuantConv2D) and conv.is_binary:
            return call_layer(bn, outputs, training=training)
        return bn(outputs, training=training)

    def _quantizer_config(self) -> dict:
        """The `input_quantizer` and `kernel_quantizer` entries of `get_config`."""
        return {"input_quantizer": self._input_quantizer_spec.serialize(),
                "kernel_quantizer": self._kernel_quantizer_spec.serialize()}

    def _output_channels(self, input_channels: int) -> int:
        raise NotImplementedError

    def compute_output_shape(self, input_shape):
        batch, height, width, channels = tuple(input_shape)
        strides = getattr(self, "strides", 1)
        return (batch, downsampled(height, strides), downsampled(width, strides),
                self._output_channels(channels))
