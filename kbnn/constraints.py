"""Weight constraints for binary networks."""

from __future__ import annotations

import keras
from keras import ops

__all__ = ["WeightClip", "get"]


@keras.saving.register_keras_serializable(package="kbnn")
class WeightClip(keras.constraints.Constraint):
    """Clip latent weights to [-clip_value, clip_value] after each update.

    Keeps latent weights of binarized kernels in the range where the clipped STE passes a
    gradient (BinaryNet, Hubara et al., arXiv 1602.02830). Alias: ``"weight_clip"``.
    """

    def __init__(self, clip_value: float = 1.0):
        if not clip_value > 0:
            raise ValueError(
                "Invalid value for argument `clip_value` of WeightClip. Expected a strictly "
                f"positive value. Received clip_value={clip_value}."
            )
        self.clip_value = float(clip_value)

    def __call__(self, w):
        return ops.clip(w, -self.clip_value, self.clip_value)

    def get_config(self):
        return {"clip_value": self.clip_value}


_ALIASES = {"weight_clip": WeightClip}


def get(identifier):
    """Resolve ``"weight_clip"`` or any Keras constraint identifier."""
    if isinstance(identifier, str) and identifier in _ALIASES:
        return _ALIASES[identifier]()
    return keras.constraints.get(identifier)
