"""The public contract between quantized layers and the converter.

A quantized layer describes its inference form declaratively, the way a quantizer describes its
own with `binary_form`:

* `QuantizedLayerMixin.quantized_weights()` maps each kernel-quantizer argument to a
  `QuantizedWeight` (the latent variable, the quantizer, the shape the quantizer sees);
* an **export form** says what the layer is at inference: a `BinaryConvForm` (one 2-D binary
  convolution, which `kbnn.converters` lowers to LCE's `LceBconv2d`) or an `ExportRefusal` (why
  it cannot be one, and what to change). Export forms are found in a registry keyed by layer
  class (`register_export_form`, looked up along the class's MRO), so a layer class from
  outside kbnn converts without touching the converter.

Export itself is one context-scoped mode (`kbnn.export_mode.export_scope`): while it is active, a
layer that the scope names computes its export function instead of its training form. Nothing is
written on layer instances, so conversions in several threads do not interfere.

Example (a custom binary layer; see ``docs/export.md``)::

    class SignConv(kbnn.layers.QuantizedLayerMixin, keras.layers.Layer):
        ...

    @kbnn.layers.register_export_form(SignConv)
    def _sign_conv_form(layer):
        return kbnn.layers.BinaryConvForm(input_quantizer=layer.input_quantizer,
                                          kernel=layer.quantized_weights()["kernel_quantizer"])
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from kbnn.export_mode import export_override, export_scope

__all__ = [
    "BinaryConvForm",
    "ExportRefusal",
    "QuantizedWeight",
    "export_form",
    "export_override",
    "export_scope",
    "register_export_form",
    "registered_export_forms",
]


@dataclass(frozen=True)
class QuantizedWeight:
    """One weight of a layer and the quantizer applied to it.

    Attributes:
        argument: the constructor argument naming the quantizer ("kernel_quantizer", ...).
        variable: the latent (full-precision) `keras.Variable`, as saved in `.keras` files.
        quantizer: the quantizer, or None when the argument is unset (the weight stays float).
        shape: the shape the quantizer sees (its last axis is the per-channel axis), e.g.
            ``(kh, kw, 1, C * M)`` for a depthwise kernel stored as ``(kh, kw, C, M)``.
    """

    argument: str
    variable: Any
    quantizer: Any
    shape: tuple[int, ...]

    def value(self):
        """The variable's value, reshaped to `shape` (what the quantizer is applied to)."""
        from keras import ops

        value = ops.convert_to_tensor(self.variable)
        return value if tuple(value.shape) == self.shape else ops.reshape(value, self.shape)

    @property
    def is_binary(self) -> bool:
        """True when the quantizer binarizes (precision 1)."""
        return self.quantizer is not None and getattr(self.quantizer, "precision", 32) == 1


@dataclass(frozen=True)
class BinaryConvForm:
    """A layer's inference form as one 2-D binary convolution (NHWC), which LCE runs as
    `LceBconv2d`:

        y = activation(conv2d(q_in(x), q_w(W), strides, dilation, groups, padding) + bias)

    Attributes:
        input_quantizer: binarizer of the input (its `binary_form` is folded).
        kernel: the quantized weight; ``kernel.shape`` must be 4-D (kh, kw, Cin/groups, Cout),
            or what `layout` reshapes to that.
        layout: how the layer's input becomes NHWC: "nhwc" (a 2-D conv), "nwc" (a 1-D conv:
            a height-1 2-D conv; the kernel (k, Cin, Cout) becomes (1, k, Cin, Cout)) or
            "dense" (every position a row of a 1x1 conv; the kernel (Cin, Cout) becomes
            (1, 1, Cin, Cout)).
        strides, dilation_rate: per spatial axis of the layer (1 or 2 values).
        groups: grouped convolution.
        padding: "valid", "same" (TensorFlow's SAME amounts), "causal" (explicit left padding
            of a 1-D conv) or "explicit" (the amounts `padding_amounts` gives, e.g. symmetric).
        pad_values: the value padded in: 0.0 (zeros) or 1.0 (the +1 level of `input_quantizer`).
        padding_amounts: ``input_shape -> [(before, after), ...]`` per spatial axis of the
            layer, for SAME / causal padding (None: no padding).
        bias: bias variable or None.
        activation: activation applied last, or None.
        replicate: RepBNN's channel replication (arXiv 2207.09049): the conv's output is tiled
            `replicate` times along the channel axis after the activation (1: none).
    """

    input_quantizer: Any
    kernel: QuantizedWeight
    layout: str = "nhwc"
    strides: Sequence[int] = (1, 1)
    dilation_rate: Sequence[int] = (1, 1)
    groups: int = 1
    padding: str = "valid"
    pad_values: float = 0.0
    padding_amounts: Callable[[Sequence], list] | None = None
    bias: Any = None
    activation: Callable | None = None
    replicate: int = 1

    def __post_init__(self):
        if isinstance(self.replicate, bool) or not isinstance(self.replicate, int) \
                or self.replicate < 1:
            raise ValueError(
                "Invalid value for argument `replicate` of BinaryConvForm. Expected a strictly "
                f"positive integer. Received replicate={self.replicate!r}.")
        if self.layout not in ("nhwc", "nwc", "dense"):
            raise ValueError(
                "Invalid value for argument `layout` of BinaryConvForm. Expected one of "
                f"'nhwc', 'nwc', 'dense'. Received layout={self.layout!r}.")
        if self.padding not in ("valid", "same", "causal", "explicit"):
            raise ValueError(
                "Invalid value for argument `padding` of BinaryConvForm. Expected one of "
                f"'valid', 'same', 'causal', 'explicit'. Received padding={self.padding!r}.")


@dataclass(frozen=True)
class ExportRefusal:
    """A binary layer that cannot become an LCE binary op: why, and what to change."""

    reason: str
    fix: str | None = None


_REGISTRY: dict[type, Callable[[Any], BinaryConvForm | ExportRefusal]] = {}


def register_export_form(layer_class: type, form: Callable | None = None):
    """Register ``form(layer) -> BinaryConvForm | ExportRefusal`` for `layer_class` (and its
    subclasses, unless they register their own). Usable as a decorator.

    `layer_class` must subclass `kbnn.layers.QuantizedLayerMixin`: that is what routes a call to
    the export function while the converter's `export_scope` is active.
    """
    from kbnn.layers.base import QuantizedLayerMixin

    if not (isinstance(layer_class, type) and issubclass(layer_class, QuantizedLayerMixin)):
        raise TypeError(
            "Invalid value for argument `layer_class` of register_export_form. Expected a "
            "subclass of kbnn.layers.QuantizedLayerMixin (its calls reach the export mode). "
            f"Received layer_class={layer_class!r}.")

    def decorator(fn):
        if not callable(fn):
            raise TypeError(
                "Invalid value for argument `form` of register_export_form. Expected a "
                f"callable `form(layer)`. Received form={fn!r}.")
        _REGISTRY[layer_class] = fn
        return fn

    return decorator if form is None else decorator(form)


def registered_export_forms() -> dict[type, Callable]:
    """A copy of the registry: layer class -> form function."""
    return dict(_REGISTRY)


def export_form(layer) -> BinaryConvForm | ExportRefusal:
    """The registered export form of `layer` (the closest class in its MRO), or an
    `ExportRefusal` when no class of its MRO registered one."""
    for cls in type(layer).__mro__:
        if cls in _REGISTRY:
            return _REGISTRY[cls](layer)
    return ExportRefusal(
        f"no export form is registered for {type(layer).__name__}",
        fix="register one with kbnn.layers.register_export_form (see docs/export.md)")
