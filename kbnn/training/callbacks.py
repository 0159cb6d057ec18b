"""Training callbacks: `QuantizerSchedule`, which drives a named non-trainable variable of the
model's quantizers from a schedule, and `EDESchedule`, IR-Net's Error Decay Estimator schedule
built on it."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping

import keras
import numpy as np

from kbnn import _keras_compat as compat
from kbnn.checks import check_choice, check_positive, check_positive_int
from kbnn.quantizers.base import Quantizer
from kbnn.quantizers.irnet import EDEQuantizer

__all__ = ["EDESchedule", "QuantizerSchedule", "ede_schedule_values"]

UPDATE_FREQS = ("epoch", "step")
# get_config's entry for a schedule that Keras cannot serialise (a lambda, a nested or
# unregistered function, a partial): from_config refuses it with this key's message.
_UNSERIALIZABLE = "unserializable_callable"


def _check_total_epochs(owner: str, total_epochs, allow_none: bool = False) -> int | None:
    """`total_epochs` as an int if it is a strictly positive integer (or None when allowed),
    else a Keras-style ValueError naming `owner`."""
    return check_positive_int(owner, "total_epochs", total_epochs, allow_none=allow_none)


def _epochs_of_fit(owner: str, total_epochs: int | None, params: dict | None) -> int:
    """`total_epochs` when given, else the `epochs` argument of the running `fit` (a callback's
    `params`); a ValueError naming `owner` when neither is known."""
    if total_epochs is not None:
        return total_epochs
    epochs = (params or {}).get("epochs")
    if not epochs:
        raise ValueError(f"{owner} needs `total_epochs` when `fit` does not report `epochs`.")
    return int(epochs)


def ede_schedule_values(epoch: int, total_epochs: int, t_min: float = 0.1,
                        t_max: float = 10.0) -> tuple[float, float]:
    """(t, k) at the start of epoch `epoch` (0-based) of `total_epochs` (IR-Net's EDE schedule,
    Qin et al., arXiv 1909.10788; see docs/methods.md, section 'IR-Net').

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
    return [layer for layer in compat.flatten_layers(model, include_self=True, recursive=True)
            if isinstance(layer, EDEQuantizer)]


# ------------------------------------------------------------------------ QuantizerSchedule

def _is_schedule(value) -> bool:
    return callable(value) and not isinstance(value, type)


def _check_variable_name(owner: str, argument: str, name) -> str:
    if not (isinstance(name, str) and name.isidentifier()):
        raise ValueError(
            f"Invalid value for argument `{argument}` of {owner}. Expected the name of a "
            f"quantizer variable (a Python identifier such as 't' or 'tau'). "
            f"Received {argument}={name!r}."
        )
    return name


def _check_schedule(owner: str, argument: str, schedule) -> Callable:
    if not _is_schedule(schedule):
        raise ValueError(
            f"Invalid value for argument `{argument}` of {owner}. Expected a callable of the "
            f"epoch (or step) index returning a number, or a "
            f"keras.optimizers.schedules.LearningRateSchedule. Received {argument}={schedule!r}."
        )
    return schedule


def _check_quantizer_class(owner: str, quantizer_class) -> tuple[type, ...] | None:
    if quantizer_class is None:
        return None
    classes = quantizer_class if isinstance(quantizer_class, (tuple, list)) else (quantizer_class,)
    if not classes or not all(isinstance(c, type) and issubclass(c, Quantizer) for c in classes):
        raise ValueError(
            f"Invalid value for argument `quantizer_class` of {owner}. Expected None, a "
            f"kbnn.quantizers.Quantizer subclass or a tuple of them. "
            f"Received quantizer_class={quantizer_class!r}."
        )
    return tuple(classes)


def _serialize_schedule(schedule) -> dict:
    """A schedule as `keras.saving.serialize_keras_object` writes it, or a marker for callables
    that cannot be rebuilt (lambdas, nested or unregistered functions, partials)."""
    if isinstance(schedule, keras.optimizers.schedules.LearningRateSchedule) or (
            hasattr(schedule, "get_config") and not isinstance(schedule, type)):
        try:
            return keras.saving.serialize_keras_object(schedule)
        except Exception:  # noqa: BLE001, S110 (fall through to the marker)
            pass
    registered = keras.saving.get_registered_name(schedule) if callable(schedule) else None
    if registered and keras.saving.get_registered_object(registered) is schedule:
        return keras.saving.serialize_keras_object(schedule)
    return {"class_name": _UNSERIALIZABLE, "config": {"repr": repr(schedule)}}


def _deserialize_schedule(owner: str, name: str, config) -> Callable:
    if isinstance(config, dict) and config.get("class_name") == _UNSERIALIZABLE:
        raise ValueError(
            f"Cannot rebuild {owner} from its config: the schedule of variable {name!r} was the "
            f"plain Python callable {config.get('config', {}).get('repr')}, which a config "
            "cannot hold. Use a keras.optimizers.schedules.LearningRateSchedule, or a function "
            "decorated with @keras.saving.register_keras_serializable()."
        )
    return keras.saving.deserialize_keras_object(config)


def _class_name(cls: type) -> str:
    return keras.saving.get_registered_name(cls)


def _class_from_name(owner: str, name: str) -> type:
    import kbnn.quantizers as kq

    cls = keras.saving.get_registered_object(name)
    if cls is None:
        cls = getattr(kq, name.split(">")[-1], None)
    if not (isinstance(cls, type) and issubclass(cls, Quantizer)):
        raise ValueError(  # noqa: TRY004 (a bad config value: ValueError by convention)
            f"Cannot rebuild {owner} from its config: unknown quantizer class {name!r} in "
            "`quantizer_class`. Register it with @keras.saving.register_keras_serializable()."
        )
    return cls


@keras.saving.register_keras_serializable(package="kbnn")
class QuantizerSchedule(keras.callbacks.Callback):
    """Drives named non-trainable variables of the model's quantizers from schedules during
    `fit`.

    Methods whose quantizers have a constant moved during training (IR-Net's EDE t and k,
    arXiv 1909.10788; temperatures such as BNext's or ReCU's tau) hold it as a non-trainable
    variable of the quantizer, saved with the model. This callback assigns
    ``schedule(index)`` to that variable in every `kbnn.quantizers.Quantizer` of the model
    (found recursively, nested models and the quantizers inside layers and blocks included)
    that has a non-trainable `keras.Variable` attribute of that name:

    * ``update_freq="epoch"``: at the start of each epoch, index = the epoch (0-based, as
      Keras counts it, so ``fit(initial_epoch=...)`` continues);
    * ``update_freq="step"``: at the start of each training step, index = the global step:
      the optimizer's iteration count when `fit` starts (0 for a new model; a second `fit`
      continues) plus the batches run since. With ``steps_per_execution > 1`` Keras calls
      batch callbacks once per execution, so the value changes once per execution.

    A non-scalar variable gets the value in every element. The values are logged under
    ``log_prefix + name`` (so `History` records them per epoch: with ``update_freq="step"``
    the value of the epoch's last step; also in the batch logs).
    The example values are the start of the schedules of docs/methods.md, section 'IR-Net'::

        QuantizerSchedule({"t": lambda e: 0.1 * 100 ** (e / 10),
                           "k": lambda e: max(1.0, 10 / 100 ** (e / 10))})
        QuantizerSchedule("tau", keras.optimizers.schedules.CosineDecay(1.0, 1000),
                          update_freq="step", quantizer_class=MyTemperatureSign)

    Serialisation: `get_config` always works. `LearningRateSchedule` objects and functions
    registered with ``@keras.saving.register_keras_serializable()`` rebuild with
    `from_config`; a plain Python callable (lambda, nested or unregistered function) is
    recorded by its repr only, and `from_config` then raises a ValueError naming the variable.

    Args:
        variables: the variable name (a str, with `schedule`), or a dict ``{name: schedule}``
            (then `schedule` must be None).
        schedule: the schedule of `variables` when it is a name: a callable of the epoch (or
            step) index returning a number, or a
            `keras.optimizers.schedules.LearningRateSchedule` (called with the index).
        update_freq: "epoch" (default) or "step".
        quantizer_class: None (every quantizer having the variable), or a `Quantizer`
            subclass or tuple of them to restrict the update to. Subclasses of this callback
            may override `selects(quantizer)` for other filters.
        log_prefix: prefix of the logged keys (default "quantizer_", e.g. "quantizer_tau").

    Warns (UserWarning) at the start of `fit` for each variable that no selected quantizer of
    the model has; that variable is then left alone.
    """

    def __init__(self, variables, schedule=None, update_freq: str = "epoch",
                 quantizer_class=None, log_prefix: str = "quantizer_"):
        super().__init__()
        owner = type(self).__name__
        if isinstance(variables, Mapping):
            if schedule is not None:
                raise ValueError(
                    f"Invalid value for argument `schedule` of {owner}. Expected None when "
                    f"`variables` is a dict of schedules. Received schedule={schedule!r}."
                )
            if not variables:
                raise ValueError(
                    f"Invalid value for argument `variables` of {owner}. Expected a variable "
                    f"name or a non-empty dict {{name: schedule}}. Received variables={{}}."
                )
            schedules = {_check_variable_name(owner, "variables", name):
                         _check_schedule(owner, "variables", fn) for name, fn in variables.items()}
        else:
            name = _check_variable_name(owner, "variables", variables)
            schedules = {name: _check_schedule(owner, "schedule", schedule)}
        self.schedules: dict[str, Callable] = schedules
        self.update_freq = check_choice(owner, "update_freq", update_freq, UPDATE_FREQS)
        self.quantizer_class = _check_quantizer_class(owner, quantizer_class)
        if not isinstance(log_prefix, str):
            raise ValueError(  # noqa: TRY004 (bad argument value: ValueError by convention)
                f"Invalid value for argument `log_prefix` of {owner}. Expected a string. "
                f"Received log_prefix={log_prefix!r}."
            )
        self.log_prefix = log_prefix
        self._targets: dict[str, list] = {}
        self._current: dict[str, float] = {}
        self._steps_before_epoch = 0
        self._batches_in_epoch = 0

    # -------------------------------------------------------------------- what is scheduled

    def selects(self, quantizer: Quantizer) -> bool:
        """Whether `quantizer` is one this callback updates (besides having the variable)."""
        return self.quantizer_class is None or isinstance(quantizer, self.quantizer_class)

    def targets(self, model: keras.layers.Layer | None = None) -> dict[str, list]:
        """{variable name: [the non-trainable variables of that name, one per selected
        quantizer of `model` (default: the model being fitted)]}."""
        model = self.model if model is None else model
        found: dict[str, list] = {name: [] for name in self.schedules}
        for layer in compat.flatten_layers(model, include_self=True, recursive=True):
            if not isinstance(layer, Quantizer) or not self.selects(layer):
                continue
            for name in self.schedules:
                variable = getattr(layer, name, None)
                if isinstance(variable, keras.Variable) and not variable.trainable:
                    found[name].append(variable)
        return found

    def value(self, name: str, index: int) -> float:
        """The schedule of variable `name` at epoch or step `index`, as a float."""
        result = self.schedules[name](index)
        try:
            array = np.asarray(keras.ops.convert_to_numpy(result), dtype=np.float64)
            number = float(array) if array.size == 1 else math.nan
        except (TypeError, ValueError):
            number = math.nan
        if not math.isfinite(number):
            raise ValueError(
                f"The schedule of variable {name!r} of {type(self).__name__} returned "
                f"{result!r} at {self.update_freq} {index}. Expected a finite number."
            )
        return number

    @property
    def current_values(self) -> dict[str, float]:
        """The values assigned last, by variable name (empty before the first update)."""
        return dict(self._current)

    def _missing_message(self, missing: list[str]) -> str:
        where = ("" if self.quantizer_class is None else
                 " among the " + ", ".join(c.__name__ for c in self.quantizer_class)
                 + " quantizers")
        names = ", ".join(repr(n) for n in missing)
        return (f"{type(self).__name__}: no quantizer in the model{where} has a non-trainable "
                f"variable {names}; the callback leaves {'it' if len(missing) == 1 else 'them'} "
                "alone.")

    # --------------------------------------------------------------------------- callbacks

    def _assign(self, index: int) -> None:
        for name, variables in self._targets.items():
            value = self.value(name, index)
            for variable in variables:
                variable.assign(np.full(tuple(variable.shape), value,
                                        dtype=keras.backend.standardize_dtype(variable.dtype)))
            self._current[name] = value

    def _log(self, logs) -> None:
        if logs is not None:
            for name, value in self._current.items():
                logs[self.log_prefix + name] = value

    def on_train_begin(self, logs=None):
        found = self.targets()
        missing = [name for name, variables in found.items() if not variables]
        if missing:
            warnings.warn(self._missing_message(missing), UserWarning, stacklevel=2)
        self._targets = {name: variables for name, variables in found.items() if variables}
        self._current = {}
        optimizer = getattr(self.model, "optimizer", None)
        iterations = getattr(optimizer, "iterations", None)
        self._steps_before_epoch = (0 if iterations is None
                                    else int(keras.ops.convert_to_numpy(iterations)))
        self._batches_in_epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._batches_in_epoch = 0
        if self.update_freq == "epoch":
            self._assign(int(epoch))

    def on_train_batch_begin(self, batch, logs=None):
        if self.update_freq == "step":
            self._assign(self._steps_before_epoch + int(batch))

    def on_train_batch_end(self, batch, logs=None):
        self._batches_in_epoch = int(batch) + 1
        if self.update_freq == "step":
            self._log(logs)

    def on_epoch_end(self, epoch, logs=None):
        self._steps_before_epoch += self._batches_in_epoch
        self._batches_in_epoch = 0
        self._log(logs)

    # ----------------------------------------------------------------------- serialisation

    def get_config(self) -> dict:
        return {
            "variables": {name: _serialize_schedule(fn) for name, fn in self.schedules.items()},
            "schedule": None,  # every schedule is in `variables`
            "update_freq": self.update_freq,
            "quantizer_class": (None if self.quantizer_class is None
                                else [_class_name(c) for c in self.quantizer_class]),
            "log_prefix": self.log_prefix,
        }

    @classmethod
    def from_config(cls, config: dict) -> QuantizerSchedule:
        config = dict(config)
        owner = cls.__name__
        config["variables"] = {name: _deserialize_schedule(owner, name, entry)
                               for name, entry in config["variables"].items()}
        classes = config.get("quantizer_class")
        if classes is not None:
            config["quantizer_class"] = tuple(_class_from_name(owner, n) for n in classes)
        return cls(**config)


@keras.saving.register_keras_serializable(package="kbnn")
class EDESchedule(QuantizerSchedule):
    """Moves the EDE constants t and k of every EDE quantizer during `fit` (IR-Net, Qin et al.,
    arXiv 1909.10788; see docs/methods.md, section 'IR-Net').

    At the start of epoch i of N: ``t = t_min * 10^((i/N) log10(t_max/t_min))``,
    ``k = max(1/t, 1)``. Early on (t < 1, k = 1/t) the EDE gradient ``k t (1 - tanh^2(t x))``
    is about the identity; late (t > 1, k = 1) it approaches the derivative of the sign.
    The values are assigned to the non-trainable variables t and k of every `EDESign`,
    `LibraSign` and `AdaBinWeight` (every `EDEQuantizer`) in the model (found recursively), so
    they are saved with the model, and logged per epoch as ``ede_t`` and ``ede_k`` (in
    ``History``). It is a `QuantizerSchedule` of t and k per epoch, restricted to
    `EDEQuantizer`, with log prefix "ede_".

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
        self.t_min = check_positive("EDESchedule", "t_min", t_min)
        self.t_max = check_positive("EDESchedule", "t_max", t_max)
        if self.t_max < self.t_min:
            raise ValueError(
                "Invalid value for argument `t_max` of EDESchedule. Expected a value >= "
                f"t_min={self.t_min}. Received t_max={t_max!r}."
            )
        self.total_epochs = _check_total_epochs("EDESchedule", total_epochs, allow_none=True)
        super().__init__({"t": self._t_at, "k": self._k_at}, update_freq="epoch",
                         quantizer_class=EDEQuantizer, log_prefix="ede_")

    def _total_epochs(self) -> int:
        return _epochs_of_fit("EDESchedule", self.total_epochs, self.params)

    def _t_at(self, epoch: int) -> float:
        return ede_schedule_values(epoch, self._total_epochs(), self.t_min, self.t_max)[0]

    def _k_at(self, epoch: int) -> float:
        return ede_schedule_values(epoch, self._total_epochs(), self.t_min, self.t_max)[1]

    def _missing_message(self, missing: list[str]) -> str:
        return ("EDESchedule: the model has no EDE quantizer (EDESign, LibraSign, "
                "AdaBinWeight); the callback does nothing.")

    def get_config(self) -> dict:
        return {"t_min": self.t_min, "t_max": self.t_max, "total_epochs": self.total_epochs}

    @classmethod
    def from_config(cls, config: dict) -> EDESchedule:
        return cls(**config)
