"""`kbnn train`: train a binary network on digits, CIFAR, ImageNet or an image folder, on one
device or many, then convert it to LCE, verify the flatbuffer and write a report.

    kbnn train MODEL --dataset {digits,cifar10,cifar100,imagenet,folder:PATH} --epochs N
               --out DIR [--batch-size B] [--learning-rate LR] [--optimizer {adam,bop}]
               [--teacher MODEL_OR_PATH] [--two-step] [--recipe {reactnet_a,bnext_t,bireal_net_18}]
               [--width W] [--input-size S] [--strategy {default,mirrored,multi_worker,tpu}]
               [--overwrite | --resume] ...

MODEL is a `kbnn.zoo` architecture (``kbnn.zoo.get(MODEL, input_shape=(S, S, C),
classes=K, width_multiplier=W)``) or a ``.keras`` file. The data come from `kbnn.data`, with the
recipe's augmentation on the training split. What DIR holds at the end:

* ``model.keras`` (the trained model), ``model.tflite`` (converted with
  `kbnn.converters.convert`, checked with `verify` on held-out images), ``report.md``,
  ``training.png`` (loss and accuracy curves), ``history.csv`` (one row per epoch; two-step runs:
  ``history-step1.csv``, ``history-step2.csv`` and ``step1.keras``), ``logs/`` (TensorBoard) and
  ``run.json`` (the run's settings, read back by ``--resume``);
* while training: ``backup/``, the state of `keras.callbacks.BackupAndRestore` (weights,
  optimizer state, epoch), written after every epoch. A run that was interrupted continues from
  its last finished epoch with ``--resume`` (same arguments); ``backup/`` is removed once the
  trained model is saved.

Distribution (`--strategy`): ``mirrored`` is `tf.distribute.MirroredStrategy` over the local GPUs,
``multi_worker`` is `tf.distribute.MultiWorkerMirroredStrategy` configured by the ``TF_CONFIG``
environment variable (every worker runs the same command; the chief writes DIR, the other
workers keep only their own backup in ``DIR/.workers/``), ``tpu`` is `tf.distribute.TPUStrategy`
(``--tpu NAME``, or the TPU of a TPU VM). ``--batch-size`` is the global batch size.

Module level: the standard library only (the `kbnn` command builds its parser from here before
anything heavy is imported).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import json
import math
import os
import shutil
import time
import warnings
from collections.abc import Callable
from typing import Any

__all__ = ["DATASETS", "OPTIMIZERS", "RECIPES", "RESULT_FILES", "STRATEGIES", "TrainConfig",
           "TrainConfigError", "add_arguments", "check_config", "command", "run_training"]

DATASETS = ("digits", "cifar10", "cifar100", "imagenet")  # and "folder:PATH"
STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")
RECIPES = ("reactnet_a", "bnext_t", "bireal_net_18")
OPTIMIZERS = ("adam", "bop")
RESULT_FILES = ("model.keras", "model.tflite", "report.md", "training.png")
RUN_FILE = "run.json"
_OWN_FILES = RESULT_FILES + (RUN_FILE, "history.csv", "history-step1.csv",
                             "history-step2.csv", "step1.keras")
_OWN_FOLDERS = ("backup", "logs", ".workers")
_DEFAULT_BATCH = {"digits": 64, "cifar10": 128, "cifar100": 128, "imagenet": 256,
                  "folder": 64}
_DEFAULT_SIZE = {"digits": 8, "cifar10": 32, "cifar100": 32, "imagenet": 224, "folder": 224}
_DATA_RECIPE = {"reactnet_a": "reactnet", "bnext_t": "bnext", "bireal_net_18": "bireal"}
_EVAL_SPLITS = {"digits": "validation", "cifar10": "test", "cifar100": "test",
                "imagenet": "validation"}
_FOLDER_EVAL_SPLITS = ("val", "validation", "test")
# Settings that must be the same for --resume (the others may change between the two runs).
_RESUME_KEYS = ("model", "dataset", "epochs", "batch_size", "learning_rate", "optimizer",
                "bop_threshold", "bop_gamma", "teacher", "two_step", "recipe", "width",
                "input_size", "steps_per_epoch", "augment", "seed")
_STAGES = 5


class TrainConfigError(ValueError):
    """An argument of `kbnn train` (or `run_training`) that cannot work, found before anything
    is written; the message names the option."""


@dataclasses.dataclass
class TrainConfig:
    """The settings of a `kbnn train` run (the command's options, by the same names).

    Attributes:
        model: a `kbnn.zoo` name or the path of a ``.keras`` file.
        dataset: "digits", "cifar10", "cifar100", "imagenet" or "folder:PATH".
        epochs: training epochs (of each step, for a two-step run).
        out_dir: the output folder.
        batch_size: the global batch size (default: the recipe's, else 64 for digits and
            folders, 128 for CIFAR, 256 for ImageNet).
        learning_rate: the peak learning rate (default: the recipe's, else 1e-3).
        optimizer: "adam" (Adam, cosine decay over the run) or "bop" (Bop for the binary
            weights, Adam for the rest, in a `CaseOptimizer`); default: the recipe's
            optimizer, else "adam". Not with a recipe.
        bop_threshold, bop_gamma: Bop's hyperparameters (default: Bop's, 1e-8 and 1e-4).
        teacher: a `kbnn.zoo` name or a ``.keras`` file to distil from (`Distiller`).
        two_step: two-step training (step 1: binary activations with real weights,
            `to_step1`; step 2: the model itself, from the step-1 weights); default: the
            recipe's, else False.
        recipe: "reactnet_a", "bnext_t" or "bireal_net_18" (`kbnn.training`): optimizer, weight
            decay, schedule (stretched to `epochs`), label smoothing, distillation weights and
            the data augmentation of that paper's code.
        strategy: "default", "mirrored", "multi_worker" or "tpu".
        tpu: the TPU name or address for the "tpu" strategy.
        width: the zoo builder's `width_multiplier`.
        input_size: the input height and width of a zoo model (images are resized); default
            the data set's (8, 32, 224).
        steps_per_epoch: optimizer steps per epoch (default: one pass over the training split).
        augment: the training augmentation of `kbnn.data` (default True).
        seed: seed of the weights, the data order and the augmentation.
        data_dir: tensorflow-datasets' data folder.
        verify_samples: held-out images the flatbuffer is checked on.
        min_agreement: the least top-1 agreement of TFLite with Keras on them.
        strict: convert in strict mode (every binary layer must become an LCE op).
        overwrite: replace an earlier run's files in `out_dir`.
        resume: continue the interrupted run in `out_dir`.
    """

    model: str
    dataset: str = "digits"
    epochs: int = 1
    out_dir: str = "train_out"
    batch_size: int | None = None
    learning_rate: float | None = None
    optimizer: str | None = None
    bop_threshold: float | None = None
    bop_gamma: float | None = None
    teacher: str | None = None
    two_step: bool | None = None
    recipe: str | None = None
    strategy: str = "default"
    tpu: str | None = None
    width: float | None = None
    input_size: int | None = None
    steps_per_epoch: int | None = None
    augment: bool = True
    seed: int = 0
    data_dir: str | None = None
    verify_samples: int = 256
    min_agreement: float = 0.99
    strict: bool = True
    overwrite: bool = False
    resume: bool = False

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# ------------------------------------------------------------------------------ checks


def _fail(message: str) -> TrainConfigError:
    return TrainConfigError(message)


def _is_model_path(model: str) -> bool:
    return model.endswith((".keras", ".h5", ".hdf5")) or os.sep in model or (
        os.path.exists(model))


def _dataset_kind(dataset: str) -> str:
    return "folder" if dataset.startswith("folder:") else dataset


def _cluster(strategy: str) -> tuple[bool, str]:
    """(chief, worker label) of this process; the label names its folder in DIR/.workers."""
    if strategy != "multi_worker":
        return True, "chief"
    config = json.loads(os.environ["TF_CONFIG"])
    task = config["task"]
    kind, index = task["type"], int(task.get("index", 0))
    chief = kind == "chief" or (kind == "worker" and index == 0
                                and "chief" not in config["cluster"])
    return chief, f"{kind}-{index}"


def _check_tf_config() -> None:
    text = os.environ.get("TF_CONFIG")
    example = ('e.g. TF_CONFIG=\'{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
               '"task": {"type": "worker", "index": 0}}\'')
    if not text:
        raise _fail("--strategy multi_worker needs the TF_CONFIG environment variable on every "
                    f"worker ({example})")
    try:
        config = json.loads(text)
        cluster, task = config["cluster"], config["task"]
        kind, index = task["type"], int(task.get("index", 0))
        hosts = cluster[kind]
    except (ValueError, KeyError, TypeError) as err:
        raise _fail(f"TF_CONFIG is not a valid cluster description ({type(err).__name__}: "
                    f"{err}); {example}") from None
    if kind not in ("chief", "worker"):
        raise _fail(f"TF_CONFIG: task type {kind!r} is not supported by --strategy "
                    "multi_worker (only 'chief' and 'worker')")
    if not 0 <= index < len(hosts):
        raise _fail(f"TF_CONFIG: task index {index} is out of range for the {len(hosts)} "
                    f"{kind} address(es) of the cluster")


def _check_number(name: str, value, *, integer=False, low=None, high=None, low_open=False,
                  allow_none=True):
    if value is None and allow_none:
        return
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok and integer:
        ok = isinstance(value, int)
    if ok:
        ok = math.isfinite(value) and (low is None or (value > low if low_open else
                                                       value >= low))
        ok = ok and (high is None or value <= high)
    if not ok:
        kind = "an integer" if integer else "a number"
        bound = ""
        if low is not None:
            bound += f" {'>' if low_open else '>='} {low:g}"
        if high is not None:
            bound += f"{' and' if bound else ''} <= {high:g}"
        raise _fail(f"--{name.replace('_', '-')}: expected {kind}{bound}, got {value!r}")


def _list_dir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []


def check_config(config: TrainConfig) -> TrainConfig:
    """Check every setting that can be checked without TensorFlow, and return a copy with the
    defaults that depend on the recipe and the data set filled in.

    Raises:
        TrainConfigError: naming the option and what is wrong.
    """
    c = dataclasses.replace(config)
    if not isinstance(c.model, str) or not c.model:
        raise _fail("MODEL: expected a kbnn.zoo name or the path of a .keras file")
    if not isinstance(c.dataset, str) or not (c.dataset in DATASETS
                                              or c.dataset.startswith("folder:")):
        raise _fail(f"--dataset: expected one of {', '.join(DATASETS)} or folder:PATH, got "
                    f"{c.dataset!r}")
    kind = _dataset_kind(c.dataset)
    if kind == "folder":
        root = c.dataset[len("folder:"):]
        if not os.path.isdir(root):
            raise _fail(f"--dataset {c.dataset}: {root!r} is not a folder (expected "
                        "PATH/train/LABEL/IMAGE and PATH/val/LABEL/IMAGE)")
        if not os.path.isdir(os.path.join(root, "train")):
            raise _fail(f"--dataset {c.dataset}: no train/ folder in {root} (expected "
                        "PATH/train/LABEL/IMAGE)")
        if not any(os.path.isdir(os.path.join(root, s)) for s in _FOLDER_EVAL_SPLITS):
            raise _fail(f"--dataset {c.dataset}: no held-out folder in {root} (expected one of "
                        f"{', '.join(s + '/' for s in _FOLDER_EVAL_SPLITS)})")
    _check_number("epochs", c.epochs, integer=True, low=1, allow_none=False)
    _check_number("batch_size", c.batch_size, integer=True, low=1)
    _check_number("learning_rate", c.learning_rate, low=0, low_open=True)
    _check_number("bop_threshold", c.bop_threshold, low=0)
    _check_number("bop_gamma", c.bop_gamma, low=0, high=1, low_open=True)
    _check_number("width", c.width, low=0, low_open=True)
    _check_number("input_size", c.input_size, integer=True, low=1)
    _check_number("steps_per_epoch", c.steps_per_epoch, integer=True, low=1)
    _check_number("seed", c.seed, integer=True, low=0, high=2 ** 32 - 1, allow_none=False)
    _check_number("verify_samples", c.verify_samples, integer=True, low=1, allow_none=False)
    _check_number("min_agreement", c.min_agreement, low=0, high=1, allow_none=False)
    if c.recipe is not None and c.recipe not in RECIPES:
        raise _fail(f"--recipe: expected one of {', '.join(RECIPES)}, got {c.recipe!r}")
    if c.optimizer is not None and c.optimizer not in OPTIMIZERS:
        raise _fail(f"--optimizer: expected one of {', '.join(OPTIMIZERS)}, got "
                    f"{c.optimizer!r}")
    if c.optimizer is not None and c.recipe is not None:
        raise _fail(f"--optimizer {c.optimizer} and --recipe {c.recipe} both choose the "
                    "optimizer: pass one of them")
    if (c.bop_threshold is not None or c.bop_gamma is not None) and c.optimizer != "bop":
        raise _fail("--bop-threshold and --bop-gamma need --optimizer bop")
    if c.strategy not in STRATEGIES:
        raise _fail(f"--strategy: expected one of {', '.join(STRATEGIES)}, got "
                    f"{c.strategy!r}")
    if c.tpu is not None and c.strategy != "tpu":
        raise _fail("--tpu needs --strategy tpu")
    if c.strategy == "multi_worker":
        _check_tf_config()
    if c.overwrite and c.resume:
        raise _fail("--overwrite and --resume contradict each other: --overwrite starts "
                    "again, --resume continues the run in --out")
    for option, path in (("MODEL", c.model), ("--teacher", c.teacher)):
        if path is not None and _is_model_path(path) and not os.path.isfile(path):
            raise _fail(f"{option} {path}: file not found (expected a .keras file or a "
                        "kbnn.zoo name)")
    if _is_model_path(c.model) and (c.width is not None or c.input_size is not None):
        raise _fail("--width and --input-size apply to kbnn.zoo models; the model "
                    f"{c.model} has its own width and input size")
    import importlib.util

    missing = [pip for module, pip in (("matplotlib", "matplotlib"),)
               if importlib.util.find_spec(module) is None]
    if kind == "digits" and importlib.util.find_spec("sklearn") is None:
        missing.append("scikit-learn")
    if missing:
        raise _fail(f"kbnn train needs {' and '.join(missing)}: pip install "
                    f"{' '.join(missing)}")
    if kind in ("cifar10", "cifar100", "imagenet", "folder") and (
            importlib.util.find_spec("tensorflow_datasets") is None):
        raise _fail(f"--dataset {c.dataset} is read through tensorflow-datasets, which is not "
                    "installed: pip install 'kbnn[data]' (or pip install tensorflow-datasets)")
    # Defaults that depend on the recipe and the data set.
    if c.batch_size is None:
        c.batch_size = _DEFAULT_BATCH[kind]
    if c.two_step is None:
        c.two_step = False
        if c.recipe is not None:
            from_recipe = {"reactnet_a": True, "bnext_t": False, "bireal_net_18": False}
            c.two_step = from_recipe[c.recipe]
    if c.recipe is None and c.optimizer is None:
        c.optimizer = "adam"
    if c.recipe is None and c.learning_rate is None:
        c.learning_rate = 1e-3
    _check_out_dir(c)
    return c


def _check_out_dir(c: TrainConfig) -> None:
    out = c.out_dir
    if not isinstance(out, str) or not out:
        raise _fail("--out: expected a folder path")
    path = os.path.abspath(out)
    while path and not os.path.exists(path):
        parent = os.path.dirname(path)
        path = "" if parent == path else parent
    if path and not os.path.isdir(path):
        raise _fail(f"--out {out}: {path} is a file, not a folder")
    chief, _ = _cluster(c.strategy)
    if not chief:
        return  # the chief checks and writes DIR; this worker keeps its backup in .workers
    held = [n for n in _list_dir(out) if n != ".workers"]
    if not held or c.overwrite:
        return
    run_file = os.path.join(out, RUN_FILE)
    if not c.resume:
        raise _fail(f"--out {out} is not empty ({', '.join(sorted(held)[:4])}"
                    f"{', ...' if len(held) > 4 else ''}); pass --resume to continue the run "
                    "it holds, --overwrite to start again, or choose another folder")
    if not os.path.isfile(run_file):
        raise _fail(f"--resume: {out} holds no {RUN_FILE}, so it is not the folder of a kbnn "
                    "train run")
    if os.path.exists(os.path.join(out, "report.md")):
        raise _fail(f"--resume: the run in {out} has finished (report.md); pass --overwrite "
                    "to train again")
    try:
        with open(run_file) as f:
            saved = json.load(f)["config"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise _fail(f"--resume: cannot read {run_file} ({type(err).__name__}: {err})") from None
    differ = [key for key in _RESUME_KEYS if saved.get(key) != getattr(c, key)]
    if differ:
        what = "; ".join(f"--{k.replace('_', '-')} was {saved.get(k)!r}, now "
                         f"{getattr(c, k)!r}" for k in differ)
        raise _fail(f"--resume: the run in {out} was started with other settings ({what}); "
                    "resume with the same arguments, or pass --overwrite to start again")


# ---------------------------------------------------------------------------- helpers


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _stdout_is_terminal() -> bool:
    import sys

    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False


def _write_atomically(path: str, write) -> None:
    from kbnn_apps.cli import write_atomically

    write_atomically(path, write)


def _write_text(path: str, text: str) -> None:
    def write(tmp):
        with open(tmp, "w") as f:
            f.write(text)

    _write_atomically(path, write)


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        with contextlib.suppress(OSError):
            os.unlink(path)


def _make_strategy(c: TrainConfig, devices):
    """The tf.distribute strategy (created before any other TensorFlow op runs)."""
    import tensorflow as tf

    if c.strategy == "default":
        return tf.distribute.get_strategy()
    if c.strategy == "mirrored":
        return tf.distribute.MirroredStrategy(devices=devices)
    if c.strategy == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=c.tpu)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    except (ValueError, RuntimeError, tf.errors.OpError) as err:
        where = f"TPU {c.tpu!r}" if c.tpu else "a TPU (no --tpu NAME, no TPU_NAME)"
        raise TrainConfigError(f"--strategy tpu: cannot connect to {where}: "
                               f"{type(err).__name__}: {err}. Run on a TPU VM, or pass --tpu "
                               "NAME (or set TPU_NAME)") from None


def _outputs_probabilities(model) -> bool:
    """True when the model's last layer applies a softmax (outputs are probabilities)."""
    layer = model.layers[-1] if getattr(model, "layers", None) else None
    activation = getattr(layer, "activation", None)
    return type(layer).__name__ == "Softmax" or getattr(activation, "__name__", "") == "softmax"


def _copy_weights(source, target) -> None:
    """Copy every variable of `source` into the variable of `target` with the same path
    (the step-1 model and the model itself differ only in their quantizers)."""
    weights = {v.path: v for v in source.weights}
    missing = [v.path for v in target.weights
               if v.path not in weights or tuple(weights[v.path].shape) != tuple(v.shape)]
    if missing:
        raise RuntimeError(f"two-step training: the step-1 model has no variable like "
                           f"{', '.join(missing[:3])} of the model; it cannot start step 2")
    for v in target.weights:
        v.assign(weights[v.path])


def _truncate_csv(path: str, epochs_done: int) -> None:
    """Keep the rows of the epochs before `epochs_done` (a resumed run writes the others)."""
    if not os.path.exists(path):
        return
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        return
    header, body = rows[0], rows[1:]
    index = header.index("epoch") if "epoch" in header else 0
    kept = [r for r in body if r and r[index].isdigit() and int(r[index]) < epochs_done]

    def write(tmp):
        with open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            writer.writerows(kept)

    _write_atomically(path, write)


def _read_csv(path: str) -> dict[str, list[float]]:
    if not os.path.exists(path):
        return {}
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    history: dict[str, list[float]] = {}
    for row in rows:
        for key, value in row.items():
            if key is None:
                continue
            try:
                history.setdefault(key, []).append(float(value))
            except (TypeError, ValueError):
                history.setdefault(key, []).append(float("nan"))
    return history


def plot_history(histories: list[tuple[str, dict[str, list[float]]]], path: str,
                 title: str) -> None:
    """Loss and accuracy curves (train and validation) of one or two steps to a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    offset = 0
    for step, (label, history) in enumerate(histories):
        n = len(history.get("loss", []))
        epochs = list(range(offset + 1, offset + n + 1))
        prefix = f"{label} " if len(histories) > 1 else ""
        marker = "o" if n <= 30 else None
        for ax, key in ((axes[0], "loss"), (axes[1], "accuracy")):
            if key in history:
                ax.plot(epochs, history[key], label=f"{prefix}train", color=f"C{2 * step}",
                        marker=marker)
            if f"val_{key}" in history:
                ax.plot(epochs, history[f"val_{key}"], label=f"{prefix}validation",
                        color=f"C{2 * step + 1}", marker=marker)
        if step:
            for ax in axes:
                ax.axvline(offset + 0.5, color="grey", linestyle="--", linewidth=1)
        offset += n
    from matplotlib.ticker import MaxNLocator

    for ax, name in ((axes[0], "loss"), (axes[1], "accuracy")):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_title(name)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ------------------------------------------------------------------------------- data


@dataclasses.dataclass
class _Data:
    train: Any
    validation: Any
    held_out_x: Any
    held_out_y: Any
    held_out_split: str
    train_info: Any
    eval_info: Any
    steps_per_epoch: int
    num_classes: int
    image_shape: tuple[int, int, int]


def _take(dataset, n: int):
    import numpy as np

    xs, ys, count = [], [], 0
    for x, y in dataset:
        xs.append(np.asarray(x))
        ys.append(np.asarray(y))
        count += len(xs[-1])
        if count >= n:
            break
    return np.concatenate(xs)[:n], np.concatenate(ys)[:n]


def _load_data(c: TrainConfig, image_size: int | None, channels: int | None, tpu: bool):
    from kbnn import data

    kind = _dataset_kind(c.dataset)
    recipe = _DATA_RECIPE.get(c.recipe, "reactnet")
    common = {"seed": c.seed}
    if kind == "digits":
        size = image_size if image_size is not None else 8

        def load(split, batch, augment):
            return data.digits(split, batch, image_size=size, channels=channels or 1,
                               augment=augment, split_seed=c.seed, with_info=True,
                               drop_remainder=True if tpu else None, **common)

        train, train_info = load("train", c.batch_size, c.augment)
        validation, eval_info = load("validation", c.batch_size, False)
        held_out, _ = load("test", 256, False)
        held_split = "test"
    else:
        size = image_size if image_size is not None else _DEFAULT_SIZE[kind]
        if kind == "folder":
            root = c.dataset[len("folder:"):]
            eval_split = next(s for s in _FOLDER_EVAL_SPLITS
                              if os.path.isdir(os.path.join(root, s)))

            def load(split, batch, augment):
                return data.image_folder(root, split, batch, size, augment=augment,
                                         recipe=recipe, with_info=True,
                                         drop_remainder=True if tpu else None, **common)
        elif kind == "imagenet":
            eval_split = _EVAL_SPLITS[kind]

            def load(split, batch, augment):
                return data.imagenet(split, batch, size, augment=augment, recipe=recipe,
                                     data_dir=c.data_dir, with_info=True,
                                     drop_remainder=True if tpu else None, **common)
        else:
            eval_split = _EVAL_SPLITS[kind]
            rand_augment = "rand-m7-mstd0.5-inc1" if c.recipe == "bnext_t" else None

            def load(split, batch, augment):
                return data.cifar(split, batch, classes=100 if kind == "cifar100" else 10,
                                  image_size=size, augment=augment, data_dir=c.data_dir,
                                  rand_augment=rand_augment if augment else None,
                                  with_info=True, drop_remainder=True if tpu else None,
                                  **common)

        train, train_info = load("train", c.batch_size, c.augment)
        validation, eval_info = load(eval_split, c.batch_size, False)
        held_out, _held_info = load(eval_split, 256, False)
        held_split = eval_split
    x, y = _take(held_out, c.verify_samples)
    if c.steps_per_epoch:
        steps = c.steps_per_epoch
        train = train.repeat()
    else:
        steps = int(train.cardinality())
        if steps < 0:  # unknown: count the batches once
            steps = sum(1 for _ in train)
        if steps == 0:
            raise TrainConfigError(
                f"--batch-size {c.batch_size}: larger than the training split of "
                f"{c.dataset} ({train_info.num_examples} images), so an epoch has no step")
    return _Data(train, validation, x, y, held_split, train_info, eval_info, steps,
                 train_info.num_classes, tuple(train_info.image_shape))


# ----------------------------------------------------------------------------- models


def _model_input_shape(model) -> tuple:
    return tuple(model.inputs[0].shape[1:]) if getattr(model, "inputs", None) else ()


def _build_model(c: TrainConfig, name: str, input_shape, num_classes: int, what: str):
    """A zoo architecture (random weights) or a .keras file, in the current scope."""
    if _is_model_path(name):
        from kbnn_apps.cli import CLIError, load_keras_model

        try:
            return load_keras_model(name)
        except CLIError as err:
            raise TrainConfigError(f"{what} {name}: {err}") from None
    import kbnn.zoo

    kwargs = {"input_shape": tuple(input_shape), "classes": num_classes}
    if c.width is not None:
        kwargs["width_multiplier"] = c.width
    try:
        return kbnn.zoo.get(name, **kwargs)
    except (ValueError, TypeError) as err:
        if "Invalid value for argument `name`" in str(err):
            raise TrainConfigError(
                f"{what} {name!r}: not a kbnn.zoo model ({', '.join(kbnn.zoo.list_models())}) "
                "nor a .keras file") from None
        raise TrainConfigError(f"{what} {name}: {err}") from None


def _check_model_fits(model, what: str, name: str, image_shape, num_classes: int) -> None:
    shape = _model_input_shape(model)
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise TrainConfigError(f"{what} {name}: expected a model with one input and one "
                               f"output, got {len(model.inputs)} and {len(model.outputs)}")
    if tuple(shape) != tuple(image_shape):
        raise TrainConfigError(f"{what} {name}: its input shape {tuple(shape)} is not the "
                               f"data's {tuple(image_shape)}")
    classes = model.outputs[0].shape[-1]
    if classes != num_classes:
        raise TrainConfigError(f"{what} {name}: it has {classes} outputs, the data set has "
                               f"{num_classes} classes")


def _schedule_recipe(c: TrainConfig):
    """The kbnn.training recipe stretched to the run's epochs (warmup in proportion)."""
    from kbnn import training

    recipe = getattr(training, c.recipe)()
    warmup = round(recipe.warmup_epochs * c.epochs / recipe.epochs)
    return dataclasses.replace(
        recipe, epochs=c.epochs, batch_size=c.batch_size,
        learning_rate=c.learning_rate or recipe.learning_rate,
        warmup_epochs=min(warmup, c.epochs - 1))


def _build_optimizer(c: TrainConfig, recipe, model, steps_per_epoch: int, step: int):
    import keras

    if recipe is not None:
        return recipe.build_optimizer(model, steps_per_epoch, step=step if recipe.two_step
                                      else 1)
    schedule = keras.optimizers.schedules.CosineDecay(c.learning_rate,
                                                      steps_per_epoch * c.epochs)
    if c.optimizer == "bop":
        from kbnn.optimizers import Bop, CaseOptimizer, binary_predicate

        bop = {}
        if c.bop_threshold is not None:
            bop["threshold"] = c.bop_threshold
        if c.bop_gamma is not None:
            bop["gamma"] = c.bop_gamma
        return CaseOptimizer((binary_predicate(model), Bop(**bop)),
                             default_optimizer=keras.optimizers.Adam(schedule))
    return keras.optimizers.Adam(schedule)


def _recipe_notes(c: TrainConfig, recipe) -> list[str]:
    """Where the run departs from the recipe it names (for the report)."""
    if recipe is None:
        return []
    from kbnn import training

    published = getattr(training, c.recipe)()
    notes = [(f"{published.name}: the schedule of {published.epochs} epochs (batch "
              f"{published.batch_size}) is stretched to --epochs {c.epochs} (batch "
              f"{c.batch_size})")]
    if recipe.teacher and not c.teacher:
        notes.append(f"the recipe distils from {recipe.teacher}; no --teacher was given, so "
                     "the model trained on the labels")
    elif c.teacher and (recipe.assistant_teachers or recipe.teacher_weighting != "mean"):
        notes.append(f"the recipe distils from {recipe.teacher} and the assistant(s) "
                     f"{', '.join(recipe.assistant_teachers) or 'none'} with "
                     f"{recipe.teacher_weighting!r} weighting; this run used the one --teacher "
                     "given")
    if recipe.mixed_precision:
        notes.append("the official runs use mixed precision; this run trained in float32")
    return notes


def _compile(c: TrainConfig, recipe, student, teacher, optimizer):
    """The model `fit` trains: the student, or a Distiller around it."""
    import keras

    smoothing = recipe.label_smoothing if recipe is not None else 0.0
    probabilities = _outputs_probabilities(student)
    if smoothing:
        loss = keras.losses.CategoricalCrossentropy(from_logits=not probabilities,
                                                    label_smoothing=smoothing)
    else:
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=not probabilities)
    if teacher is None:
        student.compile(optimizer, loss, metrics=["accuracy"])
        return student
    from kbnn.training import Distiller

    weight = recipe.ground_truth_weight if recipe is not None else 0.0
    distiller = Distiller(student, teacher, ground_truth_weight=weight,
                          student_from_logits=not probabilities,
                          teacher_from_logits=not _outputs_probabilities(teacher))
    distiller.compile(optimizer, loss=loss if weight > 0 else None, metrics=["accuracy"])
    distiller.build((None, *_model_input_shape(student)))  # BackupAndRestore needs it built
    return distiller


# ------------------------------------------------------------------------------ report


def _pct(x: float) -> str:
    return f"{100 * x:.2f} %"


def _last(history: dict[str, list[float]], key: str) -> str:
    values = history.get(key) or []
    return f"{values[-1]:.4f}" if values else "-"


def _report(r: dict[str, Any]) -> str:
    c: TrainConfig = r["config"]
    lines = [f"# kbnn train: {r['model_name']} on {c.dataset}", ""]
    lines += [
        (f"- run: {r['date']}, {_plural(c.epochs, 'epoch')}"
        f"{' per step (two-step training)' if c.two_step else ''}, seed {c.seed}; training "
        f"{r['train_seconds']:.1f} s, whole run {r['total_seconds']:.1f} s"),
        (f"- strategy: {c.strategy} ({_plural(r['replicas'], 'replica')}); global batch "
        f"{c.batch_size}, {r['steps_per_epoch']} steps per epoch"),
        f"- machine: {r['machine']}",
        f"- command: `{r['command']}`",
        (f"- model: {c.model} ({r['parameters']:,} parameters); optimizer: {r['optimizer']}"
        f"{'; recipe: ' + c.recipe if c.recipe else ''}"),
        f"- teacher: {c.teacher or 'none (labels only)'}",
        (f"- data: {c.dataset}, input {'x'.join(map(str, r['image_shape']))}; training split "
        f"{r['train_examples'] or '?'} images ({'; '.join(r['train_steps'])}); held-out "
        f"split {r['held_out_split']!r} ({'; '.join(r['eval_steps'])})"),
    ]
    if r["resumed_from"]:
        lines.append(f"- resumed: {r['resumed_from']}")
    lines += [f"- note: {note}" for note in r.get("notes", [])]
    lines += ["", "## Training (last epoch)", "",
              "| step | epochs | loss | accuracy | val_loss | val_accuracy |",
              "|---|---|---|---|---|---|"]
    for label, history in r["histories"]:
        lines.append(f"| {label} | {len(history.get('loss', []))} | {_last(history, 'loss')} | "
                     f"{_last(history, 'accuracy')} | {_last(history, 'val_loss')} | "
                     f"{_last(history, 'val_accuracy')} |")
    lines += ["", ("Curves: `training.png`; per-epoch values: "
              f"{', '.join('`' + f + '`' for f in r['csv_files'])}; TensorBoard: `logs/`."), ""]
    if r.get("tflite_accuracy") is None:
        lines += ["## Conversion", "", r.get("conversion_note", "not converted"), ""]
        return "\n".join(lines)
    verdict = "PASSED" if r["verified"] else "FAILED"
    lines += [
        f"## Keras vs TFLite on {r['n_held_out']} held-out images ({r['held_out_split']})", "",
        "| | Keras | TFLite (LCE interpreter) |", "|---|---|---|",
        f"| accuracy | {_pct(r['keras_accuracy'])} | {_pct(r['tflite_accuracy'])} |", "",
        (f"Top-1 agreement TFLite vs Keras: **{_pct(r['top1_agreement'])}** ({verdict}: at "
        f"least {_pct(c.min_agreement)} required); max |TFLite - Keras| = "
        f"{r['max_abs_diff']:.3g}, mean = {r['mean_abs_diff']:.3g}."), "",
        "## Flatbuffer", "",
        "| model | size (bytes) |", "|---|---|",
        f"| binary (LCE), `model.tflite` | {r['binary_tflite_bytes']:,} |",
    ]
    if r.get("float_tflite_bytes"):
        lines += [(f"| float TFLite (same architecture, quantizers removed) | "
                  f"{r['float_tflite_bytes']:,} |"),
                  (f"| ratio float / binary | "
                  f"{r['float_tflite_bytes'] / r['binary_tflite_bytes']:.2f}x |")]
    ops = sorted(r["op_counts"].items(), key=lambda kv: (-kv[1], kv[0]))
    lines += ["", f"{r['n_binary_convs']} LceBconv2d; operators:", "",
              "| operator | count |", "|---|---|"]
    lines += [f"| {op} | {n} |" for op, n in ops]
    if r.get("conversion_warnings"):
        shown, more = r["conversion_warnings"][:20], len(r["conversion_warnings"]) - 20
        lines += ["", "Conversion warnings:", ""]
        lines += [f"- {w}" for w in shown] + ([f"- ... and {more} more"] if more > 0 else [])
    lines += ["", "```", *r["profile_lines"], "```", "",
              "Latency: `kbnn bench model.tflite --model model.keras`.", ""]
    return "\n".join(lines)


def _command_line(c: TrainConfig) -> str:
    parts = ["kbnn train", c.model, "--dataset", c.dataset, "--epochs", str(c.epochs), "--out",
             c.out_dir, "--batch-size", str(c.batch_size)]
    for option, value in (("--learning-rate", c.learning_rate), ("--optimizer", c.optimizer),
                          ("--bop-threshold", c.bop_threshold), ("--bop-gamma", c.bop_gamma),
                          ("--teacher", c.teacher), ("--recipe", c.recipe),
                          ("--width", c.width), ("--input-size", c.input_size),
                          ("--steps-per-epoch", c.steps_per_epoch),
                          ("--strategy", c.strategy if c.strategy != "default" else None),
                          ("--tpu", c.tpu), ("--data-dir", c.data_dir)):
        if value is not None:
            parts += [option, str(value)]
    if c.two_step:
        parts.append("--two-step")
    if not c.augment:
        parts.append("--no-augment")
    if c.seed:
        parts += ["--seed", str(c.seed)]
    return " ".join(parts)


# -------------------------------------------------------------------------------- run


def _fit(model, data: _Data, c: TrainConfig, *, csv_path: str, backup_dir: str, log_dir: str,
         extra_callbacks, verbose, strategy, say) -> tuple[dict, int]:
    """`model.fit` with BackupAndRestore, CSVLogger and TensorBoard; returns the History's
    history and the epoch it started from (> 0 when it resumed)."""
    import keras
    import tensorflow as tf

    metadata = os.path.join(backup_dir, "training_metadata.json")
    start = 0
    if os.path.exists(metadata):
        with contextlib.suppress(OSError, ValueError, KeyError), open(metadata) as f:
            start = int(json.load(f)["epoch"])
    _truncate_csv(csv_path, start)
    if start:
        say(f"        resuming after epoch {start} of {c.epochs} (state in {backup_dir})")
    callbacks = [
        keras.callbacks.BackupAndRestore(backup_dir, double_checkpoint=True,
                                         delete_checkpoint=False),
        keras.callbacks.CSVLogger(csv_path, append=True),
        keras.callbacks.TensorBoard(log_dir, write_graph=False),
        *extra_callbacks,
    ]
    multi_worker = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
    from kbnn._keras_compat import multi_worker_fit_fixes

    fixes = multi_worker_fit_fixes() if multi_worker else contextlib.nullcontext()
    from kbnn.training import build_optimizer

    build_optimizer(model)  # one trace of the train step instead of two
    with fixes:
        history = model.fit(data.train, epochs=c.epochs, steps_per_epoch=data.steps_per_epoch,
                            validation_data=data.validation, callbacks=callbacks,
                            verbose=verbose, shuffle=False)
    return history.history, start


def run_training(config: TrainConfig, *, devices=None, convert: bool = True,
                 verbose: int | str = "auto",
                 log: Callable[[str], Any] | None = print) -> dict[str, Any]:
    """Train, save, convert, verify and report, as `kbnn train` does.

    Args:
        config: the run's settings (`TrainConfig`; checked by `check_config` first, before
            anything is written).
        devices: the devices of the "mirrored" strategy (default: every GPU, else the CPU),
            e.g. ``["/cpu:0", "/cpu:1"]`` for two logical CPUs.
        convert: convert, verify and write report.md at the end (False: stop after training:
            model.keras, training.png, the CSV and TensorBoard logs).
        verbose: Keras' progress: 1 (bar), 2 (one line per epoch), 0, or "auto" (the bar on a
            terminal, one plain line per epoch otherwise).
        log: called with one line per stage; None for silence.

    Returns:
        A dict: ``histories`` (list of (step, history) with every epoch, read from the CSV
        logs), ``resumed_from``, ``replicas``, ``chief``, ``paths`` and, after conversion,
        ``keras_accuracy``, ``tflite_accuracy``, ``top1_agreement``, ``verified``, ...

    Raises:
        TrainConfigError: a setting that cannot work (before anything is written).
    """
    c = check_config(config)
    say = log or (lambda _line: None)
    verbose = (1 if _stdout_is_terminal() else 2) if verbose == "auto" else verbose
    chief, worker = _cluster(c.strategy)
    started = time.perf_counter()
    out = c.out_dir
    work = out if chief else os.path.join(out, ".workers", worker)

    # TensorFlow starts here; a multi-worker or TPU strategy must exist before any other op.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    strategy = _make_strategy(c, devices)
    import datetime

    import keras
    import numpy as np

    from kbnn_apps.cli import _import_kbnn_objects

    _import_kbnn_objects()
    replicas = strategy.num_replicas_in_sync
    keras.utils.set_random_seed(c.seed)

    say(f"[1/{_STAGES}] Loading {c.dataset}")
    student = student_shape = None
    if _is_model_path(c.model):  # the file's input shape decides the image size
        with strategy.scope():
            student = _build_model(c, c.model, (), 0, "MODEL")
        student_shape = _model_input_shape(student)
        if len(student_shape) != 3 or None in student_shape[:2] or (
                student_shape[0] != student_shape[1]):
            raise TrainConfigError(f"MODEL {c.model}: expected a square image input (S, S, C), "
                                   f"got {student_shape}")
    image_size = student_shape[0] if student_shape else c.input_size
    channels = student_shape[2] if student_shape else None
    if student_shape and _dataset_kind(c.dataset) != "digits" and channels != 3:
        raise TrainConfigError(f"MODEL {c.model}: {channels} input channels; {c.dataset} "
                               "images have 3")
    data = _load_data(c, image_size, channels, c.strategy == "tpu")
    recipe = _schedule_recipe(c) if c.recipe else None
    notes = _recipe_notes(c, recipe)
    if recipe is not None and recipe.label_smoothing:  # CategoricalCrossentropy: one-hot
        import tensorflow as tf

        def one_hot(x, y):
            return x, tf.one_hot(y, data.num_classes)

        data.train = data.train.map(one_hot)
        data.validation = data.validation.map(one_hot)
    say(f"        {data.train_info.num_examples or '?'} training images "
        f"({data.steps_per_epoch} steps of {c.batch_size}), held-out split "
        f"{data.held_out_split!r}; input {'x'.join(map(str, data.image_shape))}, "
        f"{data.num_classes} classes; {_plural(replicas, 'replica')} ({c.strategy})")

    say(f"[2/{_STAGES}] Building {c.model}" + (f" and the teacher {c.teacher}"
                                               if c.teacher else ""))
    with strategy.scope():
        if student is None:
            student = _build_model(c, c.model, data.image_shape, data.num_classes, "MODEL")
        teacher = (_build_model(c, c.teacher, data.image_shape, data.num_classes, "--teacher")
                   if c.teacher else None)
    _check_model_fits(student, "MODEL", c.model, data.image_shape, data.num_classes)
    if teacher is not None:
        _check_model_fits(teacher, "--teacher", c.teacher, data.image_shape, data.num_classes)
        if not _is_model_path(c.teacher):
            say(f"        note: the teacher {c.teacher} is a zoo architecture with random "
                "weights; pass a trained .keras file to distil from a trained network")

    # Everything is checked: from here on, files are written.
    if chief and c.overwrite:
        for name in _OWN_FILES + _OWN_FOLDERS:
            _remove(os.path.join(out, name))
    os.makedirs(work, exist_ok=True)
    if chief:
        _write_text(os.path.join(out, RUN_FILE), json.dumps(
            {"config": c.to_dict(), "command": _command_line(c)}, indent=2) + "\n")

    steps = [("step 1", 1), ("step 2", 2)] if c.two_step else [("training", 0)]
    histories: list[tuple[str, dict]] = []
    resumed: list[str] = []
    csv_files: list[str] = []
    train_seconds = 0.0
    model = student
    optimizer_name = ""
    for label, step in steps:
        suffix = f"step{step}" if step else ""
        csv_name = f"history-{suffix}.csv" if step else "history.csv"
        csv_path = os.path.join(work, csv_name)
        backup_dir = os.path.join(work, "backup", suffix) if step else os.path.join(
            work, "backup")
        log_dir = os.path.join(work, "logs", suffix) if step else os.path.join(work, "logs")
        step1_file = os.path.join(work, "step1.keras")
        csv_files.append(csv_name)
        if step == 1 and os.path.exists(step1_file):
            say(f"[3/{_STAGES}] Step 1 already done ({step1_file})")
            with strategy.scope():
                from kbnn_apps.cli import load_keras_model

                model = load_keras_model(step1_file)
            histories.append((label, _read_csv(csv_path)))
            resumed.append("step 1 finished before the interruption")
            continue
        with strategy.scope():
            if step == 1:
                from kbnn.training import to_step1

                model = to_step1(student)
            elif step == 2:
                step1_model = model
                model = keras.models.clone_model(student)
                _copy_weights(step1_model, model)
            optimizer = _build_optimizer(c, recipe, model, data.steps_per_epoch, step or 1)
            trained = _compile(c, recipe, model, teacher, optimizer)
        inner = sorted({type(o).__name__ for o in getattr(optimizer, "optimizers", [])})
        optimizer_name = type(optimizer).__name__ + (f" ({', '.join(inner)})" if inner else "")
        extra = []  # the recipes' only callback switches assistant teachers: none here
        what = f"{label} " if step else ""
        say(f"[3/{_STAGES}] Training {what}for {_plural(c.epochs, 'epoch')}"
            f"{' with the teacher' if teacher is not None else ''}")
        t0 = time.perf_counter()
        _, start = _fit(trained, data, c, csv_path=csv_path, backup_dir=backup_dir,
                        log_dir=log_dir, extra_callbacks=extra, verbose=verbose,
                        strategy=strategy, say=say)
        train_seconds += time.perf_counter() - t0
        if start:
            resumed.append(f"{what}from epoch {start + 1} of {c.epochs}")
        histories.append((label, _read_csv(csv_path)))
        if step == 1:  # every worker keeps it: a resumed run skips step 1 on all of them
            _write_atomically(step1_file, model.save)
            _remove(backup_dir)

    paths = {name: os.path.join(out, name) for name in RESULT_FILES}
    results: dict[str, Any] = {
        "config": c, "chief": chief, "replicas": replicas, "histories": histories,
        "resumed_from": "; ".join(resumed), "steps_per_epoch": data.steps_per_epoch,
        "train_seconds": train_seconds, "paths": paths, "csv_files": csv_files, "notes": notes,
        "model": model,
    }
    if not chief:
        _remove(work)
        with contextlib.suppress(OSError):
            os.rmdir(os.path.join(out, ".workers"))
        say(f"Worker {worker} done (the chief writes {out})")
        return results

    _write_atomically(paths["model.keras"], model.save)
    _remove(os.path.join(out, "backup"))
    shown = os.path.basename(c.model) if _is_model_path(c.model) else c.model
    data_name = (f"folder {os.path.basename(os.path.normpath(c.dataset[7:]))}"
                 if c.dataset.startswith("folder:") else c.dataset)
    title = f"kbnn train: {shown} on {data_name}"
    _write_atomically(paths["training.png"], lambda tmp: plot_history(histories, tmp, title))
    if not convert:
        results["total_seconds"] = time.perf_counter() - started
        say(f"Wrote {paths['model.keras']}, {paths['training.png']}")
        return results

    say(f"[4/{_STAGES}] Converting to TFLite with LCE binary ops"
        f"{' (strict)' if c.strict else ''}")
    from kbnn.converters import convert as to_tflite
    from kbnn.converters import run_flatbuffer, verify
    from kbnn.summary import profile
    from kbnn_apps.bench import float_tflite, float_twin, machine_info
    from kbnn_apps.cli import load_keras_model

    saved = load_keras_model(paths["model.keras"])  # outside the strategy, as deployed
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = to_tflite(saved, strict=c.strict, return_report=True)
    flatbuffer, report = result.flatbuffer, result.report
    conversion_warnings = list(dict.fromkeys(
        text.removeprefix("kbnn.converters: ")
        for text in [str(w) for w in getattr(result, "warnings", []) or []]
        + [str(w.message) for w in caught if "kbnn" in str(w.message)]))
    if conversion_warnings:
        say(f"        {_plural(len(conversion_warnings), 'conversion warning')} (in report.md)")

    def write_flatbuffer(tmp):
        with open(tmp, "wb") as f:
            f.write(flatbuffer)

    _write_atomically(paths["model.tflite"], write_flatbuffer)
    say(f"        {len(flatbuffer):,} bytes, {report.n_binary_convs} LceBconv2d")
    try:
        float_bytes = len(float_tflite(float_twin(saved)))
    except Exception as err:  # noqa: BLE001 - the float twin is a comparison only
        say(f"        note: no float twin for the size comparison ({type(err).__name__})")
        float_bytes = None

    say(f"[5/{_STAGES}] Verifying TFLite against Keras on {len(data.held_out_y)} held-out "
        f"images ({data.held_out_split})")
    check = verify(saved, flatbuffer, data.held_out_x)
    keras_probs = np.asarray(saved.predict(data.held_out_x, batch_size=256, verbose=0))
    tflite_probs = run_flatbuffer(flatbuffer, data.held_out_x)
    labels = np.asarray(data.held_out_y)
    keras_accuracy = float(np.mean(np.argmax(keras_probs, -1) == labels))
    tflite_accuracy = float(np.mean(np.argmax(tflite_probs, -1) == labels))
    verified = float(check.top1_agreement) >= c.min_agreement
    say(f"        Keras {_pct(keras_accuracy)}, TFLite {_pct(tflite_accuracy)}; top-1 agreement "
        f"{_pct(check.top1_agreement)}, max |diff| {check.max_abs_diff:.3g}")

    results.update({
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine_info(), "command": _command_line(c), "model_name": saved.name,
        "parameters": int(saved.count_params()), "optimizer": optimizer_name,
        "image_shape": data.image_shape, "train_examples": data.train_info.num_examples,
        "train_steps": data.train_info.steps, "eval_steps": data.eval_info.steps,
        "held_out_split": data.held_out_split, "n_held_out": len(labels),
        "keras_accuracy": keras_accuracy, "tflite_accuracy": tflite_accuracy,
        "top1_agreement": float(check.top1_agreement), "max_abs_diff": check.max_abs_diff,
        "mean_abs_diff": check.mean_abs_diff, "verified": verified,
        "binary_tflite_bytes": len(flatbuffer), "float_tflite_bytes": float_bytes,
        "op_counts": dict(report.op_counts), "n_binary_convs": report.n_binary_convs,
        "conversion_warnings": conversion_warnings,
        "profile_lines": profile(saved).to_lines(),
    })
    results["total_seconds"] = time.perf_counter() - started
    _write_text(paths["report.md"], _report(results))
    say(f"Wrote {', '.join(paths.values())} ({results['total_seconds']:.0f} s in all)")
    return results


# ------------------------------------------------------------------------ command line


def add_arguments(p: argparse.ArgumentParser, positive_int, seed_type, fraction) -> None:
    """The options of ``kbnn train`` (the standard library only; kbnn_apps.cli calls it)."""
    p.add_argument("model", metavar="MODEL",
                   help="a kbnn.zoo architecture (e.g. BiRealNet18; see kbnn.zoo.list_models()) "
                        "or a .keras file")
    p.add_argument("--dataset", required=True, metavar="DATA",
                   help="digits, cifar10, cifar100, imagenet (tensorflow-datasets) or "
                        "folder:PATH (PATH/train/LABEL/IMAGE and PATH/val/LABEL/IMAGE)")
    p.add_argument("--epochs", type=positive_int, required=True, metavar="N",
                   help="training epochs (of each step with --two-step)")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="output folder: model.keras, model.tflite, report.md, training.png, "
                        "history.csv, logs/ (TensorBoard), run.json; backup/ while training")
    p.add_argument("--batch-size", type=positive_int, metavar="B",
                   help="global batch size (default: the recipe's, else 64 for digits and "
                        "folders, 128 for CIFAR, 256 for ImageNet)")
    p.add_argument("--learning-rate", type=float, metavar="LR",
                   help="peak learning rate (default: the recipe's, else 1e-3)")
    p.add_argument("--optimizer", choices=OPTIMIZERS,
                   help="adam (default): Adam with cosine decay; bop: Bop for the binary "
                        "weights and Adam for the rest (not with --recipe)")
    p.add_argument("--bop-threshold", type=float, metavar="T",
                   help="Bop's threshold (default 1e-8)")
    p.add_argument("--bop-gamma", type=float, metavar="G",
                   help="Bop's gamma (default 1e-4)")
    p.add_argument("--teacher", metavar="MODEL_OR_PATH",
                   help="distil from this model (a .keras file, or a kbnn.zoo name) with "
                        "ReActNet's distribution loss")
    p.add_argument("--two-step", action=argparse.BooleanOptionalAction, default=None,
                   help="two-step training: binary activations with real weights first, then "
                        "binary weights too (default: the recipe's, else no)")
    p.add_argument("--recipe", choices=RECIPES,
                   help="a published recipe of kbnn.training: optimizer, weight decay, "
                        "schedule (stretched to --epochs), label smoothing and augmentation")
    p.add_argument("--width", type=float, metavar="W",
                   help="width multiplier of a zoo model (1.0: the published width)")
    p.add_argument("--input-size", type=positive_int, metavar="S",
                   help="input height and width of a zoo model; images are resized (default: "
                        "the data's: 8 digits, 32 CIFAR, 224 ImageNet and folders)")
    p.add_argument("--strategy", choices=STRATEGIES, default="default",
                   help="default (one device), mirrored (local GPUs), multi_worker (hosts "
                        "named by TF_CONFIG) or tpu")
    p.add_argument("--tpu", metavar="NAME", help="the TPU for --strategy tpu")
    p.add_argument("--steps-per-epoch", type=positive_int, metavar="N",
                   help="optimizer steps per epoch (default: one pass over the training data)")
    p.add_argument("--no-augment", dest="augment", action="store_false",
                   help="train without the data augmentation")
    p.add_argument("--data-dir", metavar="PATH",
                   help="tensorflow-datasets data folder (default ~/tensorflow_datasets)")
    p.add_argument("--seed", type=seed_type, default=0, metavar="S",
                   help="seed of the weights, the data order and the augmentation (default 0)")
    p.add_argument("--verify-samples", type=positive_int, default=256, metavar="N",
                   help="held-out images to compare TFLite with Keras on (default 256)")
    p.add_argument("--min-agreement", type=fraction, default=0.99, metavar="F",
                   help="exit with status 1 when top-1 agreement is below F (default 0.99)")
    p.add_argument("--no-strict", dest="strict", action="store_false",
                   help="convert binary layers LCE cannot lower as float ops instead of failing")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--overwrite", "--force", dest="overwrite", action="store_true",
                       help="start again in DIR, replacing an earlier run's files")
    group.add_argument("--resume", action="store_true",
                       help="continue the interrupted run in DIR from its last finished epoch "
                            "(same arguments)")


def config_from_args(args) -> TrainConfig:
    return TrainConfig(
        model=args.model, dataset=args.dataset, epochs=args.epochs, out_dir=args.out,
        batch_size=args.batch_size, learning_rate=args.learning_rate,
        optimizer=args.optimizer, bop_threshold=args.bop_threshold, bop_gamma=args.bop_gamma,
        teacher=args.teacher, two_step=args.two_step, recipe=args.recipe,
        strategy=args.strategy, tpu=args.tpu, width=args.width, input_size=args.input_size,
        steps_per_epoch=args.steps_per_epoch, augment=args.augment, seed=args.seed,
        data_dir=args.data_dir, verify_samples=args.verify_samples,
        min_agreement=args.min_agreement, strict=args.strict, overwrite=args.overwrite,
        resume=args.resume)


def command(args) -> int:
    """``kbnn train``: run and print the outcome; 1 when the flatbuffer disagrees with Keras."""
    from kbnn_apps.cli import CLIError

    config = config_from_args(args)
    try:
        results = run_training(config, verbose="auto")
    except TrainConfigError as err:
        raise CLIError(str(err)) from None
    except KeyboardInterrupt:
        print(f"kbnn: interrupted; continue with the same command and --resume "
              f"(the state of the last finished epoch is in {config.out_dir}/backup)")
        raise
    if not results["chief"]:
        return 0
    if "top1_agreement" not in results:
        return 0
    print(f"Held-out accuracy: Keras {_pct(results['keras_accuracy'])}, TFLite "
          f"{_pct(results['tflite_accuracy'])}; top-1 agreement "
          f"{_pct(results['top1_agreement'])}. Report: {results['paths']['report.md']}")
    if not results["verified"]:
        raise CLIError(f"the flatbuffer agrees with Keras on {_pct(results['top1_agreement'])} "
                       f"of the held-out images, below --min-agreement "
                       f"{config.min_agreement:g} (see {results['paths']['report.md']})")
    return 0
