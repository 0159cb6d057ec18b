"""AdaBin quantizers (Tu, Chen, Ren, Wang, ECCV 2022, arXiv 2208.08084; see docs/methods.md,
section 'AdaBin'): adaptive binary sets {beta - alpha, beta + alpha} for weights (`AdaBinWeight`)
and activations (`AdaBinActivation`)."""

from __future__ import annotations

import keras
import tensorflow as tf

from kbnn.quantizers._checks import check_positive
from kbnn.quantizers.base import BinaryForm, Quantizer, sign_with_surrogate_grad
from kbnn.quantizers.channelwise import VARIANCE_EPSILON, channel_mean, channel_std
from kbnn.quantizers.irnet import EDEQuantizer
from kbnn.quantizers.registry import register_alias
from kbnn.quantizers.sign import approx_sign

__all__ = ["AdaBinActivation", "AdaBinWeight", "adabin_weight_set"]


def adabin_weight_set(w):
    """Per-output-channel centre ``beta_w = mean(W)`` and half-distance
    ``alpha_w = sqrt(mean((W - beta_w)^2))`` (population std) of the AdaBin weight set
    (Tu et al., arXiv 2208.08084; see docs/methods.md, section 'AdaBin')."""
    w = tf.convert_to_tensor(w)
    beta = channel_mean(w)
    alpha = channel_std(w, beta, ddof=0, epsilon=VARIANCE_EPSILON)
    return alpha, beta


@register_alias("adabin_weight")
class AdaBinWeight(EDEQuantizer):
    """AdaBin binary weights (Tu et al., arXiv 2208.08084; see docs/methods.md, section 'AdaBin').

    Per output channel (over every kernel axis but the last): ``beta_w = mean(W)``,
    ``alpha_w = sqrt(mean((W - beta_w)^2))`` (population std) and
    ``W_b = alpha_w * sign((W - beta_w) / alpha_w) + beta_w``, a binary set
    {beta_w - alpha_w, beta_w + alpha_w}. No learnable parameters.

    Backward: autograd through the normalisation (alpha_w and beta_w included), with the sign's
    derivative ``k t (1 - tanh^2(t u))`` (IR-Net's EDE). k = 10, t = 0.1 (the defaults) are
    only the initial values of the official ``AdaBin_Conv2d``: the official ImageNet
    ``main.py``, like the CIFAR code, sets ``t = 10^(-3 + 4 i/N)`` at the start of epoch i of
    N (from 1e-3 up to just below 10, log-uniformly) and ``k = max(1/t, 1)`` in every
    ``AdaBin_Conv2d``. k and t are non-trainable variables; to reproduce that schedule, train
    with ``kbnn.training.EDESchedule(t_min=1e-3, t_max=10.0)``, which assigns the same t and k
    per epoch.

    Inference form: ``BinaryForm(threshold=beta_w, scale=alpha_w, offset=beta_w)``.

    Args:
        k, t: EDE constants of the sign's gradient.
    """

    applies_to = "weights"

    def call(self, inputs, training=None):
        alpha, beta = adabin_weight_set(inputs)
        u = (inputs - beta) / alpha
        return alpha * sign_with_surrogate_grad(u, self.ede_surrogate) + beta

    def binary_form(self, inputs):
        alpha, beta = adabin_weight_set(inputs)
        return BinaryForm(threshold=beta, scale=alpha, offset=beta)


class _AtLeast(keras.constraints.Constraint):
    """Clips a variable to ``>= min_value`` after each update (rebuilt from the owner's config)."""

    def __init__(self, min_value: float):
        self.min_value = min_value

    def __call__(self, w):
        return keras.ops.maximum(w, self.min_value)

    def get_config(self):
        return {"min_value": self.min_value}


@register_alias("adabin_activation")
class AdaBinActivation(Quantizer):
    """AdaBin activation binarizer (Tu et al., arXiv 2208.08084; see docs/methods.md,
    section 'AdaBin').

    One learnable scalar alpha (init 1) and beta (init 0) per layer; ``u = (x - beta) / alpha``
    and Bi-Real's ApproxSign F' on u in the backward pass. Two forms:

    * ``form="paper"`` (default): ``out = alpha * sign(u) + beta``, the set
      {beta - alpha, beta + alpha} whose centre beta is also the threshold, as for
      `AdaBinWeight`. Gradients: ``d/dx = F'(u)``, ``d/dbeta = 1 - F'(u)``,
      ``d/dalpha = sign(u) - u F'(u)``. Inference form ``BinaryForm(beta, alpha, beta)``.
    * ``form="code"``: the official code's ``out = alpha * (sign(u) + beta)``
      (`BinaryActivation` in `binarylib.py`), the set {alpha (beta - 1), alpha (beta + 1)}.
      Gradients: ``d/dx = F'(u)``, ``d/dbeta = alpha - F'(u)``,
      ``d/dalpha = sign(u) + beta - u F'(u)``. Inference form
      ``BinaryForm(beta, alpha, alpha * beta)``. Use it (with zero padding, ``pad_values=0``)
      to reproduce weights trained with the official code; the two forms agree only where
      alpha = 1 or beta = 0 (the init).

    kbnn defaults to the paper's form (kbnn follows a paper's definition unless stated otherwise).
    Both forms are affine-binary with threshold beta, valid for alpha > 0, which a constraint
    keeps (alpha is clipped to ``>= min_alpha`` after each update).

    Args:
        alpha_initializer, beta_initializer: initializers of the two scalars.
        min_alpha: lower bound of alpha kept by the constraint (> 0).
        form: "paper" or "code" (see above).
    """

    precision = 1
    applies_to = "activations"

    FORMS = ("paper", "code")

    def __init__(self, alpha_initializer="ones", beta_initializer="zeros",
                 min_alpha: float = 1e-3, form: str = "paper", **kwargs):
        super().__init__(**kwargs)
        if form not in self.FORMS:
            raise ValueError(
                "Invalid value for argument `form` of AdaBinActivation. Expected one of "
                f"{self.FORMS}. Received form={form!r}."
            )
        self.form = form
        self.alpha_initializer = keras.initializers.get(alpha_initializer)
        self.beta_initializer = keras.initializers.get(beta_initializer)
        self.min_alpha = check_positive("AdaBinActivation", "min_alpha", min_alpha)

    def build(self, input_shape):
        self.alpha = self.add_weight(name="alpha", shape=(), initializer=self.alpha_initializer,
                                     constraint=_AtLeast(self.min_alpha), trainable=True)
        self.beta = self.add_weight(name="beta", shape=(), initializer=self.beta_initializer,
                                    trainable=True)
        self.built = True

    def call(self, inputs, training=None):
        alpha = tf.cast(self.alpha, inputs.dtype)
        beta = tf.cast(self.beta, inputs.dtype)
        offset = beta if self.form == "paper" else alpha * beta
        return alpha * approx_sign((inputs - beta) / alpha) + offset

    def binary_form(self, inputs):
        offset = self.beta if self.form == "paper" else self.alpha * self.beta
        return BinaryForm(threshold=self.beta, scale=self.alpha, offset=offset)

    def get_config(self):
        return {
            **super().get_config(),
            "alpha_initializer": keras.initializers.serialize(self.alpha_initializer),
            "beta_initializer": keras.initializers.serialize(self.beta_initializer),
            "min_alpha": self.min_alpha,
            "form": self.form,
        }
