"""BiMLP (Xu, Chen, Wang, "BiMLP: Compact Binary Architectures for Vision Multi-Layer
Perceptrons", NeurIPS 2022, arXiv 2212.14158; official code `mindspore-ai/models`,
`research/cv/BiMLP/src/bimlp.py`; see docs/methods.md, section 'BiMLP'): the multi-branch binary
(MBB) channel-mixing block with uni-shortcuts, and the downsampling layer."""

from __future__ import annotations

import keras
from keras import ops

from kbnn.blocks._common import (
    BinaryBlock,
    batch_norm,
    binary_conv,
    build_chain,
    check_pad_values,
    check_positive_int,
    downsampled,
)
from kbnn.layers.bnn import LearnableBias, RPReLU
from kbnn.layers.conv import QuantDepthwiseConv2D

__all__ = ["BiMLPBlock", "BiMLPDownsample", "uni_shortcut"]


def uni_shortcut(x, out_channels: int):
    """BiMLP's uni-shortcut from C to `out_channels` channels (the last axis): C -> r C tiles the
    map r times, ``[x, x, ..., x]``; r C -> C averages groups of r consecutive channels
    (output channel j is the mean of channels j r ... j r + r - 1, the official
    ``(x[:, ::4] + x[:, 1::4] + x[:, 2::4] + x[:, 3::4]) / 4`` for r = 4); C -> C is the identity.
    """
    channels = int(x.shape[-1])
    if out_channels == channels:
        return x
    if out_channels % channels == 0:
        return ops.tile(x, (1,) * (len(x.shape) - 1) + (out_channels // channels,))
    if channels % out_channels == 0:
        ratio = channels // out_channels
        grouped = ops.reshape(x, (-1, *x.shape[1:-1], out_channels, ratio))
        return ops.mean(grouped, axis=-1)
    raise ValueError(
        f"uni_shortcut maps C channels to a multiple or a divisor of C. Received C={channels} "
        f"and out_channels={out_channels}.")


@keras.saving.register_keras_serializable(package="kbnn")
class BiMLPBlock(BinaryBlock):
    """BiMLP's multi-branch binary (MBB) block (Xu, Chen, Wang, arXiv 2212.14158; the channel
    mixing of the official `WaveBlock`; see docs/methods.md, section 'BiMLP'). Keeps the
    resolution and the width C:

        m   = BN(x)
        a   = binary MLP(m):                                       # C -> r C -> C
              h = RPReLU(BN(BinFC1(LearnableBias(m))) + RPReLU(BN(tile_r(m))))
              a = RPReLU(BN(BinFC2(LearnableBias(h))) + groupmean_r(h))
        b   = RPReLU(BN(DWConv_1xk(m_h)) + m_h),   m_h = LearnableBias(m)
        c   = RPReLU(BN(DWConv_kx1(m_w)) + m_w),   m_w = LearnableBias(m)
        out = x + w0 b + w1 c + (1 - w0 - w1) a      # w0, w1 learnt (mix_h, mix_w), init 0

    The binary fully connected layers are 1x1 binary convolutions (`QuantConv2D`), each
    preceded by a `LearnableBias` and followed by a BN, the uni-shortcut (`uni_shortcut`: tile
    when widening, group mean when narrowing) and an RPReLU. The expanding shortcut is itself
    normalised and activated (BN + RPReLU), as in the official code.

    The depthwise 1xk and kx1 branches are binary in the paper, but LCE has no binary depthwise
    convolution, so a binary depthwise conv cannot become an `LceBconv2d` (a strict conversion
    refuses it, naming the layer). By default (`binary_depthwise=False`) they are float
    depthwise convs (7 C multiply-accumulates per position each); ``binary_depthwise=True``
    binarizes them as the paper (then convert with ``strict=False``: they stay float ops).

    Wave-MLP's token-mixing unit (PATM), which precedes this block in BiMLP, is not part of it.

    Args:
        mlp_ratio: r, the expansion of the binary MLP (4).
        kernel_size: k of the depthwise branches (7).
        binary_depthwise: binarize the depthwise branches (False, see above).
        pad_values: SAME padding of a binarized depthwise input (0.0 zeros, 1.0 its +1 level).
        input_quantizer: quantizer of the binary layers' inputs ("ste_sign": sign with the
            clipped STE; the official port quantizes with round(clip(x, -1, 1)), which can give
            0, kbnn uses the sign).
        kernel_quantizer: quantizer of their kernels ("scaled_sign": XNOR weights,
            sign(W) mean|W| per output channel, the official "xnor" weights).
    """

    def __init__(self, mlp_ratio: int = 4, kernel_size: int = 7, binary_depthwise: bool = False,
                 pad_values: float = 0.0, input_quantizer="ste_sign",
                 kernel_quantizer="scaled_sign", **kwargs):
        super().__init__(**kwargs)
        self.mlp_ratio = check_positive_int("BiMLPBlock", "mlp_ratio", mlp_ratio)
        self.kernel_size = check_positive_int("BiMLPBlock", "kernel_size", kernel_size)
        if not isinstance(binary_depthwise, bool):
            raise ValueError(  # noqa: TRY004 (bad argument value: ValueError by convention)
                "Invalid value for argument `binary_depthwise` of BiMLPBlock. Expected True or "
                f"False. Received binary_depthwise={binary_depthwise!r}.")
        self.binary_depthwise = binary_depthwise
        self.pad_values = check_pad_values("BiMLPBlock", pad_values)
        self._init_quantizers(input_quantizer, kernel_quantizer)

    def _fc(self, filters: int, name: str):
        return binary_conv(filters, 1, 1, self._input_quantizer_spec.new(),
                           self._kernel_quantizer_spec.new(), self.pad_values,
                           name=f"{self.name}_{name}")

    def _depthwise(self, kernel_size, name: str):
        binary = self.binary_depthwise
        return QuantDepthwiseConv2D(
            kernel_size, padding="same", use_bias=False,
            input_quantizer=self._input_quantizer_spec.new() if binary else None,
            depthwise_quantizer=self._kernel_quantizer_spec.new() if binary else None,
            pad_values=self.pad_values if binary else 0.0, name=f"{self.name}_{name}")

    def build(self, input_shape):
        channels = int(input_shape[-1])
        hidden = channels * self.mlp_ratio
        n = self.name
        self.norm = batch_norm(f"{n}_norm")
        # branch a: the binary MLP
        self.expand_bn = batch_norm(f"{n}_expand_bn")
        self.expand_act = RPReLU(name=f"{n}_expand_act")
        self.fc1_bias = LearnableBias(name=f"{n}_fc1_bias")
        self.fc1 = self._fc(hidden, "fc1")
        self.fc1_bn = batch_norm(f"{n}_fc1_bn")
        self.fc1_act = RPReLU(name=f"{n}_fc1_act")
        self.fc2_bias = LearnableBias(name=f"{n}_fc2_bias")
        self.fc2 = self._fc(channels, "fc2")
        self.fc2_bn = batch_norm(f"{n}_fc2_bn")
        self.fc2_act = RPReLU(name=f"{n}_fc2_act")
        # branches b and c: depthwise 1 x k and k x 1
        k = self.kernel_size
        self.h_bias = LearnableBias(name=f"{n}_h_bias")
        self.h_conv = self._depthwise((1, k), "h_conv")
        self.h_bn = batch_norm(f"{n}_h_bn")
        self.h_act = RPReLU(name=f"{n}_h_act")
        self.w_bias = LearnableBias(name=f"{n}_w_bias")
        self.w_conv = self._depthwise((k, 1), "w_conv")
        self.w_bn = batch_norm(f"{n}_w_bn")
        self.w_act = RPReLU(name=f"{n}_w_act")
        # w0 and w1 as two scalars (a per-element parameter for kbnn.profile)
        self.mix_h = self.add_weight(name="mix_h", shape=(), initializer="zeros")
        self.mix_w = self.add_weight(name="mix_w", shape=(), initializer="zeros")
        shape = tuple(input_shape)
        wide = (*shape[:-1], hidden)
        build_chain([self.norm], shape)
        build_chain([self.expand_bn, self.expand_act], wide)
        build_chain([self.fc1_bias, self.fc1, self.fc1_bn, self.fc1_act], shape)
        build_chain([self.fc2_bias, self.fc2, self.fc2_bn, self.fc2_act], wide)
        build_chain([self.h_bias, self.h_conv, self.h_bn, self.h_act], shape)
        build_chain([self.w_bias, self.w_conv, self.w_bn, self.w_act], shape)

    def _sublayers(self) -> list:
        return [self.norm, self.expand_bn, self.expand_act, self.fc1_bias, self.fc1,
                self.fc1_bn, self.fc1_act, self.fc2_bias, self.fc2, self.fc2_bn, self.fc2_act,
                self.h_bias, self.h_conv, self.h_bn, self.h_act, self.w_bias, self.w_conv,
                self.w_bn, self.w_act]

    def _conv_batch_norms(self) -> list[tuple]:
        return [(self.fc1, self.fc1_bn), (self.fc2, self.fc2_bn)]

    def _output_channels(self, input_channels: int) -> int:
        return input_channels

    def binary_mlp(self, mid, training=None):
        """Branch a: the binary MLP with its two uni-shortcuts."""
        hidden = int(mid.shape[-1]) * self.mlp_ratio
        expanded = self.expand_act(self.expand_bn(uni_shortcut(mid, hidden), training=training))
        h = self._conv_bn(self.fc1, self.fc1_bn, self.fc1_bias(mid), training) + expanded
        h = self.fc1_act(h)
        a = self._conv_bn(self.fc2, self.fc2_bn, self.fc2_bias(h), training)
        return self.fc2_act(a + uni_shortcut(h, int(mid.shape[-1])))

    def _depthwise_branch(self, bias, conv, bn, act, mid, training):
        shifted = bias(mid)
        return act(bn(conv(shifted), training=training) + shifted)

    def call(self, inputs, training=None):
        mid = self.norm(inputs, training=training)
        a = self.binary_mlp(mid, training)
        b = self._depthwise_branch(self.h_bias, self.h_conv, self.h_bn, self.h_act, mid,
                                   training)
        c = self._depthwise_branch(self.w_bias, self.w_conv, self.w_bn, self.w_act, mid,
                                   training)
        w0, w1 = ops.cast(self.mix_h, inputs.dtype), ops.cast(self.mix_w, inputs.dtype)
        return inputs + w0 * b + w1 * c + (1.0 - w0 - w1) * a

    def get_config(self):
        return {**super().get_config(), "mlp_ratio": self.mlp_ratio,
                "kernel_size": self.kernel_size, "binary_depthwise": self.binary_depthwise,
                "pad_values": self.pad_values, **self._quantizer_config()}


@keras.saving.register_keras_serializable(package="kbnn")
class BiMLPDownsample(keras.layers.Layer):
    """BiMLP's downsampling between stages (arXiv 2212.14158; the official `Downsample`; see
    docs/methods.md, section 'BiMLP'): a real 1x1 convolution (with bias) to `filters`
    channels, BN, RPReLU, then the mean of four max-poolings with kernels 2, 3, 5 and 7, stride
    2 and SAME padding (output size ceil(H / 2) x ceil(W / 2)).

    Args:
        filters: output channels.
    """

    POOL_SIZES = (2, 3, 5, 7)

    def __init__(self, filters: int, **kwargs):
        super().__init__(**kwargs)
        self.filters = check_positive_int("BiMLPDownsample", "filters", filters)

    def build(self, input_shape):
        n = self.name
        self.proj = keras.layers.Conv2D(self.filters, 1, use_bias=True, name=f"{n}_proj")
        self.bn = batch_norm(f"{n}_bn")
        self.act = RPReLU(name=f"{n}_act")
        self.pools = [keras.layers.MaxPooling2D(k, strides=2, padding="same",
                                                name=f"{n}_pool{k}") for k in self.POOL_SIZES]
        build_chain([self.proj, self.bn, self.act], input_shape)
        self.built = True

    def call(self, inputs, training=None):
        x = self.act(self.bn(self.proj(inputs), training=training))
        return sum(pool(x) for pool in self.pools) / float(len(self.pools))

    def compute_output_shape(self, input_shape):
        batch, height, width, _ = tuple(input_shape)
        return (batch, downsampled(height, 2), downsampled(width, 2), self.filters)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters}
