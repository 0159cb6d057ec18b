"""BNext's temperature schedule (Guo et al., arXiv 2211.12933; see docs/methods.md, section
'BNext'): tau <- decay * tau after every epoch, as a `QuantizerSchedule` of the "tau" variable of
every `kbnn.quantizers.BNextWeight`."""

from __future__ import annotations

import numbers

import keras

from kbnn.quantizers._checks import check_choice, check_positive
from kbnn.quantizers.bnext import BNextWeight
from kbnn.training.callbacks import UPDATE_FREQS, QuantizerSchedule

__all__ = ["bnext_tau", "bnext_tau_schedule"]


def bnext_tau(epoch: int, decay: float = 0.9, initial: float = 1.0) -> float:
    """tau during epoch `epoch` (0-based) of BNext's schedule: ``initial * decay**epoch``
    (arXiv 2211.12933; the official training multiplies tau by 0.9 after every epoch).

    With the defaults it is 1 at epoch 0, 0.9**76 = 3.33e-4 at epoch 76, 1.109e-7 at
    epoch 152 (the last epoch whose weights are not binary) and 9.98e-8 < 1e-7 at epoch 153.
    """
    return float(initial) * float(decay) ** int(epoch)


def _check_decay(value) -> float:
    if not (isinstance(value, numbers.Real) and not isinstance(value, bool)
            and 0.0 < value <= 1.0):
        raise ValueError(
            "Invalid value for argument `decay` of bnext_tau_schedule. Expected a number in "
            f"(0, 1]. Received decay={value!r}."
        )
    return float(value)


def _check_decay_steps(value) -> int:
    if not (isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 1):
        raise ValueError(
            "Invalid value for argument `decay_steps` of bnext_tau_schedule. Expected a "
            f"strictly positive integer. Received decay_steps={value!r}."
        )
    return int(value)


def bnext_tau_schedule(decay: float = 0.9, initial: float = 1.0, update_freq: str = "epoch",
                       decay_steps: int = 1) -> QuantizerSchedule:
    """The `QuantizerSchedule` of BNext's weight temperature (arXiv 2211.12933; see
    docs/methods.md, section 'BNext'): it assigns ``tau = initial * decay**(index /
    decay_steps)`` (index rounded down to whole periods) to the "tau" variable of every
    `kbnn.quantizers.BNextWeight` in the model at the start of each epoch (or step), and logs it
    as ``bnext_tau``.

    With the defaults, epoch e runs with ``tau = 0.9**e``, the official schedule (tau *= 0.9
    after every epoch): the weights' forward is ``clamp(W / tau, -1, 1)`` up to epoch 152 and
    ``sign(W)`` from epoch 153 on (tau < 1e-7). Short runs use a faster decay, e.g.
    ``decay=1e-4`` makes the third epoch (tau = 1e-8) binary.

    The schedule is a `keras.optimizers.schedules.ExponentialDecay` (staircase), so the
    callback's config rebuilds with `QuantizerSchedule.from_config`.

    Args:
        decay: factor per period, in (0, 1].
        initial: tau at index 0 (> 0).
        update_freq: "epoch" (default) or "step" (index = the global step).
        decay_steps: indices per period: 1 with "epoch"; with "step", the steps per epoch
            reproduce the per-epoch schedule.
    """
    decay = _check_decay(decay)
    initial = check_positive("bnext_tau_schedule", "initial", initial)
    update_freq = check_choice("bnext_tau_schedule", "update_freq", update_freq, UPDATE_FREQS)
    decay_steps = _check_decay_steps(decay_steps)
    schedule = keras.optimizers.schedules.ExponentialDecay(
        initial, decay_steps, decay, staircase=True, name="bnext_tau")
    return QuantizerSchedule("tau", schedule, update_freq=update_freq,
                             quantizer_class=BNextWeight, log_prefix="bnext_")
