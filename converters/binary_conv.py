"""The export graph of one binary convolution, with generic affine folding.

With the input form ``x_q = a * s + b`` (s = sign(x - t) in {-1,+1}, per-channel b) and the kernel
form ``W = scale_o * S + offset_o`` the layer output is

    y_o = a*scale_o * conv(s, S)_o                 -> LceBconv2d, a*scale folds in its multiplier
        + a*offset_o * window_sum(s)               -> only if offset != 0: float ops on the
                                                      channel sum of s (SUM, box sum, MUL; see
                                                      `_window_sum_term`), added with ADD/ADD_N
        + sum_{k,c} b_c * W_{k,c,o}  + bias_o      -> per-channel constant, folds in the bias
        - border_o(p)                              -> only for zero padding when LCE's same-zero
                                                      cannot be used: a numpy constant map

An optional per-output-channel affine map ``k_o * y_o + c_o`` after the bias (a folded
BatchNormalization, `BinaryConvSpec.out_scale/out_shift`) scales every term by k and adds c to the
constant, so it costs no op: LCE cannot fold a BN that follows the ADD/ADD_N of the correction
terms, so those layers fold it here.

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

__all__ = ["BinaryConvSpec", "binary_conv2d", "has_correction_terms", "needs_border_map"]


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
    out_scale: np.ndarray | None = None  # per-output-channel k of a folded ``k * y + c``
    out_shift: np.ndarray | None = None  # per-output-channel c (applied before `activation`)

    @property
    def has_padding(self) -> bool:
        return self.padding != "valid" and any(p for pair in self.pad_amounts for p in pair)


def needs_border_map(form: InputForm, padding: str, pad_values: float, target: str) -> bool:
    """Whether zero padding (with non-zero pad amounts) needs the constant border map: always for
    explicit (causal) padding, and for SAME padding unless LCE's same-zero can be used (a plain
    sign on the arm target). `padding` is "valid", "same" or "explicit"."""
    if padding == "valid" or pad_values != 0.0:
        return False
    return padding == "explicit" or not (form.is_plain_sign and target == "arm")


def has_correction_terms(form: InputForm, kernel: KernelForm, padding: str, pad_values: float,
                         target: str) -> bool:
    """Whether the export adds space-varying float terms (window sum, border map) to the bconv
    output, after which LCE cannot fold a following per-channel Mul/Add (a BatchNormalization)."""
    return kernel.has_offset or needs_border_map(form, padding, pad_values, target)


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
    out = spec.kernel.sign.shape[-1]
    if not np.any(form.b):
        return np.zeros((out,))
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


def _group_sums(s, groups: int, cin_g: int):
    """Sum of s over the input channels of each group: [N, H, W, groups]."""
    if groups == 1:
        return tf.reduce_sum(s, axis=-1, keepdims=True)
    grouped = tf.reshape(s, tf.concat([tf.shape(s)[:-1], [groups, cin_g]], axis=0))
    return tf.reduce_sum(grouped, axis=-1)


def _window_sum_term(s, form: InputForm, spec: BinaryConvSpec, *, pad_one: bool,
                     conv_padding: str, out_scale, name: str):
    """``out_scale_o * a*offset_o * window_sum(s)`` as float ops on the channel sum of s (one
    channel per group).

    The channel sum (SUM) is padded like s in the main conv (with cin_g where s pads with +1,
    with 0 for LCE's same-zero), box-summed over the conv windows (AVERAGE_POOL_2D, VALID, times
    kh*kw) and multiplied by the per-output-channel constant (MUL). The MUL's input is the pool,
    never the bconv, so LCE's shape-blind folding of constant Mul/Add into a bconv cannot touch
    it. AVERAGE_POOL_2D has no dilation and one channel per group cannot broadcast to O outputs,
    so dilated or grouped convs use one float CONV_2D of the group sums instead, with the filter
    [kh, kw, groups, O] = a*offset_o where group(o) is the input group and 0 elsewhere.
    """
    kernel = spec.kernel
    kh, kw, cin_g, out = kernel.sign.shape
    coef = out_scale * form.a * kernel.offset
    sums = _group_sums(s, spec.groups, cin_g)
    if pad_one:
        sums = tf.pad(sums, _pad_spec(spec.pad_amounts), constant_values=float(cin_g))
    if spec.groups > 1 or spec.dilations != (1, 1):
        filters = np.zeros((kh, kw, spec.groups, out))
        filters[:, :, _group_of_output(spec, out), np.arange(out)] = coef
        return _conv(sums, filters, spec, conv_padding, name + "_window_sum")
    if conv_padding == "SAME":  # same-zero: an average pool would not count the zero pads
        sums = tf.pad(sums, _pad_spec(spec.pad_amounts))
    if (kh, kw, *spec.strides) != (1, 1, 1, 1):
        sums = tf.nn.avg_pool2d(sums, [kh, kw], [1, *spec.strides, 1], "VALID",
                                name=name + "_window_sum")
    return sums * _const(kh * kw * coef, name + "_window_coef")


def _window_fits(x, spec: BinaryConvSpec) -> bool:
    """Whether the (dilated) kernel window fits in the input map. LCE 0.16's optimised bconv
    kernel computes same-zero padding wrongly on maps smaller than the window (a 3x3 conv on a
    1x1 or 2x2 map); such convs pad with +1 and subtract the border map instead."""
    kh, kw = spec.kernel.sign.shape[:2]
    extent_h = spec.dilations[0] * (kh - 1) + 1
    extent_w = spec.dilations[1] * (kw - 1) + 1
    return int(x.shape[1]) >= extent_h and int(x.shape[2]) >= extent_w


def binary_conv2d(x, form: InputForm, spec: BinaryConvSpec, *, target: str, name: str):
    """Export graph of ``out_scale * (conv(pad(x_q), W_q) + bias) + out_shift`` then activation;
    `x` is NHWC float."""
    t = form.threshold
    threshold = 0.0 if not form.has_threshold else _const(t, name + "_threshold")
    border, pad_one = False, False
    if spec.padding == "explicit" and spec.has_padding:
        u = x - threshold if form.has_threshold else x
        u = tf.pad(u, _pad_spec(spec.pad_amounts))  # 0 here is s = +1 after the sign
        s = tf.where(u < 0.0, -1.0, 1.0)  # NaN -> +1, as LceQuantize
        conv_padding = "VALID"
        border = needs_border_map(form, spec.padding, spec.pad_values, target)
    else:
        s = tf.where(x < threshold, -1.0, 1.0)  # NaN -> +1, as LceQuantize
        conv_padding = "VALID"
        if spec.has_padding:
            if (spec.pad_values == 0.0 and form.is_plain_sign and target == "arm"
                    and _window_fits(x, spec)):
                conv_padding = "SAME"  # LCE same-zero
            else:
                pad_one = True
                border = spec.pad_values == 0.0
    kernel = spec.kernel
    s_main = tf.pad(s, _pad_spec(spec.pad_amounts), constant_values=1.0) if pad_one else s
    y = _conv(s_main, kernel.sign, spec, conv_padding, name + "_bconv")
    out_scale = 1.0 if spec.out_scale is None else spec.out_scale
    multiplier = out_scale * form.a * kernel.scale
    constant = _b_constant(form, spec)
    if spec.bias is not None:
        constant = constant + spec.bias
    constant = out_scale * constant
    if spec.out_shift is not None:
        constant = constant + spec.out_shift
    if not np.all(multiplier == 1.0):
        y = y * _const(multiplier, name + "_multiplier")
    if np.any(constant != 0.0):
        y = y + _const(constant, name + "_bias")
    # Terms that vary over space join the bconv output in one ADD (two activations) or ADD_N
    # (with the constant border map): LCE folds any constant Add/Mul that follows a bconv into
    # its bias/multiplier whatever the constant's shape, so none may be a constant Add/Mul.
    terms = []
    if kernel.has_offset:
        terms.append(_window_sum_term(s, form, spec, pad_one=pad_one, conv_padding=conv_padding,
                                      out_scale=out_scale, name=name))
    if border:
        in_hw = (int(x.shape[1]), int(x.shape[2]))
        terms.append(_const(-out_scale * _border_map(form, spec, in_hw), name + "_border"))
    if len(terms) == 1 and not border:
        y = y + terms[0]
    elif terms:
        y = tf.math.add_n([y, *terms])  # AddN: a constant Add would fold into the bconv bias
    if spec.activation is not None:
        y = spec.activation(y)
    return y
