"""IR-Net quantizers (Qin et al., CVPR 2020, arXiv 1909.10788; see docs/methods.md, section
'IR-Net'): `LibraSign` (Libra-PB weights) and `EDESign` (sign with the Error Decay Estimator),
plus `EDEQuantizer`, the non-trainable k and t that `kbnn.training.EDESchedule` moves during
training."""

from __future__ import annotations

import math

import keras
import tensorflow as tf

from kbnn.quantizers._checks import check_positive
from kbnn.quantizers.base import BinaryForm, Quantizer, sign_with_surrogate_grad
from kbnn.quantizers.channelwise import VARIANCE_EPSILON, channel_count, channel_mean, channel_std
from kbnn.quantizers.registry import register_alias
from kbnn.quantizers.sign import channel_mean_abs

__all__ = ["EDEQuantizer", "EDESign", "LibraSign", "ede_grad", "ede_sign", "libra_sign",
           "libra_standardize"]

def ede_grad(k, t):
    """EDE surrogate derivative ``g'(u) = k * t * (1 - tanh^2(t * u))`` (of ``k * tanh(t u)``),
    IR-Net's Error Decay Estimator (Qin et al., arXiv 1909.10788; see docs/methods.md, section
    'IR-Net').

    Computed as ``k t sech^2(t u)``. `k` and `t` may be numbers or (non-trainable) variables;
    they are read when the gradient is computed, so a schedule that assigns them takes effect
    at the next step.
    """

    def grad(u):
        k_ = tf.cast(k, u.dtype)
        t_ = tf.cast(t, u.dtype)
        # sech^2 = 1 - tanh^2 without the float32 cancellation of 1 - tanh^2 for |t u| > ~3;
        # cosh overflows to inf for |t u| > ~89, giving 0, not NaN
        return k_ * t_ * tf.square(1.0 / tf.cosh(t_ * u))

    return grad


def ede_sign(x, k=10.0, t=0.1):
    """sign(x) (sign(0) = +1) with the EDE gradient ``k t (1 - tanh^2(t x))`` (IR-Net, Qin et al.,
    arXiv 1909.10788; see docs/methods.md, section 'IR-Net')."""
    return sign_with_surrogate_grad(x, ede_grad(k, t))


def libra_standardize(w):
    """Libra-PB balance and standardisation per output channel (IR-Net, Qin et al.,
    arXiv 1909.10788; see docs/methods.md, section 'IR-Net').

    Returns ``(w_hat, mean, scale)``: ``w_hat = (w - mean) / std`` with the unbiased std
    (N - 1, as torch.std in the official code) and the power-of-two scale
    ``2^round(log2(mean|w_hat|))`` (without gradient).
    """
    w = tf.convert_to_tensor(w)
    mean = channel_mean(w)
    std = channel_std(w, mean, ddof=1, epsilon=VARIANCE_EPSILON)
    w_hat = (w - mean) / std
    mean_abs = channel_mean_abs(w_hat)
    scale = tf.pow(tf.constant(2.0, w.dtype), tf.round(tf.math.log(mean_abs) / math.log(2.0)))
    return w_hat, mean, tf.stop_gradient(scale)


def libra_sign(w, k=10.0, t=0.1):
    """IR-Net Libra-PB weights ``s * sign(w_hat)`` with the EDE gradient through the
    standardisation (Qin et al., arXiv 1909.10788; see docs/methods.md, section 'IR-Net')."""
    w_hat, _, scale = libra_standardize(w)
    return scale * ede_sign(w_hat, k, t)


class EDEQuantizer(Quantizer):
    """Base of the quantizers whose sign uses the EDE gradient of IR-Net (Qin et al., "Forward
    and Backward Information Retention for Accurate Binary Neural Networks", arXiv 1909.10788;
    see docs/methods.md, section 'IR-Net'): k and t as non-trainable scalar variables.

    Being variables, they are saved in `.keras` files and can be moved during training by
    `kbnn.training.EDESchedule`, which finds every `EDEQuantizer` in a model. Subclasses may
    override `check_input_shape` to validate what they quantize.

    Args:
        k, t: initial EDE values (the official ImageNet `IRConv2d` defaults, k = 10, t = 0.1).
    """

    precision = 1

    def __init__(self, k: float = 10.0, t: float = 0.1, **kwargs):
        super().__init__(**kwargs)
        owner = type(self).__name__
        self._k_init = check_positive(owner, "k", k)
        self._t_init = check_positive(owner, "t", t)

    def check_input_shape(self, input_shape) -> None:
        """Raise ValueError for inputs this quantizer cannot handle (none by default)."""

    def build(self, input_shape):
        self.check_input_shape(input_shape)
        self.k = self.add_weight(name="k", shape=(),
                                 initializer=keras.initializers.Constant(self._k_init),
                                 trainable=False)
        self.t = self.add_weight(name="t", shape=(),
                                 initializer=keras.initializers.Constant(self._t_init),
                                 trainable=False)
        self.built = True

    @property
    def ede_surrogate(self):
        """The current EDE derivative as a function of the sign's input."""
        return ede_grad(self.k, self.t)

    def set_ede(self, t: float, k: float):
        """Assign new t and k (the quantizer must be built)."""
        self.t.assign(t)
        self.k.assign(k)

    def get_config(self) -> dict:
        return {**super().get_config(), "k": self._k_init, "t": self._t_init}


@register_alias("ede_sign")
class EDESign(EDEQuantizer):
    """Sign with IR-Net's Error Decay Estimator gradient (Qin et al., arXiv 1909.10788; see
    docs/methods.md, section 'IR-Net').

    Forward: +1 if x >= 0 else -1. Backward: ``k * t * (1 - tanh^2(t * x))``. k and t are
    non-trainable variables (saved with the model) that `kbnn.training.EDESchedule` moves from
    (k = 1/t_min, t = t_min), about the identity, to (k = 1, t = t_max), about the sign.

    Inference form: the plain sign, ``BinaryForm()``.

    Args:
        k, t: initial values (the official ImageNet `IRConv2d` defaults, k = 10, t = 0.1).
    """

    def call(self, inputs, training=None):
        return sign_with_surrogate_grad(inputs, self.ede_surrogate)

    def binary_form(self, inputs):
        return BinaryForm()


@register_alias("libra_weight")
class LibraSign(EDEQuantizer):
    """IR-Net Libra-PB binary weights (Qin et al., arXiv 1909.10788; see docs/methods.md,
    section 'IR-Net').

    Per output channel (over every kernel axis but the last): ``w_hat = (w - mean) / std`` with
    the unbiased std (N - 1); forward ``s * sign(w_hat)`` with the power-of-two scale
    ``s = 2^round(log2(mean|w_hat|))`` held constant for the gradient. Backward: the EDE
    derivative ``k t (1 - tanh^2(t w_hat))`` on the sign, and autograd through the
    standardisation. k and t are non-trainable variables moved by `kbnn.training.EDESchedule`.

    Inference form: ``BinaryForm(threshold=mean, scale=s)`` per output channel (sign(w_hat)
    equals sign(w - mean) because std > 0).

    Args:
        k, t: initial EDE values (the official ImageNet `IRConv2d` defaults, k = 10, t = 0.1).
    """

    applies_to = "weights"

    def check_input_shape(self, input_shape) -> None:
        if len(input_shape) < 2 or channel_count(input_shape) < 2:
            raise ValueError(
                "LibraSign needs a kernel with at least 2 elements per output channel (for the "
                f"unbiased std). Received kernel shape {tuple(input_shape)}."
            )

    def call(self, inputs, training=None):
        return libra_sign(inputs, self.k, self.t)

    def binary_form(self, inputs):
        _, mean, scale = libra_standardize(inputs)
        return BinaryForm(threshold=mean, scale=scale)
