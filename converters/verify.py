"""`verify(model, flatbuffer, inputs) -> VerifyReport`: LCE interpreter vs Keras, same inputs."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .inspection import inspect

__all__ = ["VerifyReport", "verify"]


@dataclass
class VerifyReport:
    """Agreement of the flatbuffer (LCE interpreter) with the Keras model.

    Attributes:
        n_samples: inputs compared.
        max_abs_diff / mean_abs_diff: over every output value.
        max_rel_diff: max |d| / max(|keras|) (relative to the output's magnitude).
        within_tolerance: fraction of output values with |d| <= atol + rtol * |keras|.
        top1_agreement: fraction of samples whose argmax over the last axis agrees (None for
            outputs with a single value per sample).
        atol, rtol: the tolerances used.
    """

    n_samples: int
    max_abs_diff: float
    mean_abs_diff: float
    max_rel_diff: float
    within_tolerance: float
    top1_agreement: float | None
    atol: float
    rtol: float

    @property
    def ok(self) -> bool:
        """All outputs within tolerance."""
        return self.within_tolerance == 1.0

    def table(self) -> str:
        top1 = "n/a" if self.top1_agreement is None else f"{100 * self.top1_agreement:.2f} %"
        rows = [
            ("samples", f"{self.n_samples}"),
            ("max |tflite - keras|", f"{self.max_abs_diff:.3g}"),
            ("mean |tflite - keras|", f"{self.mean_abs_diff:.3g}"),
            ("max relative diff", f"{self.max_rel_diff:.3g}"),
            (f"within atol={self.atol:g} rtol={self.rtol:g}", f"{100 * self.within_tolerance:.2f} %"),
            ("top-1 agreement", top1),
        ]
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)

    def __str__(self) -> str:
        return self.table()


def _quantize(x: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    return np.clip(np.round(x / scale) + zero_point, -128, 127).astype(np.int8)


def _interpreter(flatbuffer: bytes, num_threads: int):
    from larq_compute_engine.tflite.python.interpreter import Interpreter

    report = inspect(flatbuffer)
    grouped = any(b.get("channels_in", 0) > 32 * b["filter_shape"][-1] for b in report.bconvs)
    return Interpreter(flatbuffer, num_threads=num_threads, use_indirect_bgemm=grouped)


def run_flatbuffer(flatbuffer: bytes, inputs: np.ndarray, *, num_threads: int = 1) -> np.ndarray:
    """Run a single-input, single-output flatbuffer with LCE's interpreter on a batch (float
    in/out: int8 inputs/outputs are quantized/dequantized with the model's scales)."""
    interp = _interpreter(flatbuffer, num_threads)
    x = np.asarray(inputs, np.float32)
    if np.dtype(interp.input_types[0]) == np.int8:
        x = _quantize(x, interp.input_scales[0], interp.input_zero_points[0])
    y = np.stack([np.asarray(interp.predict(x[i:i + 1])).reshape(interp.output_shapes[0])
                  for i in range(len(x))]).reshape((len(x),) + tuple(interp.output_shapes[0][1:]))
    if np.dtype(interp.output_types[0]) == np.int8:
        scale, zp = interp.output_scales[0], interp.output_zero_points[0]
        y = (y.astype(np.float32) - zp) * scale
    return y.astype(np.float32)


def verify(model, flatbuffer: bytes, inputs, *, atol: float = 1e-4, rtol: float = 1e-4,
           num_threads: int = 1) -> VerifyReport:
    """Run the LCE interpreter and the Keras model (inference mode) on `inputs` and compare.

    `use_indirect_bgemm` is switched on when the flatbuffer has grouped binary convolutions
    (LCE's default kernel refuses them). int8 model inputs/outputs are handled with the model's
    quantization scales; their tolerance should then be a few quantization steps.
    """
    x = np.asarray(inputs, np.float32)
    expected = np.asarray(model(x, training=False), np.float32)
    got = run_flatbuffer(flatbuffer, x, num_threads=num_threads).reshape(expected.shape)
    diff = np.abs(got - expected)
    peak = float(np.abs(expected).max()) or 1.0
    top1 = None
    if expected.ndim >= 2 and expected.shape[-1] > 1:
        top1 = float(np.mean(np.argmax(got, -1) == np.argmax(expected, -1)))
    return VerifyReport(
        n_samples=len(x),
        max_abs_diff=float(diff.max()),
        mean_abs_diff=float(diff.mean()),
        max_rel_diff=float(diff.max()) / peak,
        within_tolerance=float(np.mean(diff <= atol + rtol * np.abs(expected))),
        top1_agreement=top1,
        atol=atol,
        rtol=rtol,
    )
