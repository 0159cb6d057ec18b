"""Sign binarizers: clipped-STE, polynomial, SignSwish, Heaviside and magnitude-aware scaled sign.

Papers: BinaryNet (clipped STE, Hubara et al., arXiv 1602.02830), Bi-Real Net (ApproxSign and
the magnitude-aware sign, Liu et al., arXiv 1808.00278), BNN+ (SignSwish, Darabi et al.,
arXiv 1812.11800).

Each binarizer is a plain function with a custom gradient plus a thin `Quantizer` class around
it. The forward value is always the exact ``where(x < 0, -1, +1)`` of `binary_sign` (times or
plus constants; NaN gives +1, as in LCE), so the inference graph lowers to LCE's `LceQuantize`.
"""

from __future__ import annotations

import tensorflow as tf

from kbnn.quantizers._checks import check_positive, check_positive_or_none
from kbnn.quantizers.base import BinaryForm, Quantizer, sign_with_surrogate_grad
from kbnn.quantizers.registry import register_alias

__all__ = [
    "ApproxSign",
    "MagnitudeAwareSign",
    "SteHeaviside",
    "SteSign",
    "SwishSign",
    "approx_sign",
    "approx_sign_grad",
    "channel_mean_abs",
    "magnitude_aware_sign",
    "ste_grad",
    "ste_heaviside",
    "ste_mask",
    "ste_sign",
    "swish_sign",
    "swish_sign_grad",
]


def ste_grad(clip_value: float | None):
    """Clipped straight-through gradient ``1[|x| <= clip_value]`` (BinaryNet, Hubara et al.,
    arXiv 1602.02830); with ``clip_value=None`` the unclipped straight-through estimator, a
    gradient of 1 everywhere (Bengio et al., arXiv 1308.3432; larq's ``clip_value=None``)."""

    if clip_value is None:
        return tf.ones_like

    def grad(x):
        return tf.cast(tf.abs(x) <= clip_value, x.dtype)

    return grad


def ste_mask(clip_value: float | None):
    """`ste_grad` as `sign_with_surrogate_grad` takes it most cheaply: a function giving the
    boolean window ``|x| <= clip_value`` where the gradient passes, or None (unclipped) when
    ``clip_value`` is None. Same derivative as `ste_grad`, one op fewer per backward pass."""
    if clip_value is None:
        return None

    def mask(x):
        return tf.abs(x) <= clip_value

    return mask


def approx_sign_grad(x):
    """Bi-Real ApproxSign derivative F'(x) (Liu et al., arXiv 1808.00278; see docs/methods.md,
    section 'Bi-Real Net').

    ``2 + 2x`` on [-1, 0), ``2 - 2x`` on [0, 1), 0 elsewhere (so F'(-1) = 2 * 0 = 0 and
    F'(1) = 0, matching the official code's masks).
    """
    return tf.where(
        (x >= -1.0) & (x < 1.0), 2.0 - 2.0 * tf.abs(x), tf.zeros_like(x)
    )


def swish_sign_grad(beta: float):
    """Derivative of the SignSwish ``2 sigmoid(bx) (1 + bx (1 - sigmoid(bx))) - 1`` of BNN+
    (Darabi et al., arXiv 1812.11800): ``b (2 - b x tanh(b x / 2)) / (1 + cosh(b x))``.

    It is ``b`` at 0 and tends to 0 for large ``|x|`` (cosh overflows to inf, giving 0, not NaN).
    """

    def grad(x):
        bx = beta * x
        return beta * (2.0 - bx * tf.tanh(bx / 2.0)) / (1.0 + tf.cosh(bx))

    return grad


def channel_mean_abs(w):
    """mean|w| per output channel: the reduction runs over every axis but the last (the scale
    alpha of XNOR-Net, Rastegari et al., arXiv 1603.05279)."""
    w = tf.convert_to_tensor(w)
    return tf.reduce_mean(tf.abs(w), axis=list(range(w.shape.rank - 1)))


def ste_sign(x, clip_value: float | None = 1.0):
    """sign(x) (sign(0) = +1) with the clipped STE gradient ``1[|x| <= clip_value]`` (BinaryNet,
    Hubara et al., arXiv 1602.02830); ``clip_value=None`` passes the gradient unclipped."""
    return sign_with_surrogate_grad(x, ste_mask(clip_value))


def approx_sign(x):
    """sign(x) with the Bi-Real ApproxSign gradient (Liu et al., arXiv 1808.00278)."""
    return sign_with_surrogate_grad(x, approx_sign_grad)


def swish_sign(x, beta: float = 5.0):
    """sign(x) with the SignSwish gradient of BNN+ (arXiv 1812.11800)."""
    return sign_with_surrogate_grad(x, swish_sign_grad(beta))


def ste_heaviside(x, clip_value: float | None = 1.0):
    """Heaviside step ``1 if x >= 0 else 0`` with the clipped STE gradient ``1[|x| <= clip]``
    (the clipped STE of BinaryNet, Hubara et al., arXiv 1602.02830).

    Computed as ``0.5 * s(x) + 0.5`` with a surrogate of ``2 * 1[|x| <= clip]`` on the sign,
    so the forward graph is the `binary_sign` select and the gradient is the plain STE.
    """
    clip_grad = ste_grad(clip_value)
    bit = sign_with_surrogate_grad(x, lambda v: 2.0 * clip_grad(v))
    return 0.5 * bit + 0.5


def magnitude_aware_sign(w, clip_value: float | None = 1.0):
    """Bi-Real scaled weight sign ``mean|W| * sign(W)`` per output channel (Liu et al.,
    arXiv 1808.00278; see docs/methods.md, section 'Bi-Real Net').

    The scale is a constant for the gradient (stop_gradient), so ``dW = scale * 1[|W| <= clip]``.
    """
    w = tf.convert_to_tensor(w)
    scale = tf.stop_gradient(channel_mean_abs(w))
    return scale * ste_sign(w, clip_value)


class _ClippedSign(Quantizer):
    """Shared part of the binarizers that take a `clip_value`: a strictly positive float, or
    None for the unclipped straight-through estimator (gradient 1 everywhere), as in larq."""

    precision = 1

    def __init__(self, clip_value: float | None = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.clip_value = check_positive_or_none(type(self).__name__, "clip_value", clip_value)

    def get_config(self):
        return {**super().get_config(), "clip_value": self.clip_value}


@register_alias("ste_sign")
class SteSign(_ClippedSign):
    """Sign with a clipped straight-through estimator (BinaryNet, Hubara et al., arXiv 1602.02830).

    Forward: +1 if x >= 0 else -1. Backward: ``dy * 1[|x| <= clip_value]``. XNOR-Net's
    `BinActiveZ` writes ``1[|x| < 1]``; the boundary point follows larq's ``<=`` convention
    (the two differ only at exactly ``|x| = clip_value``).

    Args:
        clip_value: the gradient is zero where ``|x| > clip_value``. Must be > 0, or None for
            the unclipped straight-through estimator (gradient 1 everywhere), as in larq.
    """

    def call(self, inputs, training=None):
        return ste_sign(inputs, self.clip_value)

    def binary_form(self, inputs):
        return BinaryForm()


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


@register_alias("swish_sign")
class SwishSign(Quantizer):
    """Sign with the SignSwish surrogate gradient of BNN+ (Darabi et al., arXiv 1812.11800).

    Forward: +1 if x >= 0 else -1. Backward: the derivative of
    ``2 sigmoid(beta x) (1 + beta x (1 - sigmoid(beta x))) - 1``, i.e.
    ``beta (2 - beta x tanh(beta x / 2)) / (1 + cosh(beta x))`` (peak ``beta`` at 0).

    Args:
        beta: sharpness of the surrogate; must be > 0.
    """

    precision = 1

    def __init__(self, beta: float = 5.0, **kwargs):
        super().__init__(**kwargs)
        self.beta = check_positive("SwishSign", "beta", beta)

    def call(self, inputs, training=None):
        return swish_sign(inputs, self.beta)

    def binary_form(self, inputs):
        return BinaryForm()

    def get_config(self):
        return {**super().get_config(), "beta": self.beta}


@register_alias("ste_heaviside")
class SteHeaviside(_ClippedSign):
    """Heaviside step with a clipped straight-through estimator (binary {0, 1} outputs, as in
    BinaryNet's STE, Hubara et al., arXiv 1602.02830).

    Forward: 1 if x >= 0 else 0 (x = 0 maps to 1, the kbnn convention sign(0) = +1).
    Backward: ``dy * 1[|x| <= clip_value]``. Inference form ``0.5 * s(x) + 0.5``.

    Args:
        clip_value: the gradient is zero where ``|x| > clip_value``. Must be > 0, or None for
            the unclipped straight-through estimator (gradient 1 everywhere), as in larq.
    """

    def call(self, inputs, training=None):
        return ste_heaviside(inputs, self.clip_value)

    def binary_form(self, inputs):
        return BinaryForm(scale=0.5, offset=0.5)


@register_alias("magnitude_aware_sign")
class MagnitudeAwareSign(_ClippedSign):
    """Bi-Real Net magnitude-aware weight sign (Liu et al., arXiv 1808.00278; see
    docs/methods.md, section 'Bi-Real Net').

    Forward: ``mean|W| * sign(W)`` with the mean taken per output channel (over every axis
    but the last; depthwise kernels are presented as (kh, kw, 1, C*M)). Backward: the scale is
    held constant, ``dW = mean|W| * 1[|W| <= clip_value]``. Meant as a kernel quantizer. The
    Bi-Real paper writes ``1[|W| < 1]``; the boundary point follows larq's ``<=`` convention
    (the two differ only at exactly ``|W| = clip_value``).

    Args:
        clip_value: the gradient is zero where ``|W| > clip_value``. Must be > 0, or None for
            the unclipped straight-through estimator, as in larq.
    """

    applies_to = "weights"

    def call(self, inputs, training=None):
        return magnitude_aware_sign(inputs, self.clip_value)

    def binary_form(self, inputs):
        return BinaryForm(scale=channel_mean_abs(inputs))
