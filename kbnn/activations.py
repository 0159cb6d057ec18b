"""Activations used in binary networks (larq's definitions, Geiger & Team Plumerai, "Larq",
JOSS 2020).

* ``hard_tanh(x) = clip(x, -1, 1)``;
* ``leaky_tanh(x, alpha=0.2)``: x on [-1, 1] and ``alpha * x + (1 - alpha) * sign(x)`` outside
  (hard tanh with slope `alpha` instead of 0 outside [-1, 1], continuous at +-1).

Both are registered with Keras (``package="kbnn"``), so layers that use them save and load, and
``activation="leaky_tanh"`` works once kbnn is imported. ``activation="hard_tanh"`` gives Keras'
own `keras.activations.hard_tanh`, which has the same definition.
"""

from __future__ import annotations

import keras
from keras import ops

from kbnn import _keras_compat as compat

__all__ = ["hard_tanh", "leaky_tanh"]


@keras.saving.register_keras_serializable(package="kbnn")
def hard_tanh(x):
    """``clip(x, -1, 1)``."""
    return ops.clip(x, -1.0, 1.0)


@keras.saving.register_keras_serializable(package="kbnn")
def leaky_tanh(x, alpha=0.2):
    """x on [-1, 1]; ``alpha * x + (1 - alpha) * sign(x)`` outside: hard tanh whose slope
    outside [-1, 1] is `alpha` (default 0.2) instead of 0."""
    x = ops.convert_to_tensor(x)
    alpha = ops.cast(alpha, x.dtype)
    outside = ops.add(ops.multiply(alpha, x), ops.multiply(ops.subtract(1.0, alpha), ops.sign(x)))
    return ops.where(ops.less_equal(ops.abs(x), 1.0), x, outside)


compat.register_activation_alias("hard_tanh", hard_tanh)
compat.register_activation_alias("leaky_tanh", leaky_tanh)
