"""The quantizer contract shared by every kbnn quantizer and the converter.

A quantizer is a Keras layer that maps real values to a small set of values. It has two forms:

* the **training form** (`call`): the forward value plus a surrogate gradient, implemented with
  a custom gradient so the forward graph stays an exact `where(x >= t, 1, -1)`;
* the **inference form** (`binary_form`): for a binarizer, per-channel constants
  `threshold`, `scale`, `offset` such that

      q(x) = scale * s(x - threshold) + offset,   s(z) = +1 if z >= 0 else -1.

  The converter reads only this form (never the quantizer's name) to build LCE binary ops.
  Non-binary quantizers (multi-bit, ternary, fake-quant, no-op) return ``None``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import keras
import tensorflow as tf

__all__ = ["BinaryForm", "Quantizer", "binary_sign", "sign_with_surrogate_grad"]


def binary_sign(x, threshold=None):
    """Inference form of every binarizer: ``where(x >= threshold, +1, -1)``, the deterministic
    sign of BinaryNet (Hubara et al., arXiv 1602.02830) with sign(0) = +1.

    Emitted as a `SelectV2` with scalar constants +1/-1, the form that LCE lowers to
    `LceQuantize` (plain `tf.sign` and the stop-gradient trick do not lower; see docs/lce.md,
    section 'What LCE lowers').
    """
    x = tf.convert_to_tensor(x)
    cond = x >= 0 if threshold is None else x >= tf.cast(threshold, x.dtype)
    return tf.where(cond, tf.constant(1.0, x.dtype), tf.constant(-1.0, x.dtype))


def sign_with_surrogate_grad(u, surrogate_grad):
    """``s(u)`` in the forward pass, ``dy * surrogate_grad(u)`` in the backward pass: a
    straight-through estimator (Bengio, Leonard, Courville, arXiv 1308.3432) with any surrogate.

    Args:
        u: the (already shifted/scaled) input of the sign.
        surrogate_grad: a function of ``u`` giving d s / d u elementwise.
    """

    @tf.custom_gradient
    def _sign(v):
        def grad(dy):
            return dy * tf.cast(surrogate_grad(v), dy.dtype)

        return binary_sign(v), grad

    return _sign(tf.convert_to_tensor(u))


@dataclass(frozen=True)
class BinaryForm:
    """Affine-binary inference form ``q(x) = scale * s(x - threshold) + offset``.

    Each field is a scalar or a tensor that broadcasts along the last (channel) axis of the
    quantized tensor: input channels for an activation quantizer, output channels for a
    kernel quantizer. kbnn's own export contract (not from a paper); see docs/methods.md,
    section 'Conventions used on this page'.
    """

    threshold: Any = 0.0
    scale: Any = 1.0
    offset: Any = 0.0

    def sign(self, x):
        """The binary part ``s(x - threshold)`` in {-1, +1}."""
        return binary_sign(x, self.threshold)

    def __call__(self, x):
        x = tf.convert_to_tensor(x)
        return tf.cast(self.scale, x.dtype) * self.sign(x) + tf.cast(self.offset, x.dtype)

    def numpy(self) -> BinaryForm:
        """The same form with every field as a numpy array (for freezing at export)."""
        return BinaryForm(*(keras.ops.convert_to_numpy(v) for v in
                            (self.threshold, self.scale, self.offset)))


class Quantizer(keras.layers.Layer):
    """Base class of kbnn quantizers.

    Subclasses implement `call(inputs, training=None)` (training form) and, if they binarize,
    `binary_form(inputs)` (inference form). `precision` is the number of bits of the output.
    The interface follows larq's `Quantizer` (Geiger & Team Plumerai, "Larq", JOSS 2020); the
    methods and their papers are listed in docs/methods.md.
    """

    precision: int = 32

    def __init__(self, **kwargs):
        kwargs.setdefault("trainable", True)
        super().__init__(**kwargs)

    def binary_form(self, inputs) -> BinaryForm | None:
        """Affine-binary form for these inputs, or ``None`` if this quantizer is not binary."""
        return None

    @property
    def is_binary(self) -> bool:
        return self.precision == 1

    def inference(self, inputs):
        """The graph the converter exports: the affine-binary form where there is one."""
        form = self.binary_form(inputs)
        if form is None:
            return self.call(inputs, training=False)
        return form(inputs)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        """The Keras layer config (name, `trainable`, `dtype`) plus, in subclasses, every
        constructor argument. A quantizer inside a kbnn layer is given the layer's dtype policy
        again when the layer is rebuilt from its config."""
        return super().get_config()
