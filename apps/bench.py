"""Latency and size of an LCE flatbuffer next to its float twin converted with stock TFLite.

* `float_twin(model)`: the same architecture rebuilt from its configs with every quantizer
  argument set to None (`pad_values` back to 0) and the weights copied.
* `float_tflite(model)`: a Keras model converted with `tf.lite.TFLiteConverter` (no LCE).
* `measure_latency(flatbuffer, engine=...)`: min/median wall time of one inference (batch 1)
  after warm-up, with LCE's interpreter (``engine="lce"``) or the stock TFLite interpreter
  (``engine="tflite"``, `ai_edge_litert` when installed, else `tf.lite.Interpreter`).
* `bench(flatbuffer, model)`: both, as `BenchRow`s; `bench_table(rows)` prints them.

Note: LCE ships optimised binary kernels for aarch64/arm32 only; on x86 its binary convolutions
run generic C++ kernels, so x86 latencies understate what a binary model gains on ARM.
"""

from __future__ import annotations

import os
import platform
import statistics
import tempfile
import time
import warnings
from dataclasses import dataclass

import numpy as np

__all__ = [
    "QUANTIZER_ARGS",
    "BenchRow",
    "Latency",
    "bench",
    "bench_table",
    "check_model_matches",
    "float_tflite",
    "float_twin",
    "machine_info",
    "measure_latency",
]

QUANTIZER_ARGS = ("input_quantizer", "kernel_quantizer", "depthwise_quantizer",
                  "pointwise_quantizer")
X86_NOTE = ("LCE has optimised binary kernels only for aarch64/arm32; on x86 it runs generic "
            "kernels, so binary latency here is not representative of ARM devices.")


def machine_info() -> str:
    """CPU model, logical cores, OS and architecture, plus TF and LCE versions, on one line."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        if names:
            cpu = names[0]
    except OSError:
        pass
    from importlib.metadata import PackageNotFoundError, version

    versions = []
    for package in ("tensorflow", "larq-compute-engine"):
        try:
            versions.append(f"{package} {version(package)}")
        except PackageNotFoundError:
            versions.append(f"{package} not installed")
    return (f"{cpu}, {os.cpu_count()} logical cores, {platform.system()} {platform.machine()}, "
            f"Python {platform.python_version()}, " + ", ".join(versions))


def _is_quantizer_argument(key: str, value) -> bool:
    """A constructor argument that holds a quantizer: one of `QUANTIZER_ARGS`, or any other
    ``*_quantizer`` argument set to an alias or a serialised quantizer."""
    return key in QUANTIZER_ARGS or (key.endswith("_quantizer") and isinstance(value, (str, dict)))


def _strip_quantizers(config):
    """A copy of a (nested) layer config with every quantizer argument set to None, and
    `pad_values` set to 0.0 (zero padding) where a quantizer was removed."""
    if isinstance(config, dict):
        out = {k: _strip_quantizers(v) for k, v in config.items()}
        stripped = False
        for key, value in config.items():
            if value is not None and _is_quantizer_argument(key, value):
                out[key] = None
                stripped = True
        if stripped and "pad_values" in out:
            out["pad_values"] = 0.0
        return out
    if isinstance(config, list):
        return [_strip_quantizers(v) for v in config]
    return config


def _twin_error(model, message: str) -> ValueError:
    return ValueError(f"cannot build the float twin of model {model.name!r}: {message}")


def _quantizer_variable_ids(model) -> set[int]:
    """Ids of the variables that belong to quantizers (e.g. learned thresholds), which the float
    twin drops. The latent weights that quantizers read (`quantized_weights()` of kbnn's
    quantized layers) are layer weights and are kept, even if a quantizer also tracks them."""
    from kbnn._keras_compat import flatten_layers
    from kbnn.layers import QuantizedLayerMixin
    from kbnn.quantizers import Quantizer

    layers = flatten_layers(model, include_self=False, recursive=True)
    quantizer_ids = {id(v) for layer in layers if isinstance(layer, Quantizer)
                     for v in layer.weights}
    latent_ids = {id(w.variable) for layer in layers
                  if isinstance(layer, QuantizedLayerMixin) and layer.built
                  for w in layer.quantized_weights().values()}
    return quantizer_ids - latent_ids


def _check_no_quantizer_left(model, twin) -> None:
    """Raise a ValueError naming the first layer of `twin` that still holds a quantizer."""
    from kbnn._keras_compat import flatten_layers
    from kbnn.quantizers import Quantizer

    for top in twin.layers:
        for layer in flatten_layers(top, include_self=True, recursive=True):
            if isinstance(layer, Quantizer):
                where = "" if layer is top else (
                    f" inside layer {top.name!r} ({type(top).__name__})")
                raise _twin_error(model, (
                    f"quantizer {layer.name!r} ({type(layer).__name__}){where} remains after "
                    "every quantizer argument of the configs was set to None. A layer that "
                    "creates quantizers itself must take them as constructor arguments "
                    f"(e.g. {', '.join(QUANTIZER_ARGS[:2])}) in its config to have a float "
                    "twin."))


def _shapes(variables) -> list[tuple]:
    return [tuple(v.shape) for v in variables]


def float_twin(model):
    """The same architecture with every quantizer removed and the weights copied.

    The twin is rebuilt purely from configs: each layer is re-created with `from_config` from
    its config with every quantizer argument set to None, recursively in nested configs
    (`input_quantizer`, `kernel_quantizer`, `depthwise_quantizer`, `pointwise_quantizer` and
    any other ``*_quantizer`` argument; `pad_values` back to 0, plain zero padding). A
    quantizer used as a layer of its own becomes a `keras.layers.Identity` of the same name.
    The twin then gets the original layers' weights (the variables of removed quantizers, e.g.
    learned thresholds, are dropped). Works for functional and sequential models.

    Raises:
        ValueError: the model cannot be cloned layer by layer (e.g. a subclassed model), a
            quantizer remains in the twin (a layer creates quantizers that are not arguments
            of its config; the error names it), or a layer's weights do not match its float
            version.
    """
    import keras

    from kbnn.quantizers import Quantizer

    def clone(layer):
        if isinstance(layer, Quantizer):
            return keras.layers.Identity(name=layer.name)
        return layer.__class__.from_config(_strip_quantizers(layer.get_config()))

    try:
        twin = keras.models.clone_model(model, clone_function=clone)
    except Exception as err:
        raise _twin_error(model, f"{type(err).__name__}: "
                                 f"{str(err).splitlines()[0] if str(err) else ''}") from err
    _check_no_quantizer_left(model, twin)
    skip = _quantizer_variable_ids(model)
    for src_layer, dst_layer in zip(model.layers, twin.layers):
        src, dst = src_layer.weights, dst_layer.weights
        if _shapes(src) != _shapes(dst):  # quantizers (and their variables) were removed
            src = [v for v in src if id(v) not in skip]
        if _shapes(src) != _shapes(dst):
            raise _twin_error(model, (
                f"layer {src_layer.name!r} has weights {_shapes(src)} but its float version "
                f"has {_shapes(dst)}."))
        for s, d in zip(src, dst):
            d.assign(s)
    return twin


def _sample_shape(shape) -> tuple:
    return tuple(None if d is None else int(d) for d in tuple(shape)[1:])


def _fits(keras_shape: tuple, fb_shape: tuple) -> bool:
    return len(keras_shape) == len(fb_shape) and all(
        k is None or k == f for k, f in zip(keras_shape, fb_shape))


def check_model_matches(model, flatbuffer: bytes) -> None:
    """Check that `flatbuffer` can be the conversion of `model`: the same number of inputs and
    outputs with the same per-sample shapes, and as many LceBconv2d ops as the model's binary
    layers lower to. (A model with the same architecture but other weights passes: its float
    twin times the same computation.)

    Raises:
        ValueError: what differs, e.g. "inputs (8, 8, 1) vs the flatbuffer's (6, 6, 3)".
    """
    from kbnn.converters import inspect
    from kbnn.converters.flatbuffer import read_flatbuffer

    graph = read_flatbuffer(flatbuffer)
    fb_inputs = [tuple(graph.tensors[i].shape[1:]) for i in graph.inputs]
    fb_outputs = [tuple(graph.tensors[i].shape[1:]) for i in graph.outputs]
    try:
        inputs, outputs = list(model.inputs), list(model.outputs)
    except (AttributeError, ValueError):
        inputs = outputs = None
    if inputs and outputs is not None:
        for what, tensors, fb_shapes in (("inputs", inputs, fb_inputs),
                                         ("outputs", outputs, fb_outputs)):
            shapes = [_sample_shape(t.shape) for t in tensors]
            if len(shapes) != len(fb_shapes) or not all(
                    _fits(k, f) for k, f in zip(shapes, fb_shapes)):
                raise ValueError(
                    f"model {model.name!r} has {what} {', '.join(map(str, shapes))} but the "
                    f"flatbuffer has {', '.join(map(str, fb_shapes))} (one sample, no batch "
                    "axis)")
    try:
        from kbnn.converters.layers import plan_model

        plans = plan_model(model)
    except Exception:  # noqa: BLE001 -- a model that cannot be planned: shapes are the check
        return
    expected = sum(p.expected_bconvs for p in plans if p.lowerable)
    found = inspect(flatbuffer).n_binary_convs
    if found != expected:
        raise ValueError(
            f"model {model.name!r} has binary layers that convert to {expected} LceBconv2d "
            f"op(s) but the flatbuffer has {found}")


def float_tflite(model) -> bytes:
    """Convert a Keras model with the stock TFLite converter (`model.export` + from_saved_model)."""
    import tensorflow as tf

    with tempfile.TemporaryDirectory(prefix="kbnn_float_") as tmp:
        directory = os.path.join(tmp, "saved_model")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.export(directory, format="tf_saved_model", verbose=False)
        return tf.lite.TFLiteConverter.from_saved_model(directory).convert()


@dataclass(frozen=True)
class Latency:
    """Wall time of one batch-1 inference, in milliseconds, over `runs` timed calls."""

    min_ms: float
    median_ms: float
    runs: int
    threads: int


def _random_input(shape, dtype, rng) -> np.ndarray:
    shape = tuple(int(d) if d and d > 0 else 1 for d in shape)
    if np.dtype(dtype) == np.int8:
        return rng.integers(-128, 128, size=shape, dtype=np.int8)
    return rng.uniform(-1.0, 1.0, size=shape).astype(np.dtype(dtype))


def _lce_runner(flatbuffer: bytes, threads: int, rng):
    from larq_compute_engine.tflite.python.interpreter import Interpreter

    from kbnn.converters import inspect

    grouped = any(b.get("channels_in", 0) > 32 * b["filter_shape"][-1]
                  for b in inspect(flatbuffer).bconvs)
    interp = Interpreter(flatbuffer, num_threads=threads, use_indirect_bgemm=grouped)
    x = _random_input(interp.input_shapes[0], interp.input_types[0], rng)
    return lambda: interp.predict(x)


def _tflite_interpreter_class():
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter
    return Interpreter


def _tflite_runner(flatbuffer: bytes, threads: int, rng):
    Interpreter = _tflite_interpreter_class()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        interp = Interpreter(model_content=flatbuffer, num_threads=threads)
    interp.allocate_tensors()
    inp = interp.get_input_details()[0]
    out = interp.get_output_details()[0]
    x = _random_input(inp["shape"], inp["dtype"], rng)

    def run():
        interp.set_tensor(inp["index"], x)
        interp.invoke()
        return interp.get_tensor(out["index"])

    return run


_ENGINES = {"lce": _lce_runner, "tflite": _tflite_runner}


def measure_latency(flatbuffer: bytes, *, engine: str = "lce", threads: int = 1,
                    runs: int = 50, warmup: int = 5, seed: int = 0) -> Latency:
    """Time `runs` single-sample inferences (set input, invoke, read output) after `warmup`.

    Args:
        flatbuffer: the TFLite model.
        engine: "lce" (LCE interpreter, needed for Lce* ops) or "tflite" (stock interpreter).
        threads: interpreter threads.
        runs, warmup: timed and untimed calls.
    """
    if engine not in _ENGINES:
        raise ValueError(f"Invalid value for argument `engine` of measure_latency. Expected one "
                         f"of {sorted(_ENGINES)}. Received engine={engine!r}.")
    if runs < 1 or warmup < 0 or threads < 1:
        raise ValueError("Invalid value for arguments of measure_latency. Expected runs >= 1, "
                         f"warmup >= 0, threads >= 1. Received runs={runs}, warmup={warmup}, "
                         f"threads={threads}.")
    run = _ENGINES[engine](flatbuffer, threads, np.random.default_rng(seed))
    for _ in range(warmup):
        run()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1e3)
    return Latency(min(times), statistics.median(times), runs, threads)


@dataclass(frozen=True)
class BenchRow:
    """One line of `bench_table`: a flatbuffer, its size and latency.

    `size_ratio` and `speedup` compare with the float row of the same table (float / this).
    """

    model: str
    engine: str
    size_bytes: int
    latency: Latency
    size_ratio: float | None = None
    speedup: float | None = None


def bench(flatbuffer: bytes, model=None, *, threads=(1,), runs: int = 50, warmup: int = 5,
          name: str = "binary (LCE)", float_flatbuffer: bytes | None = None) -> list[BenchRow]:
    """Latency of `flatbuffer` (LCE interpreter) and of its float twin (stock TFLite).

    The float twin is `float_tflite(float_twin(model))` unless `float_flatbuffer` is given;
    with neither, only the LCE rows are returned. One row per engine and thread count.
    """
    if float_flatbuffer is None and model is not None:
        float_flatbuffer = float_tflite(float_twin(model))
    rows = []
    for t in threads:
        lce = measure_latency(flatbuffer, engine="lce", threads=t, runs=runs, warmup=warmup)
        if float_flatbuffer is None:
            rows.append(BenchRow(name, "lce", len(flatbuffer), lce))
            continue
        flt = measure_latency(float_flatbuffer, engine="tflite", threads=t, runs=runs,
                              warmup=warmup)
        rows.append(BenchRow("float twin (TFLite)", "tflite", len(float_flatbuffer), flt,
                             1.0, 1.0))
        rows.append(BenchRow(name, "lce", len(flatbuffer), lce,
                             len(float_flatbuffer) / len(flatbuffer),
                             flt.median_ms / lce.median_ms))
    return rows


def _ratio(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}x"


def bench_table(rows: list[BenchRow], markdown: bool = False) -> str:
    """Columns: model, engine, threads, size, size ratio, min ms, median ms, speed-up, where the
    ratios are float / this row (so > 1 means smaller or faster than the float twin)."""
    header = ["model", "engine", "threads", "size (bytes)", "float/this size", "min ms",
              "median ms", "float/this time"]
    body = [[r.model, r.engine, str(r.latency.threads), f"{r.size_bytes:,}", _ratio(r.size_ratio),
             f"{r.latency.min_ms:.3f}", f"{r.latency.median_ms:.3f}", _ratio(r.speedup)]
            for r in rows]
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in body])
    widths = [max(len(x) for x in col) for col in zip(header, *body)]

    def fmt(row):
        return "  ".join(c.ljust(w) if i < 2 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(row, widths)))

    return "\n".join([fmt(header), fmt(["-" * w for w in widths])] + [fmt(r) for r in body])
