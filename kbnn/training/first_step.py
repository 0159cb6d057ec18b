"""`build_optimizer`: create a compiled model's optimizer variables before the first step."""

from __future__ import annotations

import contextlib

import keras

__all__ = ["build_optimizer"]


def build_optimizer(model: keras.Model) -> keras.Model:
    """Create `model.optimizer`'s variables for `model.trainable_variables` now.

    Keras 3 on TensorFlow, without a distribution strategy, defers building the optimizer to
    the first traced train step; because that trace creates variables, `tf.function` traces
    the train step a second time. Building the optimizer first (after `compile`, before `fit`
    or `train_on_batch`) leaves one trace: the first step of kbnn's small benchmark network
    takes about half the time (see benchmarks/RESULTS.md). The training maths is unchanged.

    The model must be built (a functional model is) and compiled. Calling it again, or on a
    model whose optimizer is already built, does nothing. `kbnn train` and `kbnn demo` call it.

    Returns:
        The model, for chaining.
    """
    if not isinstance(model, keras.Model):
        raise TypeError(f"build_optimizer expects a keras.Model. Received: {model!r}")
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None:
        raise ValueError(
            f"Model {model.name!r} has no optimizer: call `model.compile(optimizer, ...)` "
            "before `build_optimizer(model)`.")
    if not model.built:
        raise ValueError(
            f"Model {model.name!r} is not built, so its trainable variables are not known: "
            "build it (call it on a batch, or `model.build(input_shape)`) first.")
    if optimizer.built:
        return model
    strategy = getattr(model, "distribute_strategy", None)
    with strategy.scope() if strategy is not None else contextlib.nullcontext():
        optimizer.build(model.trainable_variables)
    return model
