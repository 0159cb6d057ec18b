"""Binarizing by classification (He, Zhang, Wu, Zhou, "Binarizing by Classification: Is soft
function really necessary?", arXiv 2205.07433; see docs/methods.md, section 'Binarizing by
classification'): `LearnedBinarizer`, weight binarization as a two-class classification whose
gradient estimator is learnt end to end by a tiny network."""

from __future__ import annotations

import keras
import tensorflow as tf

from kbnn.quantizers._checks import check_bool, check_choice, check_positive_int
from kbnn.quantizers.base import BinaryForm, Quantizer, binary_sign
from kbnn.quantizers.channelwise import channel_mean
from kbnn.quantizers.registry import register_alias
from kbnn.quantizers.sign import channel_mean_abs

__all__ = ["INITIAL_SLOPES", "LEARNED_VARIANTS", "LearnedBinarizer", "gated_logits",
           "is_learned_binarizer_variable", "sign_from_logits"]

#: The values of `LearnedBinarizer(variant=...)`.
LEARNED_VARIANTS = ("mlp", "linear")
#: The values of `LearnedBinarizer(initial_slope=...)`.
INITIAL_SLOPES = ("positive", "random")


@tf.custom_gradient
def gated_logits(logits):
    """The identity in the forward pass; the gradient passes only where ``-1 < logit < 1``
    (the official code's `GatedLinear`)."""

    def grad(dy):
        return dy * tf.cast((logits > -1.0) & (logits < 1.0), dy.dtype)

    return tf.identity(logits), grad


@tf.custom_gradient
def sign_from_logits(values, logits):
    """``sign(values)`` (sign(0) = +1) in the forward pass; in the backward pass the gradient
    of each element is copied to each of its logits (``logits`` shaped (values.size, L)) and
    nothing goes to `values` directly (the official code's `SignWithnGradient`)."""

    def grad(dy):
        column = tf.reshape(dy, (-1, 1))
        return tf.zeros_like(values), tf.tile(column, [1, tf.shape(logits)[-1]])

    return binary_sign(values), grad


@keras.saving.register_keras_serializable(package="kbnn")
def is_learned_binarizer_variable(variable) -> bool:
    """True for the weights of a `LearnedBinarizer`'s network (variables named "learned_w1" or
    "learned_w2"): a `kbnn.optimizers.CaseOptimizer` predicate that gives them their own
    optimizer, as the paper does (arXiv 2205.07433: Adam, lr 1e-3)."""
    path = str(getattr(variable, "path", None) or getattr(variable, "name", ""))
    return path.rsplit("/", 1)[-1].split(":")[0] in ("learned_w1", "learned_w2")


@register_alias("learned_sign")
class LearnedBinarizer(Quantizer):
    """Weight binarization by classification (He et al., arXiv 2205.07433; official code
    `ThisisBillhe/Binarizing-by-Classification`; see docs/methods.md, section 'Binarizing by
    classification').

    Per output channel (over every kernel axis but the last) the weights are centred,
    ``w_c = w - mean(w)`` (``center=False``: ``w_c = w``). Forward: ``alpha * sign(w_c)`` with
    ``alpha = mean|w_c|`` held constant for the gradient, the scaled sign of XNOR-Net / ReActNet.

    Backward: a small network g classifies every weight element into two classes, logits
    ``z = g(w_c)`` in R^2, applied element-wise (one scalar in, two logits out):

    * ``variant="mlp"`` (the paper's MLP, official `MetaConv_v2`):
      ``z = W2 tanh(W1 w_c)``, W1: 1 -> `hidden_units` (100), W2: -> 2, no biases;
    * ``variant="linear"`` (official `MetaConv_v3`): ``z = w_c [a1, a2]``.

    The logits do not change the forward value. The gradient g' of the loss w.r.t. the binary
    output (times alpha) is copied to both logits; with ``gate`` it passes only where the
    logit lies in (-1, 1) (official `GatedLinear`, on by default for "mlp"; the linear variant
    has no gate); it then flows through g to ``w_c`` (and through the centring to w) and to g's
    weights. So ``dL/dw_c = alpha g' sum_j 1[|z_j| < 1] dz_j/dw_c``: the network learns the
    shape of the gradient estimator (for "linear": ``alpha g' (a1 + a2)``, a learnt STE slope).

    Each quantizer owns its network (the paper shares one across the whole model; a Keras
    layer shared between layers does not survive a `.keras` round trip).

    The network needs its own, smaller learning rate, as in the paper (Adam, lr 1e-3 for the
    network, 2.5e-3 for the rest, on ImageNet). The weights near 0 that the loss wants to flip
    push the estimator's slope down (``d slope ~ -sum g' w_c``); with too large a learning rate
    the slope turns negative, the weights then move against their gradient and training
    diverges. On the digits check (Adam 1e-2 for the model): 2 of 3 seeds diverged with 1e-2
    for the network too, 2 of 4 with 1e-3, none of 4 with 1e-4. Route its variables with
    `kbnn.optimizers.CaseOptimizer` and the predicate `is_learned_binarizer_variable`::

        CaseOptimizer((is_learned_binarizer_variable, keras.optimizers.Adam(1e-4)),
                      default_optimizer=keras.optimizers.Adam(1e-2))

    The official linear variant outputs ``2 argmax(z) - 1`` in the forward pass, which is
    sign(w_c (a2 - a1)); kbnn keeps the scaled sign for both variants.

    Inference form: ``BinaryForm(threshold=mean(w), scale=mean|w - mean(w)|)`` per output
    channel (threshold 0 without centring): it converts like "scaled_sign".

    Args:
        variant: "mlp" (default) or "linear".
        hidden_units: width of the MLP's hidden layer (100).
        gate: pass the gradient only where a logit is in (-1, 1); None (default) for the
            official choice of the variant (True for "mlp", False for "linear").
        center: subtract the per-output-channel mean first (True, the official code).
        initial_slope: "positive" (default): if the randomly initialised network's slope at 0,
            ``d(z_1 + z_2)/dw_c``, is negative, its last layer is negated, so training starts
            as a descent (an STE-like estimator); "random": the official code's random
            initialisation, whose slope is negative for about half of the seeds (the weights
            then first move against their gradient).
    """

    precision = 1
    applies_to = "weights"

    def __init__(self, variant: str = "mlp", hidden_units: int = 100, gate: bool | None = None,
                 center: bool = True, initial_slope: str = "positive", **kwargs):
        super().__init__(**kwargs)
        self.variant = check_choice("LearnedBinarizer", "variant", variant, LEARNED_VARIANTS)
        self.hidden_units = check_positive_int("LearnedBinarizer", "hidden_units", hidden_units)
        if gate is None:
            gate = variant == "mlp"
        self.gate = check_bool("LearnedBinarizer", "gate", gate)
        self.center = check_bool("LearnedBinarizer", "center", center)
        self.initial_slope = check_choice("LearnedBinarizer", "initial_slope", initial_slope,
                                          INITIAL_SLOPES)

    def build(self, input_shape):
        # PyTorch's nn.Linear default, as the official code: uniform in +-1/sqrt(fan_in).
        init = keras.initializers.VarianceScaling(1.0 / 3.0, "fan_in", "uniform")
        if self.variant == "mlp":
            self.learned_w1 = self.add_weight(name="learned_w1", shape=(1, self.hidden_units),
                                              initializer=init)
            self.learned_w2 = self.add_weight(name="learned_w2", shape=(self.hidden_units, 2),
                                              initializer=init)
        else:
            self.learned_w1 = self.add_weight(name="learned_w1", shape=(1, 2), initializer=init)
        if self.initial_slope == "positive":
            with tf.init_scope():
                if float(keras.ops.convert_to_numpy(self.slope_at_zero())) < 0.0:
                    last = self.learned_w2 if self.variant == "mlp" else self.learned_w1
                    last.assign(-keras.ops.convert_to_numpy(last))
        self.built = True

    def slope_at_zero(self):
        """d(z_1 + z_2)/dw_c at w_c = 0: the slope of the learnt estimator at 0 with every
        gate open (for "linear": a1 + a2)."""
        w1 = keras.ops.convert_to_tensor(self.learned_w1)
        if self.variant == "linear":
            return keras.ops.sum(w1)
        w2 = keras.ops.convert_to_tensor(self.learned_w2)
        return keras.ops.sum(w1[0] * keras.ops.sum(w2, axis=1))

    def logits(self, values):
        """The classifier's two logits per element of `values`: shape (values.size, 2)."""
        column = tf.reshape(values, (-1, 1))
        w1 = tf.cast(self.learned_w1, values.dtype)
        if self.variant == "linear":
            return tf.matmul(column, w1)
        return tf.matmul(tf.tanh(tf.matmul(column, w1)), tf.cast(self.learned_w2, values.dtype))

    def _centred(self, inputs):
        inputs = tf.convert_to_tensor(inputs)
        if not self.center:
            return inputs, None
        mean = channel_mean(inputs)
        return inputs - mean, mean

    def call(self, inputs, training=None):
        centred, _ = self._centred(inputs)
        alpha = tf.stop_gradient(channel_mean_abs(centred))
        if not training:
            return alpha * binary_sign(centred)
        logits = self.logits(centred)
        if self.gate:
            logits = gated_logits(logits)
        return alpha * sign_from_logits(centred, logits)

    def binary_form(self, inputs):
        centred, mean = self._centred(inputs)
        return BinaryForm(threshold=0.0 if mean is None else mean,
                          scale=channel_mean_abs(centred))

    def get_config(self):
        return {**super().get_config(), "variant": self.variant,
                "hidden_units": self.hidden_units, "gate": self.gate, "center": self.center,
                "initial_slope": self.initial_slope}
