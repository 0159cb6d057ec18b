"""FDA's noise adaptation module (Xu, Han, Xu, Tang, Xu, Wang, "Learning Frequency Domain
Approximation for Binary Neural Networks", NeurIPS 2021, arXiv 2103.00841, Eq. 13; see
docs/methods.md, section 'FDA').

`NoiseAdaptation` estimates the error ``r(t) = sign(t) - s_n(t)`` left by the truncated Fourier
series of the sign: two bias-free fully connected layers with a ReLU between them and a
shortcut,

    e(t) = relu(t W1) W2 + eta(t),     W1: d x d/k,  W2: d/k x d,  eta(t) = a sin(t)

`kbnn.quantizers.FDASign(noise_adaptation=...)` holds one and adds ``alpha * e(t)`` to the
surrogate whose gradient it back-propagates (the forward value stays ``sign(t)``).

The layer imports nothing from kbnn, so `kbnn.quantizers.fda` can build it without an import
cycle.
"""

from __future__ import annotations

import math

import keras
from keras import ops

from kbnn.checks import argument_error, check_number, check_positive_int

__all__ = ["NOISE_FEATURES", "NOISE_SHORTCUTS", "NoiseAdaptation"]

#: What the module's ``d`` features are: "channels" (the last axis: the channels of an NHWC
#: activation, one vector per position) or "fan_in" (every axis but the last, one vector per
#: output channel of a kernel (kh, kw, C_in, C_out), d = kh * kw * C_in).
NOISE_FEATURES = ("channels", "fan_in")
#: The shortcut eta: a sin(t) (the paper's best, Table 4), a t, or none.
NOISE_SHORTCUTS = ("sin", "linear", None)


def _fail(name, expected, value):
    raise argument_error("NoiseAdaptation", name, expected, value)


@keras.saving.register_keras_serializable(package="kbnn")
class NoiseAdaptation(keras.layers.Layer):
    """FDA's noise adaptation module (arXiv 2103.00841, Eq. 13; see docs/methods.md, section
    'FDA'): ``e(t) = relu(t W1) W2 + eta(t)`` on vectors of ``d`` features, elementwise shape
    in = shape out.

    * ``features="channels"``: ``d`` is the last axis (an activation's channels); the two FC
      layers act at every position (the form of the activation module of BiBench's FDA,
      arXiv 2301.11233).
    * ``features="fan_in"``: ``d`` is the product of every axis but the last (a kernel's
      ``kh * kw * C_in``); the FC layers act on each output channel's flattened filter (the
      weight module of the same code).

    The hidden width is ``max(d // reduction, 1)`` (the paper: k = 64). W1 and W2 have no bias
    and start zero-mean (the paper's initialisation constraint), uniform in
    ``+-1/sqrt(fan_in)`` (PyTorch's `nn.Linear` default, as BiBench).

    Args:
        features: "channels" or "fan_in".
        reduction: k, the reduction of the hidden width (int >= 1; 64).
        shortcut: "sin" (``eta = a sin(t)``, the paper's best), "linear" (``a t``) or None.
        shortcut_scale: a (0.1, the paper's value).
    """

    def __init__(self, features: str = "channels", reduction: int = 64, shortcut="sin",
                 shortcut_scale: float = 0.1, **kwargs):
        super().__init__(**kwargs)
        if features not in NOISE_FEATURES:
            _fail("features", "'channels' or 'fan_in'", features)
        reduction = check_positive_int("NoiseAdaptation", "reduction", reduction)
        if shortcut not in NOISE_SHORTCUTS:
            _fail("shortcut", "'sin', 'linear' or None", shortcut)
        shortcut_scale = check_number("NoiseAdaptation", "shortcut_scale", shortcut_scale)
        self.features = features
        self.reduction = int(reduction)
        self.shortcut = shortcut
        self.shortcut_scale = float(shortcut_scale)

    def feature_count(self, input_shape) -> int:
        """d for inputs of `input_shape` (the last axis, or the product of the others)."""
        shape = tuple(input_shape)
        dims = shape[-1:] if self.features == "channels" else shape[:-1]
        if not dims or any(d is None for d in dims):
            raise ValueError(
                f"NoiseAdaptation(features={self.features!r}) needs known "
                f"{'last' if self.features == 'channels' else 'leading'} dimensions. "
                f"Received input_shape={shape}.")
        return int(math.prod(int(d) for d in dims))

    def build(self, input_shape):
        d = self.feature_count(input_shape)
        hidden = max(d // self.reduction, 1)
        init = keras.initializers.VarianceScaling(1.0 / 3.0, "fan_in", "uniform")
        self.w1 = self.add_weight(name="w1", shape=(d, hidden), initializer=init)
        self.w2 = self.add_weight(name="w2", shape=(hidden, d), initializer=init)
        self.built = True

    def _shortcut(self, t):
        if self.shortcut is None:
            return ops.zeros_like(t)
        scale = ops.cast(self.shortcut_scale, t.dtype)
        return scale * (ops.sin(t) if self.shortcut == "sin" else t)

    def call(self, inputs):
        w1, w2 = ops.cast(self.w1, inputs.dtype), ops.cast(self.w2, inputs.dtype)
        if self.features == "channels":
            mixed = ops.matmul(ops.relu(ops.matmul(inputs, w1)), w2)
        else:
            shape = ops.shape(inputs)
            rows = ops.transpose(ops.reshape(inputs, (-1, shape[-1])))  # (C_out, d)
            mixed = ops.matmul(ops.relu(ops.matmul(rows, w1)), w2)
            mixed = ops.reshape(ops.transpose(mixed), shape)
        return mixed + self._shortcut(inputs)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "features": self.features, "reduction": self.reduction,
                "shortcut": self.shortcut, "shortcut_scale": self.shortcut_scale}
