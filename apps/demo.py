"""The digits demo: train a small binary network, convert it to LCE, check it, report.

`run_demo(epochs, out_dir)` runs the whole product path on real data that needs no download
(scikit-learn's 8x8 digits, see `kbnn.data`):

1. train a BinaryNet-style network (Hubara et al., arXiv 1602.02830: sign activations and sign
   weights with a clipped straight-through estimator, latent weights clipped to [-1, 1]) with
   `model.fit`;
2. evaluate it in Keras;
3. convert it with `kbnn.converters.convert(strict=True)` (every binary layer must become an
   LCE `LceBconv2d`);
4. verify the flatbuffer against Keras on the whole test split (LCE interpreter);
5. inspect the flatbuffer and benchmark it against its float twin converted with stock TFLite;
6. write ``model.keras``, ``model.tflite``, ``report.md`` and ``training.png`` to `out_dir`.

Architecture (8x8x1 input): float 3x3 stem conv (32) -> BN -> binary 3x3 conv (64, SAME with
+1 padding) -> BN -> max-pool -> binary 3x3 conv (128) -> BN -> max-pool -> flatten -> binary
dense (10) -> BN -> softmax. Binary channel counts are multiples of 32 (one bitpacked word).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

# Module level: the standard library only (the `kbnn` command reads the defaults below while it
# builds its parser, before anything heavy is imported).

__all__ = ["DEFAULT_EPOCHS", "RESULT_FILES", "build_demo_model", "check_demo_out_dir",
           "plot_history", "run_demo"]

DEFAULT_EPOCHS = 15
DEFAULT_OUT_DIR = "demo_out"
RESULT_FILES = ("model.keras", "model.tflite", "report.md", "training.png")
_STAGES = 6


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def check_demo_out_dir(out_dir: str, overwrite: bool = False) -> None:
    """Refuse, before anything is computed, an `out_dir` that is a file or (without
    `overwrite`) already holds results of a run (any of `RESULT_FILES`).

    Raises:
        NotADirectoryError: `out_dir` (or a folder above it) is a file.
        FileExistsError: `out_dir` holds results and `overwrite` is False.
    """
    path = os.path.abspath(out_dir)
    while path and not os.path.exists(path):
        parent = os.path.dirname(path)
        path = "" if parent == path else parent
    if path and not os.path.isdir(path):
        raise NotADirectoryError(
            f"Invalid value for argument `out_dir` of run_demo: {path} is a file, not a "
            f"folder. Received out_dir={out_dir!r}.")
    held = [name for name in RESULT_FILES if os.path.lexists(os.path.join(out_dir, name))]
    if held and not overwrite:
        raise FileExistsError(
            f"Invalid value for argument `out_dir` of run_demo: {out_dir} already holds "
            f"{', '.join(held)} from an earlier run; pass overwrite=True to replace them, or "
            "choose another folder.")


def _write_atomically(path: str, write) -> None:
    """``write(tmp)`` to a temporary file beside `path` (same extension), then `os.replace`:
    an interrupted run leaves no half-written result."""
    from kbnn_apps.cli import write_atomically

    write_atomically(path, write)


def build_demo_model(input_shape=(8, 8, 1), num_classes: int = 10, *, stem_filters: int = 32,
                     binary_filters=(64, 128)):
    """The demo's binary network (see the module docstring); returns an uncompiled model.

    Args:
        input_shape: shape of one image.
        num_classes: classifier outputs.
        stem_filters: channels of the float stem conv.
        binary_filters: channels of the binary 3x3 convs, each followed by BN and a 2x2
            max-pool (multiples of 32 keep LCE's bitpacking tight).
    """
    import keras

    from kbnn.constraints import WeightClip
    from kbnn.layers import QuantConv2D, QuantDense

    def bn(name):
        return keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name=name)

    binary = {"input_quantizer": "ste_sign", "kernel_quantizer": "ste_sign", "use_bias": False}
    inputs = keras.Input(input_shape, name="image")
    x = keras.layers.Conv2D(stem_filters, 3, padding="same", use_bias=False, name="stem")(inputs)
    x = bn("stem_bn")(x)
    for i, filters in enumerate(binary_filters):
        x = QuantConv2D(filters, 3, padding="same", pad_values=1.0,
                        kernel_constraint=WeightClip(1.0), name=f"bconv{i + 1}", **binary)(x)
        x = bn(f"bconv{i + 1}_bn")(x)
        x = keras.layers.MaxPool2D(2, name=f"pool{i + 1}")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = QuantDense(num_classes, kernel_constraint=WeightClip(1.0), name="bdense", **binary)(x)
    x = bn("bdense_bn")(x)
    outputs = keras.layers.Activation("softmax", name="softmax")(x)
    return keras.Model(inputs, outputs, name="kbnn_digits")


def _write_file(path: str, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


def _resolve_verbose(verbose):
    """Keras' verbose level for `model.fit`: "auto" is the progress bar (1) on a terminal and
    one plain line per epoch (2) otherwise, so redirected logs get no ANSI escape codes."""
    if verbose == "auto":
        return 1 if _stdout_is_terminal() else 2
    return verbose


def _stdout_is_terminal() -> bool:
    import sys

    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):  # replaced or closed stdout
        return False


def _check_demo_arguments(epochs, seed, batch_size, learning_rate, bench_runs, threads,
                          verbose) -> None:
    """Keras-style errors for the arguments of `run_demo`, before anything runs."""
    import math
    import numbers

    def fail(name, expected, value):
        raise ValueError(f"Invalid value for argument `{name}` of run_demo. Expected "
                         f"{expected}. Received {name}={value!r}.")

    def integer(value):
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)

    for name, value in (("epochs", epochs), ("batch_size", batch_size),
                        ("bench_runs", bench_runs)):
        if not integer(value) or value < 1:
            fail(name, "an integer >= 1", value)
    if not integer(seed) or not 0 <= seed <= 2 ** 32 - 1:
        fail("seed", "an integer in [0, 2**32 - 1]", seed)
    if not (isinstance(learning_rate, numbers.Real) and not isinstance(learning_rate, bool)
            and math.isfinite(learning_rate) and learning_rate > 0):
        fail("learning_rate", "a finite number > 0", learning_rate)
    if (isinstance(threads, (str, bytes)) or not hasattr(threads, "__iter__")
            or not list(threads) or not all(integer(t) and t >= 1 for t in threads)):
        fail("threads", "a non-empty sequence of integers >= 1", threads)
    if verbose not in (0, 1, 2, "auto") or isinstance(verbose, bool):
        fail("verbose", "0, 1, 2 or 'auto'", verbose)


def _require_demo_dependencies() -> None:
    import importlib.util

    missing = [pip for module, pip in (("sklearn", "scikit-learn"), ("matplotlib", "matplotlib"))
               if importlib.util.find_spec(module) is None]
    if missing:
        raise ImportError(f"the digits demo needs {' and '.join(missing)}: "
                          f"pip install {' '.join(missing)} (or pip install 'kbnn[demo]')")


def plot_history(history: dict[str, list[float]], path: str) -> None:
    """Loss and accuracy curves (train and validation) of a Keras `History.history` to PNG."""
    import matplotlib
    import numpy as np

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = np.arange(1, len(history["loss"]) + 1)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, title in ((axes[0], "loss", "loss"), (axes[1], "accuracy", "accuracy")):
        ax.plot(epochs, history[key], label="train")
        if f"val_{key}" in history:
            ax.plot(epochs, history[f"val_{key}"], label="validation")
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("kbnn digits demo: binary network training")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _pct(x: float) -> str:
    return f"{100 * x:.2f} %"


def _report_markdown(r: dict[str, Any], op_counts: dict[str, int], bench_md: str,
                     profile_lines: list[str]) -> str:
    ops = "\n".join(f"| {op} | {n} |" for op, n in
                    sorted(op_counts.items(), key=lambda kv: (-kv[1], kv[0])))
    profile = "\n".join(profile_lines)
    epochs, runs = _plural(r["epochs"], "epoch"), _plural(r["bench_runs"], "run")
    from kbnn_apps.bench import X86_NOTE

    return f"""# kbnn digits demo

- run: {r['date']}, {epochs}, seed {r['seed']}; training {r['train_seconds']:.1f} s,
  whole run {r['total_seconds']:.1f} s
- machine: {r['machine']}
- data: scikit-learn digits, 8x8 images, {r['n_train']} train / {r['n_val']} validation /
  {r['n_test']} test images (stratified split, seed {r['seed']})
- model: see the table under Sizes; curves in `training.png`

## Accuracy on the test split

| | Keras | TFLite (LCE interpreter) |
|---|---|---|
| test accuracy | {_pct(r['keras_accuracy'])} | {_pct(r['tflite_accuracy'])} |

Top-1 agreement TFLite vs Keras: **{_pct(r['top1_agreement'])}** on {r['n_test']} test images;
max |TFLite - Keras| = {r['max_abs_diff']:.3g}, mean = {r['mean_abs_diff']:.3g}.

## Sizes

| model | flatbuffer size (bytes) |
|---|---|
| float TFLite (same architecture, quantizers removed) | {r['float_tflite_bytes']:,} |
| binary (LCE) | {r['binary_tflite_bytes']:,} |
| ratio float / binary | {r['size_ratio']:.2f}x |

Bitpacked binary weights: {r['bitpacked_weight_bytes']:,} bytes; float32 constants:
{r['float_weight_bytes']:,} bytes.

```
{profile}
```

## Operators ({r['n_binary_convs']} LceBconv2d)

| operator | count |
|---|---|
{ops}

## Latency (batch 1, {runs} after warm-up)

{bench_md}

{X86_NOTE}
"""


def run_demo(
    epochs: int = DEFAULT_EPOCHS,
    out_dir: str = DEFAULT_OUT_DIR,
    *,
    seed: int = 0,
    batch_size: int = 64,
    learning_rate: float = 0.01,
    bench_runs: int = 50,
    threads=(1,),
    verbose: int | str = 1,
    log: Callable[[str], Any] | None = print,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Train, evaluate, convert, verify, inspect and benchmark the digits demo.

    Args:
        epochs: training epochs (the default reaches >= 95 % test accuracy).
        out_dir: folder for model.keras, model.tflite, report.md and training.png.
        seed: seed of the data split, the weights and the shuffling.
        batch_size, learning_rate: Adam with a cosine-decayed learning rate.
        bench_runs: timed inferences per engine in the latency benchmark.
        threads: interpreter thread counts to benchmark.
        verbose: Keras progress bar (1), one line per epoch (2), silent (0), or "auto": the
            progress bar when stdout is a terminal, else one plain line per epoch (no ANSI
            escape codes in redirected logs).
        log: called with one line per stage; None for silence.
        overwrite: replace the results of an earlier run in `out_dir` (refused otherwise,
            before anything is computed). Each file is written to a temporary file and renamed
            into place.

    Returns:
        A dict with the figures of report.md: ``keras_accuracy``, ``tflite_accuracy``,
        ``top1_agreement``, ``max_abs_diff``, ``mean_abs_diff``, ``float_tflite_bytes``,
        ``binary_tflite_bytes``, ``size_ratio``, ``op_counts``, ``n_binary_convs``,
        ``latency`` (list of dicts: model, engine, threads, min_ms, median_ms),
        ``history``, ``paths`` (the four files), timings and data sizes.
    """
    _check_demo_arguments(epochs, seed, batch_size, learning_rate, bench_runs, threads, verbose)
    check_demo_out_dir(out_dir, overwrite=overwrite)
    verbose = _resolve_verbose(verbose)
    _require_demo_dependencies()
    import datetime

    import keras
    import numpy as np

    from kbnn.converters import convert, run_flatbuffer, verify
    from kbnn.data import load_digits_split
    from kbnn.summary import profile
    from kbnn.training import build_optimizer
    from kbnn_apps.bench import bench, bench_table, float_tflite, float_twin, machine_info

    say = log or (lambda _line: None)
    start = time.perf_counter()
    os.makedirs(out_dir, exist_ok=True)
    paths = {name: os.path.join(out_dir, name) for name in RESULT_FILES}

    say(f"[1/{_STAGES}] Loading the scikit-learn digits (8x8 images)")
    data = load_digits_split(test_size=0.2, val_size=0.1, seed=seed)
    say(f"        {len(data.x_train)} train / {len(data.x_val)} validation / "
        f"{len(data.x_test)} test images")

    say(f"[2/{_STAGES}] Training the binary network for {_plural(epochs, 'epoch')}")
    keras.utils.set_random_seed(seed)
    model = build_demo_model(data.x_train.shape[1:], data.num_classes)
    steps = int(np.ceil(len(data.x_train) / batch_size)) * epochs
    model.compile(
        optimizer=keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(learning_rate,
                                                                               steps)),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    build_optimizer(model)  # one trace of the train step instead of two
    t0 = time.perf_counter()
    history = model.fit(data.x_train, data.y_train, batch_size=batch_size, epochs=epochs,
                        validation_data=(data.x_val, data.y_val), verbose=verbose).history
    train_seconds = time.perf_counter() - t0
    _write_atomically(paths["model.keras"], model.save)
    _write_atomically(paths["training.png"], lambda tmp: plot_history(history, tmp))

    say(f"[3/{_STAGES}] Evaluating in Keras")
    keras_probs = np.asarray(model.predict(data.x_test, batch_size=256, verbose=0))
    keras_accuracy = float(np.mean(np.argmax(keras_probs, -1) == data.y_test))
    say(f"        Keras test accuracy {_pct(keras_accuracy)}")

    say(f"[4/{_STAGES}] Converting to TFLite with LCE binary ops (strict)")
    result = convert(model, strict=True, return_report=True)
    flatbuffer, report = result.flatbuffer, result.report
    _write_atomically(paths["model.tflite"], lambda tmp: _write_file(tmp, flatbuffer))
    say(f"        {len(flatbuffer):,} bytes, {report.n_binary_convs} LceBconv2d")

    say(f"[5/{_STAGES}] Verifying TFLite against Keras on the {len(data.x_test)} test images")
    check = verify(model, flatbuffer, data.x_test)
    tflite_probs = run_flatbuffer(flatbuffer, data.x_test)
    tflite_accuracy = float(np.mean(np.argmax(tflite_probs, -1) == data.y_test))
    say(f"        TFLite test accuracy {_pct(tflite_accuracy)}, top-1 agreement "
        f"{_pct(check.top1_agreement)}, max |diff| {check.max_abs_diff:.3g}")

    say(f"[6/{_STAGES}] Inspecting and benchmarking against the float twin (stock TFLite)")
    float_flatbuffer = float_tflite(float_twin(model))
    rows = bench(flatbuffer, threads=tuple(threads), runs=bench_runs,
                 float_flatbuffer=float_flatbuffer)
    say(bench_table(rows))

    results: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine_info(),
        "epochs": epochs,
        "seed": seed,
        "n_train": len(data.x_train),
        "n_val": len(data.x_val),
        "n_test": len(data.x_test),
        "train_seconds": train_seconds,
        "keras_accuracy": keras_accuracy,
        "tflite_accuracy": tflite_accuracy,
        "top1_agreement": float(check.top1_agreement),
        "max_abs_diff": check.max_abs_diff,
        "mean_abs_diff": check.mean_abs_diff,
        "float_tflite_bytes": len(float_flatbuffer),
        "binary_tflite_bytes": len(flatbuffer),
        "size_ratio": len(float_flatbuffer) / len(flatbuffer),
        "bitpacked_weight_bytes": report.bitpacked_weight_bytes,
        "float_weight_bytes": report.float_weight_bytes,
        "op_counts": dict(report.op_counts),
        "n_binary_convs": report.n_binary_convs,
        "bench_runs": bench_runs,
        "latency": [{"model": r.model, "engine": r.engine, "threads": r.latency.threads,
                     "min_ms": r.latency.min_ms, "median_ms": r.latency.median_ms}
                    for r in rows],
        "history": {k: [float(v) for v in vals] for k, vals in history.items()},
        "paths": paths,
    }
    results["total_seconds"] = time.perf_counter() - start
    markdown = _report_markdown(results, report.op_counts, bench_table(rows, markdown=True),
                                profile(model).to_lines())
    _write_atomically(paths["report.md"], lambda tmp: _write_file(tmp, markdown.encode()))
    say(f"Wrote {', '.join(paths.values())} "
        f"({results['total_seconds']:.0f} s in all)")
    return results
