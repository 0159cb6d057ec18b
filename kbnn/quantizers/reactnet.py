"""ReActNet quantizers (Liu, Shen, Savvides, Cheng, ECCV 2020, arXiv 2003.03488):
`RSign`, the sign with a learnable per-channel threshold, and `ScaledSign`, the binary weights of
ReActNet's `HardBinaryConv` (see docs/methods.md, section 'ReActNet')."""

from __future__ import annotations

import keras
import tensorflow as tf

from kbnn.quantizers.base import BinaryForm, Quantizer, sign_with_surrogate_grad
from kbnn.quantizers.channelwise import scaled_sign
from kbnn.quantizers.registry import register_alias
from kbnn.quantizers.sign import _ClippedSign, approx_sign_grad, channel_mean_abs, ste_grad

__all__ = ["RSign", "ScaledSign", "rsign"]


def rsign(x, threshold):
    """ReActNet RSign: +1 if x >= threshold else -1, ApproxSign gradient on u = x - threshold
    (Liu et al., arXiv 2003.03488; see docs/methods.md, section 'ReActNet').

    d/dx = F'(x - t) and d/dt = -F'(x - t) (the latter from autograd through u = x - t).
    """
    x = tf.convert_to_tensor(x)
    return sign_with_surrogate_grad(x - tf.cast(threshold, x.dtype), approx_sign_grad)


@register_alias("rsign")
class RSign(Quantizer):
    """Sign with a learnable per-channel threshold (ReActNet RSign, Liu et al., arXiv 2003.03488;
    see docs/methods.md, section 'ReActNet').

    Forward: ``+1 if x >= t_c else -1`` with one threshold per channel of the last axis
    (shape (C,), created from the input shape when the layer is built, init 0).
    Backward: the Bi-Real ApproxSign derivative F'(x - t) to the input and -F'(x - t) to the
    threshold. The official code writes the threshold as a `LearnableBias` b = -t added before the
    sign; this is the same model.

    Inference form: ``BinaryForm(threshold=t)``. (Training computes ``x - t >= 0``, the form
    LCE lowers; it equals ``x >= t`` for every pair of finite floats unless the CPU flushes
    subnormal differences to zero.)

    Args:
        threshold_initializer: initializer of the threshold (default zeros).
        threshold_regularizer: optional regularizer of the threshold.
    """

    precision = 1
    applies_to = "activations"

    def __init__(self, threshold_initializer="zeros", threshold_regularizer=None, **kwargs):
        super().__init__(**kwargs)
        self.threshold_initializer = keras.initializers.get(threshold_initializer)
        self.threshold_regularizer = keras.regularizers.get(threshold_regularizer)

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is None:
            raise ValueError(
                "RSign needs a known last (channel) dimension to build its per-channel threshold. "
                f"Received input_shape={tuple(input_shape)}."
            )
        self.threshold = self.add_weight(
            name="threshold",
            shape=(int(channels),),
            initializer=self.threshold_initializer,
            regularizer=self.threshold_regularizer,
            trainable=True,
        )
        self.built = True

    def call(self, inputs, training=None):
        return rsign(inputs, self.threshold)

    def binary_form(self, inputs):
        return BinaryForm(threshold=self.threshold)

    def get_config(self):
        return {
            **super().get_config(),
            "threshold_initializer": keras.initializers.serialize(self.threshold_initializer),
            "threshold_regularizer": keras.regularizers.serialize(self.threshold_regularizer),
        }


@register_alias("scaled_sign")
class ScaledSign(_ClippedSign):
    """ReActNet binary weights (`HardBinaryConv`, Liu et al., arXiv 2003.03488; see
    docs/methods.md, section 'ReActNet').

    Forward: ``alpha_o * sign(W)`` with ``alpha_o = mean|W|`` per output channel (over all kernel
    axes but the last). Backward: the clipped STE ``1[|W| <= clip_value]`` with no magnitude
    factor, since the official code detaches alpha.

    Inference form: ``BinaryForm(scale=mean|W|)`` per output channel.

    Args:
        clip_value: the weight gradient is zero where ``|W| > clip_value`` (1.0 in the code);
            None for the unclipped straight-through estimator.
    """

    applies_to = "weights"

    def call(self, inputs, training=None):
        return scaled_sign(inputs, ste_grad(self.clip_value))

    def binary_form(self, inputs):
        return BinaryForm(scale=channel_mean_abs(inputs))
