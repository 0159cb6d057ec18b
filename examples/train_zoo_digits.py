"""Train the zoo's digits weights: narrow variants of kbnn.zoo builders on scikit-learn's 8x8
digits, saved as zoo/weights/<architecture>_digits.weights.h5 and registered in
kbnn.zoo.digits (``weights="digits"``) with the test accuracy printed here.

    .venv/bin/python examples/train_zoo_digits.py [ARCHITECTURE ...]

Reproducible: fixed seeds (`keras.utils.set_random_seed`), the fixed stratified split of
`kbnn.data.load_digits_split` (1437 train / 360 test), single-threaded TensorFlow ops.

Recipes (`RECIPES`): Adam with a learning rate decaying to 0, batch 32. ReActNet and Bi-Real:
lr 1e-2, linear decay, 30 epochs. BNext: lr 2e-3, cosine decay, 100 epochs, gradients clipped
to global norm 1 (without it the tiny BNext diverges), and BNext's weight temperature annealed
per step (`kbnn.training.bnext_tau_schedule(update_freq="step")`) so that tau < 1e-7 (binary
weights, the only form that converts) from 60% of the training on: the last 40% fine-tune
the binary network and let the BN statistics settle on it.

The files are written in HDF5's compact (libver="latest") layout: the same groups and datasets
as ``model.save_weights`` (``load_weights`` reads them), with far less per-variable overhead,
which keeps BNext's ~540 small variables under 1 MiB.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import sys
import tempfile
import time

os.environ.setdefault("TF_DETERMINISTIC_OPS", "1")

import h5py
import keras
import numpy as np
import tensorflow as tf

from kbnn import zoo
from kbnn.data import load_digits_split
from kbnn.training import bnext_tau_schedule
from kbnn.zoo.digits import DIGITS_MODELS

OUT = pathlib.Path(__file__).resolve().parents[1] / "zoo" / "weights"
BATCH_SIZE = 32


@dataclasses.dataclass(frozen=True)
class Recipe:
    epochs: int = 30
    learning_rate: float = 1e-2
    schedule: str = "linear"  # decay to 0: "linear" (PolynomialDecay) or "cosine"
    global_clipnorm: float | None = None
    # BNext: the fraction of the training steps after which tau < 1e-7 (binary weights)
    binary_from: float | None = None


RECIPES = {
    "BNextTiny": Recipe(epochs=100, learning_rate=2e-3, schedule="cosine", global_clipnorm=1.0,
                        binary_from=0.6),
}


def _callbacks(recipe: Recipe, steps: int) -> list:
    if recipe.binary_from is None:
        return []
    # tau = decay**step (step = the optimizer's global step): 1 at the start, 5e-8 < 1e-7
    # (binary) at step `binary_from * steps`.
    binary_step = int(recipe.binary_from * steps)
    decay = 0.5e-7 ** (1.0 / binary_step)
    return [bnext_tau_schedule(decay=decay, update_freq="step", decay_steps=1)]


def save_compact(model: keras.Model, path: pathlib.Path) -> None:
    """``model.save_weights(path)`` rewritten in HDF5's compact layout (libver="latest"): the
    same groups, datasets and attributes, a fraction of the per-object overhead."""
    with tempfile.TemporaryDirectory() as folder:
        plain = os.path.join(folder, "plain.weights.h5")
        model.save_weights(plain)
        with h5py.File(plain, "r") as source, h5py.File(path, "w", libver="latest") as target:
            _copy(source, target)


def _copy(source: h5py.Group, target: h5py.Group) -> None:
    target.attrs.update(source.attrs)
    for name, item in source.items():
        if isinstance(item, h5py.Group):
            _copy(item, target.create_group(name))
        else:
            target.create_dataset(name, data=item[()]).attrs.update(item.attrs)


def train(architecture: str, seed: int = 0) -> float:
    tf.config.threading.set_inter_op_parallelism_threads(1)
    tf.config.threading.set_intra_op_parallelism_threads(1)
    keras.utils.set_random_seed(seed)
    start = time.perf_counter()
    data = load_digits_split()
    entry = DIGITS_MODELS[architecture]
    recipe = RECIPES.get(architecture, Recipe())
    model = zoo.get(architecture, **entry.options)
    steps = recipe.epochs * -(-len(data.x_train) // BATCH_SIZE)
    if recipe.schedule == "cosine":
        schedule = keras.optimizers.schedules.CosineDecay(recipe.learning_rate, steps)
    else:
        schedule = keras.optimizers.schedules.PolynomialDecay(recipe.learning_rate, steps, 0.0)
    model.compile(keras.optimizers.Adam(schedule, global_clipnorm=recipe.global_clipnorm),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(data.x_train, data.y_train, batch_size=BATCH_SIZE, epochs=recipe.epochs,
              verbose=0, shuffle=True, callbacks=_callbacks(recipe, steps))
    accuracy = float(np.mean(model.predict(data.x_test, verbose=0).argmax(-1) == data.y_test))
    OUT.mkdir(exist_ok=True)
    path = OUT / entry.file_name
    # saved from an uncompiled copy: the model's variables only, without the optimizer's
    clean = zoo.get(architecture, **entry.options)
    clean.set_weights(model.get_weights())
    save_compact(clean, path)
    print(f"{architecture}: test accuracy {100 * accuracy:.2f}% -> {path} "
          f"({path.stat().st_size / 1024:.0f} KiB, {time.perf_counter() - start:.0f} s)")
    return accuracy


if __name__ == "__main__":
    for name in sys.argv[1:] or list(DIGITS_MODELS):
        train(name)
