"""DIR-Net quantizers (Qin, Zhang, Gong, Ding, Xu, Liu, "Distribution-sensitive Information
Retention for Accurate Binary Neural Network", IJCV 2023, arXiv 2109.12338; see docs/methods.md,
section 'DIR-Net'): `DTESign`, the sign with the Distribution-sensitive Two-stage Estimator, and
`IMBWeight`, the Information Maximized Binarization of the weights.

DIR-Net is the journal extension of IR-Net (arXiv 1909.10788): IMB generalises Libra-PB and DTE
generalises EDE. Both are `kbnn.quantizers.EDEQuantizer`s, so `kbnn.training.EDESchedule` moves
their two stages (k and t) during training. What kbnn could verify of the paper is its abstract
(arXiv v1, 2021, and v2, 2022, the IJCV text), not its equations, so no equation numbers are
cited: docs/methods.md, section 'DIR-Net', quotes the abstract, lists what was searched and says
which parts of the definitions below are kbnn's reading (built on IR-Net's verified Libra-PB and
EDE).
"""

from __future__ import annotations

import tensorflow as tf

from kbnn.quantizers._checks import check_bool, check_choice
from kbnn.quantizers.base import BinaryForm, sign_with_surrogate_grad
from kbnn.quantizers.channelwise import VARIANCE_EPSILON, channel_count
from kbnn.quantizers.irnet import EDEQuantizer, libra_standardize
from kbnn.quantizers.registry import register_alias
from kbnn.quantizers.sign import channel_mean_abs

__all__ = ["IMB_SCALES", "DTESign", "IMBWeight", "dte_grad", "dte_sign", "imb_standardize",
           "input_spread"]

#: The values of `IMBWeight(scale=...)`.
IMB_SCALES = ("power_of_two", "mean_abs", "none")


def dte_grad(k, t, sigma=None):
    """DTE's surrogate derivative ``k t (1 - tanh^2(t u / sigma))`` as a function of the sign's
    input u: the two-stage ``k tanh(t u)`` of IR-Net's EDE with u measured in units of the
    input's spread sigma (arXiv 2109.12338; see docs/methods.md, section 'DIR-Net').

    `sigma` None (or 1) is EDE exactly. `k`, `t` and `sigma` may be numbers, variables or tensors
    broadcasting against u (sigma per channel, held constant for the gradient).
    """

    def grad(u):
        k_ = tf.cast(k, u.dtype)
        t_ = tf.cast(t, u.dtype)
        z = t_ * u if sigma is None else t_ * u / tf.cast(sigma, u.dtype)
        # sech^2 = 1 - tanh^2 without cancellation; cosh overflows to inf, giving 0, not NaN
        return k_ * t_ * tf.square(1.0 / tf.cosh(z))

    return grad


def dte_sign(x, k=10.0, t=0.1, sigma=None):
    """sign(x) (sign(0) = +1) with DTE's gradient `dte_grad` (DIR-Net, arXiv 2109.12338)."""
    return sign_with_surrogate_grad(x, dte_grad(k, t, sigma))


def input_spread(x):
    """The standard deviation of `x` per channel (the last axis, over every other axis:
    batch and positions of an activation, the filter of a kernel's output channel), held
    constant for the gradient: DTE's sigma."""
    x = tf.convert_to_tensor(x)
    variance = tf.math.reduce_variance(x, axis=list(range(len(x.shape) - 1)))
    return tf.stop_gradient(tf.sqrt(variance + tf.cast(VARIANCE_EPSILON, x.dtype)))


@register_alias("dte_sign")
class DTESign(EDEQuantizer):
    """Sign with DIR-Net's Distribution-sensitive Two-stage Estimator (Qin et al.,
    arXiv 2109.12338; see docs/methods.md, section 'DIR-Net').

    Forward: +1 if x >= 0 else -1. Backward (in training): ``dy * k t (1 - tanh^2(t x / sigma))``
    with sigma the standard deviation of x per channel (over every axis but the last), held
    constant for the gradient: the two-stage tanh of IR-Net's EDE applied to x in units of its
    own spread, so the estimator's window follows the input distribution
    (``distribution_sensitive=False``, sigma = 1, is EDE exactly). k and t are non-trainable variables (saved with the model) that
    `kbnn.training.EDESchedule` moves from stage 1 (t small, k = 1/t: about the identity, the
    updating capability) to stage 2 (t large, k = 1: about the sign, the accurate gradient).

    The abstract says only "distribution-sensitive soft approximation by jointly considering
    the updating capability and accurate gradient" (v2; v1: "gradual distribution-sensitive
    approximation of the sign function"); the paper's equations could not be found (what was
    searched: docs/methods.md), so the sigma normalisation is kbnn's reading of
    "distribution-sensitive", and the two stages and their schedule are IR-Net's EDE.

    Inference form: the plain sign, ``BinaryForm()``.

    Args:
        k, t: initial values (10 and 0.1, stage 1 at t_min = 0.1).
        distribution_sensitive: divide x by its per-channel standard deviation inside the
            estimator (True) or not (False: EDE).
    """

    def __init__(self, k: float = 10.0, t: float = 0.1, distribution_sensitive: bool = True,
                 **kwargs):
        super().__init__(k=k, t=t, **kwargs)
        self.distribution_sensitive = check_bool("DTESign", "distribution_sensitive",
                                                 distribution_sensitive)

    def call(self, inputs, training=None):
        # sigma only matters for the gradient: skipped in inference
        sigma = input_spread(inputs) if self.distribution_sensitive and training else None
        return sign_with_surrogate_grad(inputs, dte_grad(self.k, self.t, sigma))

    def binary_form(self, inputs):
        return BinaryForm()

    def get_config(self):
        return {**super().get_config(), "distribution_sensitive": self.distribution_sensitive}


def imb_standardize(w, scale: str = "power_of_two"):
    """IMB's balance and standardisation per output channel (DIR-Net, arXiv 2109.12338; IR-Net's
    Libra-PB, arXiv 1909.10788): ``w_hat = (w - mean) / std`` (unbiased std) and the scale
    ``s`` (without gradient): ``2^round(log2(mean|w_hat|))`` ("power_of_two", a bit shift),
    ``mean|w_hat|`` ("mean_abs", the least-squares scale of sign(w_hat)) or 1 ("none").
    Returns ``(w_hat, mean, s)``."""
    w_hat, mean, power_of_two = libra_standardize(w)
    if scale == "power_of_two":
        s = power_of_two
    elif scale == "mean_abs":
        s = tf.stop_gradient(channel_mean_abs(w_hat))
    else:
        s = tf.ones_like(power_of_two)
    return w_hat, mean, s


@register_alias("imb_weight")
class IMBWeight(EDEQuantizer):
    """DIR-Net's Information Maximized Binarization of the weights (Qin et al.,
    arXiv 2109.12338; see docs/methods.md, section 'DIR-Net'): in the abstract's words,
    "minimizing the information loss and the binarization error ... by weight balance and
    standardization"; the formulas below are IR-Net's Libra-PB (its official code), the
    paper's equations being unavailable to kbnn.

    Per output channel (over every kernel axis but the last) the weights are balanced (zero
    mean: the two signs equally likely, maximal entropy of the binary weights) and standardised:
    ``w_hat = (w - mean) / std`` (unbiased std, as IR-Net's code). Forward: ``s * sign(w_hat)``
    with ``s`` held constant for the gradient (`scale`: the power of two nearest to
    ``mean|w_hat|`` in log scale, a bit shift, as IR-Net; or ``mean|w_hat|``; or 1).
    Backward: the DTE derivative ``k t (1 - tanh^2(t w_hat))`` on the sign (w_hat already has
    unit spread, so DTE's sigma is 1 here) and autograd through the standardisation. k and t
    are non-trainable variables moved by `kbnn.training.EDESchedule`.

    Inference form: ``BinaryForm(threshold=mean, scale=s)`` per output channel (sign(w_hat)
    equals sign(w - mean) because std > 0).

    Args:
        k, t: initial DTE values (10 and 0.1).
        scale: "power_of_two" (default), "mean_abs" or "none".
    """

    applies_to = "weights"

    def __init__(self, k: float = 10.0, t: float = 0.1, scale: str = "power_of_two", **kwargs):
        super().__init__(k=k, t=t, **kwargs)
        self.scale = check_choice("IMBWeight", "scale", scale, IMB_SCALES)

    def check_input_shape(self, input_shape) -> None:
        if len(input_shape) < 2 or channel_count(input_shape) < 2:
            raise ValueError(
                "IMBWeight needs a kernel with at least 2 elements per output channel (for the "
                f"unbiased std). Received kernel shape {tuple(input_shape)}.")

    def call(self, inputs, training=None):
        w_hat, _, s = imb_standardize(inputs, self.scale)
        return s * sign_with_surrogate_grad(w_hat, dte_grad(self.k, self.t))

    def binary_form(self, inputs):
        _, mean, s = imb_standardize(inputs, self.scale)
        return BinaryForm(threshold=mean, scale=s)

    def get_config(self):
        return {**super().get_config(), "scale": self.scale}

