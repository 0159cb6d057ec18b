"""FakeQuant: k-bit uniform fake quantization for quantization-aware training (int8 export).

Jacob et al., "Quantization and Training of Neural Networks for Efficient Integer-Arithmetic-Only
Inference", arXiv 1712.05877. The forward pass is `tf.quantization.fake_quant_with_min_max_vars`
(the op the TFLite/LCE converter turns into real int8 ops); its gradient is the straight-through
estimator inside the range (and the range gradient for learned min/max).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from kbnn.export_mode import export_override
from kbnn.quantizers._checks import check_bool, check_choice, check_int_in_range, check_number
from kbnn.quantizers.base import Quantizer
from kbnn.quantizers.registry import register_alias

__all__ = ["FakeQuant"]

_MODES = ("moving_average", "learned", "minmax")


@register_alias("fake_quant")
class FakeQuant(Quantizer):
    """Uniform fake quantization to `num_bits` bits with a learned or tracked range (QAT).

    Use it as input quantizer and kernel quantizer of the full-precision layers of a BNN (first
    conv, shortcuts, classifier), or as a standalone layer, so that
    ``kbnn.converters.convert(model, int8=True)`` gives int8 TFLite ops (arXiv 1712.05877).

    Args:
        num_bits: bits of the quantized values, 2..16 (8 for int8).
        mode: how the range [min, max] is obtained:
            "moving_average": non-trainable min/max updated in training as an exponential
            moving average of the batch min/max (with `momentum`); fixed at inference.
            "learned": trainable min/max variables, learned through the fake-quant op's range
            gradient (initialised to `init_min`/`init_max`).
            "minmax": the current min/max of the input itself (no state; meant for weights).
        momentum: EMA momentum of "moving_average", in [0, 1).
        init_min, init_max: initial range of "moving_average" and "learned"; init_min <= 0 <
            init_max.
        narrow_range: quantize to [1, 2^b - 1] instead of [0, 2^b - 1] (int8 weights: symmetric
            [-127, 127]). Use True for kernels.
        symmetric: use [-m, m] with m = max(|min|, |max|) (zero point 0; use for kernels).
    """

    def __init__(self, num_bits: int = 8, mode: str = "moving_average", momentum: float = 0.99,
                 init_min: float = -6.0, init_max: float = 6.0, narrow_range: bool = False,
                 symmetric: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.num_bits = check_int_in_range("FakeQuant", "num_bits", num_bits, 2, 16)
        self.precision = self.num_bits
        self.mode = check_choice("FakeQuant", "mode", mode, _MODES)
        self.momentum = check_number("FakeQuant", "momentum", momentum, 0.0, 1.0, high_open=True)
        self.init_min = check_number("FakeQuant", "init_min", init_min)
        self.init_max = check_number("FakeQuant", "init_max", init_max)
        if not self.init_min <= 0.0 < self.init_max:
            raise ValueError(
                "Invalid value for arguments `init_min`/`init_max` of FakeQuant. Expected "
                f"init_min <= 0 < init_max. Received init_min={init_min!r}, "
                f"init_max={init_max!r}."
            )
        self.narrow_range = check_bool("FakeQuant", "narrow_range", narrow_range)
        self.symmetric = check_bool("FakeQuant", "symmetric", symmetric)

    def build(self, input_shape):
        if self.mode != "minmax":
            trainable = self.mode == "learned"
            self.min_var = self.add_weight(
                name="min", shape=(), initializer=keras.initializers.Constant(self.init_min),
                trainable=trainable)
            self.max_var = self.add_weight(
                name="max", shape=(), initializer=keras.initializers.Constant(self.init_max),
                trainable=trainable)
        self.built = True

    def _batch_range(self, x):
        x = tf.stop_gradient(x)
        return tf.minimum(tf.reduce_min(x), 0.0), tf.maximum(tf.reduce_max(x), 0.0)

    def quant_range(self, inputs, training=None):
        """The (min, max) used for `inputs` (updates the moving average when training)."""
        if not self.built:
            self.build(tuple(inputs.shape))
        if self.mode == "minmax":
            lo, hi = self._batch_range(inputs)
        elif self.mode == "moving_average" and training:
            b_lo, b_hi = self._batch_range(inputs)
            m = self.momentum
            self.min_var.assign(m * self.min_var + (1.0 - m) * b_lo)
            self.max_var.assign(m * self.max_var + (1.0 - m) * b_hi)
            lo, hi = tf.identity(self.min_var), tf.identity(self.max_var)
        else:
            lo = tf.minimum(tf.convert_to_tensor(self.min_var), 0.0)
            hi = tf.maximum(tf.convert_to_tensor(self.max_var), lo + 1e-6)
        if self.symmetric:
            bound = tf.maximum(-lo, hi)
            lo, hi = -bound, bound
        return lo, hi

    def call(self, inputs, training=None):
        export_call = export_override(self)  # the converter's export mode (kbnn.export_mode)
        if export_call is not None:
            return export_call(inputs)
        lo, hi = self.quant_range(inputs, training)
        return tf.quantization.fake_quant_with_min_max_vars(
            inputs, lo, hi, num_bits=self.num_bits, narrow_range=self.narrow_range)

    def constant_range_call(self, lo: float, hi: float):
        """A forward with the range fixed to the constants (lo, hi) (used at export)."""

        def call(inputs):
            return tf.quantization.fake_quant_with_min_max_vars(
                inputs, lo, hi, num_bits=self.num_bits, narrow_range=self.narrow_range)

        return call

    def float_emulation(self, inputs):
        """The inference forward with plain float ops (no fake-quant op, so converters keep it
        float): TensorFlow's nudged range, clamp, round-half-up to the grid."""
        x = tf.convert_to_tensor(inputs)
        lo, hi = self.quant_range(x, training=False)
        qmin = 1.0 if self.narrow_range else 0.0
        qmax = float(2 ** self.num_bits - 1)
        scale = (hi - lo) / (qmax - qmin)
        zero_point = tf.clip_by_value(tf.floor(qmin - lo / scale + 0.5), qmin, qmax)
        nudged_min = (qmin - zero_point) * scale
        nudged_max = (qmax - zero_point) * scale
        clamped = tf.clip_by_value(x, nudged_min, nudged_max)
        return tf.floor((clamped - nudged_min) * (1.0 / scale) + 0.5) * scale + nudged_min

    def get_config(self):
        return {**super().get_config(), "num_bits": self.num_bits, "mode": self.mode,
                "momentum": self.momentum, "init_min": self.init_min, "init_max": self.init_max,
                "narrow_range": self.narrow_range, "symmetric": self.symmetric}
