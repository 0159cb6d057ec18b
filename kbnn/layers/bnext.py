"""The units of BNext's basic block (Guo, Bethge, Meinel, Yang, "Towards Optimization-Friendly
Binary Neural Network", TMLR 2023, arXiv 2211.12933; see docs/methods.md, section 'BNext'):

* `SqueezeExpand`: the squeeze-and-expand (SE) branch, GAP -> 1x1 conv (C -> C/8, bias) -> ReLU
  -> 1x1 conv (C/8 -> C, bias) -> sigmoid; real-valued, or with `bits` k-bit fake quantization
  (the 8-bit variant of the official `bnext_quant.py`);
* `InfoRecoupling`: ``SE(s * x_in + (1 - s) * x) * x``, the information-recoupling mix with a
  learnable per-channel s (init 0.5, kept in [0, 1]);
* `ELMAttention`: the 3x3 attention unit, whose SE-gated binary-conv output is multiplied by the
  PReLU'd input, normalised and added back;
* `BNextFFN`: the 3x3 and 1x1 "FFN" units, normalised and added to the input.

Each unit keeps its width (C -> C) and holds one binary convolution (`QuantConv2D`, input
quantizer "hard_sign" after a `LearnableBias`, kernel quantizer "bnext_weight", no bias, SAME
padding) followed by a BatchNormalization and a PReLU; `batch_norm_pairs()` declares the
(conv, BN) pair. The channel-doubling block built from them is `kbnn.blocks.BNextBlock`.
"""

from __future__ import annotations

import copy
import math

import keras
from keras import ops

from kbnn import quantizers as kq
from kbnn.checks import (
    argument_error,
    check_bool,
    check_choice,
    check_int_in_range,
    check_pad_values,
    check_positive_int,
    check_positive_or_none,
    check_strides,
)
from kbnn.constraints import WeightClip
from kbnn.export_mode import call_layer
from kbnn.layers.base import build_chain, downsampled
from kbnn.layers.bnn import LearnableBias
from kbnn.layers.conv import QuantConv2D
from kbnn.layers.normalization import FusedBatchNormalization
from kbnn.quantizers.fake_quant import FakeQuant

__all__ = ["BNextFFN", "ELMAttention", "InfoRecoupling", "RangeClip", "SqueezeExpand"]

# PyTorch's BatchNorm2d defaults (momentum 0.1 there = 0.9 here, epsilon 1e-5) and nn.PReLU's
# init 0.25, as the official code.
_BN_MOMENTUM = 0.9
_BN_EPSILON = 1e-5
_PRELU_INIT = 0.25
# The official `HardBinaryConv` initialises its latent weights with randn * 0.001.
_KERNEL_STDDEV = 1e-3
GATES = ("sigmoid", "hard_sigmoid")


def _register(cls):
    return keras.saving.register_keras_serializable(package="kbnn")(cls)


def _check_bits(owner: str, bits) -> int | None:
    return None if bits is None else check_int_in_range(owner, "bits", bits, 2, 16)


def check_kernel_clip(owner: str, value, name: str = "kernel_clip") -> float | None:
    """`kernel_clip` as a float (finite, > 0) or None, else a Keras-style ValueError."""
    return check_positive_or_none(owner, name, value)


def _batch_norm(name: str) -> FusedBatchNormalization:
    return FusedBatchNormalization(momentum=_BN_MOMENTUM, epsilon=_BN_EPSILON, name=name)


def _prelu(name: str) -> keras.layers.PReLU:
    """PyTorch's ``nn.PReLU(C)``: one slope per channel, init 0.25."""
    return keras.layers.PReLU(alpha_initializer=keras.initializers.Constant(_PRELU_INIT),
                              shared_axes=[1, 2], name=name)


def _channels(owner: str, name: str, input_shape) -> int:
    channels = input_shape[-1]
    if channels is None:
        raise ValueError(f"{owner} {name!r} needs a known last (channel) dimension. "
                         f"Received input_shape={tuple(input_shape)}.")
    return int(channels)


@_register
class RangeClip(keras.constraints.Constraint):
    """Clip a variable to [min_value, max_value] after each update (the in-place
    ``clamp_(0, 1)`` of BNext's info-recoupling scale, arXiv 2211.12933).

    Args:
        min_value, max_value: the range (min_value <= max_value).
    """

    def __init__(self, min_value: float = 0.0, max_value: float = 1.0):
        if not (isinstance(min_value, (int, float)) and isinstance(max_value, (int, float))
                and math.isfinite(min_value) and math.isfinite(max_value)
                and min_value <= max_value) or isinstance(min_value, bool) or isinstance(
                    max_value, bool):
            raise ValueError(
                "Invalid value for arguments `min_value`/`max_value` of RangeClip. Expected "
                f"finite numbers with min_value <= max_value. Received min_value={min_value!r},"
                f" max_value={max_value!r}.")
        self.min_value = float(min_value)
        self.max_value = float(max_value)

    def __call__(self, w):
        return ops.clip(w, self.min_value, self.max_value)

    def get_config(self):
        return {"min_value": self.min_value, "max_value": self.max_value}


@_register
class SqueezeExpand(keras.layers.Layer):
    """BNext's squeeze-and-expand branch (`SqueezeAndExpand`, arXiv 2211.12933; see
    docs/methods.md, section 'BNext'):

        g = gate(conv1x1_2(relu(conv1x1_1(GAP(x)))))         # shape (N, 1, 1, filters)

    with conv1x1_1: C -> C // ratio (at least 1) and conv1x1_2: C // ratio -> filters, both
    with bias, real valued (`keras.layers.Conv2D`) and counted as FLOPs by `kbnn.profile`.
    The gate is the sigmoid (what every official block uses) or the hard sigmoid
    relu6(x + 3) / 6.

    With ``bits=k`` (the official `bnext_quant.py` uses 8) both convolutions are `QuantConv2D`
    layers with k-bit `kbnn.quantizers.FakeQuant` quantizers, so that
    ``kbnn.converters.convert(model, int8=True)`` gives int8 ops: the pooled input and the
    ReLU output are fake-quantized with a tracked (moving-average) range, the kernels per tensor
    (symmetric, narrow range), the second conv's output by one more FakeQuant before the gate,
    and the gate's output on the fixed grid of an int8 TFLite LOGISTIC ([0, 1) in steps of
    2^-k), so that Keras computes what the int8 model computes. The official code quantizes
    activations with a per-sample min-max range and kernels with a per-output-channel
    asymmetric range, and leaves the gate's output in float; kbnn uses the per-tensor ranges
    int8 TFLite kernels need.

    Args:
        filters: output channels (default: the input channels).
        ratio: reduction of the hidden width, C // ratio (8); a width below 1 (C < ratio,
            where the official code fails) is rounded up to 1.
        gate: "sigmoid" (default) or "hard_sigmoid".
        bits: None (real-valued convs) or the fake-quantization bits (2..16; 8 for int8).
    """

    def __init__(self, filters: int | None = None, ratio: int = 8, gate: str = "sigmoid",
                 bits: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.filters = None if filters is None else check_positive_int(
            "SqueezeExpand", "filters", filters)
        self.ratio = check_positive_int("SqueezeExpand", "ratio", ratio)
        self.gate = check_choice("SqueezeExpand", "gate", gate, GATES)
        self.bits = _check_bits("SqueezeExpand", bits)

    def _conv(self, filters: int, name: str):
        if self.bits is None:
            return keras.layers.Conv2D(filters, 1, use_bias=True, name=name)
        return QuantConv2D(
            filters, 1, use_bias=True, name=name,
            input_quantizer=FakeQuant(num_bits=self.bits, name=f"{name}_input_quant"),
            kernel_quantizer=FakeQuant(num_bits=self.bits, mode="minmax", symmetric=True,
                                       narrow_range=True, name=f"{name}_kernel_quant"))

    def build(self, input_shape):
        channels = _channels("SqueezeExpand", self.name, input_shape)
        # C // ratio as the official code; at least 1 (the official code fails for C < ratio)
        hidden = max(channels // self.ratio, 1)
        self.hidden = hidden
        out = channels if self.filters is None else self.filters
        self.pool = keras.layers.GlobalAveragePooling2D(keepdims=True, name=f"{self.name}_pool")
        self.conv1 = self._conv(hidden, f"{self.name}_conv1")
        self.conv2 = self._conv(out, f"{self.name}_conv2")
        self.output_quant = self.gate_quant = None
        if self.bits is not None:
            self.output_quant = FakeQuant(num_bits=self.bits, name=f"{self.name}_output_quant")
            # the fixed output grid of an int8 LOGISTIC: [0, 255/256] in steps of 1/256
            self.gate_quant = FakeQuant(
                num_bits=self.bits, mode="learned", init_min=0.0,
                init_max=(2.0 ** self.bits - 1) / 2.0 ** self.bits, trainable=False,
                name=f"{self.name}_gate_quant")
        build_chain([self.pool, self.conv1, self.conv2, self.output_quant, self.gate_quant],
                     input_shape)

    def call(self, inputs):
        x = self.pool(inputs)
        x = ops.relu(self.conv1(x))
        x = self.conv2(x)
        if self.output_quant is not None:
            x = self.output_quant(x)
        x = ops.sigmoid(x) if self.gate == "sigmoid" else ops.hard_sigmoid(x)
        return x if self.gate_quant is None else self.gate_quant(x)

    def compute_output_shape(self, input_shape):
        out = input_shape[-1] if self.filters is None else self.filters
        return (input_shape[0], 1, 1, out)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "ratio": self.ratio,
                "gate": self.gate, "bits": self.bits}


@_register
class InfoRecoupling(keras.layers.Layer):
    """BNext's information recoupling (arXiv 2211.12933; see docs/methods.md, section
    'BNext'), called on ``[x_in, x]`` (the unit's input, average-pooled when the unit is
    strided, and the binary conv's BN + PReLU output, both of shape (N, H, W, C)):

        mix = s * x_in + (1 - s) * x
        out = SqueezeExpand(mix) * x

    s is one learnable value per channel, initialised to 0.5 and clipped to [0, 1] after every
    update (`RangeClip`; the official code clamps it in place before each training forward).

    Args:
        ratio, gate, se_bits: the `SqueezeExpand` branch's `ratio`, `gate` and `bits`.
        scale_initializer: initializer of s (default 0.5).
    """

    def __init__(self, ratio: int = 8, gate: str = "sigmoid", se_bits: int | None = None,
                 scale_initializer=None, **kwargs):
        super().__init__(**kwargs)
        self.ratio = check_positive_int("InfoRecoupling", "ratio", ratio)
        self.gate = check_choice("InfoRecoupling", "gate", gate, GATES)
        self.se_bits = _check_bits("InfoRecoupling", se_bits)
        self.scale_initializer = keras.initializers.get(
            keras.initializers.Constant(0.5) if scale_initializer is None else scale_initializer)

    def build(self, input_shape):
        if not (isinstance(input_shape, (list, tuple)) and len(input_shape) == 2
                and all(isinstance(s, (list, tuple)) for s in input_shape)):
            raise ValueError(
                f"InfoRecoupling {self.name!r} is called on a list [x_in, x] of two tensors. "
                f"Received input_shape={input_shape!r}.")
        in_shape, x_shape = (tuple(s) for s in input_shape)
        channels = _channels("InfoRecoupling", self.name, x_shape)
        if in_shape[-1] != channels:
            raise ValueError(
                f"InfoRecoupling {self.name!r} needs x_in and x with the same channels. "
                f"Received input_shape={input_shape!r}.")
        self.scale = self.add_weight(name="scale", shape=(channels,),
                                     initializer=self.scale_initializer,
                                     constraint=RangeClip(0.0, 1.0), trainable=True)
        self.se = SqueezeExpand(ratio=self.ratio, gate=self.gate, bits=self.se_bits,
                                name=f"{self.name}_se")
        self.se.build(x_shape)

    def call(self, inputs):
        x_in, x = inputs
        scale = ops.cast(self.scale, x.dtype)
        mix = scale * x_in + (1.0 - scale) * x
        return self.se(mix) * x

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[1])

    def get_config(self):
        return {**super().get_config(), "ratio": self.ratio, "gate": self.gate,
                "se_bits": self.se_bits,
                "scale_initializer": keras.initializers.serialize(self.scale_initializer)}


class _QuantizerArgument:
    """A unit's quantizer argument, resolved once and kept serialised (a plain object, so Keras
    does not track it): `new()` builds the convolution's quantizer from it in `build`."""

    def __init__(self, owner: str, argument: str, value):
        quantizer = kq.get(value, argument=argument, owner=owner)
        self._config = None
        if quantizer is not None:
            self._config = kq.serialize_recipe(quantizer)

    def new(self):
        return None if self._config is None else kq.deserialize(copy.deepcopy(self._config))

    def serialize(self) -> dict | None:
        return copy.deepcopy(self._config)


class _BNextUnit(keras.layers.Layer):
    """Shared part of BNext's units (C -> C): the binary branch

        x = PReLU_2(BN_1(BinConv_kxk,s(HardSign(LearnableBias(x_in)))))

    then, with `info_recoupling`, ``x = SE(s * x_in' + (1 - s) * x) * x`` (x_in' = x_in,
    average-pooled 2x2 when strided), then the sub-class's residual form.
    """

    kernel_size: int = 3
    attention: bool = False

    def __init__(self, strides: int = 1, info_recoupling: bool = True, pad_values: float = 0.0,
                 se_ratio: int = 8, se_gate: str = "sigmoid", se_bits: int | None = None,
                 input_quantizer="hard_sign", kernel_quantizer="bnext_weight",
                 kernel_clip: float | None = 1.5, kernel_initializer=None, **kwargs):
        super().__init__(**kwargs)
        owner = type(self).__name__
        self.strides = check_strides(owner, strides)
        self.info_recoupling = check_bool(owner, "info_recoupling", info_recoupling)
        self.pad_values = check_pad_values(owner, pad_values)
        self.se_ratio = check_positive_int(owner, "se_ratio", se_ratio)
        self.se_gate = check_choice(owner, "se_gate", se_gate, GATES)
        self.se_bits = _check_bits(owner, se_bits)
        self._input_quantizer = _QuantizerArgument(owner, "input_quantizer", input_quantizer)
        self._kernel_quantizer = _QuantizerArgument(owner, "kernel_quantizer", kernel_quantizer)
        self.kernel_clip = check_kernel_clip(owner, kernel_clip)
        self.kernel_initializer = keras.initializers.get(
            keras.initializers.RandomNormal(stddev=_KERNEL_STDDEV) if kernel_initializer is None
            else kernel_initializer)

    @property
    def has_norm2(self) -> bool:
        """Whether the unit has its second BN (see the sub-classes)."""
        return True

    def build(self, input_shape):
        channels = _channels(type(self).__name__, self.name, input_shape)
        name = self.name
        self.move = LearnableBias(name=f"{name}_move")
        self.binary_conv = QuantConv2D(
            channels, self.kernel_size, strides=self.strides, padding="same", use_bias=False,
            input_quantizer=self._input_quantizer.new(),
            kernel_quantizer=self._kernel_quantizer.new(),
            pad_values=self.pad_values, kernel_initializer=self.kernel_initializer,
            kernel_constraint=None if self.kernel_clip is None else WeightClip(self.kernel_clip),
            name=f"{name}_binary_conv")
        self.norm1 = _batch_norm(f"{name}_norm1")
        self.activation2 = _prelu(f"{name}_activation2")
        self.activation1 = _prelu(f"{name}_activation1") if self.attention else None
        self.pooling = (keras.layers.AveragePooling2D(2, strides=2, padding="same",
                                                      name=f"{name}_pooling")
                        if self.strides == 2 else None)
        self.recoupling = (InfoRecoupling(ratio=self.se_ratio, gate=self.se_gate,
                                          se_bits=self.se_bits, name=f"{name}_recoupling")
                           if self.info_recoupling else None)
        self.norm2 = _batch_norm(f"{name}_norm2") if self.has_norm2 else None

        shape = build_chain([self.move, self.binary_conv, self.norm1, self.activation2],
                             input_shape)
        build_chain([self.activation1], input_shape)
        build_chain([self.pooling], input_shape)
        if self.recoupling is not None:
            self.recoupling.build([shape, shape])
        build_chain([self.norm2], shape)

    # The binary conv and the BN that reads its output directly and alone.
    def batch_norm_pairs(self) -> list[tuple]:
        """[(binary conv, BN_1)] when the unit's conv is binary (input and kernel binarized),
        else []: the BN the converter may fold into the conv's export. Needs a built unit."""
        if not self.built:
            raise ValueError(
                f"Layer {self.name!r} ({type(self).__name__}) is not built: batch_norm_pairs() "
                "needs its sub-layers. Call it on data (or build it) first.")
        return [(self.binary_conv, self.norm1)] if self.binary_conv.is_binary else []

    @property
    def binary_layers(self) -> list:
        """The unit's binary convolution, if its input and kernel are binarized."""
        return [self.binary_conv] if self.built and self.binary_conv.is_binary else []

    def _binary_branch(self, inputs, training):
        x = self.binary_conv(self.move(inputs))
        if self.binary_conv.is_binary:
            x = call_layer(self.norm1, x, training=training)
        else:
            x = self.norm1(x, training=training)
        return self.activation2(x)

    def call(self, inputs, training=None):
        pooled = inputs if self.pooling is None else self.pooling(inputs)
        x = self._binary_branch(inputs, training)
        if self.recoupling is not None:
            x = self.recoupling([pooled, x])
        return self._residual(inputs, pooled, x, training)

    def _residual(self, inputs, pooled, x, training):
        raise NotImplementedError

    def compute_output_shape(self, input_shape):
        batch, height, width, channels = tuple(input_shape)
        return (batch, downsampled(height, self.strides), downsampled(width, self.strides),
                channels)

    def get_config(self):
        return {**super().get_config(), "strides": self.strides,
                "info_recoupling": self.info_recoupling, "pad_values": self.pad_values,
                "se_ratio": self.se_ratio, "se_gate": self.se_gate, "se_bits": self.se_bits,
                "input_quantizer": self._input_quantizer.serialize(),
                "kernel_quantizer": self._kernel_quantizer.serialize(),
                "kernel_clip": self.kernel_clip,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer)}


@_register
class ELMAttention(_BNextUnit):
    """BNext's 3x3 ELM-Attention unit (`Attention` in the official code, arXiv 2211.12933;
    see docs/methods.md, section 'BNext'), C -> C:

        residual = PReLU_1(x_in)                      (average-pooled 2x2 when strided)
        x   = PReLU_2(BN_1(BinConv3x3_s(HardSign(LearnableBias(x_in)))))
        x   = SE(s * x_in' + (1 - s) * x) * x         (info_recoupling=True)
        out = BN_2(x * residual) + residual

    The multiplicative gating by the PReLU'd residual is the ELM attention; BN_2 is applied
    with and without info-recoupling, as the official code does.

    Args:
        strides: 1 or 2 (the residual and x_in' are average-pooled 2x2, SAME, when 2).
        info_recoupling: use the SE-gated mix (the official ``infor_recoupling``).
        pad_values: SAME padding of the binarized input: 0.0 zeros (official), 1.0 the +1
            level (LCE's native "same-one").
        se_ratio, se_gate, se_bits: the `SqueezeExpand` branch (8, "sigmoid", None; se_bits=8
            for the 8-bit variant).
        input_quantizer, kernel_quantizer: the binary conv's quantizers ("hard_sign",
            "bnext_weight"; anything `kbnn.quantizers.get` accepts, None for float).
        kernel_clip: the latent kernel is clipped to [-kernel_clip, kernel_clip] after each
            update (1.5, the official in-place clamp; None: no constraint).
        kernel_initializer: the latent kernel's init (default normal with stddev 0.001, the
            official randn * 0.001).
    """

    kernel_size = 3
    attention = True

    def _residual(self, inputs, pooled, x, training):
        residual = self.activation1(inputs)
        if self.pooling is not None:
            residual = self.pooling(residual)
        return self.norm2(x * residual, training=training) + residual


@_register
class BNextFFN(_BNextUnit):
    """BNext's FFN units (`FFN_3x3` / `FFN_1x1` in the official code, arXiv 2211.12933; see
    docs/methods.md, section 'BNext'), C -> C:

        x   = PReLU_2(BN_1(BinConv_kxk,s(HardSign(LearnableBias(x_in)))))
        x   = SE(s * x_in' + (1 - s) * x) * x         (info_recoupling=True)
        out = BN_2(x) + x_in'                         (x_in' = x_in, pooled 2x2 when strided)

    As in the official code, the unit without info-recoupling has no BN_2
    (``out = x + x_in'``), and the official unused ``activation1`` PReLU is not created.

    Args:
        kernel_size: 3 (FFN_3x3) or 1 (FFN_1x1).
        strides, info_recoupling, pad_values, se_ratio, se_gate, se_bits, input_quantizer,
        kernel_quantizer, kernel_clip, kernel_initializer: as `ELMAttention`.
    """

    def __init__(self, kernel_size: int = 3, strides: int = 1, **kwargs):
        if isinstance(kernel_size, (tuple, list)) and len(set(kernel_size)) == 1:
            kernel_size = kernel_size[0]
        if isinstance(kernel_size, bool) or kernel_size not in (1, 3):
            raise argument_error("BNextFFN", "kernel_size", "1 or 3", kernel_size)
        self.kernel_size = int(kernel_size)
        super().__init__(strides=strides, **kwargs)

    @property
    def has_norm2(self) -> bool:
        return self.info_recoupling

    def _residual(self, inputs, pooled, x, training):
        if self.norm2 is not None:
            x = self.norm2(x, training=training)
        return x + pooled

    def get_config(self):
        return {**super().get_config(), "kernel_size": self.kernel_size}
