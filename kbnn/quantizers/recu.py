"""ReCU quantizers (Xu, Lin, Liu, Chen, Shao, Gao, Tian, Ji, "ReCU: Reviving the Dead Weights in
Binary Neural Networks", ICCV 2021, arXiv 2103.12369; see docs/methods.md, section 'ReCU'):
`ReCUWeight`, standardised weights clamped by the rectified clamp unit at the tau-quantile of
their Laplace fit, binarized and scaled by a learnable per-channel output scale; and
`ReCUSign`, the activation sign with ReCU's per-sample normalisation in training."""

from __future__ import annotations

import math

import keras
import tensorflow as tf

from kbnn.checks import check_initializer
from kbnn.quantizers._checks import check_number, check_positive
from kbnn.quantizers.base import BinaryForm, Quantizer, sign_with_surrogate_grad
from kbnn.quantizers.channelwise import channel_count, channel_mean, channel_std
from kbnn.quantizers.registry import register_alias
from kbnn.quantizers.sign import approx_sign

__all__ = ["ReCUSign", "ReCUWeight", "recu_clamp_bound", "recu_sign_input", "recu_standardize",
           "recu_weight"]

#: ``2 * sqrt(2)``: the standardised weights have std 2 sqrt(2), i.e. Laplace scale b = 2.
_STD_TARGET = 2.0 * math.sqrt(2.0)


def recu_standardize(w, epsilon: float = 1e-5):
    """ReCU's weight standardisation per output channel (arXiv 2103.12369, the official
    `BinarizeConv2d`): ``w1 = (w - mean) * 2 sqrt(2) / sqrt(var + epsilon)`` with the unbiased
    variance (N - 1, as torch.var). Returns ``(w1, mean)``."""
    w = tf.convert_to_tensor(w)
    mean = channel_mean(w)
    std = channel_std(w, mean, ddof=1, epsilon=epsilon)
    return (w - mean) * tf.constant(_STD_TARGET, w.dtype) / std, mean


def recu_clamp_bound(w1, tau):
    """``Q(tau) = -b * ln(2 - 2 tau)`` with ``b = mean|w1|`` over the whole layer: the
    tau-quantile of the Laplace(0, b) fit of the standardised weights (ReCU,
    arXiv 2103.12369). A constant for the gradient; +inf for tau = 1 (no clamp)."""
    w1 = tf.convert_to_tensor(w1)
    b = tf.reduce_mean(tf.abs(w1))
    tau = tf.cast(tau, w1.dtype)
    return tf.stop_gradient(-b * tf.math.log(2.0 - 2.0 * tau))


def recu_weight(w, tau, alpha, epsilon: float = 1e-5):
    """ReCU binary weights ``alpha * sign(clamp(w1, -Q(tau), Q(tau)))`` (arXiv 2103.12369; see
    docs/methods.md, section 'ReCU').

    ``w1`` is `recu_standardize(w)` and Q is `recu_clamp_bound`; the clamp does not change
    the sign, so the forward is ``alpha * sign(w1)``. Backward: the identity through the sign
    (no clip), the clamp's ``1[|w1| <= Q]``, and autograd through the standardisation; alpha
    (one value per output channel) gets ``sum dL/dW_q * sign(w1)``.
    """
    w1, _ = recu_standardize(w, epsilon)
    bound = recu_clamp_bound(w1, tau)
    b = sign_with_surrogate_grad(w1, lambda u: tf.cast(tf.abs(u) <= bound, u.dtype))
    return tf.cast(alpha, b.dtype) * b


def _check_tau(owner: str, tau) -> float:
    tau = check_number(owner, "tau", tau, 0.5, 1.0)
    if tau == 0.5:
        raise ValueError(
            f"Invalid value for argument `tau` of {owner}. Expected a number in (0.5, 1] (the "
            f"clamp bound -b ln(2 - 2 tau) is positive only for tau > 0.5). Received tau={tau!r}."
        )
    return tau


@register_alias("recu_weight")
class ReCUWeight(Quantizer):
    """ReCU binary weights with the learnable output scale (Xu et al., "ReCU: Reviving the Dead
    Weights in Binary Neural Networks", arXiv 2103.12369; see docs/methods.md, section 'ReCU').

    Per output channel (over every kernel axis but the last):

    * standardise: ``w1 = (W - mean) * 2 sqrt(2) / sqrt(var + 1e-5)`` (unbiased variance);
    * rectified clamp unit: ``w2 = clamp(w1, -Q(tau), Q(tau))`` with
      ``Q(tau) = -b * ln(2 - 2 tau)``, ``b = mean|w1|`` over the whole layer (the tau-quantile
      of a Laplace fit), held constant for the gradient;
    * ``W_q = alpha * sign(w2)``: alpha is the learnable output scale (the official code
      multiplies the conv output by it, which is the same per output channel), initialised
      uniformly in [0, 1) as the official ``torch.rand``.

    Backward: the identity through the sign, ``1[|w1| <= Q]`` through the clamp (the "dead"
    weights beyond the quantile get no gradient), autograd through the standardisation.

    tau is a non-trainable scalar variable (saved with the model). The official training sets
    it at the start of each epoch e of E to ``A e^(e/E) + B`` (from 0.85 towards 0.99); in Keras
    use `kbnn.training.ReCUTauSchedule`. tau = 1 means no clamp (the official buffer's initial
    value).

    Inference form: sign(w2) = sign(W - mean), so ``BinaryForm(threshold=mean, scale=alpha)``
    per output channel; tau does not enter it.

    Args:
        tau: initial tau, in (0.5, 1] (0.85, the schedule's first value).
        epsilon: added to the variance (1e-5, the official code).
        alpha_initializer: initializer of alpha; uniform in [0, 1) by default.
    """

    precision = 1
    applies_to = "weights"

    def __init__(self, tau: float = 0.85, epsilon: float = 1e-5, alpha_initializer=None,
                 **kwargs):
        super().__init__(**kwargs)
        self._tau_init = _check_tau("ReCUWeight", tau)
        self.epsilon = check_positive("ReCUWeight", "epsilon", epsilon)
        self.alpha_initializer = check_initializer(
            "ReCUWeight", "alpha_initializer", alpha_initializer,
            default=keras.initializers.RandomUniform(0.0, 1.0))

    def build(self, input_shape):
        if len(input_shape) < 2 or input_shape[-1] is None or channel_count(input_shape) < 2:
            raise ValueError(
                "ReCUWeight needs a kernel shaped (..., C_out) with at least 2 elements per "
                f"output channel (for the unbiased variance). Received kernel shape "
                f"{tuple(input_shape)}."
            )
        self.alpha = self.add_weight(name="alpha", shape=(int(input_shape[-1]),),
                                     initializer=self.alpha_initializer, trainable=True)
        self.tau = self.add_weight(name="tau", shape=(),
                                   initializer=keras.initializers.Constant(self._tau_init),
                                   trainable=False)
        self.built = True

    def call(self, inputs, training=None):
        return recu_weight(inputs, self.tau, self.alpha, self.epsilon)

    def binary_form(self, inputs):
        return BinaryForm(threshold=channel_mean(tf.convert_to_tensor(inputs)),
                          scale=tf.convert_to_tensor(self.alpha))

    def get_config(self):
        return {**super().get_config(), "tau": self._tau_init, "epsilon": self.epsilon,
                "alpha_initializer": keras.initializers.serialize(self.alpha_initializer)}


def recu_sign_input(x, epsilon: float = 1e-5):
    """``x / sqrt(var + epsilon)`` with the unbiased variance of each sample (over every axis
    but the batch axis): ReCU's activation normalisation in training (arXiv 2103.12369)."""
    x = tf.convert_to_tensor(x)
    axes = list(range(1, x.shape.rank))
    n = tf.cast(tf.reduce_prod(tf.shape(x)[1:]), x.dtype)
    mean = tf.reduce_mean(x, axis=axes, keepdims=True)
    var = tf.reduce_sum(tf.square(x - mean), axis=axes, keepdims=True) / (n - 1.0)
    return x / tf.sqrt(var + tf.cast(epsilon, x.dtype))


@register_alias("recu_sign")
class ReCUSign(Quantizer):
    """ReCU's activation binarizer (Xu et al., arXiv 2103.12369; see docs/methods.md, section
    'ReCU'; the official `BinaryQuantize_a`).

    Forward: sign(x) (sign(0) = +1). In training the sign reads ``x / sqrt(var + 1e-5)`` with
    the unbiased variance of each sample (over every axis but the batch axis), which does not
    change the sign; its backward is ``max(0, 2 - 2|u|)`` (Bi-Real's ApproxSign derivative) at
    the normalised u, with autograd through the normalisation. In inference the sign reads x.

    Inference form: the plain sign, ``BinaryForm()``.

    Args:
        epsilon: added to the variance (1e-5, the official code).
    """

    precision = 1
    applies_to = "activations"

    def __init__(self, epsilon: float = 1e-5, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = check_positive("ReCUSign", "epsilon", epsilon)

    def build(self, input_shape):
        per_sample = list(tuple(input_shape)[1:])
        if len(input_shape) < 2 or (None not in per_sample and math.prod(per_sample) < 2):
            raise ValueError(
                "ReCUSign needs inputs with a batch axis and at least 2 values per sample (for "
                f"the unbiased variance). Received shape {tuple(input_shape)}."
            )
        self.built = True

    def call(self, inputs, training=None):
        x = recu_sign_input(inputs, self.epsilon) if training else inputs
        return approx_sign(x)

    def binary_form(self, inputs):
        return BinaryForm()

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}
