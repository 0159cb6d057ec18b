"""AdaBin block: adaptive binary sets, BN, real shortcut and Maxout."""

from __future__ import annotations

import keras

from kbnn import layers as kl
from kbnn import quantizers as kq
from kbnn.blocks._common import (
    BinaryBlock,
    batch_norm,
    binary_conv,
    build_chain,
    check_pad_values,
    check_positive_int,
    check_strides,
)
from kbnn.blocks.shortcut import AvgPoolShortcut

__all__ = ["AdaBinBlock"]


@keras.saving.register_keras_serializable(package="kbnn")
class AdaBinBlock(BinaryBlock):
    """AdaBin block (Tu, Chen, Ren, Wang, "AdaBin: Improving Binary Neural Networks with
    Adaptive Binary Sets", arXiv 2208.08084; METHODS.md §3.3, after the official
    `imagenet/nets/resnet18.py`):

        out = Maxout( BN(AdaBinConv3x3_s(x)) + shortcut(x) )

    AdaBinConv is a `QuantConv2D` with input quantizer "adabin_activation" (`AdaBinActivation`:
    learnable scalar alpha, beta; the set {beta - alpha, beta + alpha}) and kernel quantizer
    "adabin_weight" (`AdaBinWeight`: per output channel centre = mean, half-distance =
    population std). No bias. The official ResNet-18 BasicBlock is two of these blocks (a
    shortcut around each conv, Bi-Real style). The shortcut is the identity, or
    `AvgPoolShortcut` (AvgPool 2x2 -> real 1x1 conv -> BN) when the block changes the
    resolution or the width. Latent kernels start from normal(0, sqrt(2 / (k*k*C_out))), the
    official init.

    Args:
        filters: output channels.
        strides: 1 or 2.
        pad_values: SAME padding of the binarized activation. 0.0 pads with zeros, as the
            official code does; the converter then adds a constant border-correction map. 1.0
            pads with the +1 level of the activation set, which LCE runs natively
            ("same-one"): the faster export.
        activation_form: "paper" (default, ``alpha * sign(u) + beta``) or "code" (the
            official code's ``alpha * (sign(u) + beta)``); see `AdaBinActivation`. To
            reproduce weights trained with the official code use ``activation_form="code"``
            and ``pad_values=0.0``.
    """

    def __init__(self, filters: int, strides: int = 1, pad_values: float = 0.0,
                 activation_form: str = "paper", **kwargs):
        super().__init__(**kwargs)
        if activation_form not in kq.AdaBinActivation.FORMS:
            raise ValueError(
                "Invalid value for argument `activation_form` of AdaBinBlock. Expected one of "
                f"{kq.AdaBinActivation.FORMS}. Received activation_form={activation_form!r}."
            )
        self.activation_form = activation_form
        self.filters = check_positive_int("AdaBinBlock", "filters", filters)
        self.strides = check_strides("AdaBinBlock", strides)
        self.pad_values = check_pad_values("AdaBinBlock", pad_values)

    def build(self, input_shape):
        channels = input_shape[-1]
        init = keras.initializers.VarianceScaling(2.0, "fan_out", "untruncated_normal")
        self.conv = binary_conv(self.filters, 3, self.strides,
                                kq.AdaBinActivation(form=self.activation_form),
                                "adabin_weight", self.pad_values, name=f"{self.name}_conv",
                                kernel_initializer=init)
        self.bn = batch_norm(f"{self.name}_bn")
        self.shortcut = (AvgPoolShortcut(self.filters, self.strides, name=f"{self.name}_shortcut")
                         if self.strides != 1 or channels != self.filters else None)
        self.maxout = kl.Maxout(name=f"{self.name}_maxout")
        build_chain([self.conv, self.bn, self.maxout], input_shape)
        build_chain([self.shortcut], input_shape)

    def _sublayers(self) -> list:
        return [self.conv, self.bn, self.shortcut, self.maxout]

    def _output_channels(self, input_channels: int) -> int:
        return self.filters

    def call(self, inputs, training=None):
        out = self.bn(self.conv(inputs), training=training)
        shortcut = inputs if self.shortcut is None else self.shortcut(inputs, training=training)
        return self.maxout(out + shortcut)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "strides": self.strides,
                "pad_values": self.pad_values, "activation_form": self.activation_form}
