"""BNext quantizers (Guo, Bethge, Meinel, Yang, "Towards Optimization-Friendly Binary Neural
Network", TMLR 2023, arXiv 2211.12933; see docs/methods.md, section 'BNext'): `HardSign`, the
activation sign with an identity gradient inside [-1.5, 1.5], and `BNextWeight`, the
temperature-annealed weights of BNext's `HardBinaryConv`, whose forward is binary only once the
temperature tau is below 1e-7."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from kbnn.quantizers._checks import check_non_negative, check_positive, check_positive_or_none
from kbnn.quantizers.base import BinaryForm, Quantizer, binary_sign, sign_with_surrogate_grad
from kbnn.quantizers.registry import register_alias
from kbnn.quantizers.sign import ste_mask

__all__ = ["BNEXT_BINARY_BELOW", "BNextWeight", "HardSign", "bnext_weight", "hard_sign"]

#: The official `HardBinaryConv` switches to sign(W) once ``tau < 1e-7`` (float32 comparison).
BNEXT_BINARY_BELOW = 1e-7
# The official code divides by ``tau.clamp(min=1e-8)``.
_TAU_FLOOR = 1e-8


def hard_sign(x, clip_range: float | None = 1.5):
    """BNext's `HardSign` (arXiv 2211.12933; see docs/methods.md, section 'BNext'): sign(x)
    (sign(0) = +1) forward, the gradient of ``clamp(x, -clip_range, clip_range)`` backward,
    i.e. ``1[|x| <= clip_range]``; ``clip_range=None`` passes the gradient unclipped."""
    return sign_with_surrogate_grad(x, ste_mask(clip_range))


def _below(tau, binary_below: float):
    """``tau < binary_below`` compared in float32, as the official float32 buffer is."""
    return tf.cast(tau, tf.float32) < tf.constant(binary_below, tf.float32)


def bnext_weight(w, tau, binary_below: float = BNEXT_BINARY_BELOW):
    """BNext's temperature-annealed binary weights (`HardBinaryConv`, arXiv 2211.12933; see
    docs/methods.md, section 'BNext').

    Forward: ``clamp(w / max(tau, 1e-8), -1, 1)`` while ``tau >= binary_below`` and
    ``sign(w)`` (sign(0) = +1) once ``tau < binary_below``; `tau` is a scalar (a number or a
    variable, read when the function runs). Backward: the identity (straight-through, no clip),
    nothing to tau.
    """
    w = tf.convert_to_tensor(w)
    tau = tf.cast(tf.convert_to_tensor(tau), w.dtype)

    @tf.custom_gradient
    def _forward(v, t):
        soft = tf.clip_by_value(v / tf.maximum(t, tf.constant(_TAU_FLOOR, v.dtype)), -1.0, 1.0)
        value = tf.where(_below(t, binary_below), binary_sign(v), soft)

        def grad(dy):
            return dy, tf.zeros_like(t)

        return value, grad

    return _forward(w, tau)


@register_alias("hard_sign")
class HardSign(Quantizer):
    """BNext's activation binarizer `HardSign` (Guo et al., arXiv 2211.12933; see
    docs/methods.md, section 'BNext').

    Forward: +1 if x >= 0 else -1. Backward: the gradient of ``clamp(x, -clip_range,
    clip_range)``, i.e. ``dy * 1[|x| <= clip_range]`` (the official blocks use the range
    [-1.5, 1.5]). The official module also holds a temperature buffer and divides x by it
    before the sign; with its ``progressive=False`` (what every block uses) that does not
    change sign(x), so kbnn's HardSign has no temperature. PyTorch's sign maps 0 to 0, kbnn's
    to +1.

    Inference form: the plain sign, ``BinaryForm()``.

    Args:
        clip_range: half-width of the range where the gradient is 1 (1.5); None for the
            unclipped straight-through estimator.
    """

    precision = 1
    applies_to = "activations"

    def __init__(self, clip_range: float | None = 1.5, **kwargs):
        super().__init__(**kwargs)
        self.clip_range = check_positive_or_none("HardSign", "clip_range", clip_range)

    def call(self, inputs, training=None):
        return hard_sign(inputs, self.clip_range)

    def binary_form(self, inputs):
        return BinaryForm()

    def get_config(self):
        return {**super().get_config(), "clip_range": self.clip_range}


@register_alias("bnext_weight")
class BNextWeight(Quantizer):
    """The temperature-annealed binary weights of BNext's `HardBinaryConv` (Guo et al.,
    arXiv 2211.12933; see docs/methods.md, section 'BNext').

    Forward, in training and inference alike: ``clamp(W / tau, -1, 1)`` while
    ``tau >= binary_below`` (1e-7), and ``sign(W)`` (sign(0) = +1) once ``tau < binary_below``,
    compared in float32 as the official code compares its float32 buffer (tau = 1e-7 itself is
    not binary yet). The division uses ``max(tau, 1e-8)``, as the official code. Backward: the
    identity (straight-through, no clip), in every phase. There is no scaling factor: the
    batch norm after the convolution absorbs the scale.

    tau is a non-trainable scalar variable (saved with the model), initialised to `tau` (1.0).
    The official training multiplies it by 0.9 after every epoch; in Keras use
    ``kbnn.training.bnext.bnext_tau_schedule()`` (a `kbnn.training.QuantizerSchedule` of "tau"):
    epoch e runs with ``tau = 0.9**e``, which is first below 1e-7 at e = 153.

    The official code also clamps the latent weights to [-1.5, 1.5] in place at every training
    step; in Keras that is the constraint ``kernel_constraint=kbnn.constraints.WeightClip(1.5)``
    of the convolution (the `kbnn.blocks.BNextBlock` units set it).

    Inference form: ``BinaryForm()`` (plain sign) once tau < binary_below; before that the
    forward is not binary and `binary_form` is None, with the reason given by
    `binary_form_unavailable_reason` (the converter names the layer and tau). `binary_form`
    reads tau when it is called (eagerly, also from inside a traced function).

    Args:
        tau: initial temperature (> 0; 1.0 as the official buffer).
        binary_below: the forward is sign(W) once tau < binary_below (1e-7 as the official
            code; >= 0).
    """

    precision = 1
    applies_to = "weights"

    def __init__(self, tau: float = 1.0, binary_below: float = BNEXT_BINARY_BELOW, **kwargs):
        super().__init__(**kwargs)
        self._tau_init = check_positive("BNextWeight", "tau", tau)
        self.binary_below = check_non_negative("BNextWeight", "binary_below", binary_below)

    def build(self, input_shape):
        self.tau = self.add_weight(name="tau", shape=(),
                                   initializer=keras.initializers.Constant(self._tau_init),
                                   trainable=False)
        self.built = True

    def call(self, inputs, training=None):
        return bnext_weight(inputs, self.tau, self.binary_below)

    def current_tau(self) -> float:
        """The current value of tau as a Python float (read eagerly)."""
        if not self.built:
            return self._tau_init
        with tf.init_scope():
            return float(keras.ops.convert_to_numpy(self.tau))

    @property
    def is_exactly_binary(self) -> bool:
        """True once tau < binary_below (float32 comparison): the forward is sign(W)."""
        return bool(np.float32(self.current_tau()) < np.float32(self.binary_below))

    def binary_form_unavailable_reason(self) -> str | None:
        """Why `binary_form` is None right now (None once the forward is binary)."""
        if self.is_exactly_binary:
            return None
        return (f"tau = {self.current_tau():.6g} is not below {self.binary_below:g}, so the "
                f"BNext weight forward clamp(W / tau, -1, 1) is not binary yet; anneal tau "
                f"below {self.binary_below:g} first (kbnn.training.bnext.bnext_tau_schedule(): "
                "tau = 0.9**epoch is below 1e-7 from epoch 153 on)")

    def binary_form(self, inputs):
        if not self.is_exactly_binary:
            return None
        return BinaryForm()

    def get_config(self):
        return {**super().get_config(), "tau": self._tau_init, "binary_below": self.binary_below}
