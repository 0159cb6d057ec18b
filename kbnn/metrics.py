"""Metrics of binary networks: `FlipRatio`, the fraction of a model's binary weights that changed
sign in a training step (as larq's `flip_ratio`, Geiger & Team Plumerai, "Larq", JOSS 2020).
See docs/training.md."""

from __future__ import annotations

import keras
from keras import ops

__all__ = ["FlipRatio"]


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
        from kbnn import _keras_compat as compat
        from kbnn.layers.base import QuantizedLayerMixin

        if self._weights is not None:
            raise ValueError(f"FlipRatio {self.name!r} is already bound to a model.")
        weights, seen = [], []
        for layer in compat.flatten_layers(model, include_self=True, recursive=True):
            if not isinstance(layer, QuantizedLayerMixin):
                continue
            for weight in layer.quantized_weights().values():
                if weight.is_binary and not any(weight.variable is v for v in seen):
                    seen.append(weight.variable)
                    weights.append(weight)
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
