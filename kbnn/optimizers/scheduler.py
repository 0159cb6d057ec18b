"""`HyperparameterScheduler`: a callback that sets any optimizer hyperparameter (Bop's `gamma`
or `threshold`, a learning rate, ...) from a schedule, per epoch or per step."""

from __future__ import annotations

import inspect
import numbers

import keras
import numpy as np

__all__ = ["HyperparameterScheduler"]

UPDATE_FREQS = ("epoch", "step")


def _takes_two_arguments(schedule) -> bool:
    """Whether `schedule` can be called as schedule(index, current_value)."""
    try:
        signature = inspect.signature(schedule)
    except (TypeError, ValueError):
        return False
    try:
        signature.bind(0, 0.0)
    except TypeError:
        return False
    try:
        signature.bind(0)
    except TypeError:
        return True
    # Both forms bind (a second argument with a default, or *args): pass the index only.
    return False


def _as_float(value) -> float:
    return float(np.asarray(keras.ops.convert_to_numpy(value)))


class HyperparameterScheduler(keras.callbacks.Callback):
    """Sets ``optimizer.<hyperparameter>`` from ``schedule`` during `fit` (larq's
    `HyperparameterScheduler` API).

    Example (Bop's gamma divided by 10 every 30 epochs)::

        bop = kbnn.optimizers.Bop(threshold=1e-6, gamma=1e-3)
        optimizer = kbnn.optimizers.CaseOptimizer(
            (kbnn.optimizers.binary_predicate(model), bop),
            default_optimizer=keras.optimizers.Adam(0.01))
        callbacks = [kbnn.optimizers.HyperparameterScheduler(
            lambda epoch: 1e-3 * 0.1 ** (epoch // 30), "gamma", bop)]

    Args:
        schedule: ``schedule(index)`` or ``schedule(index, current_value)`` -> the new value
            (a float). `index` is the epoch (from 0) with ``update_freq="epoch"``, or the
            optimizer's `iterations` (its global step, from 0) with ``update_freq="step"``.
        hyperparameter: the attribute of the optimizer to set, e.g. "gamma", "threshold" or
            "learning_rate". The optimizer must let it be set (Bop's float hyperparameters and
            Keras' float learning rates can; a hyperparameter given as a schedule cannot).
        optimizer: the optimizer that has the hyperparameter (e.g. a Bop inside a
            `CaseOptimizer`); None means the model's optimizer.
        update_freq: "epoch" (set at the start of every epoch) or "step" (at the start of every
            training batch).
        verbose: 0 quiet, 1 prints the value at each epoch update.

    At the end of every epoch the current value is added to the logs under the name of the
    hyperparameter (so `History` records it).
    """

    def __init__(self, schedule, hyperparameter: str, optimizer=None, update_freq="epoch",
                 verbose=0):
        super().__init__()
        if not callable(schedule):
            raise TypeError(
                "Invalid value for argument `schedule` of HyperparameterScheduler. Expected a "
                f"callable schedule(index) -> value. Received schedule={schedule!r}.")
        if not (isinstance(hyperparameter, str) and hyperparameter.isidentifier()):
            raise ValueError(
                "Invalid value for argument `hyperparameter` of HyperparameterScheduler. "
                "Expected the name of an optimizer attribute, such as 'gamma'. Received "
                f"hyperparameter={hyperparameter!r}.")
        if update_freq not in UPDATE_FREQS:
            raise ValueError(
                "Invalid value for argument `update_freq` of HyperparameterScheduler. Expected "
                f"one of {UPDATE_FREQS}. Received update_freq={update_freq!r}.")
        if optimizer is not None and not isinstance(optimizer, keras.optimizers.Optimizer):
            raise TypeError(
                "Invalid value for argument `optimizer` of HyperparameterScheduler. Expected a "
                f"keras.optimizers.Optimizer or None. Received optimizer={optimizer!r}.")
        self.schedule = schedule
        self.hyperparameter = hyperparameter
        self.optimizer = optimizer
        self.update_freq = update_freq
        self.verbose = verbose
        self._with_current = _takes_two_arguments(schedule)

    def _target(self):
        optimizer = self.optimizer if self.optimizer is not None else self.model.optimizer
        if optimizer is None:
            raise ValueError("HyperparameterScheduler needs a compiled model or an optimizer.")
        try:
            getattr(optimizer, self.hyperparameter)
        except AttributeError as err:
            raise ValueError(
                f"HyperparameterScheduler: optimizer {optimizer.name!r} "
                f"({type(optimizer).__name__}) has no hyperparameter "
                f"{self.hyperparameter!r}.") from err
        return optimizer

    def current_value(self) -> float:
        """The hyperparameter's value now."""
        return _as_float(getattr(self._target(), self.hyperparameter))

    def _set(self, index: int) -> float:
        optimizer = self._target()
        if self._with_current:
            value = self.schedule(index, self.current_value())
        else:
            value = self.schedule(index)
        if not (isinstance(value, numbers.Real) or keras.ops.is_tensor(value)
                or isinstance(value, np.ndarray)):
            raise ValueError(
                f"HyperparameterScheduler: the schedule of {self.hyperparameter!r} returned "
                f"{value!r} at index {index}; expected a float.")
        setattr(optimizer, self.hyperparameter, _as_float(value))
        return self.current_value()

    def on_train_begin(self, logs=None):
        self._target()  # fail before the first step when the attribute is missing

    def on_epoch_begin(self, epoch, logs=None):
        if self.update_freq != "epoch":
            return
        value = self._set(int(epoch))
        if self.verbose > 0:
            print(f"Epoch {epoch + 1}: HyperparameterScheduler setting {self.hyperparameter} "
                  f"to {value:.6g}.")

    def on_train_batch_begin(self, batch, logs=None):
        if self.update_freq == "step":
            self._set(int(_as_float(self._target().iterations)))

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs[self.hyperparameter] = self.current_value()
