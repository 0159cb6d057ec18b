"""Per-output-channel kernel statistics and the scaled sign shared by the weight quantizers.

Kernel quantizers see a kernel shaped (..., C_out): every statistic below reduces over all axes
but the last, giving one value per output channel (shape (C_out,), broadcasting on the last axis).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import tensorflow as tf

from kbnn.quantizers.base import binary_sign
from kbnn.quantizers.sign import channel_mean_abs

__all__ = [
    "VARIANCE_EPSILON",
    "channel_count",
    "channel_mean",
    "channel_std",
    "reduction_axes",
    "scaled_sign",
]

# Added to the variance in `channel_std` by the weight quantizers: keeps the gradient of a
# constant channel finite. It changes the std by a relative 0.5e-12 / variance: nothing in
# float32 for a variance above ~1e-4, under 1e-6 for a variance above 1e-6.
VARIANCE_EPSILON = 1e-12


def reduction_axes(x) -> list[int]:
    """Every axis of `x` but the last."""
    return list(range(len(x.shape) - 1))


def channel_count(x) -> int:
    """Number of elements per output channel, n = prod(shape[:-1]), of a tensor or a shape (the n
    of XNOR-Net's ``alpha = ||W||_1 / n``, arXiv 1603.05279)."""
    shape = getattr(x, "shape", x)
    return int(math.prod(int(d) for d in tuple(shape)[:-1]))


def channel_mean(x):
    """Mean per output channel."""
    return tf.reduce_mean(x, axis=reduction_axes(x))


def channel_std(x, mean=None, ddof: int = 0, epsilon: float = 0.0):
    """Standard deviation per output channel: sqrt(sum((x - mean)^2) / (n - ddof) + epsilon).

    ddof=0 is the population std (AdaBin, arXiv 2208.08084), ddof=1 the unbiased one
    (torch.std, IR-Net, arXiv 1909.10788).
    `epsilon` only keeps the gradient finite for a constant channel (see `VARIANCE_EPSILON`).
    """
    if mean is None:
        mean = channel_mean(x)
    n = channel_count(x)
    sq = tf.reduce_sum(tf.square(x - mean), axis=reduction_axes(x))
    return tf.sqrt(sq / tf.cast(n - ddof, x.dtype) + tf.cast(epsilon, x.dtype))


def scaled_sign(w, grad_fn: Callable):
    """``mean|w| * sign(w)`` per output channel with a custom weight gradient (the scaled binary
    weights of XNOR-Net, Rastegari et al., arXiv 1603.05279, also used by ReActNet and Bi-Real Net).

    The forward value is ``channel_mean_abs(w) * where(w >= 0, 1, -1)`` (exactly what
    ``BinaryForm(scale=channel_mean_abs(w))`` gives); the backward pass is
    ``dy * grad_fn(w)``, so the scale's own derivative is whatever `grad_fn` says.
    """

    @tf.custom_gradient
    def _scaled_sign(v):
        def grad(dy):
            return dy * tf.cast(grad_fn(v), dy.dtype)

        return channel_mean_abs(v) * binary_sign(v), grad

    return _scaled_sign(tf.convert_to_tensor(w))
