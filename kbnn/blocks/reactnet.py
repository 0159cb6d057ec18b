"""ReActNet-A block: the MobileNetV1-derived binary block with RSign and RPReLU."""

from __future__ import annotations

import keras
from keras import ops

from kbnn import layers as kl
from kbnn.blocks._common import (
    BinaryBlock,
    QuantizerSpec,
    batch_norm,
    binary_conv,
    build_chain,
    check_pad_values,
    check_positive_int,
    check_same_or_double_width,
    check_strides,
    check_symmetric_padding,
)
from kbnn.quantizers import RSign

__all__ = ["ReActNetBlock"]


@keras.saving.register_keras_serializable(package="kbnn")
class ReActNetBlock(BinaryBlock):
    """ReActNet-A block (Liu, Shen, Savvides, Cheng, "ReActNet: Towards Precise Binary Neural
    Network with Generalized Activation Functions", arXiv 2003.03488; see docs/methods.md,
    section 'ReActNet'; after the official `mobilenet/2_step2/reactnet.py::BasicBlock`). With
    C = input channels:

        out1 = RPReLU_1( BN(BinConv3x3_s(C->C)(RSign(x))) + (AvgPool2x2(x) if s == 2 else x) )
        t    = RSign(out1)
        out  = RPReLU_2( BN(BinConv1x1(C->C)(t)) + out1 )                  # out_channels == C
        out  = RPReLU_2( concat(BN_a(BinConv1x1_a(C->C)(t)) + out1,
                                BN_b(BinConv1x1_b(C->C)(t)) + out1) )      # out_channels == 2C

    Binary convolutions: by default `RSign` inputs ("rsign": learnable per-channel threshold,
    ApproxSign gradient), `ScaledSign` kernels ("scaled_sign": sign times the
    per-output-channel mean |W|, scale without gradient, clipped STE), no bias, each followed by
    its own BN. Every binary conv has a parameter-free real shortcut; the channel-doubling form
    duplicates it. `batch_norm_pairs()` lists each binary conv with its BN.

    In the channel-doubling form the two 1x1 convolutions read the same binarized tensor, as in
    the official code (one `move21` bias, then one sign). With the default "rsign" that shared
    RSign is written as its exact equivalent `LearnableBias(b)` followed by ApproxSign inputs
    on both convolutions (threshold = -b; same forward and the same gradients to x and to b),
    so that each `QuantConv2D` stays a binary layer of its own and converts to one `LceBconv2d`.

    Other quantizers: `input_quantizer` and `kernel_quantizer` apply to every convolution (each
    gets its own copy). In the channel-doubling form:

    * an `RSign` input quantizer (with its default arguments) gives the LearnableBias +
      ApproxSign form above; an `RSign` with another initializer, a regularizer or
      ``trainable=False`` has no such equivalent and raises a ValueError at build;
    * any other input quantizer is used directly on both 1x1 convolutions, without a
      LearnableBias: for a quantizer without parameters ("ste_sign", "approx_sign",
      "ede_sign", ...) that is exactly one shared sign; a quantizer with parameters gets one
      independent copy per convolution;
    * ``input_quantizer=None`` (a float block, e.g. a float twin) keeps the LearnableBias, the
      official `move21` without its sign, so the float block has the same weights as the
      default one minus the RSign thresholds.

    RepBNN (arXiv 2207.09049; docs/methods.md, section 'RepBNN') is ``replicate=beta``: every
    binary convolution of the block (the 3x3, the 1x1 or both 1x1s) has C / beta output
    channels, tiled `beta` times along the channel axis (``[y, y, ..., y]``, not interleaved;
    `QuantConv2D(replicate=beta)`) before its BN of C channels, so the block keeps the widths
    above (BN, RPReLU and shortcuts on C channels) at the binary cost of convolutions with C /
    beta outputs. Each such conv converts to one `LceBconv2d` of C / beta channels and a TILE;
    its BN (one constant per replicated channel) stays after the TILE, unfolded.

    Latent kernels use Keras' default init (glorot uniform): the official rand * 0.001 init
    only works with its two-step recipe, whose step 2 starts from step-1 weights.

    Args:
        out_channels: C (same width) or 2C (channel doubling); checked when the block is built.
        strides: 1 or 2 (stride of the 3x3 convolution; the shortcut then average-pools 2x2).
        pad_values: SAME padding of the 3x3 convolution's binarized input: 0.0 pads with zeros
            (the official code), 1.0 pads with +1 (LCE's native "same-one").
        symmetric_padding: False (default): TensorFlow's SAME padding of the 3x3
            convolution, which for a stride-2 window on an even size pads 0 before and 1 after;
            True: PyTorch's padding=1 on both sides, as the official PyTorch code (what
            `kbnn.zoo` builds, so that PyTorch checkpoints compute the same windows).
        input_quantizer: quantizer of every convolution's input (alias, config dict,
            `Quantizer` instance, or None for float inputs); default "rsign".
        kernel_quantizer: quantizer of every convolution's kernel (same forms); default
            "scaled_sign". ``kernel_quantizer=None`` with a binary input is ReActNet's first
            training step (binary activations, real weights).
        replicate: RepBNN's replication factor beta (1: none, the ReActNet block); the input
            channels must be a multiple of it (checked when the block is built).
    """

    def __init__(self, out_channels: int, strides: int = 1, pad_values: float = 0.0, symmetric_padding: bool = False,
                 input_quantizer="rsign", kernel_quantizer="scaled_sign", replicate: int = 1,
                 **kwargs):
        super().__init__(**kwargs)
        self.out_channels = check_positive_int("ReActNetBlock", "out_channels", out_channels)
        self.replicate = check_positive_int("ReActNetBlock", "replicate", replicate)
        self.strides = check_strides("ReActNetBlock", strides)
        self.pad_values = check_pad_values("ReActNetBlock", pad_values)
        self.symmetric_padding = check_symmetric_padding("ReActNetBlock", symmetric_padding)
        self._init_quantizers(input_quantizer, kernel_quantizer)

    @property
    def doubles_channels(self) -> bool:
        """True for the channel-doubling form (out_channels == 2 * input channels)."""
        return self.built and self.out_channels != self._in_channels

    def _shared_sign_quantizer(self):
        """(use a LearnableBias, input quantizer argument of both 1x1 convs) for the
        channel-doubling form."""
        spec = self._input_quantizer_spec
        if spec.is_float:
            return True, None
        if spec.cls is not RSign:
            return False, None
        default = QuantizerSpec(RSign(name="default_rsign")).config()
        given = spec.config()
        if {k: v for k, v in given.items() if k != "dtype"} != {
                k: v for k, v in default.items() if k != "dtype"}:
            raise ValueError(
                f"Invalid value for argument `input_quantizer` of ReActNetBlock {self.name!r}. "
                "Expected, in the channel-doubling form (out_channels == 2 * input channels), "
                "an RSign with its default arguments (zero threshold init, no regularizer, "
                "trainable): its shared sign is written as LearnableBias + ApproxSign, which "
                "has no equivalent for other RSign arguments; use another input quantizer or "
                f"the same-width form. Received input_quantizer={spec.serialize()!r}."
            )
        return True, "approx_sign"

    def build(self, input_shape):
        channels = check_same_or_double_width(self, input_shape[-1])
        if channels % self.replicate:
            raise ValueError(
                f"Invalid value for argument `replicate` of ReActNetBlock {self.name!r}. "
                f"Expected a divisor of the number of input channels ({channels}): each binary "
                "conv has input channels / replicate outputs. "
                f"Received replicate={self.replicate}.")
        self._in_channels = int(channels)
        name = self.name
        inputs, kernels = self._input_quantizer_spec, self._kernel_quantizer_spec
        filters, rep = channels // self.replicate, {"replicate": self.replicate}
        self.conv3x3 = binary_conv(filters, 3, self.strides, inputs.new(), kernels.new(),
                                   self.pad_values, symmetric_padding=self.symmetric_padding,
                                   name=f"{name}_conv3x3", **rep)
        self.bn3x3 = batch_norm(f"{name}_bn3x3")
        self.pool = (keras.layers.AveragePooling2D(2, strides=2, padding="same",
                                                   name=f"{name}_pool")
                     if self.strides == 2 else None)
        self.rprelu1 = kl.RPReLU(name=f"{name}_rprelu1")
        if self.out_channels == channels:
            self.move = None
            self.convs1x1 = [binary_conv(filters, 1, 1, inputs.new(), kernels.new(), 0.0,
                                         name=f"{name}_conv1x1", **rep)]
            self.bns1x1 = [batch_norm(f"{name}_bn1x1")]
        else:
            use_bias, shared_input = self._shared_sign_quantizer()
            self.move = kl.LearnableBias(name=f"{name}_move") if use_bias else None
            self.convs1x1 = [
                binary_conv(filters, 1, 1, shared_input if use_bias else inputs.new(),
                            kernels.new(), 0.0, name=f"{name}_conv1x1_{part}", **rep)
                for part in "ab"]
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

    def _conv_batch_norms(self) -> list[tuple]:
        return [(self.conv3x3, self.bn3x3), *zip(self.convs1x1, self.bns1x1)]

    def _output_channels(self, input_channels: int) -> int:
        return self.out_channels

    def call(self, inputs, training=None):
        shortcut = inputs if self.pool is None else self.pool(inputs)
        out1 = self._conv_bn(self.conv3x3, self.bn3x3, inputs, training) + shortcut
        out1 = self.rprelu1(out1)
        t = out1 if self.move is None else self.move(out1)
        branches = [self._conv_bn(conv, bn, t, training) + out1
                    for conv, bn in zip(self.convs1x1, self.bns1x1)]
        out2 = branches[0] if len(branches) == 1 else ops.concatenate(branches, axis=-1)
        return self.rprelu2(out2)

    def get_config(self):
        return {**super().get_config(), "out_channels": self.out_channels,
                "strides": self.strides, "pad_values": self.pad_values,
                "symmetric_padding": self.symmetric_padding, "replicate": self.replicate,
                **self._quantizer_config()}
