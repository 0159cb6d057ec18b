"""Per-layer export plans: what each kbnn quantized layer becomes in the exported graph.

A plan is made for every kbnn quantized layer of a model (found recursively, also inside nested
or custom block layers) from the layer's registered export form (`kbnn.layers.export_form`): a
`BinaryConvForm` becomes an export function emitting the graph LCE lowers to ``LceBconv2d``; an
`ExportRefusal` (binary depthwise/separable convs, channels_first) keeps the reason and fix for
strict mode. The export function is what `kbnn.export_mode.export_scope` routes the layer's calls
to while the converter traces the export graph:

* layout "nhwc" (2-D conv), "nwc" (1-D conv as a 2-D conv with a height-1 axis, expanded *before*
  the sign), "dense" (reshaped to [N, M, 1, C] before the sign, 1x1 conv, reshaped back);
* the sign as ``tf.where(x < t, -1, 1)``, the kernel as a constant sign matrix, and the affine
  constants folded as described in `binary_conv`.

Layers whose export adds correction terms (and have no activation) also get `fold_affine`, which
builds the export function with a following per-channel ``k * y + c`` (a BatchNormalization,
see `bn_fold`) folded in. Grouped convs need a multiple of 32 input channels per group (an LCE
limit checked here, before converting, so that strict mode can name the exact cause).

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

from kbnn import _keras_compat as compat
from kbnn.layers.base import QuantizedLayerMixin, same_padding
from kbnn.layers.export import BinaryConvForm, ExportRefusal, export_form

from .binary_conv import BinaryConvSpec, binary_conv2d, has_correction_terms, needs_border_map
from .errors import ConversionError
from .forms import InputForm, KernelForm, freeze_input_form, freeze_kernel_form

__all__ = ["LayerPlan", "plan_model", "quantized_layers"]

_GROUP_FIX = ("use groups with a number of input channels per group that is a multiple of 32, "
              "or groups=1")
_STATIC_FIX = "give the model Input a static shape, e.g. keras.Input((32, 32, 3))"


@dataclass
class LayerPlan:
    """How one kbnn layer is exported.

    Attributes:
        layer: the layer.
        binary: ``layer.is_binary`` (input and kernel binarized).
        expected_bconvs: LceBconv2d ops it should become (0 if it cannot lower).
        reason / fix: why a binary layer cannot lower to LCE binary ops, and what to change.
        export_call: the layer's export function in the export scope (None: own call).
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
    for layer in compat.flatten_layers(model, include_self=True, recursive=True):
        if isinstance(layer, QuantizedLayerMixin) and id(layer) not in seen:
            seen.add(id(layer))
            found.append(layer)
    return found


def _static_shape_error(layer, shape) -> ConversionError:
    return ConversionError(
        f"its input shape {tuple(shape)} has unknown dimensions (None); its LCE binary op needs "
        "every input dimension but the batch size to be known",
        layer=layer.name, fix=_STATIC_FIX,
    )


def _check_static_input(layer) -> None:
    for shape in compat.layer_input_shapes(layer):
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


def _numpy(variable) -> np.ndarray | None:
    return None if variable is None else np.asarray(keras.ops.convert_to_numpy(variable),
                                                    np.float64)


def _normalized_activation(activation):
    return None if activation is None or activation is keras.activations.linear else activation


def _reshape_kernel(kform: KernelForm, shape) -> KernelForm:
    return KernelForm(sign=kform.sign.reshape(shape), scale=kform.scale, offset=kform.offset)


_SPEC_PADDING = {"valid": "valid", "same": "same", "causal": "explicit", "explicit": "explicit"}


def _corrections(form: InputForm, kform: KernelForm, padding: str, pad_values: float,
                 target: str) -> list[str]:
    notes = []
    if kform.has_offset:
        notes.append("window sum (kernel offset): float SUM over input channels, box sum "
                     "(AVERAGE_POOL_2D; CONV_2D if dilated or grouped), MUL, ADD")
    if needs_border_map(form, padding, pad_values, target):
        notes.append("constant border map (zero padding of an affine input)")
    if form.has_threshold:
        notes.append("threshold (Sub, folds into a preceding bconv where possible)")
    return notes


def _check_groups(layer, cin: int, groups: int) -> None:
    if groups > 1 and (cin // groups) % 32 != 0:
        raise ConversionError(
            f"grouped binary conv with {cin // groups} input channels per group ({groups} "
            "groups): LCE needs >= 32 input channels per group (multiple of 32)",
            layer=layer.name, fix=_GROUP_FIX,
        )


def _kernel_hwio(kform: KernelForm, form: BinaryConvForm, layer) -> KernelForm:
    """The frozen kernel as the (kh, kw, Cin/groups, Cout) filter of the 2-D conv."""
    shape = kform.sign.shape
    if form.layout == "dense" and len(shape) == 2:
        return _reshape_kernel(kform, (1, 1, *shape))
    if form.layout == "nwc" and len(shape) == 3:
        return _reshape_kernel(kform, (1, *shape))
    if form.layout == "nhwc" and len(shape) == 4:
        return kform
    raise ConversionError(
        f"its export form has layout {form.layout!r} but a kernel of shape {tuple(shape)} as "
        "its quantizer sees it; expected (Cin, Cout) for 'dense', (k, Cin, Cout) for 'nwc', "
        "(kh, kw, Cin, Cout) for 'nhwc'",
        layer=layer.name, fix="fix the layer's registered export form")


def _spatial(values, rank2: bool) -> tuple[int, int]:
    values = tuple(int(v) for v in values)
    if rank2:
        return values if len(values) == 2 else (values[0], values[0])
    return (1, values[0])


def _plan_binary(layer, form: BinaryConvForm, target: str) -> LayerPlan:
    kform = freeze_kernel_form(form.kernel.quantizer, form.kernel.value(), layer.name)
    kform = _kernel_hwio(kform, form, layer)
    groups = int(form.groups)
    cin = int(kform.sign.shape[2]) * groups
    _check_groups(layer, cin, groups)
    iform = freeze_input_form(form.input_quantizer, cin, layer.name)
    name = _scope_name(layer)
    bias = _numpy(form.bias)
    activation = _normalized_activation(form.activation)
    padding = "valid" if form.layout == "dense" else _SPEC_PADDING[form.padding]
    pad_values = float(form.pad_values)
    rank2 = form.layout == "nhwc"
    strides, dilations = _spatial(form.strides, rank2), _spatial(form.dilation_rate, rank2)

    def spec_for(input_shape, affine) -> BinaryConvSpec:
        if padding == "valid" or form.padding_amounts is None:
            amounts = [(0, 0), (0, 0)]
        else:
            amounts = list(form.padding_amounts(tuple(input_shape)))
            if not rank2:
                amounts = [(0, 0)] + amounts
        mode = padding
        if mode == "explicit" and form.padding == "explicit" and rank2 and [
                tuple(a) for a in amounts] == [tuple(a) for a in same_padding(
                    tuple(input_shape)[1:3], kform.sign.shape[:2], strides, dilations)]:
            mode = "same"  # explicit amounts that are TensorFlow's SAME: LCE's native padding
        return BinaryConvSpec(
            kernel=kform, strides=strides, dilations=dilations, groups=groups, padding=mode,
            pad_amounts=tuple(tuple(int(p) for p in a) for a in amounts), pad_values=pad_values,
            bias=bias, activation=activation, out_scale=affine[0], out_shift=affine[1])

    replicate = int(form.replicate)

    def make_export(affine=(None, None)):
        def export_call(inputs):
            if form.layout == "dense":
                middle = [int(d) for d in inputs.shape[1:-1]]
                rows = int(np.prod(middle)) if middle else 1
                x = tf.reshape(inputs, [-1, rows, 1, cin])  # before the sign: LCE matches it
                y = binary_conv2d(x, iform, spec_for(x.shape, affine), target=target, name=name)
                y = tf.reshape(y, [-1, *middle, int(kform.sign.shape[3])])
            else:
                x = inputs if rank2 else tf.expand_dims(inputs, 1)
                y = binary_conv2d(x, iform, spec_for(inputs.shape, affine), target=target,
                                  name=name)
                y = y if rank2 else tf.squeeze(y, 1)
            if replicate > 1:  # RepBNN: the bconv's channels, tiled (one TILE op)
                y = tf.tile(y, [1] * (len(y.shape) - 1) + [replicate], name=name + "_replicate")
            return y

        return _float32_export(layer, export_call)

    plan = LayerPlan(layer, True, 1, export_call=make_export(),
                     correction=_corrections(iform, kform, padding, pad_values, target))
    # A following BN normalises the replicated channels, each copy with its own constants: it
    # cannot fold into the bconv of `filters` channels, and stays after the TILE.
    if activation is None and replicate == 1 and has_correction_terms(
            iform, kform, padding, pad_values, target):
        plan.fold_affine = lambda scale, shift: make_export((scale, shift))
    return plan


def _plan_layer(layer, target: str) -> LayerPlan:
    if not layer.is_binary:
        return LayerPlan(layer, False)
    try:
        form = export_form(layer)
        if isinstance(form, ExportRefusal):
            raise ConversionError(form.reason, layer=layer.name, fix=form.fix)
        if not isinstance(form, BinaryConvForm):
            raise ConversionError(
                f"the export form registered for {type(layer).__name__} returned "
                f"{type(form).__name__}; expected a BinaryConvForm or an ExportRefusal",
                layer=layer.name, fix="fix the registered export form function")
        return _plan_binary(layer, form, target)
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
