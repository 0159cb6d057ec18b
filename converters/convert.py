"""`convert(model) -> bytes`: Keras 3 model -> SavedModel (`keras.export.ExportArchive`) -> LCE
flatbuffer.

The export graph is traced inside one `kbnn.export_mode.export_scope` that routes every kbnn
quantized layer to its export function (built from its registered export form, see `layers`;
a BatchNormalization that LCE could not fold after it is folded into it, see `bn_fold`), then
`larq_compute_engine.convert_saved_model` converts the SavedModel. The model is never modified,
so conversions can run concurrently. In strict mode the flatbuffer is then checked: every binary
kbnn layer must have become its LceBconv2d op(s), and (in every mode) it must hold no custom op
but LCE's, which LCE's interpreter could not resolve.
"""

from __future__ import annotations

import contextlib
import os
import re
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import keras
import tensorflow as tf

from kbnn import _keras_compat as compat
from kbnn.export_mode import export_scope

from .bn_fold import FoldResult, fold_batch_norms, identity_call
from .errors import ConversionError
from .graph_duplicates import merged_binary_ops
from .inspection import LCE_OPS, ModelReport, inspect
from .layers import LayerPlan, plan_model

__all__ = ["ConversionResult", "convert", "export_mode", "export_overrides"]

_TARGETS = ("arm", "xcore")


@dataclass
class ConversionResult:
    """What `convert(..., return_report=True)` returns.

    Attributes:
        flatbuffer: the TFLite model.
        report: `inspect(flatbuffer)`.
        plans: the export plan of each kbnn quantized layer.
        warnings: binary layers that did not become LCE binary ops and non-LCE custom ops
            (strict=False), int8 float ops kept; one line each.
    """

    flatbuffer: bytes
    report: ModelReport
    plans: list[LayerPlan]
    warnings: list[str] = field(default_factory=list)

    def __bytes__(self) -> bytes:
        return self.flatbuffer


def _fake_quant_layers(model) -> list:
    from kbnn.quantizers.fake_quant import FakeQuant

    return [layer for layer in compat.flatten_layers(model, include_self=True, recursive=True)
            if isinstance(layer, FakeQuant)]


def _frozen_kernel_fake_quants(plans: list[LayerPlan]) -> dict:
    """Kernel FakeQuants with their range frozen to constants (read from the kernel now).

    The converter quantizes a weight only when its fake-quant range is a constant; a range
    computed in the graph (mode="minmax") leaves the layer in float.
    """
    from kbnn.quantizers.fake_quant import FakeQuant

    calls = {}
    for plan in plans:
        for weight in plan.layer.quantized_weights().values():
            if isinstance(weight.quantizer, FakeQuant):
                lo, hi = (float(v) for v in weight.quantizer.quant_range(weight.value(),
                                                                         training=False))
                calls[weight.quantizer] = weight.quantizer.constant_range_call(lo, hi)
    return calls


def export_overrides(model, plans: list[LayerPlan], *, int8: bool = False,
                     folded: FoldResult | None = None) -> dict:
    """layer -> export function, for `kbnn.export_mode.export_scope`: every planned layer with
    an export function, every folded BatchNormalization (an identity) and every FakeQuant.

    With ``int8=False`` FakeQuant quantizers export as an exact float emulation (no fake-quant
    op, so the converter keeps float); with ``int8=True`` they stay fake-quant ops (kernel ranges
    frozen to constants) and the converter quantizes.
    """
    overrides: dict = {p.layer: p.export_call for p in plans if p.export_call is not None}
    if folded is not None:
        overrides.update({bn: identity_call for bn in folded.folded})
    if int8:
        overrides.update(_frozen_kernel_fake_quants(plans))
    else:
        overrides.update({fq: fq.float_emulation for fq in _fake_quant_layers(model)})
    return overrides


@contextlib.contextmanager
def export_mode(model, plans: list[LayerPlan], *, int8: bool = False,
                folded: FoldResult | None = None) -> Iterator[None]:
    """Within the block, calls of `model` compute its export form (see `export_overrides`);
    only the current thread/context is affected and nothing is written on the model."""
    with export_scope(export_overrides(model, plans, int8=int8, folded=folded)):
        yield


def _dtype(value, name: str):
    if value is None:
        return tf.float32
    try:
        dtype = tf.as_dtype(value)
    except TypeError:
        dtype = None
    if dtype not in (tf.float32, tf.int8):
        raise ValueError(f"Invalid value for argument `{name}` of convert. Expected tf.float32 "
                         f"or tf.int8. Received {name}={value!r}.")
    return dtype


def _check_arguments(model, target, int8, strict, return_report) -> None:
    """Keras-style errors for bad arguments, before anything is traced or written."""
    if isinstance(model, (str, bytes, os.PathLike)):
        raise TypeError(
            "Invalid value for argument `model` of convert. Expected a keras.Model; load a "
            "saved model first: `import kbnn; model = keras.models.load_model(path)` (the "
            "`kbnn convert` command takes paths). Received model={model!r}.")
    if not isinstance(model, keras.layers.Layer):
        raise TypeError(
            "Invalid value for argument `model` of convert. Expected a keras.Model. "
            f"Received model of type {type(model).__name__}.")
    if not model.built:
        if isinstance(model, keras.Sequential) and not model.layers:
            raise ValueError(
                "Invalid value for argument `model` of convert. Expected a model with layers. "
                f"Received the empty Sequential model {model.name!r}: add its layers, starting "
                "with keras.Input(shape), then train it.")
        raise ValueError(
            "Invalid value for argument `model` of convert. Expected a built model (with "
            f"known input shapes). Received the unbuilt model {model.name!r}: start it with "
            "keras.Input(shape), or call model.build(shape) or the model on data first.")
    if target not in _TARGETS:
        raise ValueError(f"Invalid value for argument `target` of convert. Expected one of "
                         f"{_TARGETS}. Received target={target!r}.")
    for name, value in (("int8", int8), ("strict", strict), ("return_report", return_report)):
        if not isinstance(value, bool):
            raise TypeError(f"Invalid value for argument `{name}` of convert. Expected a bool. "
                             f"Received {name}={value!r}.")


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _message(err: BaseException, limit: int = 600) -> str:
    """An exception's message on one line (TF op errors: their message without the node)."""
    text = getattr(err, "message", None) if isinstance(err, tf.errors.OpError) else None
    text = " ".join(_ANSI.sub("", str(text if text is not None else err)).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _serving_function(model, overrides: dict, in_graphs: list) -> Callable:
    """The function traced as the export graph: the model called inside the export scope. BNs
    folded in functional graphs are replaced by identities while the graph runs."""
    replaced = {id(bn) for bn in in_graphs}

    def substitute(layer):
        return identity_call if id(layer) in replaced else None

    def serve(*args):
        with export_scope(overrides):
            if replaced:
                return compat.call_functional(model, list(args), substitute)
            return model(*args)

    return serve


def _batch_one(spec):
    """An input spec with batch size 1 (LCE converts one-sample models)."""
    shape = tuple(spec.shape)
    shape = (1, *shape[1:]) if shape and shape[0] is None else shape
    return tf.TensorSpec(shape, spec.dtype, name=getattr(spec, "name", None))


@dataclass
class _FrozenGraph:
    """The serialised frozen export graph and what LCE needs to know about it."""

    graph_def: bytes
    input_names: list
    input_dtypes: list
    input_shapes: list
    output_names: list
    quantize: bool
    merged_binary_ops: int = 0


_FAKE_QUANT_OPS = ("FakeQuantWithMinMaxVars", "FakeQuantWithMinMaxVarsPerChannel",
                   "FakeQuantWithMinMaxArgs", "FakeQuantWithMinMaxArgsPerChannel")


def _has_fake_quant(graph_def) -> bool:
    nodes = list(graph_def.node)
    for function in graph_def.library.function:
        nodes.extend(function.node_def)
    return any(node.op in _FAKE_QUANT_OPS for node in nodes)


def _trace(model, overrides: dict, in_graphs: list) -> _FrozenGraph:
    """The export graph, traced in memory (no SavedModel is written: binary kernels are frozen
    once, as graph constants) and serialised; nothing of the traced function is kept, so its
    constants are freed before LCE converts."""
    signature = tf.nest.map_structure(_batch_one, compat.input_signature(model))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            function = tf.function(_serving_function(model, overrides, in_graphs),
                                   input_signature=signature, autograph=False)
            graph_def, inputs, outputs = compat.freeze_concrete_function(
                function.get_concrete_function())
    except Exception as err:  # a TF/Keras error while tracing the export graph
        original, where = compat.keras_call_error_origin(err)
        if isinstance(original, ConversionError):
            raise original.with_traceback(original.__traceback__) from None
        inside = f" in {where}" if where else ""
        raise ConversionError(
            f"tracing the export graph failed{inside}: "
            f"{type(original).__name__}: {_message(original)}",
            fix="check that every layer supports the TensorFlow backend and static shapes",
        ) from err
    frozen = _FrozenGraph(
        graph_def=b"", input_names=[compat.tensor_name(t) for t in inputs],
        input_dtypes=[t.dtype for t in inputs], input_shapes=[t.shape.as_list() for t in inputs],
        output_names=[compat.tensor_name(t) for t in outputs],
        quantize=_has_fake_quant(graph_def), merged_binary_ops=merged_binary_ops(graph_def))
    del function, inputs, outputs
    frozen.graph_def = graph_def.SerializeToString()
    return frozen


def _lce_convert(frozen: _FrozenGraph, *, target: str, input_type, output_type) -> bytes:
    from larq_compute_engine.mlir.python.util import modify_integer_quantized_model_io_type

    try:
        flatbuffer = compat.lce_convert_graph(
            frozen.graph_def, frozen.input_names, frozen.input_dtypes, frozen.input_shapes,
            frozen.output_names, quantize=frozen.quantize, target=target)
        if input_type != tf.float32 or output_type != tf.float32:
            flatbuffer = modify_integer_quantized_model_io_type(
                flatbuffer, inference_input_type=input_type, inference_output_type=output_type)
        return flatbuffer
    except Exception as err:
        raise ConversionError(
            f"the LCE converter failed: {type(err).__name__}: {str(err).strip()[:500]}",
            fix="see the converter message; int8 input/output needs FakeQuant quantizers",
        ) from err


def _check_binary_ops(plans: list[LayerPlan], report: ModelReport, strict: bool,
                      merged: int = 0) -> list[str]:
    """Compare the LceBconv2d count with the plans; return warning lines (or raise).

    `merged` binary ops of the export graph computed exactly what another one computes (same
    input, same ±1 kernel, same attributes), and the TFLite converter kept one LceBconv2d for
    each such group: they are not missing."""
    notes = []
    refused = [p for p in plans if p.binary and not p.lowerable]
    for plan in refused:
        if strict:
            raise plan.error()
        notes.append(f"{plan.name}: kept as float ops: {plan.reason}. Fix: {plan.fix}")
    expected = sum(p.expected_bconvs for p in plans if p.lowerable) - merged
    if report.n_binary_convs < expected:
        lowerable = [p for p in plans if p.lowerable]
        missing = [p for p in lowerable
                   if _bconvs_of(p.name, report) < p.expected_bconvs] or lowerable
        names = ", ".join(p.name for p in missing)
        err = ConversionError(
            f"the flatbuffer has {report.n_binary_convs} LceBconv2d ops where the binary layers "
            f"should give {expected}"
            + (f" ({merged} identical binary op(s) merged)" if merged else "")
            + f"; LCE left these as float ops: {names}",
            layer=missing[0].name if len(missing) == 1 else None,
            fix="see the LCE converter log (grouped convs need a multiple of 32 channels per "
                "group; the sign must feed the conv directly)",
        )
        if strict:
            raise err
        notes.append(str(err))
    return notes


def _check_custom_ops(report: ModelReport, strict: bool) -> list[str]:
    """Custom ops other than LCE's cannot run in LCE's interpreter ("unresolved custom op"):
    raise in strict mode, else return the warning line."""
    foreign = report.foreign_custom_ops
    if not foreign:
        return []
    ops = ", ".join(f"{name} (output {outs[0]!r})" if outs and outs[0] else name
                    for name, outs in sorted(foreign.items()))
    err = ConversionError(
        f"the flatbuffer contains custom op(s) that are not LCE ops ({', '.join(LCE_OPS)}), "
        f"which LCE's interpreter cannot run (unresolved custom op): {ops}",
        fix="convert a float32 copy of the model (a non-float32 dtype policy such as "
            "mixed_float16 leaves ops TFLite cannot lower: rebuild the model after "
            "keras.config.set_dtype_policy('float32') and copy the weights), or replace the "
            "layer that produces the op",
    )
    if strict:
        raise err
    return [str(err)]


def _bconvs_of(layer_name: str, report: ModelReport) -> int:
    """LceBconv2d ops whose tensor names carry the layer's name scope (``name`` or
    ``name_<n>`` as a path segment); best effort, since TFLite may truncate long names."""
    pattern = re.compile(rf"^{re.escape(layer_name)}(_\d+)?$")
    count = 0
    for bconv in report.bconvs:
        segments = [seg for name in bconv["tensor_names"] for seg in re.split(r"[/;]", name)]
        count += any(pattern.match(seg) for seg in segments)
    return count


def convert(
    model,
    *,
    target: str = "arm",
    int8: bool = False,
    strict: bool = True,
    inference_input_type=None,
    inference_output_type=None,
    return_report: bool = False,
):
    """Convert a Keras 3 kbnn model to a TFLite flatbuffer with LCE bitpacked binary ops.

    Args:
        model: a built Keras model (Sequential, functional or subclassed; kbnn layers may be
            nested inside block layers).
        target: "arm" (default) or "xcore".
        int8: keep FakeQuant quantizers as fake-quant ops so that the converter emits int8
            ops (QAT); with False they export as an exact float emulation.
        strict: raise `ConversionError` if a binary kbnn layer does not become LceBconv2d, or
            if the flatbuffer holds a custom op that is not an LCE op (it could not run); with
            False such layers are converted as float ops and both are listed as warnings.
        inference_input_type, inference_output_type: tf.float32 (default) or tf.int8 (needs
            int8=True).
        return_report: return a `ConversionResult` (flatbuffer, report, plans, warnings)
            instead of the bytes.

    Returns:
        The flatbuffer bytes (or a `ConversionResult`).

    Raises:
        TypeError, ValueError: bad arguments (Keras-style message naming the argument).
        ConversionError: a model or layer that cannot be converted as asked, naming the layer,
            the reason and the fix.
    """
    _check_arguments(model, target, int8, strict, return_report)
    input_type = _dtype(inference_input_type, "inference_input_type")
    output_type = _dtype(inference_output_type, "inference_output_type")
    if tf.int8 in (input_type, output_type) and not int8:
        raise ValueError(
            "Invalid value for argument `int8` of convert. int8 model input/output "
            "(inference_input_type/inference_output_type=tf.int8) needs int8=True. "
            f"Received int8={int8!r}.")
    if int8 and not _fake_quant_layers(model):
        raise ConversionError(
            "int8=True needs FakeQuant quantizers in the model (quantization-aware training)",
            fix="use kbnn.quantizers.FakeQuant as input/kernel quantizer of the float layers",
        )
    plans = plan_model(model, target)
    if strict:
        for plan in plans:
            if plan.binary and not plan.lowerable:
                raise plan.error()
    folded = fold_batch_norms(model, plans)
    overrides = export_overrides(model, plans, int8=int8, folded=folded)
    frozen = _trace(model, overrides, folded.in_graphs)
    del overrides  # the frozen graph holds what the export functions computed
    for plan in plans:  # their frozen kernels are in the graph now
        plan.export_call = plan.fold_affine = None
    flatbuffer = _lce_convert(frozen, target=target, input_type=input_type,
                              output_type=output_type)
    merged = frozen.merged_binary_ops
    del frozen
    report = inspect(flatbuffer)
    notes = folded.warnings + _check_binary_ops(plans, report, strict, merged)
    notes += _check_custom_ops(report, strict)
    if int8 and report.float_compute_ops:
        notes.append(
            f"int8: {len(report.float_compute_ops)} float op(s) kept "
            f"({', '.join(report.float_compute_ops)}): a full-precision conv/dense needs FakeQuant "
            "on its input and kernel and a FakeQuant directly after it (a BatchNormalization in "
            "between keeps it float)")
    for note in notes:
        warnings.warn(f"kbnn.converters: {note}", stacklevel=2)
    if return_report:
        return ConversionResult(flatbuffer, report, plans, notes)
    return flatbuffer
