"""Weight constraints for binary networks."""

from __future__ import annotations

import keras
from keras import ops

from kbnn import _keras_compat as compat
from kbnn.quantizers._checks import check_positive

__all__ = ["WeightClip", "get"]


@keras.saving.register_keras_serializable(package="kbnn")
class WeightClip(keras.constraints.Constraint):
    """Clip latent weights to [-clip_value, clip_value] after each update.

    Keeps latent weights of binarized kernels in the range where the clipped STE passes a
    gradient (BinaryNet, Hubara et al., arXiv 1602.02830). Alias ``"weight_clip"``, accepted
    wherever Keras takes a constraint identifier (``kernel_constraint="weight_clip"``).

    Args:
        clip_value: half-width of the clipping range; must be > 0.
    """

    def __init__(self, clip_value: float = 1.0):
        self.clip_value = check_positive("WeightClip", "clip_value", clip_value)

    def __call__(self, w):
        return ops.clip(w, -self.clip_value, self.clip_value)

    def get_config(self):
        return {"clip_value": self.clip_value}


_ALIASES = {"weight_clip": WeightClip}


def _register_keras_aliases() -> None:
    """Make ``keras.constraints.get("weight_clip")`` return a `WeightClip`.

    Keras 3 resolves a constraint *string* only through the name table of its constraints
    module (the ``module_objects`` it also passes
    when deserializing); custom objects are consulted for config dicts only. Adding the alias
    to that table lets every Keras layer take ``kernel_constraint="weight_clip"``; a saved
    model stores the constraint as a registered ``kbnn>WeightClip`` config, not as the alias.
    """
    for alias, cls in _ALIASES.items():
        compat.register_constraint_alias(alias, cls)


_register_keras_aliases()


def get(identifier):
    """Resolve ``"weight_clip"`` or any Keras constraint identifier."""
    if isinstance(identifier, str) and identifier in _ALIASES:
        return _ALIASES[identifier]()
    return keras.constraints.get(identifier)
