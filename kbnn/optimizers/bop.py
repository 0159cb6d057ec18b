"""Bop, the latent-free optimizer for binary weights (Helwegen, Widdicombe, Geiger, Liu, Cheng,
Nusselder, "Latent Weights Do Not Exist: Rethinking Binarized Neural Network Optimization",
NeurIPS 2019, arXiv 1906.02107). See docs/training.md."""

from __future__ import annotations

import math
import numbers

import keras
from keras import ops

from kbnn import _keras_compat as compat
from kbnn.checks import argument_error

__all__ = ["Bop"]

_Schedule = keras.optimizers.schedules.LearningRateSchedule


def _sign(x):
    """+1 where x >= 0, else -1 (sign(0) = +1, kbnn's convention)."""
    one = ops.ones_like(x)
    return ops.where(ops.greater_equal(x, 0), one, ops.negative(one))


def check_hyperparameter(owner: str, name: str, value, low: float, high: float | None,
                         low_inclusive: bool) -> float | _Schedule:
    """`value` as a float in the given range, or a `LearningRateSchedule` as it is."""
    if isinstance(value, _Schedule):
        return value
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if ok:
        value = float(value)
        ok = math.isfinite(value) and (value >= low if low_inclusive else value > low)
        ok = ok and (high is None or value <= high)
    if not ok:
        bound = ">= " if low_inclusive else "> "
        expected = f"a float {bound}{low}" + ("" if high is None else f" and <= {high}")
        raise argument_error(owner, name, f"{expected}, or a "
                             "keras.optimizers.schedules.LearningRateSchedule", value)
    return value


@keras.saving.register_keras_serializable(package="kbnn")
class Bop(keras.optimizers.Optimizer):
    """Binary optimizer: flips binary weights whose gradient has pointed the same way long enough.

    Bop (Helwegen et al., arXiv 1906.02107, Algorithm 1) keeps no latent weight. For each binary
    weight ``w`` in {-1, +1} it keeps an exponential moving average ``m`` of the gradient:

        m <- (1 - gamma) * m + gamma * g
        w <- -w   where |m| > threshold and sign(m) == sign(w)

    (a gradient of the same sign as ``w`` means the loss decreases when ``w`` becomes ``-w``).
    The variable holds the binary weight itself: Bop writes exactly +1 or -1 into it. A variable
    that starts with other values (a Keras initializer) is read as its sign, with sign(0) = +1,
    the sign every kbnn binarizer uses; after the first step it holds that sign or its flip.
    larq's Bop keeps the variable as a latent weight and writes ``sign(-sign(w * m - threshold)
    * w)``, which is the same step for w in {-1, +1}.

    Use Bop only for binary weights, and an ordinary optimizer for every other variable:
    `kbnn.optimizers.CaseOptimizer` routes variables (see `kbnn.optimizers.binary_predicate`).

    Args:
        threshold: the flipping threshold, a float >= 0 or a
            `keras.optimizers.schedules.LearningRateSchedule` (called with the optimizer's
            `iterations`). Default 1e-8 (larq's default).
        gamma: the adaptivity rate of the moving average, a float in (0, 1] or a schedule.
            Default 1e-4 (larq's default).
        name: the optimizer's name.
        **kwargs: the other keyword arguments of `keras.optimizers.Optimizer` (`clipnorm`,
            `clipvalue`, `global_clipnorm`, `gradient_accumulation_steps`, ...). Bop has no
            learning rate: `learning_rate` is not accepted.

    Float `threshold` and `gamma` are optimizer variables (saved with the optimizer's state), so
    setting ``bop.gamma = 1e-5`` (or `kbnn.optimizers.HyperparameterScheduler`) changes them
    without retracing; a hyperparameter given as a schedule cannot be set.
    """

    def __init__(self, threshold=1e-8, gamma=1e-4, name="Bop", **kwargs):
        if "learning_rate" in kwargs:
            raise ValueError(
                "Invalid argument `learning_rate` of Bop: Bop has no learning rate (it flips "
                "binary weights; `threshold` and `gamma` set how often). Received "
                f"learning_rate={kwargs['learning_rate']!r}.")
        threshold = check_hyperparameter("Bop", "threshold", threshold, 0.0, None, True)
        gamma = check_hyperparameter("Bop", "gamma", gamma, 0.0, 1.0, False)
        # Keras' base class requires a learning rate; Bop never reads it.
        super().__init__(learning_rate=0.0, name=name, **kwargs)
        self._threshold = self._hyperparameter_variable("threshold", threshold)
        self._gamma = self._hyperparameter_variable("gamma", gamma)

    def _hyperparameter_variable(self, name: str, value):
        if isinstance(value, _Schedule):
            return value
        return self.add_variable(shape=(), initializer=keras.initializers.Constant(value),
                                 dtype="float32", aggregation="only_first_replica", name=name)

    def _current(self, value):
        if isinstance(value, _Schedule):
            return value(self.iterations)
        return value

    def _set(self, name: str, value):
        current = getattr(self, f"_{name}")
        if isinstance(current, _Schedule):
            raise TypeError(
                f"Bop {self.name!r} was created with a schedule for `{name}`, so `{name}` cannot "
                f"be set. Create Bop with a float `{name}` to set it during training.")
        if isinstance(value, _Schedule):
            raise TypeError(
                f"Bop.{name} can be set to a float only: pass a schedule when creating Bop. "
                f"Received {name}={value!r}.")
        if name == "threshold":
            value = check_hyperparameter("Bop", name, value, 0.0, None, True)
        else:
            value = check_hyperparameter("Bop", name, value, 0.0, 1.0, False)
        current.assign(value)

    @property
    def threshold(self):
        """The current flipping threshold (a variable, or the schedule's value now)."""
        return self._current(self._threshold)

    @threshold.setter
    def threshold(self, value):
        self._set("threshold", value)

    @property
    def gamma(self):
        """The current adaptivity rate (a variable, or the schedule's value now)."""
        return self._current(self._gamma)

    @gamma.setter
    def gamma(self, value):
        self._set("gamma", value)

    def build(self, var_list):
        """One moving-average slot per variable, of its shape and dtype, initialised to 0."""
        if self.built:
            return
        super().build(var_list)
        self._momentums = [self.add_variable_from_reference(v, name="momentum")
                           for v in var_list]

    def update_step(self, gradient, variable, learning_rate):
        """The Bop step for one variable (`learning_rate` is unused)."""
        dtype = variable.dtype
        momentum = self._momentums[compat.optimizer_variable_index(self, variable)]
        gamma = ops.cast(self.gamma, dtype)
        threshold = ops.cast(self.threshold, dtype)
        gradient = ops.cast(gradient, dtype)
        new_momentum = ops.add(ops.multiply(ops.subtract(1.0, gamma), momentum),
                               ops.multiply(gamma, gradient))
        self.assign(momentum, new_momentum)
        binary = _sign(variable)
        # For w in {-1, +1} and threshold >= 0: m * w > threshold  <=>  |m| > threshold and
        # sign(m) == sign(w).
        flip = ops.greater(ops.multiply(new_momentum, binary), threshold)
        self.assign(variable, ops.where(flip, ops.negative(binary), binary))

    def get_config(self) -> dict:
        config = super().get_config()
        config.pop("learning_rate", None)
        for name in ("threshold", "gamma"):
            value = getattr(self, f"_{name}")
            if isinstance(value, _Schedule):
                config[name] = keras.optimizers.schedules.serialize(value)
            else:
                config[name] = float(ops.convert_to_numpy(value))
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        config.pop("learning_rate", None)
        for name in ("threshold", "gamma"):
            if isinstance(config.get(name), dict):
                config[name] = keras.saving.deserialize_keras_object(
                    config[name], custom_objects=custom_objects)
        return cls(**config)
