"""RBONN quantizer (Xu, Li, Wang, Ma, Zhang, Gao, Qiao, Lv, Guo, "Recurrent Bilinear Optimization
for Binary Neural Networks", ECCV 2022, arXiv 2209.01542; see docs/methods.md, section 'RBONN'):
`RBONNWeight`, binary weights with a learnable per-channel scale, the bilinear reconstruction
term with a fixed lambda, and the recurrent module that backtracks the channels of lowest scale
along their previous gradient."""

from __future__ import annotations

import keras
import tensorflow as tf

from kbnn.quantizers._checks import check_non_negative, check_number
from kbnn.quantizers.rebnn import (
    MEAN_ABS,
    LearnedScaleWeight,
    reconstruction_loss,
    record_gradient,
)
from kbnn.quantizers.registry import register_alias

__all__ = ["RBONNWeight", "backtrack_count", "backtrack_indicator"]


def backtrack_count(channels: int, tau: float) -> int:
    """How many output channels the recurrent module backtracks: ``int(C * (1 - tau))`` (the
    official `RBOConv`; RBONN, arXiv 2209.01542)."""
    return int(channels * (1.0 - tau))


def backtrack_indicator(scale, count: int):
    """1.0 for the `count` output channels of smallest `scale` (by each channel's rank in
    ascending order, ties in channel order), 0.0 for the others (RBONN's DReLU selection,
    arXiv 2209.01542). The official code compares the argsort permutation itself with the
    threshold, which selects other channels; kbnn uses the rank."""
    scale = tf.convert_to_tensor(scale)
    order = tf.argsort(scale, stable=True)
    rank = tf.argsort(order, stable=True)
    return tf.cast(rank < count, scale.dtype)


@register_alias("rbonn_weight")
class RBONNWeight(LearnedScaleWeight):
    """RBONN binary weights (Xu et al., "Recurrent Bilinear Optimization for Binary Neural
    Networks", arXiv 2209.01542; see docs/methods.md, section 'RBONN').

    Forward: ``W_q = |alpha| * sign(W')`` per output channel, alpha learnable (by default
    initialised to mean|W| at the first training step), where in
    training the recurrent module backtracks the channels of lowest scale::

        W' = W - u * DReLU(alpha, W),   DReLU = g_prev * I

    * ``g_prev`` is the gradient that reached W at the previous training step (a
      non-trainable variable `previous_gradient`, written during the backward pass; zeros
      before the first step, so the first step uses W; under loss scaling it is the gradient
      of the scaled loss);
    * ``I`` is 1 for the ``int(C_out * (1 - tau))`` output channels of smallest |alpha| (by
      each channel's rank; the official code compares the argsort permutation instead) and 0
      for the others, 40% of the channels with tau = 0.6;
    * ``u`` is a learnable coefficient per output channel (init 0.2) that gets its gradient
      through W' (``g_prev`` is a constant).

    In inference W' = W. The bilinear term ``(lambda / 2) * ||W' - |alpha| sign(W')||^2`` is
    added through the layer (``add_loss``) in training, with a fixed lambda (1e-4), so the
    gradients are those of `ReBNNWeight` with gamma = lambda:
    ``dW' = |alpha| * dL/dW_q [* 1[|W'| <= clip]] + lambda * (W' - |alpha| sign(W'))``.

    The official code has no 1[|W| <= 1] mask (``clip_value=None``, the default here; the paper
    gives none of its own), uses ``sum dL/dW_q * W`` for alpha (``alpha_gradient="latent"``),
    initialises alpha with ``randn`` times a fixed 0.02 and trains u with a tenth of the
    learning rate (give u its own optimizer with `kbnn.optimizers.CaseOptimizer` for that).

    Inference form: ``BinaryForm(scale=|alpha|)``.

    Args:
        lam: lambda, the weight of the bilinear term (1e-4, the official code; >= 0).
        tau: the recurrent module backtracks ``int(C_out * (1 - tau))`` channels (0.6, the
            official `thre`; in [0, 1]; tau = 1 switches it off).
        u_initializer: initializer of u (0.2 everywhere, the official init).
        clip_value: the task gradient of W' is zero where ``|W'| > clip_value``; None (the
            default) for no mask.
        alpha_gradient: "sign" (the chain rule, default) or "latent" (the official code).
        alpha_initializer: "mean_abs" (default): alpha starts as mean|W| per output channel,
            set from the kernel at the first training step; or a Keras initializer.
    """

    def __init__(self, lam: float = 1e-4, tau: float = 0.6, u_initializer=None,
                 clip_value: float | None = None, alpha_gradient: str = "sign",
                 alpha_initializer=MEAN_ABS, **kwargs):
        super().__init__(clip_value=clip_value, alpha_gradient=alpha_gradient,
                         alpha_initializer=alpha_initializer, **kwargs)
        self.lam = check_non_negative("RBONNWeight", "lam", lam)
        self.tau = check_number("RBONNWeight", "tau", tau, 0.0, 1.0)
        if u_initializer is None:
            u_initializer = keras.initializers.Constant(0.2)
        try:
            self.u_initializer = keras.initializers.get(u_initializer)
        except (TypeError, ValueError) as err:
            raise ValueError(
                "Invalid value for argument `u_initializer` of RBONNWeight. Expected a Keras "
                f"initializer (name, config or instance) or None. Received "
                f"u_initializer={u_initializer!r} ({err})."
            ) from None

    def build(self, input_shape):
        super().build(input_shape)
        channels = int(input_shape[-1])
        self.u = self.add_weight(name="u", shape=(channels,), initializer=self.u_initializer,
                                 trainable=True)
        self.previous_gradient = self.add_state("previous_gradient", tuple(input_shape))
        self.backtracked_channels = backtrack_count(channels, self.tau)

    def backtracked(self, w):
        """W' = W - u * g_prev * I (see the class docstring)."""
        indicator = tf.stop_gradient(
            backtrack_indicator(self.scale(w.dtype), self.backtracked_channels))
        step = tf.stop_gradient(tf.cast(self.previous_gradient, w.dtype)) * indicator
        return w - tf.cast(self.u, w.dtype) * step

    def call(self, inputs, training=None):
        w = tf.convert_to_tensor(inputs)
        if not training:
            return self.scaled_sign(w)
        self.initialize_alpha(w)
        w = self.backtracked(record_gradient(w, self.previous_gradient))
        scale = self.scale(w.dtype)
        self.add_loss(reconstruction_loss(w, scale, tf.fill(tf.shape(scale), self.lam)))
        return self.scaled_sign(w)

    def get_config(self):
        return {**super().get_config(), "lam": self.lam, "tau": self.tau,
                "u_initializer": keras.initializers.serialize(self.u_initializer)}
