"""ReBNN quantizer (Xu, Li, Ma, Lin, Dong, Zhang, Gao, Lv, "Resilient Binary Neural Network",
AAAI 2023, arXiv 2302.00956; see docs/methods.md, section 'ReBNN'): `ReBNNWeight`, binary
weights with a learnable per-output-channel scale and the weighted reconstruction loss whose
balanced parameter gamma follows the weights' sign oscillation.

`LearnedScaleWeight` is the part ReBNN shares with RBONN's `RBONNWeight` (arXiv 2209.01542):
``W_q = |alpha| * sign(W)`` with a learnable alpha, the reconstruction loss
``(gamma / 2) * ||W - |alpha| * sign(W)||^2`` added through the layer (`add_loss`), and the
helpers that record a gradient during the backward pass into a non-trainable variable.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from kbnn.checks import check_initializer
from kbnn.quantizers._checks import check_choice, check_non_negative, check_positive_or_none
from kbnn.quantizers.base import BinaryForm, Quantizer, binary_sign
from kbnn.quantizers.channelwise import reduction_axes
from kbnn.quantizers.registry import register_alias

__all__ = ["ALPHA_GRADIENTS", "MEAN_ABS", "LearnedScaleWeight", "ReBNNWeight", "learned_scale_sign",
           "oscillation_ratio", "reconstruction_loss"]

#: How the task loss reaches alpha: "sign", the chain rule of ``W_q = |alpha| * sign(W)``
#: (the papers: ``sum_j dL/dW_q * sign(W)``), or "latent", the official code's
#: ``sum_j dL/dW_q * W``.
ALPHA_GRADIENTS = ("sign", "latent")

#: `alpha_initializer` value: alpha starts from mean|W| per output channel, set from the kernel at
#: the first training step (the closed-form scale that the learnable alpha replaces).
MEAN_ABS = "mean_abs"

#: The balanced parameter of ReBNN computed by the paper's rule (eq. 3.150 of the book chapter,
#: see `ReBNNWeight`).
OSCILLATION = "oscillation"


def learned_scale_sign(w, scale, clip_value: float | None = 1.0, alpha_gradient: str = "sign"):
    """``scale * sign(w)`` per output channel (sign(0) = +1) with the gradients of ReBNN
    (arXiv 2302.00956) and RBONN (arXiv 2209.01542); see docs/methods.md, section 'ReBNN'.

    `scale` has one value per output channel (the last axis of `w`). Backward, with
    ``g = dL/d(output)``:

    * to `w`: ``g * scale * 1[|w| <= clip_value]`` (``clip_value=None``: no mask, the
      official code);
    * to `scale`: ``sum over each channel of g * sign(w)`` (``alpha_gradient="sign"``, the
      chain rule) or ``g * w`` (``"latent"``, the official code).
    """
    w = tf.convert_to_tensor(w)
    scale = tf.cast(scale, w.dtype)
    axes = reduction_axes(w)

    @tf.custom_gradient
    def _forward(v, s):
        b = binary_sign(v)

        def grad(dy):
            dv = dy * s
            if clip_value is not None:
                dv = dv * tf.cast(tf.abs(v) <= clip_value, dy.dtype)
            factor = b if alpha_gradient == "sign" else v
            return dv, tf.reduce_sum(dy * tf.cast(factor, dy.dtype), axis=axes)

        return s * b, grad

    return _forward(w, scale)


def reconstruction_loss(w, scale, gamma):
    """``sum_i (gamma_i / 2) * ||w_i - scale_i * sign(w_i)||^2`` over the output channels i
    (the weighted reconstruction loss of ReBNN, arXiv 2302.00956, and the bilinear term of
    RBONN, arXiv 2209.01542). sign(w) and gamma are constants for the gradient, so
    ``dL/dw = gamma * (w - scale * sign(w))`` and
    ``dL/dscale = -gamma * sum((w - scale * sign(w)) * sign(w))``. Computed in float32 (also
    for float16 weights), the dtype Keras adds losses in."""
    w = tf.cast(tf.convert_to_tensor(w), tf.float32)
    b = tf.stop_gradient(binary_sign(w))
    diff = w - tf.cast(scale, tf.float32) * b
    per_channel = tf.reduce_sum(tf.square(diff), axis=reduction_axes(w))
    return 0.5 * tf.reduce_sum(tf.stop_gradient(tf.cast(gamma, tf.float32)) * per_channel)


def oscillation_ratio(previous_sign, sign):
    """Per output channel, the fraction of weights whose sign flipped between `previous_sign`
    and `sign` (both in {-1, +1}; a 0 in `previous_sign`, "no sign yet", never counts):
    ``(1/M) * ||b_t * b_{t+1} - 1||_0`` of ReBNN (arXiv 2302.00956)."""
    sign = tf.convert_to_tensor(sign)
    flipped = tf.cast(tf.cast(previous_sign, sign.dtype) * sign < 0, sign.dtype)
    return tf.reduce_mean(flipped, axis=reduction_axes(sign))


def _assign(variable, value):
    variable.assign(tf.cast(value, variable.dtype))


def record_channel_max_abs_gradient(x, variable):
    """`x` unchanged; the backward pass stores ``max |dL/dx|`` per output channel (last axis)
    in the non-trainable `variable` and passes the gradient on unchanged."""
    axes = reduction_axes(x)

    @tf.custom_gradient
    def _identity(v):
        def grad(dy):
            _assign(variable, tf.reduce_max(tf.abs(dy), axis=axes))
            return tf.identity(dy)

        return tf.identity(v), grad

    return _identity(tf.convert_to_tensor(x))


def record_gradient(x, variable):
    """`x` unchanged; the backward pass stores ``dL/dx`` in the non-trainable `variable` (of
    the shape of `x`) and passes the gradient on unchanged."""

    @tf.custom_gradient
    def _identity(v):
        def grad(dy):
            _assign(variable, dy)
            return tf.identity(dy)

        return tf.identity(v), grad

    return _identity(tf.convert_to_tensor(x))


class LearnedScaleWeight(Quantizer):
    """Binary weights ``|alpha| * sign(W)`` with a learnable scale alpha per output channel,
    shared by ReBNN (`ReBNNWeight`, arXiv 2302.00956) and RBONN (`RBONNWeight`,
    arXiv 2209.01542); see docs/methods.md, section 'ReBNN'.

    Gradients: see `learned_scale_sign`. In training (``training=True``) subclasses add their
    reconstruction loss through `add_loss`; in inference the forward is the same and nothing
    is added or updated.

    Inference form: ``BinaryForm(scale=|alpha|)`` per output channel.

    Args:
        clip_value: the task gradient of W is zero where ``|W| > clip_value``; None for no
            mask.
        alpha_gradient: "sign" (the chain rule) or "latent" (the official code's
            ``sum dL/dW_q * W``), see `ALPHA_GRADIENTS`.
        alpha_initializer: "mean_abs" (default): alpha starts as mean|W| per output channel,
            set from the kernel at the first training step (ones until then); or a Keras
            initializer of alpha (shape (C_out,)).
    """

    precision = 1
    applies_to = "weights"

    def __init__(self, clip_value: float | None = 1.0, alpha_gradient: str = "sign",
                 alpha_initializer=MEAN_ABS, **kwargs):
        super().__init__(**kwargs)
        owner = type(self).__name__
        self.clip_value = check_positive_or_none(owner, "clip_value", clip_value)
        self.alpha_gradient = check_choice(owner, "alpha_gradient", alpha_gradient,
                                           ALPHA_GRADIENTS)
        if alpha_initializer == MEAN_ABS:
            self.alpha_initializer = MEAN_ABS
            return
        self.alpha_initializer = check_initializer(
            owner, "alpha_initializer", alpha_initializer,
            expected=f"{MEAN_ABS!r} or a Keras initializer (name, config or instance)")

    @property
    def initializes_alpha_from_weights(self) -> bool:
        """True when alpha starts from the closed-form mean|W| at the first training step."""
        return self.alpha_initializer == MEAN_ABS

    def check_input_shape(self, input_shape) -> None:
        if len(input_shape) < 2 or input_shape[-1] is None:
            raise ValueError(
                f"{type(self).__name__} quantizes kernels shaped (..., C_out) with a known "
                f"C_out. Received shape {tuple(input_shape)}."
            )

    def build(self, input_shape):
        self.check_input_shape(input_shape)
        from_weights = self.initializes_alpha_from_weights
        self.alpha = self.add_weight(name="alpha", shape=(int(input_shape[-1]),),
                                     initializer="ones" if from_weights
                                     else self.alpha_initializer,
                                     trainable=True)
        # 1 once alpha holds mean|W| (set at the first training step), 0 before
        self.alpha_ready = self.add_state("alpha_ready", ()) if from_weights else None
        self.built = True

    def initialize_alpha(self, w) -> None:
        """At the first training step with ``alpha_initializer="mean_abs"``, set alpha to the
        closed-form scale mean|W| per output channel (the channel-wise absolute mean that the
        learnable alpha replaces); later steps leave it alone."""
        if self.alpha_ready is None:
            return
        mean_abs = tf.stop_gradient(tf.reduce_mean(tf.abs(w), axis=reduction_axes(w)))
        ready = tf.convert_to_tensor(self.alpha_ready) > 0
        alpha = tf.convert_to_tensor(self.alpha)
        _assign(self.alpha, tf.where(ready, alpha, tf.cast(mean_abs, alpha.dtype)))
        _assign(self.alpha_ready, tf.ones_like(self.alpha_ready))

    def add_state(self, name: str, shape, initializer="zeros"):
        """A non-trainable state variable (saved with the model)."""
        return self.add_weight(name=name, shape=tuple(shape), initializer=initializer,
                               trainable=False)

    def scale(self, dtype=None):
        """|alpha| per output channel (in `dtype`)."""
        alpha = tf.convert_to_tensor(self.alpha)
        return tf.abs(alpha if dtype is None else tf.cast(alpha, dtype))

    def scaled_sign(self, w):
        """``|alpha| * sign(w)`` with this quantizer's gradients."""
        return learned_scale_sign(w, self.scale(w.dtype), self.clip_value, self.alpha_gradient)

    def binary_form(self, inputs):
        return BinaryForm(scale=self.scale())

    def get_config(self):
        return {**super().get_config(), "clip_value": self.clip_value,
                "alpha_gradient": self.alpha_gradient,
                "alpha_initializer": (MEAN_ABS if self.initializes_alpha_from_weights else
                                      keras.initializers.serialize(self.alpha_initializer))}


def _check_gamma(value):
    if value == OSCILLATION:
        return value
    if isinstance(value, str):
        raise ValueError(  # noqa: TRY004 (bad argument value: ValueError by convention)
            "Invalid value for argument `gamma` of ReBNNWeight. Expected 'oscillation' or a "
            f"finite, non-negative number. Received gamma={value!r}."
        )
    return check_non_negative("ReBNNWeight", "gamma", value)


def _check_gamma_range(value):
    if value is None:
        return None
    try:
        low, high = (float(v) for v in value)
        valid = 0.0 <= low <= high < float("inf")
    except (TypeError, ValueError):
        valid = False
    if not valid:
        raise ValueError(
            "Invalid value for argument `gamma_range` of ReBNNWeight. Expected None or a pair "
            f"(low, high) with 0 <= low <= high < inf. Received gamma_range={value!r}."
        )
    return (low, high)


@register_alias("rebnn_weight")
class ReBNNWeight(LearnedScaleWeight):
    """ReBNN binary weights (Xu et al., "Resilient Binary Neural Network", arXiv 2302.00956;
    see docs/methods.md, section 'ReBNN').

    Forward: ``W_q = |alpha| * sign(W)`` per output channel, alpha learnable (by default
    initialised to mean|W| at the first training step, the closed-form scale it replaces).

    Objective: the task loss L plus the weighted reconstruction loss, added through the layer
    (``add_loss``) in training::

        L_R = sum_i (gamma_i / 2) * ||W_i - |alpha_i| * sign(W_i)||^2

    Gradients (the paper's eqs. 3.141, 3.144, 3.151, 3.152 of the book chapter that reproduces
    it; M = weights per output channel):

    * ``dW = |alpha| * dL/dW_q * 1[|W| <= 1] + gamma * (W - |alpha| sign(W))``;
    * ``dalpha = sum dL/dW_q * sign(W) - gamma * sum (W - |alpha| sign(W)) * sign(W)`` (times
      sign(alpha), through |alpha|). This is the derivative of the paper's objective; the
      printed eq. 3.152 has the opposite sign of its second term.

    Balanced parameter (``gamma="oscillation"``, the paper's eq. 3.150), per output channel i
    at step t + 1::

        gamma_i = (1/M) * ||b_i^t * b_i^(t+1) - 1||_0 * max_j |dL/dW_q[i, j]^t|

    the fraction of the channel's weights whose sign flipped since the previous step (its
    *oscillation ratio*) times the largest task gradient magnitude of the previous step. It is
    0 at the first step. The quantizer keeps the state as non-trainable variables (saved with
    the model): `previous_sign`, `max_grad` (written during the backward pass), `oscillation`
    (the last step's ratio per channel) and `gamma` (the value used at the last step).
    Under loss scaling (`keras.optimizers.LossScaleOptimizer`, an optimizer's
    `loss_scale_factor`) `max_grad` is that of the scaled loss, so gamma is scaled with it; use
    a constant gamma there.

    The official code differs (docs/methods.md lists how): ``clip_value=None`` drops the
    1[|W| <= 1] mask, ``alpha_gradient="latent"`` uses ``sum dL/dW_q * W`` for alpha, and
    ``gamma=2e-4`` is its effective constant (its clamp of gamma into [1e-5, 2e-4] always gives
    2e-4; ``gamma_range=(1e-5, 2e-4)`` is the clamp it meant).

    Inference form: ``BinaryForm(scale=|alpha|)``.

    Args:
        gamma: "oscillation" (the paper's rule) or a constant >= 0.
        gamma_range: None, or (low, high) to clamp the rule's gamma into.
        clip_value: the task gradient of W is zero where ``|W| > clip_value`` (1.0, the paper);
            None for no mask (the official code).
        alpha_gradient: "sign" (the paper) or "latent" (the official code).
        alpha_initializer: "mean_abs" (default): alpha starts as the closed-form mean|W| per
            output channel, set from the kernel at the first training step; or a Keras
            initializer (the official code uses ``randn`` times a fixed 0.02, see
            docs/methods.md).
    """

    def __init__(self, gamma="oscillation", gamma_range=None, clip_value: float | None = 1.0,
                 alpha_gradient: str = "sign", alpha_initializer=MEAN_ABS, **kwargs):
        super().__init__(clip_value=clip_value, alpha_gradient=alpha_gradient,
                         alpha_initializer=alpha_initializer, **kwargs)
        self.gamma_rule = _check_gamma(gamma)
        self.gamma_range = _check_gamma_range(gamma_range)

    def build(self, input_shape):
        super().build(input_shape)
        channels = int(input_shape[-1])
        self.gamma = self.add_state("gamma", (channels,))
        self.max_grad = self.add_state("max_grad", (channels,))
        self.oscillation = self.add_state("oscillation", (channels,))
        self.previous_sign = self.add_state("previous_sign", tuple(input_shape))

    def balanced_parameter(self, w):
        """gamma for this training step from the weights `w` (and the stored state), which it
        updates: the oscillation ratio against the previous step's signs, gamma, and the
        signs."""
        sign = binary_sign(w)
        ratio = oscillation_ratio(tf.convert_to_tensor(self.previous_sign), sign)
        if self.gamma_rule == OSCILLATION:
            gamma = ratio * tf.cast(self.max_grad, w.dtype)
            if self.gamma_range is not None:
                gamma = tf.clip_by_value(gamma, *self.gamma_range)
        else:
            gamma = tf.fill(tf.shape(ratio), tf.constant(self.gamma_rule, w.dtype))
        _assign(self.oscillation, ratio)
        _assign(self.gamma, gamma)
        _assign(self.previous_sign, sign)
        return tf.stop_gradient(gamma)

    def call(self, inputs, training=None):
        w = tf.convert_to_tensor(inputs)
        if not training:
            return self.scaled_sign(w)
        self.initialize_alpha(w)
        gamma = self.balanced_parameter(w)
        self.add_loss(reconstruction_loss(w, self.scale(w.dtype), gamma))
        return record_channel_max_abs_gradient(self.scaled_sign(w), self.max_grad)

    def get_config(self):
        return {**super().get_config(), "gamma": self.gamma_rule,
                "gamma_range": None if self.gamma_range is None else list(self.gamma_range)}
