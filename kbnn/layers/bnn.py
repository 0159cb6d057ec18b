"""Real-valued per-channel layers used by BNN blocks: `LearnableBias`, `RPReLU` (ReActNet,
arXiv 2003.03488) and `Maxout` (AdaBin, arXiv 2208.08084).

Every per-channel parameter has shape (C,) on the last axis (NHWC), created from the input shape.
"""

from __future__ import annotations

import keras
from keras import ops

__all__ = ["LearnableBias", "Maxout", "RPReLU"]


def _register(cls):
    return keras.saving.register_keras_serializable(package="kbnn")(cls)


def _channel_param(param, inputs):
    """A per-channel parameter (C,) cast to the input dtype and shaped (1, ..., 1, C) with rank
    ``rank(inputs) - 1``: the shape TFLite needs to fuse the PReLU pattern into one PRELU op."""
    rank = len(inputs.shape)
    return ops.reshape(ops.cast(param, inputs.dtype), (1,) * max(rank - 2, 0) + (-1,))


def _prelu(z, alpha):
    """``relu(z) + (-alpha) * relu(-z)``, written as Keras' PReLU so TFLite emits a PRELU op
    (checked with LCE 0.16: alpha must have shape (1, ..., 1, C) of rank rank(z) - 1)."""
    return ops.relu(z) + (-alpha) * ops.relu(-z)


class _PerChannelLayer(keras.layers.Layer):
    """Base of layers holding named per-channel parameters (shape (C,), last axis).

    Subclasses set `_params`: the names of their parameters; each has a constructor argument
    ``<name>_initializer`` stored as ``self.<name>_initializer``.
    """

    _params: tuple[str, ...] = ()

    def _init_initializers(self, **initializers):
        for name, init in initializers.items():
            setattr(self, f"{name}_initializer", keras.initializers.get(init))

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is None:
            raise ValueError(
                f"{type(self).__name__} needs a known last (channel) dimension. "
                f"Received input_shape={tuple(input_shape)}."
            )
        for name in self._params:
            var = self.add_weight(
                name=name,
                shape=(int(channels),),
                initializer=getattr(self, f"{name}_initializer"),
                trainable=True,
            )
            setattr(self, name, var)
        self.built = True

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        for name in self._params:
            config[f"{name}_initializer"] = keras.initializers.serialize(
                getattr(self, f"{name}_initializer"))
        return config


@_register
class LearnableBias(_PerChannelLayer):
    """``y = x + b_c``, a learnable per-channel bias (init 0), as ReActNet's `LearnableBias`
    (arXiv 2003.03488), the shift before each sign and around each PReLU in the official code.

    Args:
        bias_initializer: initializer of the bias (default zeros).
    """

    _params = ("bias",)

    def __init__(self, bias_initializer="zeros", **kwargs):
        super().__init__(**kwargs)
        self._init_initializers(bias=bias_initializer)

    def call(self, inputs):
        return inputs + _channel_param(self.bias, inputs)


@_register
class RPReLU(_PerChannelLayer):
    """ReActNet RPReLU (Liu et al., arXiv 2003.03488; see docs/methods.md, section 'ReActNet'):
    shift, PReLU, shift.

    ``y = x - gamma_c + zeta_c`` for ``x > gamma_c`` and ``y = beta_c (x - gamma_c) + zeta_c``
    for ``x <= gamma_c``, per channel. Init: gamma 0, beta 0.25 (PyTorch's `nn.PReLU` default,
    used by the official code), zeta 0. The official code writes gamma as a `LearnableBias` of -gamma.

    It is computed as ``relu(z) - beta * relu(-z) + zeta`` with ``z = x - gamma`` in the Keras
    PReLU form, so TFLite exports SUB, PRELU, ADD (the SUB/ADD can fold into neighbouring ops).
    The value equals the definition above everywhere; only at exactly ``x == gamma`` the
    gradient w.r.t. x and gamma is 0 (TensorFlow's relu'(0) = 0) instead of beta.

    Args:
        gamma_initializer, beta_initializer, zeta_initializer: initializers of the parameters.
    """

    _params = ("gamma", "beta", "zeta")

    def __init__(self, gamma_initializer="zeros", beta_initializer=None,
                 zeta_initializer="zeros", **kwargs):
        super().__init__(**kwargs)
        if beta_initializer is None:
            beta_initializer = keras.initializers.Constant(0.25)
        self._init_initializers(gamma=gamma_initializer, beta=beta_initializer,
                                zeta=zeta_initializer)

    def call(self, inputs):
        z = inputs - _channel_param(self.gamma, inputs)
        return _prelu(z, _channel_param(self.beta, inputs)) + _channel_param(self.zeta, inputs)


@_register
class Maxout(_PerChannelLayer):
    """AdaBin's Maxout nonlinearity (Tu et al., arXiv 2208.08084; see docs/methods.md,
    section 'AdaBin').

    ``y = gamma_plus_c * relu(x) - gamma_minus_c * relu(-x)``, per channel; init gamma_plus 1.0,
    gamma_minus 0.25 (as the official code).

    Args:
        gamma_plus_initializer, gamma_minus_initializer: initializers of the two slopes.
    """

    _params = ("gamma_plus", "gamma_minus")

    def __init__(self, gamma_plus_initializer="ones", gamma_minus_initializer=None, **kwargs):
        super().__init__(**kwargs)
        if gamma_minus_initializer is None:
            gamma_minus_initializer = keras.initializers.Constant(0.25)
        self._init_initializers(gamma_plus=gamma_plus_initializer,
                                gamma_minus=gamma_minus_initializer)

    def call(self, inputs):
        gamma_plus = _channel_param(self.gamma_plus, inputs)
        gamma_minus = _channel_param(self.gamma_minus, inputs)
        return gamma_plus * ops.relu(inputs) - gamma_minus * ops.relu(-inputs)
