"""Freeze the affine-binary inference forms of a layer's quantizers into numpy constants.

Input (activation) form, per input channel c:   x_q = a * s(x - t_c) + b_c
Kernel form, per output channel o:              W_q = scale_o * S + offset_o,  S in {-1, +1}

Both come only from `Quantizer.binary_form` (never from a quantizer's name). They are read at
conversion time (variables are frozen anyway), and checked against the quantizer's own output so
that a quantizer whose `binary_form` disagrees with its `call` is refused instead of silently
converted wrong.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from .errors import ConversionError

__all__ = ["InputForm", "KernelForm", "freeze_input_form", "freeze_kernel_form"]

_RTOL = 1e-5


@dataclass(frozen=True)
class InputForm:
    """``x_q = a * s(x - threshold) + b``; `threshold` and `b` have shape (C,), `a` is a float.

    A per-input-channel `a` is not representable by one binary conv (the filter would have to be
    ``a_c * S``, which is not ±constant per output channel) and is refused; a per-channel `b` and
    `threshold` are supported.
    """

    threshold: np.ndarray
    a: float
    b: np.ndarray

    @property
    def is_plain_sign(self) -> bool:
        return bool(np.all(self.b == 0.0))

    @property
    def has_threshold(self) -> bool:
        return bool(np.any(self.threshold != 0.0))


@dataclass(frozen=True)
class KernelForm:
    """``W_q = scale * S + offset`` with S of the kernel's shape and scale/offset of shape (O,)."""

    sign: np.ndarray
    scale: np.ndarray
    offset: np.ndarray

    def dense(self) -> np.ndarray:
        """W_q as float64 (a full-size copy: for the correction terms of affine forms only)."""
        return self.scale * self.sign.astype(np.float64) + self.offset

    @property
    def has_offset(self) -> bool:
        return bool(np.any(self.offset != 0.0))


def _per_channel(value, channels: int, what: str, layer: str) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.size == 1:
        return np.full((channels,), float(arr.reshape(())), np.float64)
    if arr.shape[-1] != channels or arr.size != channels:
        raise ConversionError(
            f"the {what} of its quantizer has shape {arr.shape}; only scalars or one value per "
            f"channel ({channels}) along the last axis can be converted",
            layer=layer,
            fix="make the quantizer's binary_form return scalars or per-channel vectors",
        )
    return arr.reshape(channels)


def _no_binary_form(quantizer, what: str, layer: str) -> ConversionError:
    """The error for a quantizer whose `binary_form` is None, with the reason the quantizer
    gives in `binary_form_unavailable_reason()` (e.g. a temperature not annealed yet)."""
    name = type(quantizer).__name__
    reason_of = getattr(quantizer, "binary_form_unavailable_reason", None)
    why = reason_of() if callable(reason_of) else None
    if why:
        return ConversionError(
            f"its {what} quantizer {name} has no binary form now: {why}", layer=layer,
            fix=f"convert once {name} binarizes, or use strict=False to keep the layer as float "
                "ops")
    return ConversionError(f"its {what} quantizer {name} has no binary form", layer=layer,
                           fix=f"use a binarizing {what} quantizer (precision 1)")


def freeze_input_form(quantizer, channels: int, layer: str) -> InputForm:
    """Read `quantizer.binary_form` eagerly for inputs with `channels` channels."""
    with tf.init_scope():
        rng = np.random.default_rng(0)
        probes = [tf.constant(rng.normal(size=(2, 3, channels)).astype("float32")) for _ in range(2)]
        forms = [quantizer.binary_form(p) for p in probes]
        if forms[0] is None:
            raise _no_binary_form(quantizer, "input", layer)
        forms = [f.numpy() for f in forms]
        fields = [
            tuple(_per_channel(getattr(f, n), channels, n, layer) for n in ("threshold", "scale", "offset"))
            for f in forms
        ]
        if any(not np.array_equal(u, v) for u, v in zip(*fields)):
            raise ConversionError(
                f"the binary form of {type(quantizer).__name__} depends on the input values; "
                "only constant (frozen) forms can become LCE binary ops",
                layer=layer, fix="make threshold/scale/offset variables or constants",
            )
        t, a, b = fields[0]
        if not np.all(a == a[0]):
            raise ConversionError(
                f"its input quantizer {type(quantizer).__name__} has a per-input-channel scale; "
                "one binary conv needs a scale that is constant over input channels",
                layer=layer, fix="use a scalar activation scale (per-channel thresholds and "
                "offsets are fine)",
            )
        form = InputForm(threshold=t, a=float(a[0]), b=b)
        x = probes[0]
        expected = quantizer(x, training=False).numpy()
        got = form.a * np.where(x.numpy() - t >= 0, 1.0, -1.0) + b
        _check_close(expected, got, quantizer, layer, "input")
    return form


def freeze_kernel_form(quantizer, kernel, layer: str) -> KernelForm:
    """Read `quantizer.binary_form(kernel)` eagerly; `kernel` is shaped (..., O)."""
    with tf.init_scope():
        kernel = tf.convert_to_tensor(kernel)
        form = quantizer.binary_form(kernel)
        if form is None:
            raise _no_binary_form(quantizer, "kernel", layer)
        sign = form.sign(kernel).numpy().astype(np.float32, copy=False)  # +-1: exact
        out = int(kernel.shape[-1])
        frozen = form.numpy()
        kform = KernelForm(
            sign=sign,
            scale=_per_channel(frozen.scale, out, "scale", layer),
            offset=_per_channel(frozen.offset, out, "offset", layer),
        )
        if np.any(kform.scale == 0.0):
            raise ConversionError(
                "its kernel quantizer gives a zero scale for some output channel",
                layer=layer, fix="check the kernel quantizer's binary_form",
            )
        expected = quantizer(kernel, training=False).numpy()
        got = (kform.scale.astype(np.float32) * sign + kform.offset.astype(np.float32))
        _check_close(expected, got, quantizer, layer, "kernel")
        del expected, got
    return kform


def _check_close(expected, got, quantizer, layer: str, what: str) -> None:
    if not np.allclose(got, expected, rtol=_RTOL, atol=_RTOL * max(1.0, float(np.abs(expected).max()))):
        raise ConversionError(
            f"the binary_form of its {what} quantizer {type(quantizer).__name__} does not "
            f"reproduce the quantizer's output (max difference "
            f"{float(np.abs(got - expected).max()):.3g})",
            layer=layer, fix=f"fix {type(quantizer).__name__}.binary_form",
        )
