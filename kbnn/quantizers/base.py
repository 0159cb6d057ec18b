"""The quantizer contract shared by every kbnn quantizer and the converter.

A quantizer is a Keras layer that maps real values to a small set of values. It has two forms:

* the **training form** (`call`): the forward value plus a surrogate gradient, implemented with
  a custom gradient so the forward graph stays an exact `where(x < t, -1, 1)` (see
  `binary_sign` for NaN, infinities and -0.0, where it agrees with LCE);
* the **inference form** (`binary_form`): for a binarizer, per-channel constants
  `threshold`, `scale`, `offset` such that

      q(x) = scale * s(x - threshold) + offset,   s(z) = -1 if z < 0 else +1.

  The converter reads only this form (never the quantizer's name) to build LCE binary ops.
  Non-binary quantizers (multi-bit, ternary, fake-quant, no-op) return ``None``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import keras
import numpy as np
import tensorflow as tf

__all__ = ["APPLIES_TO", "BinaryForm", "Quantizer", "as_numeric_input", "binary_sign",
           "sign_with_surrogate_grad"]

# The values of `Quantizer.applies_to`.
APPLIES_TO = ("activations", "weights", "both")


def _dtype_name(value) -> str:
    dtype = getattr(value, "dtype", None)
    if dtype is None:
        dtype = np.asarray(value).dtype
    kind = getattr(dtype, "kind", None)
    if kind in ("U", "S", "O"):  # numpy str, bytes and object arrays
        return "object" if kind == "O" else "string"
    try:
        return keras.backend.standardize_dtype(dtype)
    except (TypeError, ValueError):
        return str(getattr(dtype, "name", dtype))


def as_numeric_input(inputs, dtype, where: str):
    """`inputs` with integer and bool values cast to `dtype` (a float dtype), as Keras layers
    cast their inputs; float inputs are returned as they are.

    Raises:
        TypeError: for inputs that are not numbers (strings, objects), naming `where`, e.g.
            "QuantDense 'dense'".
    """
    name = _dtype_name(inputs)
    if name.startswith(("float", "bfloat")):
        return inputs
    if name == "bool" or name.startswith(("int", "uint")):
        return keras.ops.cast(inputs, dtype)
    raise TypeError(
        f"Invalid input for {where}. Expected numbers (a float, integer or bool tensor; "
        f"integers and bools are cast to {keras.backend.standardize_dtype(dtype)} as Keras "
        f"layers do). Received inputs of dtype {name}."
    )


def binary_sign(x, threshold=None):
    """Inference form of every binarizer: ``where(x < threshold, -1, +1)``, the deterministic
    sign of BinaryNet (Hubara et al., arXiv 1602.02830) with sign(0) = +1.

    Values at special inputs, the same as LCE's `LceQuantize` (which sets the -1 bit where
    ``x < 0``; x86 interpreter, checked by kbnn's tests): -1 only where ``x < threshold``, so
    +0.0, -0.0, +inf and NaN (of either sign) give +1 and -inf gives -1. (LCE's optimised
    aarch64 kernel packs blocks of 128 floats by their sign bit instead, which gives -1 for
    -0.0 and for a NaN with the sign bit set; finite non-zero values and infinities agree
    everywhere.)

    Emitted as a `SelectV2` of `x < threshold` with scalar constants -1/+1, a form that LCE
    lowers to `LceQuantize` (plain `tf.sign` and the stop-gradient trick do not lower; see
    docs/lce.md, section 'What LCE lowers').
    """
    x = tf.convert_to_tensor(x)
    below = x < 0 if threshold is None else x < tf.cast(threshold, x.dtype)
    return tf.where(below, tf.constant(-1.0, x.dtype), tf.constant(1.0, x.dtype))


def sign_with_surrogate_grad(u, surrogate_grad):
    """``s(u)`` in the forward pass, ``dy * surrogate_grad(u)`` in the backward pass: a
    straight-through estimator (Bengio, Leonard, Courville, arXiv 1308.3432) with any surrogate.

    Args:
        u: the (already shifted/scaled) input of the sign.
        surrogate_grad: a function of ``u`` giving d s / d u elementwise; or a function giving
            a boolean mask, for a 0/1 derivative (the gradient passes where the mask is True,
            one op cheaper than multiplying by a 0/1 tensor); or None for a derivative of 1
            everywhere (the gradient passes unchanged).
    """

    @tf.custom_gradient
    def _sign(v):
        def grad(dy):
            if surrogate_grad is None:
                return dy
            derivative = surrogate_grad(v)
            if derivative.dtype == tf.bool:
                return tf.where(derivative, dy, tf.zeros((), dy.dtype))
            return dy * tf.cast(derivative, dy.dtype)

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
    #: What the quantizer is meant to quantize: "activations" (a layer's inputs), "weights"
    #: (kernels: its statistics are per output channel, over every axis but the last) or
    #: "both". Quantized layers refuse a "weights" quantizer as `input_quantizer`, naming the
    #: argument: its statistics would mix samples of the batch. An "activations" quantizer is
    #: still accepted as a kernel quantizer (its form is valid per output channel, e.g.
    #: RSign's threshold), as in larq.
    applies_to: ClassVar[str] = "both"

    def __init__(self, **kwargs):
        kwargs.setdefault("trainable", True)
        super().__init__(**kwargs)

    def __call__(self, *args, **kwargs):
        # Integer and bool inputs are cast to the compute dtype (as Keras layers cast theirs);
        # strings are refused with an error naming the quantizer.
        where = f"{type(self).__name__} {self.name!r}"
        if args:
            args = (as_numeric_input(args[0], self.compute_dtype, where), *args[1:])
        elif "inputs" in kwargs:
            kwargs["inputs"] = as_numeric_input(kwargs["inputs"], self.compute_dtype, where)
        return super().__call__(*args, **kwargs)

    def binary_form(self, inputs) -> BinaryForm | None:
        """Affine-binary form for these inputs, or ``None`` if this quantizer is not binary."""
        return None

    def binary_form_unavailable_reason(self) -> str | None:
        """Why `binary_form` is None right now although the quantizer binarizes in the end (e.g.
        a temperature not annealed yet), or None. The converter puts it in its error."""
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
