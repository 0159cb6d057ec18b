"""ReCU's tau schedule (Xu et al., "ReCU: Reviving the Dead Weights in Binary Neural Networks",
arXiv 2103.12369; see docs/methods.md, section 'ReCU'): `ReCUTauSchedule`, a
`QuantizerSchedule` of the "tau" variable of every `kbnn.quantizers.ReCUWeight`, and `recu_tau`,
its values."""

from __future__ import annotations

import math

import keras

from kbnn.quantizers._checks import check_number
from kbnn.quantizers.recu import ReCUWeight
from kbnn.training.callbacks import QuantizerSchedule, _check_total_epochs, _epochs_of_fit

__all__ = ["ReCUTauSchedule", "recu_tau"]


def recu_tau(epoch: int, total_epochs: int, tau_min: float = 0.85,
             tau_max: float = 0.99) -> float:
    """tau during epoch `epoch` (0-based) of `total_epochs` in ReCU's exponential schedule
    (arXiv 2103.12369; the official `cpt_tau`): ``A * e^(epoch / E) + B`` with
    ``A = (tau_max - tau_min) / (e - 1)`` and ``B = tau_min - A``.

    It is tau_min at epoch 0 and would reach tau_max at epoch E (the last epoch of a fit of E
    epochs, E - 1, is just below it). With the defaults: 0.85 at epoch 0, 0.902856 at E / 2,
    0.99 at E. `total_epochs` must be a strictly positive integer.
    """
    total_epochs = _check_total_epochs("recu_tau", total_epochs)
    a = (tau_max - tau_min) / (math.e - 1.0)
    return a * math.exp(epoch / total_epochs) + tau_min - a


def _check_tau(name: str, value) -> float:
    value = check_number("ReCUTauSchedule", name, value, 0.5, 1.0)
    if value == 0.5:
        raise ValueError(
            f"Invalid value for argument `{name}` of ReCUTauSchedule. Expected a number in "
            f"(0.5, 1]. Received {name}={value!r}."
        )
    return value


@keras.saving.register_keras_serializable(package="kbnn")
class ReCUTauSchedule(QuantizerSchedule):
    """Sets tau of every `kbnn.quantizers.ReCUWeight` at the start of each epoch (ReCU, Xu et
    al., arXiv 2103.12369; see docs/methods.md, section 'ReCU').

    Epoch e of E runs with ``tau = A e^(e/E) + B``, ``A = (tau_max - tau_min) / (e - 1)``,
    ``B = tau_min - A`` (`recu_tau`): tau_min at the first epoch, rising exponentially towards
    tau_max, as the official training does. It is a `QuantizerSchedule` of "tau" per epoch,
    restricted to `ReCUWeight`, logged as ``recu_tau`` (in `History`).

    Args:
        tau_min: tau at the first epoch (0.85, the official default), in (0.5, 1].
        tau_max: tau at epoch E (0.99, the official default), in [tau_min, 1].
        total_epochs: E; defaults to the `epochs` argument of `fit`.
    """

    def __init__(self, tau_min: float = 0.85, tau_max: float = 0.99,
                 total_epochs: int | None = None):
        self.tau_min = _check_tau("tau_min", tau_min)
        self.tau_max = _check_tau("tau_max", tau_max)
        if self.tau_max < self.tau_min:
            raise ValueError(
                "Invalid value for argument `tau_max` of ReCUTauSchedule. Expected a value >= "
                f"tau_min={self.tau_min}. Received tau_max={tau_max!r}."
            )
        self.total_epochs = _check_total_epochs("ReCUTauSchedule", total_epochs,
                                                allow_none=True)
        super().__init__("tau", self._tau_at, update_freq="epoch", quantizer_class=ReCUWeight,
                         log_prefix="recu_")

    def _total_epochs(self) -> int:
        return _epochs_of_fit("ReCUTauSchedule", self.total_epochs, self.params)

    def _tau_at(self, epoch: int) -> float:
        return recu_tau(epoch, self._total_epochs(), self.tau_min, self.tau_max)

    def _missing_message(self, missing: list[str]) -> str:
        return "ReCUTauSchedule: the model has no ReCUWeight quantizer; the callback does nothing."

    def get_config(self) -> dict:
        return {"tau_min": self.tau_min, "tau_max": self.tau_max,
                "total_epochs": self.total_epochs}

    @classmethod
    def from_config(cls, config: dict) -> ReCUTauSchedule:
        return cls(**config)
