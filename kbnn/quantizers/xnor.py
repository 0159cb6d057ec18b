"""XNOR-Net binary weights and activation scale (Rastegari et al., ECCV 2016, arXiv 1603.05279;
see docs/methods.md, section 'XNOR-Net')."""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf
from keras import ops

from kbnn.quantizers.base import BinaryForm, Quantizer
from kbnn.quantizers.channelwise import channel_count, scaled_sign
from kbnn.quantizers.registry import register_alias
from kbnn.quantizers.sign import channel_mean_abs

__all__ = ["XnorWeight", "xnor_activation_scale", "xnor_weight", "xnor_weight_grad"]


def xnor_weight_grad(w):
    """XNOR-Net weight gradient factor ``1/n + alpha * 1[|W| < 1]`` per output channel
    (Rastegari et al., arXiv 1603.05279; see docs/methods.md, section 'XNOR-Net').

    n = elements per output channel, alpha = mean|W|: the derivative of alpha * sign(W) with
    d sign/dW taken as the STE 1[|W| < 1], the factor of the official Lua `util.lua`
    (`updateBinaryGradWeight`). That code further multiplies it by ``(1 - 1/C_in)`` (part of
    its mean-centring over the input channels, which kbnn does not reproduce) and, with SGD
    only, by n. kbnn omits both: they are one positive constant per layer, which Adam's
    normalised update ignores (up to its epsilon), but which matter under SGD: there the
    official update equals kbnn's with the layer's learning rate multiplied by
    ``(1 - 1/C_in) * n``.
    """
    n = channel_count(w)
    alpha = channel_mean_abs(w)
    return 1.0 / n + alpha * tf.cast(tf.abs(w) < 1.0, w.dtype)


def xnor_weight(w):
    """``mean|W| * sign(W)`` per output channel with the XNOR-Net weight gradient
    `xnor_weight_grad` (Rastegari et al., arXiv 1603.05279; see docs/methods.md, section
    'XNOR-Net')."""
    return scaled_sign(w, xnor_weight_grad)


def xnor_activation_scale(
    inputs,
    kernel_size: int | Sequence[int],
    strides: int | Sequence[int] = 1,
    padding: str = "valid",
    dilation_rate: int | Sequence[int] = 1,
):
    """XNOR-Net activation scale ``K = A * k`` for a 2-D convolution, NHWC (Rastegari et al.,
    "XNOR-Net: ImageNet Classification Using Binary Convolutional Neural Networks",
    arXiv 1603.05279; see docs/methods.md, section 'XNOR-Net').

    ``A = mean_c |I|`` (shape (N, H, W, 1)) convolved with the box filter ``k = 1/(kh*kw)`` at
    the convolution's strides, padding and dilation, giving (N, H_out, W_out, 1), which
    multiplies the binary convolution's output. Zero padding counts in the box mean, as a
    convolution with k does. Differentiable (autograd through |I|).
    """
    inputs = ops.convert_to_tensor(inputs)
    kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
    mean_abs = ops.mean(ops.abs(inputs), axis=-1, keepdims=True)
    box = ops.ones((kh, kw, 1, 1), dtype=inputs.dtype) / float(kh * kw)
    return ops.conv(mean_abs, box, strides=strides, padding=padding, dilation_rate=dilation_rate)


@register_alias("xnor_weight")
class XnorWeight(Quantizer):
    """XNOR-Net binary weights (Rastegari et al., arXiv 1603.05279; see docs/methods.md,
    section 'XNOR-Net').

    Forward: ``alpha_o * sign(W)`` with ``alpha_o = mean|W_o|`` per output channel (over every
    kernel axis but the last). Backward (custom gradient, `xnor_weight_grad`):
    ``dW = g * (1/n + alpha_o * 1[|W| < 1])`` with n the number of elements per output channel.
    This is the official `util.lua` factor without its extra ``(1 - 1/C_in)`` (from its
    mean-centring, not reproduced) and ``n`` (SGD only) multipliers: per-layer constants that
    leave Adam's updates unchanged (up to its epsilon) but act as a per-layer learning-rate
    scale under SGD.
    The official code also mean-centres and clamps the latent weights after each step; use
    `kbnn.constraints.WeightClip` for the clamp (kbnn has no mean-centring).

    Inference form: ``BinaryForm(scale=alpha)`` per output channel. The activation scale K of the
    paper is not part of this quantizer (see `xnor_activation_scale`).
    """

    precision = 1
    applies_to = "weights"

    def call(self, inputs, training=None):
        return xnor_weight(inputs)

    def binary_form(self, inputs):
        return BinaryForm(scale=channel_mean_abs(inputs))
