"""Ternary quantizer {-1, 0, +1} with a clipped straight-through gradient (threshold rule of
Ternary Weight Networks, Li et al., arXiv 1605.04711)."""

from __future__ import annotations

import tensorflow as tf

from kbnn.quantizers._checks import check_bool, check_non_negative, check_positive_or_none
from kbnn.quantizers.base import Quantizer
from kbnn.quantizers.registry import register_alias
from kbnn.quantizers.sign import ste_grad

__all__ = ["SteTern", "ste_tern", "twn_threshold"]


def twn_threshold(x):
    """Ternary Weight Networks threshold ``0.7 * mean|x|`` over the whole tensor
    (Li et al., arXiv 1605.04711)."""
    return 0.7 * tf.reduce_mean(tf.abs(x))


def ste_tern(x, threshold_value: float = 0.05, ternary_weight_networks: bool = False,
             clip_value: float | None = 1.0):
    """``+1 if x > t, -1 if x < -t, else 0`` with the clipped STE gradient ``1[|x| <= clip]``
    (Ternary Weight Networks, Li et al., arXiv 1605.04711).

    ``t`` is `threshold_value`, or `twn_threshold(x)` when `ternary_weight_networks` is True
    (no gradient flows through the threshold).
    """
    clip_grad = ste_grad(clip_value)

    @tf.custom_gradient
    def _tern(v):
        if ternary_weight_networks:
            t = twn_threshold(v)
        else:
            t = tf.constant(threshold_value, v.dtype)
        one = tf.ones_like(v)
        out = tf.where(v > t, one, tf.where(v < -t, -one, tf.zeros_like(v)))

        def grad(dy):
            return dy * clip_grad(v)

        return out, grad

    return _tern(tf.convert_to_tensor(x))


@register_alias("ste_tern")
class SteTern(Quantizer):
    """Ternarization with a clipped straight-through estimator (Ternary Weight Networks,
    Li et al., arXiv 1605.04711).

    Forward: +1 if x > t, -1 if x < -t, 0 otherwise. Backward: ``dy * 1[|x| <= clip_value]``.

    Args:
        threshold_value: the fixed threshold t (>= 0) when `ternary_weight_networks` is False.
        ternary_weight_networks: if True, t = 0.7 * mean|x| over the whole tensor (TWN).
        clip_value: the gradient is zero where ``|x| > clip_value``. Must be > 0, or None for
            the unclipped straight-through estimator (gradient 1 everywhere), as in larq.
    """

    precision = 2

    def __init__(self, threshold_value: float = 0.05, ternary_weight_networks: bool = False,
                 clip_value: float | None = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.threshold_value = check_non_negative("SteTern", "threshold_value", threshold_value)
        self.ternary_weight_networks = check_bool(
            "SteTern", "ternary_weight_networks", ternary_weight_networks)
        self.clip_value = check_positive_or_none("SteTern", "clip_value", clip_value)

    def call(self, inputs, training=None):
        return ste_tern(inputs, self.threshold_value, self.ternary_weight_networks,
                        self.clip_value)

    def get_config(self):
        return {
            **super().get_config(),
            "threshold_value": self.threshold_value,
            "ternary_weight_networks": self.ternary_weight_networks,
            "clip_value": self.clip_value,
        }
