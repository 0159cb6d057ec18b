"""Training callbacks: `EDESchedule`, the IR-Net Error Decay Estimator schedule."""

from __future__ import annotations

import math
import numbers
import warnings

import keras

from kbnn.quantizers._checks import check_positive
from kbnn.quantizers.irnet import EDEQuantizer

__all__ = ["EDESchedule", "ede_schedule_values"]


def _check_total_epochs(owner: str, total_epochs, allow_none: bool = False) -> int | None:
    """`total_epochs` as an int if it is a strictly positive integer (or None when allowed),
    else a Keras-style ValueError naming `owner`."""
    if total_epochs is None and allow_none:
        return None
    if not (isinstance(total_epochs, numbers.Integral) and not isinstance(total_epochs, bool)
            and total_epochs > 0):
        expected = "None or a strictly" if allow_none else "a strictly"
        raise ValueError(
            f"Invalid value for argument `total_epochs` of {owner}. Expected {expected} "
            f"positive integer. Received total_epochs={total_epochs!r}."
        )
    return int(total_epochs)


def ede_schedule_values(epoch: int, total_epochs: int, t_min: float = 0.1,
                        t_max: float = 10.0) -> tuple[float, float]:
    """(t, k) at the start of epoch `epoch` (0-based) of `total_epochs` (IR-Net's EDE schedule,
    Qin et al., arXiv 1909.10788; METHODS.md §6.2).

    ``t = t_min * 10^((i / N) * log10(t_max / t_min))`` (log-uniform from t_min at i = 0 towards
    t_max; i / N is clipped to [0, 1], so epochs past N stay at t_max) and ``k = max(1/t, 1)``.
    `total_epochs` must be a strictly positive integer (ValueError otherwise).
    """
    total_epochs = _check_total_epochs("ede_schedule_values", total_epochs)
    progress = min(max(epoch / total_epochs, 0.0), 1.0)
    t = t_min * 10.0 ** (progress * math.log10(t_max / t_min))
    return t, max(1.0 / t, 1.0)


def ede_quantizers(model: keras.layers.Layer) -> list[EDEQuantizer]:
    """Every layer of `model` (recursively, nested layers and quantizers included) that holds
    EDE variables."""
    return [layer for layer in model._flatten_layers(include_self=True, recursive=True)
            if isinstance(layer, EDEQuantizer)]


@keras.saving.register_keras_serializable(package="kbnn")
class EDESchedule(keras.callbacks.Callback):
    """Moves the EDE constants t and k of every EDE quantizer during `fit` (IR-Net, Qin et al.,
    arXiv 1909.10788, METHODS.md §6.2).

    At the start of epoch i of N: ``t = t_min * 10^((i/N) log10(t_max/t_min))``,
    ``k = max(1/t, 1)``. Early on (t < 1, k = 1/t) the EDE gradient ``k t (1 - tanh^2(t x))``
    is about the identity; late (t > 1, k = 1) it approaches the derivative of the sign.
    The values are assigned to the non-trainable variables t and k of every `EDESign`,
    `LibraSign` and `AdaBinWeight` in the model (found recursively), so they are saved with
    the model, and logged per epoch as ``ede_t`` and ``ede_k`` (in ``History``).

    The paper uses t_min = 0.1 (the default here); the official CIFAR code uses t_min = 1e-3.
    Both use t_max = 10.

    Args:
        t_min: t at the first epoch (> 0).
        t_max: t at epoch N (>= t_min). In a fit of N epochs i/N < 1, so the last epoch
            (i = N - 1) uses ``t_min * (t_max/t_min)^((N-1)/N)``, just below t_max, as in the
            official code.
        total_epochs: N; defaults to the `epochs` argument of `fit`.
    """

    def __init__(self, t_min: float = 0.1, t_max: float = 10.0, total_epochs: int | None = None):
        super().__init__()
        self.t_min = check_positive("EDESchedule", "t_min", t_min)
        self.t_max = check_positive("EDESchedule", "t_max", t_max)
        if self.t_max < self.t_min:
            raise ValueError(
                "Invalid value for argument `t_max` of EDESchedule. Expected a value >= "
                f"t_min={self.t_min}. Received t_max={t_max!r}."
            )
        self.total_epochs = _check_total_epochs("EDESchedule", total_epochs, allow_none=True)
        self._quantizers: list[EDEQuantizer] = []
        self._current: tuple[float, float] | None = None

    def _total_epochs(self) -> int:
        if self.total_epochs is not None:
            return self.total_epochs
        epochs = (self.params or {}).get("epochs")
        if not epochs:
            raise ValueError(
                "EDESchedule needs `total_epochs` when `fit` does not report `epochs`."
            )
        return int(epochs)

    def on_train_begin(self, logs=None):
        self._quantizers = ede_quantizers(self.model)
        if not self._quantizers:
            warnings.warn("EDESchedule: the model has no EDE quantizer (EDESign, LibraSign, "
                          "AdaBinWeight); the callback does nothing.", stacklevel=2)

    def on_epoch_begin(self, epoch, logs=None):
        t, k = ede_schedule_values(epoch, self._total_epochs(), self.t_min, self.t_max)
        for quantizer in self._quantizers:
            quantizer.set_ede(t, k)
        self._current = (t, k)

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and self._current is not None:
            logs["ede_t"], logs["ede_k"] = self._current

    def get_config(self) -> dict:
        return {"t_min": self.t_min, "t_max": self.t_max, "total_epochs": self.total_epochs}

    @classmethod
    def from_config(cls, config: dict) -> EDESchedule:
        return cls(**config)
