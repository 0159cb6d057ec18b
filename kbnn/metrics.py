"""Metrics of binary networks: `FlipRatio`, the fraction of a model's binary weights that changed
sign in a training step (as larq's `flip_ratio`, Geiger & Team Plumerai, "Larq", JOSS 2020), and
`OscillationRatio`, a callback logging that fraction per binary layer (ReBNN's weight
oscillation ratio, arXiv 2302.00956). See docs/training.md and docs/methods.md."""

from __future__ import annotations

import keras
from keras import ops

__all__ = ["FlipRatio", "OscillationRatio"]


def _binary_state(weight):
    """The binary part s in {-1, +1} of a binary `QuantizedWeight`, as int8: the sign in the
    quantizer's affine-binary form ``scale * s(w - threshold) + offset`` (its `binary_form`),
    or sign(w) (sign(0) = +1) for a quantizer without one."""
    value = weight.value()
    form = weight.quantizer.binary_form(value) if hasattr(weight.quantizer, "binary_form") \
        else None
    if form is not None:
        sign = form.sign(value)
    else:
        sign = ops.where(ops.greater_equal(value, 0), 1.0, -1.0)
    return ops.cast(sign, "int8")


@keras.saving.register_keras_serializable(package="kbnn")
class FlipRatio(keras.metrics.Metric):
    """The fraction of the binary weights of a model that changed sign in the last training step,
    averaged over the steps since the last reset (each epoch, under `fit`).

    A binary weight is a variable that a kbnn quantized layer quantizes with a quantizer of
    precision 1 (`kbnn.optimizers.binary_variables`); its sign is the binary value its quantizer
    gives it (the `s` of the quantizer's affine-binary form). All binary weights of the model
    count together: the ratio of a step is (weights that flipped) / (binary weights).

    Use it as a compiled metric, bound to the model::

        model.compile(optimizer, loss, metrics=["accuracy", kbnn.metrics.FlipRatio(model)])

    Keras updates compiled metrics after the optimizer step, so each update compares the signs
    after the step with the signs the previous update saw. The very first update has nothing to
    compare with and is not counted; after `reset_state` (each epoch) the signs seen last are
    kept, so every step of every epoch counts. In `evaluate` (and for `val_flip_ratio`) the
    weights do not change, so the ratio is 0.

    Args:
        model: the model whose binary weights are tracked (built). A FlipRatio without a model
            must be bound with `bind(model)` before its first update.
        name: the metric's name, "flip_ratio" by default.
        dtype: the dtype of the result.

    The model is not part of the config: a FlipRatio restored by `keras.models.load_model` is
    unbound, and updating it raises until it is bound (re-compile the loaded model with
    ``metrics=[kbnn.metrics.FlipRatio(model)]``).
    """

    def __init__(self, model=None, name="flip_ratio", dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.total = self.add_variable(shape=(), initializer="zeros", name="total")
        self.count = self.add_variable(shape=(), initializer="zeros", name="count")
        # 1 once an update has stored signs to compare with; not reset by reset_state.
        self.started = self.add_variable(shape=(), initializer="zeros", name="started",
                                         aggregation="only_first_replica")
        self._weights = None
        self._previous = []
        if model is not None:
            self.bind(model)

    def bind(self, model) -> FlipRatio:
        """Track the binary weights of `model` (once). Returns the metric."""
        from kbnn.optimizers.case import _binary_quantized_weights

        if self._weights is not None:
            raise ValueError(f"FlipRatio {self.name!r} is already bound to a model.")
        weights = _binary_quantized_weights(model)
        if not weights:
            raise ValueError(
                f"FlipRatio: model {getattr(model, 'name', model)!r} has no binary weights (no "
                "kbnn quantized layer with a kernel quantizer of precision 1).")
        self._previous = [
            self.add_variable(shape=w.shape, initializer="zeros", dtype="int8",
                              aggregation="only_first_replica", name=f"previous_sign_{i}")
            for i, w in enumerate(weights)]
        self._weights = _Weights(weights)
        return self

    @property
    def size(self) -> int:
        """The number of binary weights tracked."""
        if self._weights is None:
            return 0
        total = 0
        for w in self._weights.items:
            count = 1
            for d in w.shape:
                count *= int(d)
            total += count
        return total

    def update_state(self, y_true=None, y_pred=None, sample_weight=None):
        """Compare the binary weights' signs now with those of the previous update (the
        arguments are ignored: Keras passes the targets and predictions)."""
        if self._weights is None:
            raise ValueError(
                f"FlipRatio {self.name!r} is not bound to a model: a FlipRatio restored from a "
                "config does not hold its model. Compile with "
                "metrics=[kbnn.metrics.FlipRatio(model)] (or call `.bind(model)`).")
        flipped = None
        for previous, weight in zip(self._previous, self._weights.items):
            sign = _binary_state(weight)
            changed = ops.sum(ops.cast(ops.not_equal(sign, previous), self.dtype))
            flipped = changed if flipped is None else ops.add(flipped, changed)
            previous.assign(sign)
        started = ops.cast(self.started, self.dtype)
        ratio = ops.divide(flipped, ops.cast(self.size, self.dtype))
        self.total.assign_add(ops.multiply(started, ratio))
        self.count.assign_add(started)
        self.started.assign(ops.ones_like(self.started))

    def result(self):
        return ops.divide_no_nan(self.total, self.count)

    def reset_state(self):
        """Zero the running mean; keep the signs seen last."""
        self.total.assign(ops.zeros_like(self.total))
        self.count.assign(ops.zeros_like(self.count))

    def get_config(self) -> dict:
        return {"name": self.name, "dtype": self.dtype}


class _Weights:
    """The tracked `QuantizedWeight`s, in a plain object (no automatic tracking)."""

    def __init__(self, items: list):
        self.items = items


# ------------------------------------------------------------------------ OscillationRatio

OSCILLATION_REDUCTIONS = ("last", "mean")


@keras.saving.register_keras_serializable(package="kbnn")
class OscillationRatio(keras.callbacks.Callback):
    """Logs, for each binary layer of the model, the fraction of its binary weights whose sign
    flipped in the last training step: the weight oscillation ratio that ReBNN plots per layer
    (Xu et al., "Resilient Binary Neural Network", arXiv 2302.00956; see docs/methods.md,
    section 'ReBNN'). It works with any binary weight quantizer.

    A binary weight is one that a kbnn quantized layer quantizes with a quantizer of precision
    1 (as for `FlipRatio`); its sign is the binary value its quantizer gives it (the `s` of the
    quantizer's affine-binary form). After each training step the callback compares every
    binary weight's sign with its sign after the previous step (for the first step: when
    `fit` started) and records, per layer, ``flipped / weights``. Unlike `FlipRatio` (one
    number for the whole model, averaged over steps), it keeps one number per layer.

    Logs, under ``log_prefix + key`` (key: the layer's name, or ``layer/argument`` for a layer
    with several binary weights): in the batch logs the ratio of that step; in the epoch logs
    (so in `History`) the ratio of the epoch's last step (``reduction="last"``) or the mean over
    the epoch's steps (``"mean"``). With ``steps_per_execution > 1`` Keras calls the callback
    once per execution, so a ratio then covers the steps of one execution.

    Use::

        history = model.fit(..., callbacks=[kbnn.metrics.OscillationRatio()])
        history.history["oscillation_ratio/conv1"]

    Args:
        reduction: "last" (default) or "mean", what the epoch logs hold.
        log_prefix: prefix of the logged keys ("oscillation_ratio/").

    Warns (UserWarning) when `fit` starts on a model without binary weights; it then logs
    nothing.
    """

    def __init__(self, reduction: str = "last", log_prefix: str = "oscillation_ratio/"):
        super().__init__()
        if reduction not in OSCILLATION_REDUCTIONS:
            raise ValueError(
                "Invalid value for argument `reduction` of OscillationRatio. Expected one of "
                f"{', '.join(repr(r) for r in OSCILLATION_REDUCTIONS)}. "
                f"Received reduction={reduction!r}.")
        if not isinstance(log_prefix, str):
            raise ValueError(  # noqa: TRY004 (bad argument value: ValueError by convention)
                "Invalid value for argument `log_prefix` of OscillationRatio. Expected a "
                f"string. Received log_prefix={log_prefix!r}.")
        self.reduction = reduction
        self.log_prefix = log_prefix
        self._tracked: list[tuple[str, object]] = []
        self._previous: dict[str, object] = {}
        self._current: dict[str, float] = {}
        self._sums: dict[str, float] = {}
        self._steps = 0

    @staticmethod
    def tracked_weights(model) -> list[tuple[str, object]]:
        """(key, `QuantizedWeight`) of every binary weight of `model` (built), each variable
        once, in layer order."""
        from kbnn import _keras_compat as compat
        from kbnn.layers.base import QuantizedLayerMixin

        found, seen = [], []
        for layer in compat.flatten_layers(model, include_self=True, recursive=True):
            if not isinstance(layer, QuantizedLayerMixin):
                continue
            weights = [(argument, weight)
                       for argument, weight in layer.quantized_weights().items()
                       if weight.is_binary and not any(weight.variable is v for v in seen)]
            for argument, weight in weights:
                seen.append(weight.variable)
                key = layer.name if len(weights) == 1 else f"{layer.name}/{argument}"
                found.append((key, weight))
        return found

    @property
    def current_values(self) -> dict[str, float]:
        """The ratio of the last step by key (empty before the first step)."""
        return dict(self._current)

    def on_train_begin(self, logs=None):
        import warnings

        self._tracked = self.tracked_weights(self.model)
        if not self._tracked:
            warnings.warn(
                f"OscillationRatio: model {getattr(self.model, 'name', '')!r} has no binary "
                "weights (no kbnn quantized layer with a weight quantizer of precision 1); the "
                "callback logs nothing.", UserWarning, stacklevel=2)
        self._previous = {key: _binary_state(weight) for key, weight in self._tracked}
        self._current = {}
        self._sums = {}
        self._steps = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._sums = {key: 0.0 for key, _ in self._tracked}
        self._steps = 0

    def on_train_batch_end(self, batch, logs=None):
        for key, weight in self._tracked:
            sign = _binary_state(weight)
            ratio = float(ops.mean(ops.cast(ops.not_equal(sign, self._previous[key]),
                                            "float32")))
            self._previous[key] = sign
            self._current[key] = ratio
            self._sums[key] = self._sums.get(key, 0.0) + ratio
        self._steps += 1
        if logs is not None:
            for key, ratio in self._current.items():
                logs[self.log_prefix + key] = ratio

    def on_epoch_end(self, epoch, logs=None):
        if logs is None or not self._steps:
            return
        for key, ratio in self._current.items():
            logs[self.log_prefix + key] = (ratio if self.reduction == "last"
                                           else self._sums[key] / self._steps)

    def get_config(self) -> dict:
        return {"reduction": self.reduction, "log_prefix": self.log_prefix}

    @classmethod
    def from_config(cls, config: dict) -> OscillationRatio:
        return cls(**config)
