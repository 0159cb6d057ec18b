"""The export graph of one binary convolution, with generic affine folding.

With the input form ``x_q = a * s + b`` (s = sign(x - t) in {-1,+1}, per-channel b) and the kernel
form ``W = scale_o * S + offset_o`` the layer output is

    y_o = a*scale_o * conv(s, S)_o                 -> LceBconv2d, a*scale folds in its multiplier
        + a*offset_o * window_sum(s)               -> only if offset != 0: a second LceBconv2d of s
                                                      with the filter a*offset_o * ones (O
                                                      channels; its multiplier folds)
        + sum_{k,c} b_c * W_{k,c,o}  + bias_o      -> per-channel constant, folds in the bias
        - border_o(p)                              -> only for zero padding when LCE's same-zero
                                                      cannot be used: a numpy constant map

Padding. ``pad_values=1`` (pad with the +1 level a + b) is s padded with +1: an explicit
``tf.pad(s, 1.0)`` + VALID conv, which LCE runs natively as same-one. ``pad_values=0`` pads x_q
with 0: for a plain sign (all b == 0) on the arm target that is LCE's same-zero SAME conv; in
every other case s is padded with +1 and the constant ``border = conv(P, W)`` is subtracted, where
P is (a + b_c) on the padded border and 0 inside. Non-SAME-shaped padding (Conv1D causal) pads
``x - t`` with 0 *before* the sign (so the pad is s = +1) and uses a VALID conv.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from .forms import InputForm, KernelForm

__all__ = ["BinaryConvSpec", "binary_conv2d", "expected_bconv_count"]


@dataclass(frozen=True)
class BinaryConvSpec:
    """Everything about one binary conv but its input: NHWC, kernel (kh, kw, Cin/groups, O)."""

    kernel: KernelForm
    strides: tuple[int, int]
    dilations: tuple[int, int]
    groups: int
    padding: str  # "valid", "same" or "explicit"
    pad_amounts: tuple[tuple[int, int], tuple[int, int]]
    pad_values: float
    bias: np.ndarray | None
    activation: Callable | None

    @property
    def has_padding(self) -> bool:
        return self.padding != "valid" and any(p for pair in self.pad_amounts for p in pair)


def expected_bconv_count(kernel: KernelForm) -> int:
    """LceBconv2d ops one binary layer becomes: 1, plus 1 for the window sum of an offset."""
    return 1 + int(kernel.has_offset)


def _pad_spec(amounts) -> list[list[int]]:
    return [[0, 0], list(amounts[0]), list(amounts[1]), [0, 0]]


def _const(value: np.ndarray, name: str):
    return tf.constant(np.asarray(value, np.float32), name=name)


def _conv(s, filters: np.ndarray, spec: BinaryConvSpec, padding: str, name: str):
    return tf.nn.conv2d(
        s, _const(filters, name + "_filter"), strides=[1, *spec.strides, 1], padding=padding,
        dilations=[1, *spec.dilations, 1], name=name,
    )


def _group_of_output(spec: BinaryConvSpec, out_channels: int) -> np.ndarray:
    return np.arange(out_channels) // (out_channels // spec.groups)


def _b_constant(form: InputForm, spec: BinaryConvSpec) -> np.ndarray:
    """sum_{k, c in group(o)} b_c * W[k, c, o], the contribution of the offsets b."""
    w = spec.kernel.dense()
    _kh, _kw, cin_g, out = w.shape
    b_per_out = form.b.reshape(spec.groups, cin_g)[_group_of_output(spec, out)]  # (O, cin_g)
    return np.einsum("hwio,oi->o", w, b_per_out)


def _border_map(form: InputForm, spec: BinaryConvSpec, in_hw: Sequence[int]) -> np.ndarray:
    """conv(P, W): what padding s with +1 adds compared with padding x_q with zeros."""
    (pt, pb), (pl, pr) = spec.pad_amounts
    h, w = in_hw
    cin = form.b.shape[0]
    plane = np.zeros((1, h + pt + pb, w + pl + pr, cin), np.float64)
    plane[...] = form.a + form.b
    plane[:, pt:pt + h, pl:pl + w, :] = 0.0
    weights = spec.kernel.dense()
    cin_g, out = weights.shape[2], weights.shape[3]
    out_g = out // spec.groups
    parts = []
    with tf.init_scope():
        for g in range(spec.groups):
            parts.append(tf.nn.conv2d(
                tf.constant(plane[..., g * cin_g:(g + 1) * cin_g]),
                tf.constant(weights[..., g * out_g:(g + 1) * out_g]),
                strides=[1, *spec.strides, 1], padding="VALID", dilations=[1, *spec.dilations, 1],
            ).numpy())
    return np.concatenate(parts, axis=-1)


def binary_conv2d(x, form: InputForm, spec: BinaryConvSpec, *, target: str, name: str):
    """Export graph of ``conv(pad(x_q), W_q) + bias`` then activation; `x` is NHWC float."""
    t = form.threshold
    threshold = 0.0 if not form.has_threshold else _const(t, name + "_threshold")
    border = False
    if spec.padding == "explicit" and spec.has_padding:
        u = x - threshold if form.has_threshold else x
        u = tf.pad(u, _pad_spec(spec.pad_amounts))  # 0 here is s = +1 after the sign
        s = tf.where(u >= 0.0, 1.0, -1.0)
        conv_padding, border = "VALID", spec.pad_values == 0.0
    else:
        s = tf.where(x >= threshold, 1.0, -1.0)
        conv_padding = "VALID"
        if spec.has_padding:
            if spec.pad_values == 0.0 and form.is_plain_sign and target == "arm":
                conv_padding = "SAME"  # LCE same-zero
            else:
                s = tf.pad(s, _pad_spec(spec.pad_amounts), constant_values=1.0)
                border = spec.pad_values == 0.0
    kernel = spec.kernel
    out = kernel.sign.shape[-1]
    y = _conv(s, kernel.sign, spec, conv_padding, name + "_bconv")
    multiplier = form.a * kernel.scale
    constant = _b_constant(form, spec)
    if spec.bias is not None:
        constant = constant + spec.bias
    if not np.all(multiplier == 1.0):
        y = y * _const(multiplier, name + "_multiplier")
    if np.any(constant != 0.0):
        y = y + _const(constant, name + "_bias")
    if kernel.has_offset:
        # a second bconv with the all-ones filter scaled per output channel (+-coef_o is still a
        # binary filter). Not a 1-channel bconv times coef: LCE folds any constant Mul/Add into
        # the preceding bconv without checking shapes, which breaks a broadcasting multiply
        # (checked: even with a BROADCAST_TO in between, TFLite folds it away first).
        coef = form.a * kernel.offset
        kh, kw, cin_g, _ = kernel.sign.shape
        coef_filter = np.ones((kh, kw, cin_g, out)) * np.where(coef == 0.0, 1.0, coef)
        window_sum = _conv(s, coef_filter, spec, conv_padding, name + "_window_sum")
        if np.any(coef == 0.0):
            window_sum = window_sum * _const((coef != 0.0).astype(np.float64), name + "_mask")
        y = y + window_sum
    if border:
        # AddN, not Add/Sub: LCE would fold a constant Add into the bconv bias whatever its
        # shape, and this map varies over space.
        in_hw = (int(x.shape[1]), int(x.shape[2]))
        y = tf.math.add_n([y, _const(-_border_map(form, spec, in_hw), name + "_border")])
    if spec.activation is not None:
        y = spec.activation(y)
    return y
