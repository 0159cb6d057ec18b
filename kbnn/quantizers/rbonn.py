"""RBONN quantizer (Xu, Li, Wang, Ma, Zhang, Gao, Qiao, Lv, Guo, "Recurrent Bilinear Optimization
for Binary Neural Networks", ECCV 2022, arXiv 2209.01542; see docs/methods.md, section 'RBONN'):
`RBONNWeight`, binary weights with a learnable per-channel scale, the bilinear reconstruction
term with a fixed lambda, and the recurrent model that backtracks the weights of the channels
whose scale and weights converge asynchronously.

Two forms of the recurrent model (``form=``): "paper" (the paper's eqs., as reproduced in §3.8 of
the book "Binary Neural Networks: Algorithms, Architectures, and Applications", eqs. 3.121-3.136)
and "code" (the official code, `SteveTsui/RBONN`, `2_step2_rbonn/rbonn.py`, `RBOConv`)."""

from __future__ import annotations

import keras
import tensorflow as tf

from kbnn.checks import check_initializer
from kbnn.quantizers._checks import check_choice, check_non_negative, check_number
from kbnn.quantizers.base import BinaryForm
from kbnn.quantizers.channelwise import reduction_axes
from kbnn.quantizers.rebnn import (
    MEAN_ABS,
    LearnedScaleWeight,
    reconstruction_loss,
    record_gradient,
)
from kbnn.quantizers.registry import register_alias

__all__ = ["FORMS", "RBONNWeight", "backtrack_count", "backtrack_indicator", "density",
           "density_threshold", "drelu_selection"]

#: The forms of the recurrent model: "paper" (eqs. 3.131-3.136 of the book chapter) and "code"
#: (the official `RBOConv`); see `RBONNWeight`.
FORMS = ("paper", "code")


def _ascending_rank(values):
    """0-based rank of each entry in ascending order, ties in channel order (the earlier
    channel ranks lower)."""
    order = tf.argsort(values, stable=True)
    return tf.argsort(order, stable=True)


def density_threshold(channels: int, tau: float) -> int:
    """The paper's ``T = int(C_out * tau)`` (eq. 3.134 of the book chapter; RBONN, arXiv
    2209.01542): a channel is "dense" when its rank exceeds T, so ``C_out - T`` channels are."""
    return int(channels * tau)


def density(values, tau: float):
    """The paper's density function D (eq. 3.134 of the book chapter; RBONN, arXiv 2209.01542)
    of a diagonal matrix given by its diagonal `values` (one per output channel): 1.0 where
    ``ranking(values_i) > T`` with ``T = int(C_out * tau)``, 0.0 elsewhere. The ranking counts
    from 1 in ascending order (ties in channel order), so D is 1 for the ``C_out - T`` largest
    values: none with tau = 1, all with tau = 0."""
    values = tf.convert_to_tensor(values)
    threshold = density_threshold(int(values.shape[-1]), tau)
    return tf.cast(_ascending_rank(values) >= threshold, values.dtype)


def drelu_selection(previous_weight, scale, tau: float):
    """The channels that the paper's DReLU passes (eq. 3.133 of the book chapter; RBONN, arXiv
    2209.01542): 1.0 where ``(not D(w'_i)) and D(A_i)``, 0.0 elsewhere, with
    ``w' = diag(||w_1||_1, ..., ||w_C||_1)`` the L1 norms of the output channels of
    `previous_weight` (shaped (..., C_out)) and ``A = diag(1/|alpha_1|, ..., 1/|alpha_C|)``
    (`scale` = |alpha|): a channel whose scale is among the smallest (A dense) while its
    weights are not among the largest (w' not dense).

    The rank of 1/|alpha| is computed as the rank of -|alpha| (the same order, also where
    alpha = 0)."""
    previous_weight = tf.convert_to_tensor(previous_weight)
    norms = tf.reduce_sum(tf.abs(previous_weight), axis=reduction_axes(previous_weight))
    scale = tf.cast(scale, norms.dtype)
    return (1.0 - density(norms, tau)) * density(-tf.abs(scale), tau)


def backtrack_count(channels: int, tau: float) -> int:
    """How many output channels the official code's recurrent module backtracks:
    ``int(C * (1 - tau))`` (`RBOConv`; RBONN, arXiv 2209.01542)."""
    return int(channels * (1.0 - tau))


def backtrack_indicator(scale, count: int):
    """1.0 for the `count` output channels of smallest `scale` (by each channel's rank in
    ascending order, ties in channel order), 0.0 for the others: the official code's selection
    (RBONN, arXiv 2209.01542). The official code compares the argsort permutation itself with
    the threshold, which selects other channels; kbnn uses the rank."""
    scale = tf.convert_to_tensor(scale)
    return tf.cast(_ascending_rank(scale) < count, scale.dtype)


#: The arguments that every config saved before `form` existed has (`RBONNWeight.get_config`
#: wrote them all): such a config without `form` loads as ``form="code"``.
_SAVED_BEFORE_FORM = frozenset({"lam", "tau", "u_initializer", "clip_value", "alpha_gradient",
                                "alpha_initializer"})


def _check_form(value):
    return check_choice("RBONNWeight", "form", value, FORMS)


@register_alias("rbonn_weight")
class RBONNWeight(LearnedScaleWeight):
    """RBONN binary weights (Xu et al., "Recurrent Bilinear Optimization for Binary Neural
    Networks", ECCV 2022, arXiv 2209.01542; see docs/methods.md, section 'RBONN').

    Forward: ``W_q = |alpha| * sign(W)`` per output channel, alpha learnable (by default
    initialised to mean|W| at the first training step). The objective is the task loss plus
    the bilinear term (eq. 3.122 with G of eq. 3.121 of the book chapter that reproduces the
    paper, §3.8), added through the layer (``add_loss``) in training with a fixed lambda::

        L = L_S + (lambda / 2) * ||W - |alpha| sign(W)||^2

    so the gradients are those of `ReBNNWeight` with gamma = lambda:
    ``dW = |alpha| * dL_S/dW_q [* 1[|W| <= clip]] + lambda * (W - |alpha| sign(W))``.

    The recurrent model, ``form="paper"`` (the default; eqs. 3.131-3.136):

    * after each step the weights are backtracked and written back, eqs. 3.131-3.132:
      ``w^(t+1) <- w^(t+1) + U o DReLU(w^t, A)``, U >= 0 one coefficient per output channel;
    * DReLU passes a channel's previous weights, ``DReLU(w_i, A_i) = w_i``, where
      ``(not D(w'_i)) and D(A_i)`` (eq. 3.133) and is 0 elsewhere, with
      ``w' = diag(||w_i||_1)`` and ``A = diag(1/|alpha_i|)``;
    * D (eq. 3.134) is 1 for the channels whose ascending rank exceeds ``T = int(C_out * tau)``,
      i.e. the ``C_out - T`` largest: DReLU selects the channels whose scale is among the
      ``C_out - T`` smallest while their weights' L1 norm is not among the ``C_out - T``
      largest (see `drelu_selection`); nothing with tau = 1 (or tau = 0);
    * U is trained by the task loss only, ``dL/dU = dL_S/dW o DReLU(w^(t-1), A)`` (eq. 3.136),
      and kept non-negative, ``U <- |U - eta dL/dU|`` (eq. 3.135): kbnn uses |u| in the
      forward (the same update for SGD), as it uses |alpha|.

    kbnn writes the backtracked part into a non-trainable variable `backtrack` instead of the
    kernel (a quantizer cannot assign its layer's variable): the weights are
    ``W = kernel + backtrack`` everywhere (forward, bilinear term, inference and export), which
    is the paper's write-back for an optimizer whose step depends only on the gradient
    (decoupled weight decay decays only the kernel part). `previous_weight` holds the W of the
    previous training step (zeros before the first, so the first step backtracks nothing).
    The inference form is ``|alpha| * sign(kernel + backtrack)``.

    ``form="code"`` (the official `RBOConv`): in training the conv sees
    ``W' = W - u * g_prev * I`` (not written back) instead, with ``g_prev`` the gradient that
    reached W at the previous step (a non-trainable variable `previous_gradient`, written in
    the backward pass; under loss scaling that of the scaled loss), ``I`` 1 for the
    ``int(C_out * (1 - tau))`` output channels of smallest |alpha| (by each channel's rank; the
    official code compares the argsort permutation instead) and u (raw, not |u|) trained by the
    whole loss through W'. Inference uses W.

    The paper and the official code give no 1[|W| <= 1] mask (``clip_value=None``, the default);
    the official code uses ``sum dL/dW_q * W`` for alpha (``alpha_gradient="latent"``),
    initialises alpha with ``randn`` times a fixed 0.02 and trains u with a tenth of the
    learning rate (give u its own optimizer with `kbnn.optimizers.CaseOptimizer` for that).

    A complete config without `form` (saved before the option existed: it has every other
    argument) loads as ``form="code"``, the behaviour it was saved with; a partial config (e.g.
    ``{"class_name": "rbonn_weight", "config": {"lam": 1e-3}}``) gets the default, "paper".

    Inference form: ``BinaryForm(threshold=-backtrack, scale=|alpha|)`` ("paper"),
    ``BinaryForm(scale=|alpha|)`` ("code").

    Args:
        lam: lambda, the weight of the bilinear term (1e-4, the official code; >= 0).
        tau: the density threshold (0.6, the official `thre`; in [0, 1]; tau = 1 switches the
            recurrent model off).
        form: "paper" (default) or "code", the recurrent model above.
        u_initializer: initializer of U (0.2 everywhere, the official init).
        clip_value: the task gradient of W is zero where ``|W| > clip_value``; None (the
            default) for no mask.
        alpha_gradient: "sign" (the chain rule, default) or "latent" (the official code).
        alpha_initializer: "mean_abs" (default): alpha starts as mean|W| per output channel,
            set from the kernel at the first training step; or a Keras initializer.
    """

    def __init__(self, lam: float = 1e-4, tau: float = 0.6, form: str = "paper",
                 u_initializer=None, clip_value: float | None = None,
                 alpha_gradient: str = "sign", alpha_initializer=MEAN_ABS, **kwargs):
        super().__init__(clip_value=clip_value, alpha_gradient=alpha_gradient,
                         alpha_initializer=alpha_initializer, **kwargs)
        self.lam = check_non_negative("RBONNWeight", "lam", lam)
        self.tau = check_number("RBONNWeight", "tau", tau, 0.0, 1.0)
        self.form = _check_form(form)
        self.u_initializer = check_initializer("RBONNWeight", "u_initializer", u_initializer,
                                               default=keras.initializers.Constant(0.2))

    def build(self, input_shape):
        super().build(input_shape)
        channels = int(input_shape[-1])
        self.u = self.add_weight(name="u", shape=(channels,), initializer=self.u_initializer,
                                 trainable=True)
        if self.form == "paper":
            self.backtrack = self.add_state("backtrack", tuple(input_shape))
            self.previous_weight = self.add_state("previous_weight", tuple(input_shape))
            self.dense_channels = channels - density_threshold(channels, self.tau)
        else:
            self.previous_gradient = self.add_state("previous_gradient", tuple(input_shape))
            self.backtracked_channels = backtrack_count(channels, self.tau)

    def weights_with_backtrack(self, kernel):
        """The weights W: ``kernel + backtrack`` ("paper"), the kernel itself ("code")."""
        kernel = tf.convert_to_tensor(kernel)
        if self.form != "paper":
            return kernel
        return kernel + tf.cast(self.backtrack, kernel.dtype)

    def backtracked(self, w):
        """Code form: W' = W - u * g_prev * I (see the class docstring)."""
        indicator = tf.stop_gradient(
            backtrack_indicator(self.scale(w.dtype), self.backtracked_channels))
        step = tf.stop_gradient(tf.cast(self.previous_gradient, w.dtype)) * indicator
        return w - tf.cast(self.u, w.dtype) * step

    def _paper_step(self, w):
        """Paper form, one training step: returns (W for the task, W for the bilinear term);
        they are equal, but U gets its gradient from the task only (eq. 3.136). Updates
        `backtrack` and `previous_weight`."""
        previous = tf.cast(self.previous_weight, w.dtype)
        selection = drelu_selection(previous, self.scale(w.dtype), self.tau)
        drelu = tf.stop_gradient(previous * selection)
        step = tf.abs(tf.cast(self.u, w.dtype)) * drelu
        task_w = w + step
        self.backtrack.assign_add(tf.cast(tf.stop_gradient(step), self.backtrack.dtype))
        self.previous_weight.assign(tf.cast(tf.stop_gradient(task_w), self.previous_weight.dtype))
        return task_w, w + tf.stop_gradient(step)

    def call(self, inputs, training=None):
        w = self.weights_with_backtrack(inputs)
        if not training:
            return self.scaled_sign(w)
        self.initialize_alpha(w)
        if self.form == "paper":
            w, bilinear_w = self._paper_step(w)
        else:
            w = self.backtracked(record_gradient(w, self.previous_gradient))
            bilinear_w = w
        scale = self.scale(w.dtype)
        self.add_loss(reconstruction_loss(bilinear_w, scale,
                                          tf.fill(tf.shape(scale), self.lam)))
        return self.scaled_sign(w)

    def binary_form(self, inputs):
        if self.form != "paper":
            return super().binary_form(inputs)
        return BinaryForm(threshold=-tf.convert_to_tensor(self.backtrack), scale=self.scale())

    def get_config(self):
        return {**super().get_config(), "lam": self.lam, "tau": self.tau, "form": self.form,
                "u_initializer": keras.initializers.serialize(self.u_initializer)}

    @classmethod
    def from_config(cls, config):
        if "form" not in config and _SAVED_BEFORE_FORM <= set(config):
            # a complete config saved before `form` existed: the official code's module, which
            # it was trained with (and whose state variable, `previous_gradient`, it saved)
            config = {**config, "form": "code"}
        return super().from_config(config)
