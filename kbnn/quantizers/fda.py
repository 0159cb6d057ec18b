"""FDA, Frequency Domain Approximation (Xu, Han, Xu, Tang, Xu, Wang, "Learning Frequency Domain
Approximation for Binary Neural Networks", NeurIPS 2021, arXiv 2103.00841; see docs/methods.md,
section 'FDA'): `FDASign`, the sign whose gradient is the derivative of the first terms of the
sign's Fourier series, with FDA's optional noise adaptation module
(`kbnn.layers.NoiseAdaptation`)."""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf

from kbnn.quantizers._checks import (
    check_bool,
    check_non_negative,
    check_positive,
    check_positive_int,
    check_positive_or_none,
)
from kbnn.quantizers.base import BinaryForm, Quantizer, sign_with_surrogate_grad
from kbnn.quantizers.registry import register_alias

__all__ = ["FDASign", "fda_grad", "fda_sign", "fourier_terms"]


def fourier_terms(n_terms) -> tf.Tensor:
    """The number of series terms an `n_terms` value (a number or a float variable moved by a
    schedule) stands for: ``max(round(n_terms), 1)`` as an int32 scalar."""
    n = tf.round(tf.cast(n_terms, tf.float32))
    return tf.maximum(tf.cast(n, tf.int32), 1)


def fda_grad(n_terms, omega, clip_value: float | None = None):
    """FDA's sine-series derivative (arXiv 2103.00841, Eq. 10), as a function of the sign's
    input ``u``:

        s_n'(u) = (4 omega / pi) * sum_{i=0}^{n_terms-1} cos((2i + 1) omega u)

    i.e. the derivative of the first `n_terms` terms of the Fourier series of the square wave
    of period ``2 pi / omega`` (the paper's n is ``n_terms - 1``: Eq. 10 sums i = 0..n).
    `n_terms` may be a number or a variable (read when the gradient is computed; rounded, at
    least 1). ``clip_value``: the gradient is zero where ``|u| > clip_value`` (None: no clip, the
    paper; BiBench's FDA code clips at 1).
    """

    def grad(u):
        count = fourier_terms(n_terms)
        w = tf.cast(omega, u.dtype)

        def body(i, total):
            return i + 1, total + tf.cos(tf.cast(2 * i + 1, u.dtype) * w * u)

        _, total = tf.while_loop(lambda i, _: i < count, body,
                                 (tf.constant(0, tf.int32), tf.zeros_like(u)))
        result = tf.cast(4.0 / math.pi, u.dtype) * w * total
        if clip_value is not None:
            result = result * tf.cast(tf.abs(u) <= clip_value, u.dtype)
        return result

    return grad


def fda_sign(x, n_terms=10, omega: float = 0.1, clip_value: float | None = None):
    """sign(x) (sign(0) = +1) with FDA's sine-series gradient `fda_grad` (arXiv 2103.00841)."""
    return sign_with_surrogate_grad(x, fda_grad(n_terms, omega, clip_value))


@tf.custom_gradient
def _zero_forward(x):
    """0 in the forward pass, the identity in the backward pass: adds a module's gradient to
    a surrogate without changing the forward value (FDA's Fig. 2: the noise adaptation module
    acts in the backward pass only)."""
    return tf.zeros_like(x), lambda dy: dy


def _noise_config(value) -> dict | None:
    """The constructor arguments of the noise adaptation module from `noise_adaptation`."""
    from kbnn.layers.fda import NOISE_FEATURES, NoiseAdaptation

    if value is None:
        return None
    if isinstance(value, str) and value in NOISE_FEATURES:
        config = {"features": value}
    elif isinstance(value, NoiseAdaptation):
        config = value.get_config()
    elif isinstance(value, dict):
        config = dict(value.get("config", value)) if "class_name" in value else dict(value)
    else:
        raise ValueError(
            "Invalid value for argument `noise_adaptation` of FDASign. Expected None, "
            "'channels', 'fan_in', a dict of kbnn.layers.NoiseAdaptation arguments or a "
            f"NoiseAdaptation layer. Received noise_adaptation={value!r}.")
    keys = ("features", "reduction", "shortcut", "shortcut_scale")
    unknown = sorted(set(config) - set(keys) - {"name", "trainable", "dtype"})
    if unknown:
        raise ValueError(
            "Invalid value for argument `noise_adaptation` of FDASign. Unknown "
            f"NoiseAdaptation arguments {unknown}; expected some of {list(keys)}. "
            f"Received noise_adaptation={value!r}.")
    module = NoiseAdaptation(**{k: config[k] for k in keys if k in config})  # checks them
    return {k: module.get_config()[k] for k in keys}


@register_alias("fda_sign")
class FDASign(Quantizer):
    """Sign with FDA's Fourier-series gradient (Xu et al., "Learning Frequency Domain
    Approximation for Binary Neural Networks", arXiv 2103.00841; see docs/methods.md, section
    'FDA').

    Forward: +1 if x >= 0 else -1 (Alg. 1 of the paper: the forward pass stays the sign).
    Backward, without the noise module: ``dy * s_n'(x)``,
    ``s_n'(x) = (4 omega / pi) sum_{i<n_terms} cos((2i + 1) omega x)`` (Eq. 10).

    With a noise adaptation module ê (`kbnn.layers.NoiseAdaptation`, Eq. 13) the backward pass
    is that of ``s_n(x) + alpha * ê(x)`` (Eq. 14/15): ``dy * (s_n'(x) + alpha * ê'(x))`` to x,
    and ``alpha`` times ê's own gradient to its weights (Eq. 16/17, which the paper writes for
    alpha = 1). The forward value is still exactly sign(x); ê runs in training only.
    ``noise_in_forward=True`` adds ``alpha * ê(x)`` to the forward value as well, in training
    and inference (what BiBench's FDA code does, arXiv 2301.11233): the output is then not
    binary until alpha reaches 0.

    `n_terms` and (with the module) `alpha` are non-trainable scalar variables, saved with the
    model; `kbnn.training.FDASchedule` moves them during `fit` (n_terms from 10 to 19 terms,
    the paper's n from 9 to 18; alpha decaying to 0 at the end of training). The number of
    terms used is ``round(n_terms)`` (at least 1).

    Inference form: the plain sign, ``BinaryForm()`` (with ``noise_in_forward`` only once
    alpha is 0; before that `binary_form` is None and the reason names alpha).

    Args:
        n_terms: number of cosine terms (10: the paper's n = 9, its starting value).
        omega: the radian frequency omega = 2 pi / T of the square wave (0.1; the paper gives no
            value, 0.1 is that of BiBench's FDA code).
        clip_value: the gradient is zero where ``|x| > clip_value``; None (default, the paper)
            for no clip; BiBench's code clips at 1.0.
        noise_adaptation: None (no module, default), "channels" (an activation quantizer: the
            module acts on the channel axis), "fan_in" (a kernel quantizer: it acts on each
            output channel's flattened filter), or a dict of `NoiseAdaptation` arguments
            (features, reduction = 64, shortcut = "sin", shortcut_scale = 0.1).
        alpha: initial weight of the module (>= 0; 0.1, BiBench's starting value; the paper
            gives none).
        noise_in_forward: add ``alpha * ê(x)`` to the forward value too (BiBench), default
            False (the paper).
    """

    precision = 1

    def __init__(self, n_terms: int = 10, omega: float = 0.1, clip_value: float | None = None,
                 noise_adaptation=None, alpha: float = 0.1, noise_in_forward: bool = False,
                 **kwargs):
        super().__init__(**kwargs)
        self._n_terms_init = check_positive_int("FDASign", "n_terms", n_terms)
        self.omega = check_positive("FDASign", "omega", omega)
        self.clip_value = check_positive_or_none("FDASign", "clip_value", clip_value)
        self.noise_config = _noise_config(noise_adaptation)
        self._alpha_init = check_non_negative("FDASign", "alpha", alpha)
        self.noise_in_forward = check_bool("FDASign", "noise_in_forward", noise_in_forward)
        self.noise = None
        self.alpha = None

    def build(self, input_shape):
        self.n_terms = self.add_weight(
            name="n_terms", shape=(), trainable=False,
            initializer=keras.initializers.Constant(float(self._n_terms_init)))
        if self.noise_config is not None:
            from kbnn.layers.fda import NoiseAdaptation

            self.noise = NoiseAdaptation(**self.noise_config, dtype=self.dtype_policy,
                                         name=f"{self.name}_noise")
            self.noise.build(tuple(input_shape))
            self.alpha = self.add_weight(
                name="alpha", shape=(), trainable=False,
                initializer=keras.initializers.Constant(self._alpha_init))
        self.built = True

    @property
    def fda_surrogate(self):
        """The current sine-series derivative as a function of the sign's input."""
        return fda_grad(self.n_terms, self.omega, self.clip_value)

    def call(self, inputs, training=None):
        out = sign_with_surrogate_grad(inputs, self.fda_surrogate)
        if self.noise is None:
            return out
        alpha = tf.cast(self.alpha, inputs.dtype)
        if self.noise_in_forward:
            return out + alpha * self.noise(inputs)
        if training:
            return out + alpha * _zero_forward(self.noise(inputs))
        return out

    def current_alpha(self) -> float | None:
        """alpha as a Python float (read eagerly), or None without the module."""
        if self.noise_config is None:
            return None
        if not self.built:
            return self._alpha_init
        with tf.init_scope():
            return float(keras.ops.convert_to_numpy(self.alpha))

    def binary_form_unavailable_reason(self) -> str | None:
        if not self.noise_in_forward or self.noise_config is None:
            return None
        alpha = self.current_alpha()
        if np.float32(alpha) == 0.0:
            return None
        return (f"alpha = {alpha:.6g} is not 0 and noise_in_forward=True adds alpha times the "
                "noise adaptation module to the forward value; decay alpha to 0 first "
                "(kbnn.training.FDASchedule reaches 0 in the last epoch)")

    def binary_form(self, inputs):
        if self.binary_form_unavailable_reason() is not None:
            return None
        return BinaryForm()

    def get_config(self):
        return {**super().get_config(), "n_terms": self._n_terms_init, "omega": self.omega,
                "clip_value": self.clip_value, "noise_adaptation": self.noise_config,
                "alpha": self._alpha_init, "noise_in_forward": self.noise_in_forward}
