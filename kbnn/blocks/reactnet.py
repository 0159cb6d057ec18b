"""ReActNet-A block: the MobileNetV1-derived binary block with RSign and RPReLU."""

from __future__ import annotations

import keras
from keras import ops

from kbnn import layers as kl
from kbnn.blocks._common import (
    BinaryBlock,
    batch_norm,
    binary_conv,
    build_chain,
    check_pad_values,
    check_positive_int,
    check_strides,
)

__all__ = ["ReActNetBlock"]


@keras.saving.register_keras_serializable(package="kbnn")
class ReActNetBlock(BinaryBlock):
    """ReActNet-A block (Liu, Shen, Savvides, Cheng, "ReActNet: Towards Precise Binary Neural
    Network with Generalized Activation Functions", arXiv 2003.03488; METHODS.md §1.4, after
    the official `mobilenet/2_step2/reactnet.py::BasicBlock`). With C = input channels:

        out1 = RPReLU_1( BN(BinConv3x3_s(C->C)(RSign(x))) + (AvgPool2x2(x) if s == 2 else x) )
        t    = RSign(out1)
        out  = RPReLU_2( BN(BinConv1x1(C->C)(t)) + out1 )                  # out_channels == C
        out  = RPReLU_2( concat(BN_a(BinConv1x1_a(C->C)(t)) + out1,
                                BN_b(BinConv1x1_b(C->C)(t)) + out1) )      # out_channels == 2C

    Binary convolutions: `RSign` inputs ("rsign": learnable per-channel threshold, ApproxSign
    gradient), `ScaledSign` kernels ("scaled_sign": sign times the per-output-channel mean |W|,
    scale without gradient, clipped STE), no bias, each followed by its own BN. Every binary
    conv has a parameter-free real shortcut; the channel-doubling form duplicates it.

    In the channel-doubling form the two 1x1 convolutions read the same binarized tensor, as in
    the official code (one `move21` bias, then one sign). That shared RSign is written as its
    exact equivalent `LearnableBias(b)` followed by ApproxSign inputs on both convolutions
    (threshold = -b; same forward and the same gradients to x and to b), so that each
    `QuantConv2D` stays a binary layer of its own and converts to one `LceBconv2d`.

    Latent kernels use Keras' default init (glorot uniform): the official rand * 0.001 init
    only works with its two-step recipe, whose step 2 starts from step-1 weights.

    Args:
        out_channels: C (same width) or 2C (channel doubling); checked when the block is built.
        strides: 1 or 2 (stride of the 3x3 convolution; the shortcut then average-pools 2x2).
        pad_values: SAME padding of the 3x3 convolution's binarized input: 0.0 pads with zeros
            (the official code), 1.0 pads with +1 (LCE's native "same-one").
    """

    def __init__(self, out_channels: int, strides: int = 1, pad_values: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.out_channels = check_positive_int("ReActNetBlock", "out_channels", out_channels)
        self.strides = check_strides("ReActNetBlock", strides)
        self.pad_values = check_pad_values("ReActNetBlock", pad_values)

    @property
    def doubles_channels(self) -> bool:
        """True for the channel-doubling form (out_channels == 2 * input channels)."""
        return self.built and self.out_channels != self._in_channels

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is None or self.out_channels not in (channels, 2 * channels):
            raise ValueError(
                f"Invalid value for argument `out_channels` of ReActNetBlock {self.name!r}. "
                f"Expected the number of input channels ({channels}) or twice it "
                f"({None if channels is None else 2 * channels}). "
                f"Received out_channels={self.out_channels}."
            )
        self._in_channels = int(channels)
        name = self.name
        self.conv3x3 = binary_conv(channels, 3, self.strides, "rsign", "scaled_sign",
                                   self.pad_values, name=f"{name}_conv3x3")
        self.bn3x3 = batch_norm(f"{name}_bn3x3")
        self.pool = (keras.layers.AveragePooling2D(2, strides=2, padding="same",
                                                   name=f"{name}_pool")
                     if self.strides == 2 else None)
        self.rprelu1 = kl.RPReLU(name=f"{name}_rprelu1")
        if self.out_channels == channels:
            self.move = None
            self.convs1x1 = [binary_conv(channels, 1, 1, "rsign", "scaled_sign", 0.0,
                                         name=f"{name}_conv1x1")]
            self.bns1x1 = [batch_norm(f"{name}_bn1x1")]
        else:
            self.move = kl.LearnableBias(name=f"{name}_move")
            self.convs1x1 = [binary_conv(channels, 1, 1, "approx_sign", "scaled_sign", 0.0,
                                         name=f"{name}_conv1x1_{part}") for part in "ab"]
            self.bns1x1 = [batch_norm(f"{name}_bn1x1_{part}") for part in "ab"]
        self.rprelu2 = kl.RPReLU(name=f"{name}_rprelu2")

        shape = build_chain([self.conv3x3, self.bn3x3, self.rprelu1], input_shape)
        build_chain([self.pool], input_shape)
        build_chain([self.move], shape)
        for conv, bn in zip(self.convs1x1, self.bns1x1):
            build_chain([conv, bn], shape)
        build_chain([self.rprelu2], shape[:-1] + (self.out_channels,))

    def _sublayers(self) -> list:
        return [self.conv3x3, self.bn3x3, self.pool, self.rprelu1, self.move,
                *self.convs1x1, *self.bns1x1, self.rprelu2]

    def _output_channels(self, input_channels: int) -> int:
        return self.out_channels

    def call(self, inputs, training=None):
        shortcut = inputs if self.pool is None else self.pool(inputs)
        out1 = self.bn3x3(self.conv3x3(inputs), training=training) + shortcut
        out1 = self.rprelu1(out1)
        t = out1 if self.move is None else self.move(out1)
        branches = [bn(conv(t), training=training) + out1
                    for conv, bn in zip(self.convs1x1, self.bns1x1)]
        out2 = branches[0] if len(branches) == 1 else ops.concatenate(branches, axis=-1)
        return self.rprelu2(out2)

    def get_config(self):
        return {**super().get_config(), "out_channels": self.out_channels,
                "strides": self.strides, "pad_values": self.pad_values}
