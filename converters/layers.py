"""Per-layer export plans: what each kbnn quantized layer becomes in the exported graph.

A plan is made for every kbnn quantized layer of a model (found recursively, also inside nested
or custom block layers). Binary layers that LCE can run get an export function (installed as the
layer's ``_export_call``) that emits the graph LCE lowers to ``LceBconv2d``:

* ``QuantConv2D`` / ``QuantConv1D`` (as a 2-D conv with a height-1 axis, expanded *before* the
  sign) / ``QuantDense`` (reshaped to [N, M, 1, C] before the sign, 1x1 conv, reshaped back);
* the sign as ``tf.where(x >= t, 1, -1)``, the kernel as a constant sign matrix, and the affine
  constants folded as described in `binary_conv`.

Layers whose export adds correction terms (and have no activation) also get `fold_affine`, which
builds the export function with a following per-channel ``k * y + c`` (a BatchNormalization,
see `bn_fold`) folded in.

Layers LCE cannot run as binary ops (depthwise and separable convs, grouped convs with a number
of channels per group that is not a multiple of 32, channels_first) get a reason and a fix; the
lowerability is decided here, before converting, so that strict mode can name the exact cause.

Every export function computes in float32 whatever the layer's dtype policy (a float16 input is
cast to float32 before the sign and the output back to the layer's compute dtype: the TFLite
converter only lowers a float32 sign to LceQuantize), and needs an input shape whose dimensions
(but the batch size) are static; `plan_model` refuses unknown ones up front.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

import keras
import numpy as np
import tensorflow as tf

from kbnn.layers.base import QuantizedLayerMixin
from kbnn.layers.conv import QuantConv1D, QuantConv2D, QuantDepthwiseConv2D, QuantSeparableConv2D
from kbnn.layers.dense import QuantDense

from .binary_conv import BinaryConvSpec, binary_conv2d, has_correction_terms, needs_border_map
from .errors import ConversionError
from .forms import InputForm, KernelForm, freeze_input_form, freeze_kernel_form

__all__ = ["LayerPlan", "plan_model", "quantized_layers", "quantized_weights"]

_GROUP_FIX = ("use groups with a number of input channels per group that is a multiple of 32, "
              "or groups=1")
_DEPTHWISE_FIX = ("keep the depthwise convolution full precision (no input/depthwise "
                  "quantizer), or use QuantConv2D(groups=G) with C/G a multiple of 32")
_STATIC_FIX = "give the model Input a static shape, e.g. keras.Input((32, 32, 3))"


@dataclass
class LayerPlan:
    """How one kbnn layer is exported.

    Attributes:
        layer: the layer.
        binary: ``layer.is_binary`` (input and kernel binarized).
        expected_bconvs: LceBconv2d ops it should become (0 if it cannot lower).
        reason / fix: why a binary layer cannot lower to LCE binary ops, and what to change.
        export_call: the function installed as ``layer._export_call`` (None: own call).
        correction: the float correction terms its export adds (documentation/report).
        fold_affine: ``(scale, shift) -> export function`` of the layer followed by the
            per-output-channel map ``scale * y + shift``; only for layers whose export has
            correction terms (LCE cannot fold a following BatchNormalization into their bconv)
            and no activation, else None.
        folded_bn: the BatchNormalization folded into `export_call` (an identity during export).
    """

    layer: keras.layers.Layer
    binary: bool
    expected_bconvs: int = 0
    reason: str | None = None
    fix: str | None = None
    export_call: Callable | None = None
    correction: list[str] = field(default_factory=list)
    fold_affine: Callable | None = None
    folded_bn: keras.layers.Layer | None = None

    @property
    def name(self) -> str:
        return self.layer.name

    @property
    def lowerable(self) -> bool:
        return self.binary and self.reason is None

    def error(self) -> ConversionError:
        return ConversionError(self.reason or "not converted to an LCE binary op",
                               layer=self.name, fix=self.fix)


def quantized_layers(model: keras.layers.Layer) -> list[keras.layers.Layer]:
    """Every kbnn quantized layer in `model`, recursively, in a stable order, without repeats."""
    seen, found = set(), []
    for layer in model._flatten_layers(include_self=True, recursive=True):
        if isinstance(layer, QuantizedLayerMixin) and id(layer) not in seen:
            seen.add(id(layer))
            found.append(layer)
    return found


def _as_depthwise(kernel):
    """A depthwise kernel (kh, kw, C, M) as its quantizer sees it: (kh, kw, 1, C*M)."""
    kh, kw, cin, mult = kernel.shape
    return tf.reshape(tf.convert_to_tensor(kernel), (kh, kw, 1, cin * mult))


def quantized_weights(layer) -> dict:
    """The weight each kernel quantizer of `layer` is applied to, by quantizer argument name,
    shaped as the quantizer sees it (Keras 3 keeps a DepthwiseConv2D's weight in `kernel`, a
    SeparableConv2D's in `depthwise_kernel` / `pointwise_kernel`).

    Raises:
        ConversionError: for a kernel quantizer argument with no known weight.
    """
    if isinstance(layer, QuantSeparableConv2D):
        known = {"depthwise_quantizer": lambda: _as_depthwise(layer.depthwise_kernel),
                 "pointwise_quantizer": lambda: layer.pointwise_kernel}
    elif isinstance(layer, QuantDepthwiseConv2D):
        known = {"depthwise_quantizer": lambda: _as_depthwise(layer.kernel)}
    else:
        known = {"kernel_quantizer": lambda: layer.kernel}
    weights = {}
    for arg in layer._kernel_quantizer_args:
        if arg not in known:
            raise ConversionError(
                f"kbnn.converters does not know which weight of {type(layer).__name__} its "
                f"`{arg}` quantizes",
                layer=layer.name,
                fix="use QuantConv1D/QuantConv2D/QuantDepthwiseConv2D/QuantSeparableConv2D/"
                    "QuantDense (or subclasses keeping their quantizer arguments)",
            )
        weights[arg] = tf.convert_to_tensor(known[arg]())
    return weights


def _input_shapes(layer) -> list[tuple]:
    """The input shapes `layer` was called (or built) with, as far as Keras recorded them."""
    shapes = []
    for node in getattr(layer, "_inbound_nodes", None) or []:
        tensors = node.input_tensors
        if tensors:
            shapes.append(tuple(tensors[0].shape))
    if not shapes:
        built = getattr(layer, "_build_shapes_dict", None) or {}
        shape = next(iter(built.values())) if len(built) == 1 else None
        if isinstance(shape, (tuple, list)) and all(d is None or isinstance(d, int) for d in shape):
            shapes.append(tuple(shape))
    return shapes


def _static_shape_error(layer, shape) -> ConversionError:
    return ConversionError(
        f"its input shape {tuple(shape)} has unknown dimensions (None); its LCE binary op needs "
        "every input dimension but the batch size to be known",
        layer=layer.name, fix=_STATIC_FIX,
    )


def _check_static_input(layer) -> None:
    for shape in _input_shapes(layer):
        if any(d is None for d in shape[1:]):
            raise _static_shape_error(layer, shape)


def _float32_export(layer, export_call: Callable) -> Callable:
    """`export_call` computing in float32: a non-float32 input (e.g. float16 under a
    "mixed_float16" policy) is cast to float32 first and the output back to the layer's compute
    dtype, since LCE only lowers a float32 sign; an input shape with unknown dimensions (beyond
    the batch) is refused with the layer named."""
    out_dtype = tf.as_dtype(layer.compute_dtype)

    def call(inputs):
        if any(d is None for d in inputs.shape[1:]):
            raise _static_shape_error(layer, inputs.shape)
        x = inputs if inputs.dtype == tf.float32 else tf.cast(inputs, tf.float32)
        y = export_call(x)
        return y if out_dtype == tf.float32 else tf.cast(y, out_dtype)

    return call


def _scope_name(layer) -> str:
    return "kbnn_" + re.sub(r"[^A-Za-z0-9_]", "_", layer.name)


def _activation(layer):
    act = getattr(layer, "activation", None)
    if act is None or act is keras.activations.linear:
        return None
    return act


def _bias(layer) -> np.ndarray | None:
    if not getattr(layer, "use_bias", False):
        return None
    return np.asarray(keras.ops.convert_to_numpy(layer.bias), np.float64)


def _reshape_kernel(kform: KernelForm, shape) -> KernelForm:
    return KernelForm(sign=kform.sign.reshape(shape), scale=kform.scale, offset=kform.offset)


def _spec_padding(layer) -> str:
    """The `BinaryConvSpec.padding` of a layer ("valid" for dense layers)."""
    padding = getattr(layer, "padding", "valid")
    return {"valid": "valid", "same": "same", "causal": "explicit"}[padding]


def _has_correction_terms(form: InputForm, kform: KernelForm, layer, target: str) -> bool:
    return has_correction_terms(form, kform, _spec_padding(layer),
                                float(getattr(layer, "pad_values", 1.0)), target)


def _corrections(form: InputForm, kform: KernelForm, layer, target: str) -> list[str]:
    notes = []
    if kform.has_offset:
        notes.append("window sum (kernel offset): float SUM over input channels, box sum "
                     "(AVERAGE_POOL_2D; CONV_2D if dilated or grouped), MUL, ADD")
    if needs_border_map(form, _spec_padding(layer), float(getattr(layer, "pad_values", 1.0)),
                        target):
        notes.append("constant border map (zero padding of an affine input)")
    if form.has_threshold:
        notes.append("threshold (Sub, folds into a preceding bconv where possible)")
    return notes


def _check_conv_layout(layer) -> None:
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        raise ConversionError("LCE binary convolutions need channels_last (NHWC) data",
                              layer=layer.name, fix="use data_format='channels_last'")


def _check_groups(layer, cin: int) -> None:
    groups = int(getattr(layer, "groups", 1) or 1)
    if groups > 1 and (cin // groups) % 32 != 0:
        raise ConversionError(
            f"grouped binary conv with {cin // groups} input channels per group ({groups} "
            "groups): LCE needs >= 32 input channels per group (multiple of 32)",
            layer=layer.name, fix=_GROUP_FIX,
        )


def _conv_spec(layer, kform: KernelForm, bias, x_shape, rank: int, affine) -> BinaryConvSpec:
    amounts = layer.padding_amounts(tuple(x_shape))
    if rank == 1:
        amounts = [(0, 0)] + list(amounts)
        strides, dilations = (1, layer.strides[0]), (1, layer.dilation_rate[0])
    else:
        strides, dilations = tuple(layer.strides), tuple(layer.dilation_rate)
    return BinaryConvSpec(
        kernel=kform, strides=strides, dilations=dilations, groups=int(layer.groups),
        padding=_spec_padding(layer), pad_amounts=tuple(tuple(int(p) for p in a) for a in amounts),
        pad_values=float(layer.pad_values), bias=bias, activation=_activation(layer),
        out_scale=affine[0], out_shift=affine[1],
    )


def _with_fold(plan: LayerPlan, make_export: Callable, form: InputForm, kform: KernelForm,
               target: str) -> LayerPlan:
    """Give `plan` its `fold_affine` where a following BatchNormalization cannot fold in LCE."""
    if _activation(plan.layer) is None and _has_correction_terms(form, kform, plan.layer, target):
        plan.fold_affine = lambda scale, shift: make_export((scale, shift))
    return plan


def _plan_conv(layer, rank: int, target: str) -> LayerPlan:
    _check_conv_layout(layer)
    kernel = layer.kernel
    cin = int(kernel.shape[-2]) * int(layer.groups)
    _check_groups(layer, cin)
    kform = freeze_kernel_form(layer.kernel_quantizer, kernel, layer.name)
    if rank == 1:
        kform = _reshape_kernel(kform, (1,) + tuple(kform.sign.shape))
    form = freeze_input_form(layer.input_quantizer, cin, layer.name)
    name = _scope_name(layer)
    bias = _bias(layer)

    def make_export(affine=(None, None)):
        def export_call(inputs):
            x = tf.expand_dims(inputs, 1) if rank == 1 else inputs
            spec = _conv_spec(layer, kform, bias, inputs.shape, rank, affine)
            y = binary_conv2d(x, form, spec, target=target, name=name)
            return tf.squeeze(y, 1) if rank == 1 else y

        return _float32_export(layer, export_call)

    plan = LayerPlan(layer, True, 1, export_call=make_export(),
                     correction=_corrections(form, kform, layer, target))
    return _with_fold(plan, make_export, form, kform, target)


def _plan_dense(layer, target: str) -> LayerPlan:
    kernel = layer.kernel
    cin, units = int(kernel.shape[0]), int(kernel.shape[1])
    kform = freeze_kernel_form(layer.kernel_quantizer, kernel, layer.name)
    kform = _reshape_kernel(kform, (1, 1, cin, units))
    form = freeze_input_form(layer.input_quantizer, cin, layer.name)
    bias = _bias(layer)
    name = _scope_name(layer)

    def make_export(affine=(None, None)):
        spec = BinaryConvSpec(kernel=kform, strides=(1, 1), dilations=(1, 1), groups=1,
                              padding="valid", pad_amounts=((0, 0), (0, 0)), pad_values=0.0,
                              bias=bias, activation=_activation(layer),
                              out_scale=affine[0], out_shift=affine[1])

        def export_call(inputs):
            middle = [int(d) for d in inputs.shape[1:-1]]
            rows = int(np.prod(middle)) if middle else 1
            x = tf.reshape(inputs, [-1, rows, 1, cin])  # before the sign: LCE matches the conv
            y = binary_conv2d(x, form, spec, target=target, name=name)
            return tf.reshape(y, [-1, *middle, units])

        return _float32_export(layer, export_call)

    plan = LayerPlan(layer, True, 1, export_call=make_export(),
                     correction=_corrections(form, kform, layer, target))
    return _with_fold(plan, make_export, form, kform, target)


def _plan_layer(layer, target: str) -> LayerPlan:
    if not layer.is_binary:
        return LayerPlan(layer, False)
    try:
        if isinstance(layer, (QuantDepthwiseConv2D, QuantSeparableConv2D)):
            kind = "depthwise" if isinstance(layer, QuantDepthwiseConv2D) else "separable"
            raise ConversionError(
                f"LCE has no binary {kind} convolution: a depthwise conv is a grouped conv with "
                "1 input channel per group, and LCE needs >= 32 input channels per group "
                "(multiple of 32)",
                layer=layer.name, fix=_DEPTHWISE_FIX,
            )
        if isinstance(layer, QuantConv2D):
            return _plan_conv(layer, 2, target)
        if isinstance(layer, QuantConv1D):
            return _plan_conv(layer, 1, target)
        if isinstance(layer, QuantDense):
            return _plan_dense(layer, target)
        raise ConversionError(
            f"kbnn.converters has no binary export form for {type(layer).__name__}",
            layer=layer.name, fix="use QuantConv1D/QuantConv2D/QuantDense for binary layers",
        )
    except ConversionError as err:
        return LayerPlan(layer, True, 0, reason=err.reason, fix=err.fix)


def plan_model(model, target: str = "arm") -> list[LayerPlan]:
    """An export plan for every kbnn quantized layer in `model` (built).

    Raises:
        ConversionError: for an unbuilt layer, or a layer with an export form whose recorded
            input shape has unknown dimensions beyond the batch size.
    """
    plans = []
    for layer in quantized_layers(model):
        if not layer.built:
            raise ConversionError("the layer is not built", layer=layer.name,
                                  fix="call the model on data (or build it) before converting")
        plan = _plan_layer(layer, target)
        if plan.export_call is not None:
            _check_static_input(layer)
        plans.append(plan)
    return plans
