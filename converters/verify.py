"""`verify(model, flatbuffer, inputs) -> VerifyReport`: LCE interpreter vs Keras, same inputs."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from .inspection import flatbuffer_bytes, inspect

__all__ = ["VerifyReport", "run_flatbuffer", "verify"]


@dataclass
class VerifyReport:
    """Agreement of the flatbuffer (LCE interpreter) with the Keras model.

    The differences are taken over the output values that are finite in both; non-finite
    values (NaN, +-inf) are counted apart and never count as agreeing.

    Attributes:
        n_samples: inputs compared.
        max_abs_diff / mean_abs_diff: over the output values finite in both (NaN when none is).
        max_rel_diff: max |d| / max(|keras|) (relative to the output's magnitude).
        within_tolerance: fraction of all output values that are finite in both and have
            |d| <= atol + rtol * |keras|.
        top1_agreement: fraction of samples whose argmax over the last axis agrees, a sample
            with a non-finite output counting as a disagreement (None for outputs with a
            single value per sample).
        atol, rtol: the tolerances used.
        nonfinite_input_samples: samples whose input holds a NaN or an infinity.
        nonfinite_keras_values / nonfinite_tflite_values: output values that are NaN or
            infinite, in Keras and in the flatbuffer.
        n_output_values: output values compared (samples x values per sample).
    """

    n_samples: int
    max_abs_diff: float
    mean_abs_diff: float
    max_rel_diff: float
    within_tolerance: float
    top1_agreement: float | None
    atol: float
    rtol: float
    nonfinite_input_samples: int = 0
    nonfinite_keras_values: int = 0
    nonfinite_tflite_values: int = 0
    n_output_values: int = 0

    @property
    def ok(self) -> bool:
        """All outputs finite and within tolerance."""
        return (self.within_tolerance == 1.0 and self.nonfinite_keras_values == 0
                and self.nonfinite_tflite_values == 0)

    def table(self) -> str:
        top1 = "n/a" if self.top1_agreement is None else f"{100 * self.top1_agreement:.2f} %"
        rows = [
            ("samples", f"{self.n_samples}"),
            ("inputs with NaN/inf", f"{self.nonfinite_input_samples} of {self.n_samples}"),
            ("NaN/inf outputs (keras/tflite)",
             (f"{self.nonfinite_keras_values} / {self.nonfinite_tflite_values} of "
              f"{self.n_output_values} values")),
            ("max |tflite - keras|", f"{self.max_abs_diff:.3g}"),
            ("mean |tflite - keras|", f"{self.mean_abs_diff:.3g}"),
            ("max relative diff", f"{self.max_rel_diff:.3g}"),
            (f"within atol={self.atol:g} rtol={self.rtol:g}",
             f"{100 * self.within_tolerance:.2f} %"),
            ("top-1 agreement", top1),
        ]
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)

    def __str__(self) -> str:
        return self.table()


def _quantize(x: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    return np.clip(np.round(x / scale) + zero_point, -128, 127).astype(np.int8)


def _interpreter(flatbuffer: bytes, num_threads: int, owner: str = "verify"):
    from larq_compute_engine.tflite.python.interpreter import Interpreter

    try:
        report = inspect(flatbuffer)
    except ValueError as err:
        raise ValueError(f"Invalid value for argument `flatbuffer` of {owner}: {err}") from err
    grouped = any(b.get("channels_in", 0) > 32 * b["filter_shape"][-1] for b in report.bconvs)
    return Interpreter(flatbuffer, num_threads=num_threads, use_indirect_bgemm=grouped)


def _error(argument: str, owner: str, expected: str, received: str) -> ValueError:
    return ValueError(f"Invalid value for argument `{argument}` of {owner}. Expected "
                      f"{expected}. Received {received}.")


def _as_batch(inputs, owner: str) -> np.ndarray:
    """`inputs` as a float32 numpy batch: integers and bools cast (as Keras does), strings and
    structures of several inputs refused."""
    if isinstance(inputs, dict):
        raise TypeError(
            f"Invalid value for argument `inputs` of {owner}. Expected one batch (an array "
            "whose first axis is the sample axis): verify compares single-input models. "
            f"Received a dict with keys {sorted(map(str, inputs))}.")
    try:
        x = np.asarray(inputs)
    except ValueError:  # ragged lists, e.g. one array per input of a multi-input model
        raise _error("inputs", owner, "one batch: samples of one shape stacked on a first axis "
                                      "(verify compares single-input models)",
                     f"a {type(inputs).__name__} of arrays of different shapes") from None
    if x.dtype.kind not in "biuf":
        raise TypeError(
            f"Invalid value for argument `inputs` of {owner}. Expected numbers (a float, "
            f"integer or bool array). Received an array of dtype {x.dtype}.")
    return x.astype(np.float32)


def _check_inputs(x: np.ndarray, shape: tuple, owner: str) -> None:
    """`x` must be a non-empty batch of samples of the flatbuffer input's shape."""
    sample = tuple(int(d) for d in shape[1:])
    if x.ndim == 0 or len(x) == 0:
        raise _error("inputs", owner, f"a batch of at least one sample of shape {sample}",
                     f"an empty batch of shape {x.shape}")
    if x.ndim != len(shape):
        hint = (" (a single sample? add the batch axis: x[None])"
                if x.shape == sample else "")
        raise _error("inputs", owner,
                     f"a batch of rank {len(shape)}: samples of shape {sample} stacked on a "
                     f"first axis{hint}", f"inputs of shape {x.shape} (rank {x.ndim})")
    if tuple(x.shape[1:]) != sample:
        raise _error("inputs", owner, f"samples of shape {sample}, the flatbuffer's input "
                                      f"shape {tuple(int(d) for d in shape)} without its batch "
                                      "axis", f"inputs of shape {x.shape}")


def run_flatbuffer(flatbuffer, inputs, *, num_threads: int = 1) -> np.ndarray:
    """Run a single-input, single-output flatbuffer with LCE's interpreter on a batch (float
    in/out: int8 inputs/outputs are quantized/dequantized with the model's scales).

    Args:
        flatbuffer: the flatbuffer bytes (or the path of a .tflite file).
        inputs: a batch (first axis: samples) of the flatbuffer input's shape; integers and
            bools are cast to float32.

    Raises:
        TypeError: inputs that are not numbers.
        ValueError: an empty batch, or inputs whose shape is not the flatbuffer's; a
            flatbuffer with several inputs or outputs.
    """
    flatbuffer = flatbuffer_bytes(flatbuffer, "run_flatbuffer")
    interp = _interpreter(flatbuffer, num_threads, "run_flatbuffer")
    _check_single_io(interp, "run_flatbuffer")
    x = _as_batch(inputs, "run_flatbuffer")
    _check_inputs(x, tuple(interp.input_shapes[0]), "run_flatbuffer")
    return _run(interp, x)


def _check_single_io(interp, owner: str) -> None:
    n_in, n_out = len(interp.input_shapes), len(interp.output_shapes)
    if n_in != 1 or n_out != 1:
        raise _error("flatbuffer", owner, "a flatbuffer with one input and one output (verify "
                                          "compares single-input, single-output models)",
                     f"a flatbuffer with {n_in} inputs and {n_out} outputs")


def _run(interp, x: np.ndarray) -> np.ndarray:
    if np.dtype(interp.input_types[0]) == np.int8:
        x = _quantize(x, interp.input_scales[0], interp.input_zero_points[0])
    y = np.stack([np.asarray(interp.predict(x[i:i + 1])).reshape(interp.output_shapes[0])
                  for i in range(len(x))]).reshape((len(x),) + tuple(interp.output_shapes[0][1:]))
    if np.dtype(interp.output_types[0]) == np.int8:
        scale, zp = interp.output_scales[0], interp.output_zero_points[0]
        y = (y.astype(np.float32) - zp) * scale
    return y.astype(np.float32)


def _check_model(model, flatbuffer) -> None:
    import keras

    if isinstance(model, (bytes, bytearray, memoryview)) and isinstance(flatbuffer,
                                                                       keras.layers.Layer):
        raise TypeError(
            "Invalid arguments of verify: the model and the flatbuffer are swapped. Expected "
            "verify(model, flatbuffer, inputs) with a keras.Model first. Received model of "
            f"type {type(model).__name__} and flatbuffer of type {type(flatbuffer).__name__}.")
    if isinstance(model, (str, os.PathLike)):
        raise TypeError(
            "Invalid value for argument `model` of verify. Expected a keras.Model; load a "
            "saved model first: `import kbnn; model = keras.models.load_model(path)` (the "
            f"`kbnn verify` command takes paths). Received model={model!r}.")
    if not isinstance(model, keras.layers.Layer):
        raise TypeError("Invalid value for argument `model` of verify. Expected a keras.Model. "
                        f"Received model of type {type(model).__name__}.")


def _model_io(model) -> tuple[list | None, list | None]:
    """Shapes (batch axis included) of the model's inputs and outputs, when it has them."""
    try:
        inputs, outputs = model.inputs, model.outputs
    except (AttributeError, ValueError):
        return None, None
    if not inputs:
        return None, None
    return [tuple(t.shape) for t in inputs], [tuple(t.shape) for t in outputs or []]


def _fits(shape: tuple, fb_shape: tuple) -> bool:
    """Per-sample shapes equal, None (any size) in the Keras shape matching anything."""
    shape, fb_shape = tuple(shape[1:]), tuple(int(d) for d in fb_shape[1:])
    return len(shape) == len(fb_shape) and all(d is None or d == g
                                               for d, g in zip(shape, fb_shape))


def _pair_error(model, what: str, keras_value, fb_value) -> ValueError:
    return ValueError(
        f"Invalid value for argument `flatbuffer` of verify. Expected the flatbuffer of model "
        f"{model.name!r} (converted from it): its {what} must match the model's. Received a "
        f"flatbuffer with {what} {fb_value} for a model with {what} {keras_value}.")


def _shape_text(shapes) -> str:
    return ", ".join(str(tuple(int(d) if d is not None else None for d in s)[1:]) for s in shapes)


def verify(model, flatbuffer, inputs, *, atol: float = 1e-4, rtol: float = 1e-4,
           num_threads: int = 1) -> VerifyReport:
    """Run the LCE interpreter and the Keras model (inference mode) on `inputs` and compare.

    `use_indirect_bgemm` is switched on when the flatbuffer has grouped binary convolutions
    (LCE's default kernel refuses them). int8 model inputs/outputs are handled with the model's
    quantization scales; their tolerance should then be a few quantization steps.

    Args:
        model: the Keras model.
        flatbuffer: its flatbuffer (bytes, a `ConversionResult` or the path of a .tflite file).
        inputs: one batch (first axis: samples) of the model's single input; integers and
            bools are cast to float32. Models with several inputs or outputs are refused.

    Raises:
        TypeError: `model` is not a Keras model (e.g. a path, or the arguments swapped), or
            `inputs` are not numbers.
        ValueError: an empty batch; inputs whose shape is not the flatbuffer's; a flatbuffer
            whose inputs or outputs differ from the model's (not its conversion); several
            inputs or outputs; a flatbuffer that is not valid.
    """
    _check_model(model, flatbuffer)
    flatbuffer = flatbuffer_bytes(flatbuffer, "verify")
    interp = _interpreter(flatbuffer, num_threads)
    model_inputs, model_outputs = _model_io(model)
    if model_inputs is not None and (len(model_inputs) != 1 or len(model_outputs) != 1):
        raise _error("model", "verify", "a model with one input and one output (verify compares "
                                        "single-input, single-output models)",
                     f"model {model.name!r} with {len(model_inputs)} inputs and "
                     f"{len(model_outputs)} outputs")
    _check_single_io(interp, "verify")
    fb_in, fb_out = tuple(interp.input_shapes[0]), tuple(interp.output_shapes[0])
    if model_inputs is not None:
        if not _fits(model_inputs[0], fb_in):
            raise _pair_error(model, "input shape", _shape_text(model_inputs),
                              _shape_text([fb_in]))
        if not _fits(model_outputs[0], fb_out):
            raise _pair_error(model, "output shape", _shape_text(model_outputs),
                              _shape_text([fb_out]))
    x = _as_batch(inputs, "verify")
    _check_inputs(x, fb_in, "verify")
    expected = np.asarray(model(x, training=False), np.float32)
    if expected.shape[1:] != tuple(int(d) for d in fb_out[1:]):
        raise _pair_error(model, "output shape", str(expected.shape[1:]),
                          str(tuple(int(d) for d in fb_out[1:])))
    got = _run(interp, x).reshape(expected.shape)
    return compare(expected, got, x, atol=atol, rtol=rtol)


def compare(expected: np.ndarray, got: np.ndarray, inputs: np.ndarray, *, atol: float,
            rtol: float) -> VerifyReport:
    """The `VerifyReport` of `got` (flatbuffer) against `expected` (Keras) on `inputs`."""
    finite = np.isfinite(expected) & np.isfinite(got)
    diff = np.abs(got - expected)
    finite_diff = diff[finite]
    peak = float(np.abs(expected[finite]).max()) if finite.any() else 1.0
    close = finite & (diff <= atol + rtol * np.abs(expected))
    top1 = None
    if expected.ndim >= 2 and expected.shape[-1] > 1:
        rows_finite = finite.all(-1)
        same = np.argmax(np.nan_to_num(got), -1) == np.argmax(np.nan_to_num(expected), -1)
        top1 = float(np.mean(same & rows_finite))
    n = len(inputs)
    return VerifyReport(
        n_samples=n,
        max_abs_diff=float(finite_diff.max()) if finite_diff.size else float("nan"),
        mean_abs_diff=float(finite_diff.mean()) if finite_diff.size else float("nan"),
        max_rel_diff=(float(finite_diff.max()) / (peak or 1.0)) if finite_diff.size
        else float("nan"),
        within_tolerance=float(np.mean(close)),
        top1_agreement=top1,
        atol=atol,
        rtol=rtol,
        nonfinite_input_samples=int((~np.isfinite(inputs.reshape(n, -1))).any(-1).sum()),
        nonfinite_keras_values=int((~np.isfinite(expected)).sum()),
        nonfinite_tflite_values=int((~np.isfinite(got)).sum()),
        n_output_values=int(expected.size),
    )
