"""Sign binarizers with straight-through and polynomial surrogate gradients."""

from __future__ import annotations

import tensorflow as tf

from kbnn.quantizers.base import BinaryForm, Quantizer, sign_with_surrogate_grad
from kbnn.quantizers.registry import register_alias

__all__ = ["SteSign", "ApproxSign", "ste_sign", "approx_sign", "approx_sign_grad", "ste_grad"]


def ste_grad(clip_value: float):
    """Clipped straight-through gradient ``1[|x| <= clip_value]``."""

    def grad(x):
        return tf.cast(tf.abs(x) <= clip_value, x.dtype)

    return grad


def approx_sign_grad(x):
    """Bi-Real ApproxSign derivative F'(x) (arXiv 1808.00278, METHODS.md §8.1).

    ``2 + 2x`` on [-1, 0), ``2 - 2x`` on [0, 1), 0 elsewhere (so F'(-1) = 2 * 0 = 0 and
    F'(1) = 0, matching the official code's masks).
    """
    return tf.where(
        (x >= -1.0) & (x < 1.0), 2.0 - 2.0 * tf.abs(x), tf.zeros_like(x)
    )


def ste_sign(x, clip_value: float = 1.0):
    """sign(x) (sign(0) = +1) with the clipped STE gradient ``1[|x| <= clip_value]``."""
    return sign_with_surrogate_grad(x, ste_grad(clip_value))


def approx_sign(x):
    """sign(x) with the Bi-Real ApproxSign gradient."""
    return sign_with_surrogate_grad(x, approx_sign_grad)


@register_alias("ste_sign")
class SteSign(Quantizer):
    """Sign with a clipped straight-through estimator (BinaryNet, Hubara et al., arXiv 1602.02830).

    Forward: +1 if x >= 0 else -1. Backward: ``dy * 1[|x| <= clip_value]``.

    Args:
        clip_value: the gradient is zero where ``|x| > clip_value``. Must be > 0.
    """

    precision = 1

    def __init__(self, clip_value: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        if not clip_value > 0:
            raise ValueError(
                "Invalid value for argument `clip_value` of SteSign. Expected a strictly "
                f"positive value. Received clip_value={clip_value}."
            )
        self.clip_value = float(clip_value)

    def call(self, inputs, training=None):
        return ste_sign(inputs, self.clip_value)

    def binary_form(self, inputs):
        return BinaryForm()

    def get_config(self):
        return {**super().get_config(), "clip_value": self.clip_value}


@register_alias("approx_sign")
class ApproxSign(Quantizer):
    """Sign with the Bi-Real Net ApproxSign gradient (Liu et al., arXiv 1808.00278).

    Forward: +1 if x >= 0 else -1. Backward: the derivative of the piecewise polynomial
    F(x) = -1 (x < -1), 2x + x^2 (-1 <= x < 0), 2x - x^2 (0 <= x < 1), 1 (x >= 1).
    """

    precision = 1

    def call(self, inputs, training=None):
        return approx_sign(inputs)

    def binary_form(self, inputs):
        return BinaryForm()
