"""`kbnn.summary` / `kbnn.profile`: parameters by precision, binary and float MACs, model size.

Counting convention: the one of Bi-Real Net (Liu et al., arXiv 1808.00278) and ReActNet (Liu et
al., arXiv 2003.03488), described in docs/methods.md ("Counting costs"), per sample (the model is
run once on a batch of 1):

* **BOPs** = binary multiply-accumulates: the MACs of conv/dense layers whose input AND kernel are
  binarized (input quantizer and kernel quantizer of precision 1). A conv does
  ``prod(kernel.shape) * H_out * W_out`` MACs, i.e. ``k*k*C_in*C_out*H_out*W_out / groups``; a
  depthwise conv ``k*k*C*M*H_out*W_out``; a transposed conv ``prod(kernel.shape) * H_in * W_in``;
  a dense layer ``in*out`` (times any extra leading axes of its input).
* **FLOPs** = the MACs of every other conv/dense/depthwise/separable layer (Keras float layers and
  kbnn layers that are not binary: stem, real 1x1 shortcuts, classifier, layers with only a kernel
  quantizer, multi-bit layers). BatchNorm, activations, bias, pooling and elementwise ops are not
  counted; layers without weights count 0 MACs.
* A separable conv counts its depthwise part (binary when input and depthwise kernel are 1-bit)
  plus its pointwise part. The pointwise part reads the depthwise output, a sum of k*k products
  that is never binarized inside the layer, so it is always counted as FLOPs.
* **OPs** = BOPs / 64 + FLOPs.
* ``binary_params`` = elements of kernels quantized by a 1-bit kernel quantizer (whatever the
  input precision); ``float_params`` = every other weight of the model, trainable or not, so
  ``binary_params + float_params == model.count_params()``.
* ``size_bytes`` = (kernel elements x their kernel quantizer's precision in bits, i.e. 1 bit for
  binary kernels and k bits for k-bit kernel quantizers + every other weight x 32 bits) / 8.
  ``float32_size_bytes`` = ``model.count_params() * 4``.

Nested layers (custom blocks holding layers as attributes, nested models) are walked down to their
leaves; the shapes each leaf sees come from one forward pass on zeros, observed through the
TensorFlow ops each layer call runs (`kbnn._keras_compat.recording_ops`): no layer is patched or
written to. The kernels of kbnn quantized layers and their quantizers are read from
`QuantizedLayerMixin.quantized_weights()`. A leaf holding weights that are not
per-element/per-channel parameters (broadcastable to its output) and that is not a known conv/dense
layer gets unknown ("?") MACs and a warning; its MACs are left out of the totals.
"""

from __future__ import annotations

import math
import numbers
import os
import warnings
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np

from kbnn._keras_compat import (
    flatten_layers,
    kernel_variable,
    model_input_structure,
    recording_ops,
)
from kbnn.layers.base import QuantizedLayerMixin
from kbnn.quantizers.base import Quantizer

__all__ = ["LayerProfile", "ModelProfile", "profile", "summary"]

FLOAT_BITS = 32

_SEPARABLE = (keras.layers.SeparableConv1D, keras.layers.SeparableConv2D)
_DEPTHWISE = (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D)
_TRANSPOSE = (keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose,
              keras.layers.Conv3DTranspose)
_CONV = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)
_DENSE = (keras.layers.Dense,)
_MAC_LAYERS = _SEPARABLE + _DEPTHWISE + _TRANSPOSE + _CONV + _DENSE
# Weighted layers known to do no multiply-accumulates under the counting convention.
_NO_MAC_LAYERS = (
    keras.layers.BatchNormalization, keras.layers.LayerNormalization,
    keras.layers.GroupNormalization, keras.layers.PReLU, keras.layers.Embedding,
    keras.layers.Normalization, Quantizer,
)


@dataclass(frozen=True)
class LayerProfile:
    """Counts of one leaf layer (or of the weights a container owns directly).

    ``binary_macs``/``float_macs`` are None when unknown (printed "?"); ``input_bits`` and
    ``kernel_bits`` are None/() for layers that are not conv/dense.
    """

    name: str
    class_name: str
    input_bits: int | None
    kernel_bits: tuple[int, ...]
    input_shape: Any
    output_shape: Any
    params: dict[int, int]  # precision in bits -> number of weight elements
    binary_macs: int | None
    float_macs: int | None
    calls: int = 0

    @property
    def binary_params(self) -> int:
        return self.params.get(1, 0)

    @property
    def float_params(self) -> int:
        return sum(n for bits, n in self.params.items() if bits != 1)

    @property
    def memory_bytes(self) -> float:
        return sum(bits * n for bits, n in self.params.items()) / 8


@dataclass(frozen=True)
class ModelProfile:
    """Totals of a model under the Bi-Real Net / ReActNet counting convention (see the module
    docstring and docs/methods.md)."""

    bops: int
    flops: int
    ops: float
    binary_params: int
    float_params: int
    size_bytes: float
    float32_size_bytes: int
    binary_mac_fraction: float
    compression_ratio: float
    layers: list[LayerProfile] = field(default_factory=list)
    unknown_mac_layers: tuple[str, ...] = ()
    name: str = ""

    @property
    def total_params(self) -> int:
        return self.binary_params + self.float_params

    def to_lines(self, wide: bool = False) -> list[str]:
        """The table and totals printed by `kbnn.summary`, one string per line (within 100
        columns unless `wide`)."""
        return _format(self, wide=wide)


def profile(model: keras.Model, input_shape=None) -> ModelProfile:
    """Count parameters by precision, BOPs, FLOPs, OPs and sizes of `model` (batch 1).

    Args:
        model: a Keras model (functional, sequential or subclassed; nested blocks and models
            are walked).
        input_shape: shape of one sample (no batch axis), or a list/dict of them for several
            inputs. Only needed when the model's input shape is not static or not known.

    Returns:
        A `ModelProfile`.

    Raises:
        TypeError: `model` is not a Keras model (e.g. a path: load it first).
        ValueError: `input_shape` is not a shape, or does not fit the model's inputs.
    """
    _check_model(model, "kbnn.profile")
    records = _record_calls(model, input_shape)
    nodes = list(_walk(model))

    seen: set[int] = set()
    rows: list[tuple[float, int, LayerProfile]] = []
    unknown: list[str] = []
    previous_order = -math.inf
    for index, (name, layer, own_only) in enumerate(nodes):
        weights = _own_weights(layer) if own_only else layer.weights
        weights = [w for w in weights if id(w) not in seen]
        seen.update(id(w) for w in weights)
        calls = records.get(id(layer), [])
        if calls:
            order = previous_order = calls[0][0]
        elif not layer.weights:
            # A call that runs no op (Dropout or Identity at inference) is not seen: keep the
            # layer where the walk puts it, after the layer before it.
            order = previous_order
        else:
            order = math.inf  # never called
        if own_only and not weights:
            continue
        row = _profile_layer(name, layer, weights, calls, own_only)
        if row.binary_macs is None:
            unknown.append(name)
        rows.append((order, index, row))
    rows.sort(key=lambda r: (r[0], r[1]))
    layers = [r[2] for r in rows]

    total = sum(_size(w) for w in model.weights)
    binary_params = sum(r.binary_params for r in layers)
    bits = sum(b * n for r in layers for b, n in r.params.items())
    bits += FLOAT_BITS * (total - sum(sum(r.params.values()) for r in layers))  # not walked
    bops = sum(r.binary_macs or 0 for r in layers)
    flops = sum(r.float_macs or 0 for r in layers)
    size_bytes = bits / 8
    if unknown:
        warnings.warn(
            "kbnn.profile: unknown MACs (left out of the totals) for layers "
            f"{', '.join(unknown)}: they hold weights but are not conv/dense layers kbnn knows.",
            stacklevel=2,
        )
    return ModelProfile(
        bops=bops,
        flops=flops,
        ops=bops / 64 + flops,
        binary_params=binary_params,
        float_params=total - binary_params,
        size_bytes=size_bytes,
        float32_size_bytes=total * 4,
        binary_mac_fraction=bops / (bops + flops) if bops + flops else 0.0,
        compression_ratio=total * 4 / size_bytes if size_bytes else 1.0,
        layers=layers,
        unknown_mac_layers=tuple(unknown),
        name=model.name,
    )


def summary(model: keras.Model, print_fn: Callable[[str], Any] | None = None,
            input_shape=None, *, wide: bool = False) -> None:
    """Print a per-layer table of precisions, shapes, parameters and MACs, then the totals
    (parameters, size, compression ratio, BOPs, FLOPs, OPs, binary MAC fraction).

    Args:
        model: the model to profile (see `profile`); a Keras model, not a path (load a saved
            model first with `keras.models.load_model` after `import kbnn`).
        print_fn: called once per line; defaults to `print`.
        input_shape: see `profile`.
        wide: the full table on one line per layer (input and kernel bits apart, memory per
            layer); by default the table fits 100 columns, long layer names wrapping onto a
            second line.
    """
    _check_model(model, "kbnn.summary")
    if not isinstance(wide, bool):
        raise TypeError("Invalid value for argument `wide` of kbnn.summary. Expected a bool. "
                        f"Received wide={wide!r}.")
    print_fn = print if print_fn is None else print_fn
    for line in profile(model, input_shape=input_shape).to_lines(wide=wide):
        print_fn(line)


def _check_model(model, owner: str) -> None:
    if isinstance(model, (str, bytes, os.PathLike)):
        raise TypeError(
            f"Invalid value for argument `model` of {owner}. Expected a keras.Model; load a "
            "saved model first: `import kbnn; model = keras.models.load_model(path)` (the "
            f"`kbnn summary` command takes paths). Received model={model!r}.")
    if not isinstance(model, keras.layers.Layer):
        raise TypeError(f"Invalid value for argument `model` of {owner}. Expected a "
                        f"keras.Model. Received model of type {type(model).__name__}.")


# ---------------------------------------------------------------------------------- walking


def _sublayers(layer) -> list:
    return [s for s in flatten_layers(layer, include_self=False, recursive=False)
            if not isinstance(s, keras.layers.InputLayer)]


def _walk(model) -> Iterator[tuple[str, keras.layers.Layer, bool]]:
    """(qualified name, layer, own_only) for the model (own weights only), every container
    (own weights only) and every leaf layer, each layer once."""
    visited: set[int] = set()

    def visit(layer, name):
        if id(layer) in visited:
            return
        visited.add(id(layer))
        subs = [] if isinstance(layer, _MAC_LAYERS) else _sublayers(layer)
        if not subs and layer is not model:
            yield name, layer, False
            return
        yield name, layer, True
        prefix = "" if layer is model else name + "/"
        for sub in subs:
            yield from visit(sub, prefix + sub.name)

    yield from visit(model, model.name)


def _own_weights(layer) -> list:
    inner = {id(w) for sub in _sublayers(layer) for w in sub.weights}
    return [w for w in layer.weights if id(w) not in inner]


def _size(weight) -> int:
    return int(np.prod(weight.shape, dtype=np.int64))


# --------------------------------------------------------------------------------- recording


def _input_structure(model, input_shape):
    """Zeros shaped like one sample of each model input, batch axis 1."""

    def zeros(shape, dtype="float32"):
        shape = (1,) + tuple(shape)
        if any(d is None for d in shape):
            raise ValueError(
                "kbnn.profile needs static input dimensions to count MACs. Pass "
                f"`input_shape` (one sample, no batch axis). Received input shape {shape}."
            )
        return np.zeros(shape, dtype=dtype)

    struct = model_input_structure(model)
    if input_shape is not None:
        shapes = _checked_input_shape(input_shape)
        _check_fits(model, struct, shapes, input_shape)
        if isinstance(shapes, tuple):
            return zeros(shapes)
        if isinstance(shapes, dict):
            return {k: zeros(v) for k, v in shapes.items()}
        return [zeros(v) for v in shapes]

    if struct is None:
        try:
            inputs = model.inputs
        except AttributeError:
            inputs = None
        if inputs:
            struct = inputs[0] if len(inputs) == 1 else list(inputs)
    if struct is not None:
        return keras.tree.map_structure(
            lambda t: zeros(tuple(t.shape)[1:], keras.backend.standardize_dtype(t.dtype)), struct)
    build_config = model.get_build_config() if model.built else None
    shape = (build_config or {}).get("input_shape")
    if isinstance(shape, (tuple, list)) and _is_shape(tuple(shape)):
        return zeros(tuple(shape)[1:])
    raise ValueError(
        f"Invalid value for argument `model` of kbnn.profile: the input shape of model "
        f"'{model.name}' is unknown. Expected a model with Input layers or a built model, "
        "or pass `input_shape` (one sample, no batch axis)."
    )


def _input_shape_error(input_shape, expected: str) -> ValueError:
    return ValueError(f"Invalid value for argument `input_shape` of kbnn.profile. Expected "
                      f"{expected}. Received input_shape={input_shape!r}.")


def _is_dim(d) -> bool:
    return isinstance(d, numbers.Integral) and not isinstance(d, bool) and d >= 1


def _checked_input_shape(input_shape):
    """`input_shape` as a tuple of ints, or a list/dict of them (several inputs)."""
    expected = ("the shape of one sample (no batch axis) as a tuple of positive integers, "
                "e.g. (32, 32, 3), or a list/dict of such shapes for a multi-input model")
    if isinstance(input_shape, (tuple, list)) and input_shape and all(
            isinstance(d, numbers.Number) for d in input_shape):
        if not all(_is_dim(d) for d in input_shape):
            raise _input_shape_error(input_shape, expected)
        return tuple(int(d) for d in input_shape)
    if isinstance(input_shape, dict) and input_shape:
        items = {k: _checked_input_shape(v) for k, v in input_shape.items()}
        if not all(isinstance(v, tuple) for v in items.values()):
            raise _input_shape_error(input_shape, expected)
        return items
    if isinstance(input_shape, (tuple, list)) and input_shape and all(
            isinstance(v, (tuple, list)) for v in input_shape):
        shapes = [_checked_input_shape(v) for v in input_shape]
        if not all(isinstance(v, tuple) for v in shapes):
            raise _input_shape_error(input_shape, expected)
        return shapes
    raise _input_shape_error(input_shape, expected)


def _check_fits(model, struct, shapes, input_shape) -> None:
    """Raise a ValueError naming `input_shape` when it does not fit the model's inputs (when
    they are known: functional and sequential models with an Input)."""
    if struct is None:
        try:
            inputs = model.inputs
        except AttributeError:
            inputs = None
        struct = (inputs[0] if len(inputs) == 1 else list(inputs)) if inputs else None
    if struct is None:
        return
    expected = keras.tree.map_structure(lambda t: tuple(t.shape)[1:], struct)
    if isinstance(expected, list) and len(expected) == 1:
        expected = expected[0]

    def text(structure) -> str:
        return str(structure).replace("None", "?")

    def count_error(n):
        return _input_shape_error(
            input_shape, f"{n} shape(s), one per input of model {model.name!r} (input shapes "
                         f"{text(expected)}, one sample, no batch axis)")

    if isinstance(expected, tuple):
        if isinstance(shapes, list) and len(shapes) == 1:
            shapes = shapes[0]
        if not isinstance(shapes, tuple):
            raise count_error(1)
        pairs = [(shapes, expected)]
    elif isinstance(expected, dict) and isinstance(shapes, dict):
        if set(shapes) != set(expected):
            raise _input_shape_error(
                input_shape, f"one shape per input name {sorted(expected)} of model "
                             f"{model.name!r}")
        pairs = [(shapes[k], expected[k]) for k in expected]
    else:
        wanted = list(expected.values()) if isinstance(expected, dict) else list(expected)
        if isinstance(shapes, tuple):
            raise count_error(len(wanted))
        given = list(shapes.values()) if isinstance(shapes, dict) else list(shapes)
        if len(given) != len(wanted):
            raise count_error(len(wanted))
        pairs = list(zip(given, wanted))
    for got, want in pairs:
        if not isinstance(want, tuple):
            continue  # a nested input structure: the forward pass checks it
        if len(got) != len(want) or any(w is not None and w != g for g, w in zip(got, want)):
            raise _input_shape_error(
                input_shape, f"a shape that fits the input shape {text(want)} of model "
                             f"{model.name!r} (one sample, no batch axis; ? is any size)")


def _is_shape(s) -> bool:
    return isinstance(s, tuple) and all(d is None or isinstance(d, int) for d in s)


def _tensor_shape(t) -> tuple | None:
    shape = getattr(t, "shape", None)
    if shape is None or getattr(shape, "rank", 0) is None:
        return None
    return tuple(int(d) if d is not None else None for d in shape)


def _is_resource(t) -> bool:
    """Variable handles (what ops such as ReadVariableOp take) are not activations."""
    return getattr(getattr(t, "dtype", None), "name", None) in ("resource", "variant")


class _CallRecorder:
    """Turns the ops `recording_ops` reports into one record per layer call.

    Each op comes with the open layer calls, outermost first, as (layer, token) pairs; all ops of
    one call share its token. For every call the recorder keeps:

    * its order: when its first op ran (an outer call before the calls it makes);
    * its input: the first tensor one of its ops reads that was not produced inside the call and
      is an activation: a model input or a tensor produced by an earlier op (this leaves out
      variable handles and constants made on the fly, e.g. ``x * 0.5``);
    * its output: the last tensor produced inside the call and read outside it (by an op of
      the next layer, or returned by the model), else the first output of its last op. (The
      last op alone can be an activity regularizer's loss.)

    Tensors are known by id while alive only (a weak reference drops the entry when a tensor is
    freed, so a reused id is never mistaken for an earlier tensor); tokens are held strongly
    until the recorder is dropped.
    """

    def __init__(self, model_inputs):
        self._model_inputs = {id(t) for t in model_inputs}
        self._keep = list(model_inputs)
        self._producers: dict[int, tuple[int, frozenset, Any]] = {}  # id -> (op, tokens, ref)
        self._calls: dict[int, dict] = {}  # id(token) -> record
        self._tokens: list = []  # strong references, so token ids stay unique
        self._ops = 0

    def __call__(self, calls, inputs, outputs):
        index = self._ops
        self._ops += 1
        open_ids = []
        for layer, token in calls:
            key = id(token)
            if key not in self._calls:
                self._tokens.append(token)
                self._calls[key] = {"layer": layer, "order": len(self._calls), "input": None,
                                    "fallback_input": None, "exported": None, "last": None}
            open_ids.append(key)
        open_set = frozenset(open_ids)

        for t in inputs or ():
            if _is_resource(t):
                continue
            producer = self._producers.get(id(t))
            inside = producer[1] if producer is not None else frozenset()
            known = producer is not None or id(t) in self._model_inputs
            for key in open_ids:
                record = self._calls[key]
                if record["input"] is not None or key in inside:
                    continue
                if known:
                    record["input"] = _tensor_shape(t)
                elif record["fallback_input"] is None:
                    record["fallback_input"] = _tensor_shape(t)
            if producer is not None:
                for key in inside - open_set:  # read outside the call that produced it
                    record = self._calls[key]
                    if record["exported"] is None or record["exported"][0] <= producer[0]:
                        record["exported"] = (producer[0], _tensor_shape(t))

        outputs = [t for t in (outputs or ()) if not _is_resource(t)]
        if outputs:
            shape = _tensor_shape(outputs[0])
            for key in open_ids:
                self._calls[key]["last"] = shape
        for t in outputs:
            self._remember(t, index, open_set)

    def model_outputs(self, outputs):
        """The tensors the model returned are read outside every call that produced them."""
        for t in keras.tree.flatten(outputs):
            producer = self._producers.get(id(t))
            if producer is None:
                continue
            for key in producer[1]:
                record = self._calls[key]
                if record["exported"] is None or record["exported"][0] <= producer[0]:
                    record["exported"] = (producer[0], _tensor_shape(t))

    def _remember(self, t, index, tokens):
        key = id(t)
        producers = self._producers

        def forget(_, key=key):
            entry = producers.get(key)
            if entry is not None and entry[2] is ref:
                del producers[key]

        try:
            ref = weakref.ref(t, forget)
        except TypeError:  # not weak-referenceable: keep it alive for the whole run
            self._keep.append(t)
            ref = None
        producers[key] = (index, tokens, ref)

    def records(self) -> dict[int, list]:
        """id(layer) -> [(call order, input shape, output shape), ...] in call order."""
        records: dict[int, list] = {}
        for record in sorted(self._calls.values(), key=lambda r: r["order"]):
            input_shape = record["input"] if record["input"] is not None \
                else record["fallback_input"]
            output_shape = record["exported"][1] if record["exported"] is not None \
                else record["last"]
            records.setdefault(id(record["layer"]), []).append(
                (record["order"], input_shape, output_shape))
        return records


def _record_calls(model, input_shape) -> dict[int, list]:
    """Run `model` once on zeros; for each layer, a list of (call order, input shape, output
    shape) of every call it received, from the TensorFlow ops of each call (`_CallRecorder`).
    Nothing is set on any layer."""
    x = _input_structure(model, input_shape)
    if not all(layer.built for layer in flatten_layers(model, include_self=True, recursive=True)):
        # Build first: building creates variables (ops of their own) and, for a subclassed
        # model, runs `call` symbolically; neither must be recorded as a call.
        try:
            model(x, training=False)
        except Exception as error:
            if input_shape is None:
                raise
            raise _forward_error(model, input_shape, error) from error
    x = keras.tree.map_structure(keras.ops.convert_to_tensor, x)
    recorder = _CallRecorder(keras.tree.flatten(x))
    with recording_ops(recorder):
        try:
            outputs = model(x, training=False)
        except Exception as error:  # report what can be counted
            if input_shape is not None:
                raise _forward_error(model, input_shape, error) from error
            warnings.warn(f"kbnn.profile: the forward pass on zeros failed "
                          f"({_error_line(error)}); layers without recorded shapes get "
                          "unknown MACs.", stacklevel=3)
        else:
            recorder.model_outputs(outputs)
    return recorder.records()


def _error_line(error: BaseException, limit: int = 200) -> str:
    """`TypeName: first line` of an exception's message (Keras adds the call's arguments,
    arrays included, on later lines)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    lines = [line for line in lines if not line.startswith("Exception encountered when")]
    text = (lines[0] if lines else "").replace("\x1b[1m", "").replace("\x1b[0m", "")
    text = text if len(text) <= limit else text[: limit - 3] + "..."
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _forward_error(model, input_shape, error: BaseException) -> ValueError:
    return _input_shape_error(
        input_shape, f"a shape model {model.name!r} can run on (one sample, no batch axis); "
                     f"the forward pass on zeros of that shape failed with {_error_line(error)}")


# ---------------------------------------------------------------------------------- counting


def _precision(quantizer) -> int:
    return FLOAT_BITS if quantizer is None else int(getattr(quantizer, "precision", FLOAT_BITS))


_SLOT_PARTS = {"kernel_quantizer": "kernel", "depthwise_quantizer": "depthwise",
               "pointwise_quantizer": "pointwise"}


def _kernel_slots(layer) -> list[tuple[str, Any, Any]]:
    """(part, kernel variable, kernel quantizer) of a conv/dense layer: for kbnn quantized
    layers, from the public `quantized_weights()` map; for Keras layers, their kernels (float)."""
    if isinstance(layer, _SEPARABLE):
        arguments = ("depthwise_quantizer", "pointwise_quantizer")
    elif isinstance(layer, _DEPTHWISE):
        arguments = ("depthwise_quantizer",)
    else:
        arguments = ("kernel_quantizer",)
    if isinstance(layer, QuantizedLayerMixin):
        if layer.built:
            weights = layer.quantized_weights()
            return [(_SLOT_PARTS.get(w.argument, w.argument), w.variable, w.quantizer)
                    for w in weights.values()]
        # Never called, so never built: no kernel yet, the quantizers give the precisions.
        return [(_SLOT_PARTS[a], None, getattr(layer, a, None)) for a in arguments]
    if not layer.built:
        return [(_SLOT_PARTS[a], None, None) for a in arguments]
    if isinstance(layer, _SEPARABLE):
        return [("depthwise", layer.depthwise_kernel, None),
                ("pointwise", layer.pointwise_kernel, None)]
    if isinstance(layer, _DEPTHWISE):
        return [("depthwise", kernel_variable(layer), None)]
    return [("kernel", kernel_variable(layer), None)]


def _positions(layer, shape) -> int:
    """Number of output (or input) positions: every axis but the channel axis."""
    channels_first = getattr(layer, "data_format", "channels_last") == "channels_first"
    axis = 1 if channels_first and len(shape) > 2 else len(shape) - 1
    return int(np.prod([d for i, d in enumerate(shape) if i != axis], dtype=np.int64))


def _mac_layer_counts(layer, calls) -> tuple[int, int, int | None, tuple[int, ...]]:
    """(binary MACs, float MACs, input bits, kernel bits) summed over calls; MACs None when
    the layer was never called."""
    input_bits = _precision(getattr(layer, "input_quantizer", None))
    slots = _kernel_slots(layer)
    kernel_bits = tuple(_precision(q) for _, _, q in slots)
    if not calls or not all(_is_shape(c[1]) and _is_shape(c[2]) for c in calls):
        return None, None, input_bits, kernel_bits
    binary = real = 0
    for _, in_shape, out_shape in calls:
        positions = _positions(layer, in_shape if isinstance(layer, _TRANSPOSE) else out_shape)
        for (part, kernel, _), bits in zip(slots, kernel_bits):
            macs = _size(kernel) * positions
            if input_bits == 1 and bits == 1 and part != "pointwise":
                binary += macs
            else:
                real += macs
    return binary, real, input_bits, kernel_bits


def _is_elementwise(weights, calls) -> bool:
    """True when every weight broadcasts to the layer's output (per-element/channel params)."""
    if not calls or not _is_shape(calls[0][2]):
        return False
    out = calls[0][2][1:]
    for w in weights:
        try:
            if np.broadcast_shapes(tuple(w.shape), out) != out:
                return False
        except ValueError:
            return False
    return True


def _profile_layer(name, layer, weights, calls, own_only) -> LayerProfile:
    bits_of = {}
    if not own_only and isinstance(layer, _MAC_LAYERS):
        for _, kernel, quantizer in _kernel_slots(layer):
            if kernel is not None:
                bits_of[id(kernel)] = _precision(quantizer)
    params: dict[int, int] = {}
    for w in weights:
        bits = bits_of.get(id(w), FLOAT_BITS)
        params[bits] = params.get(bits, 0) + _size(w)

    input_bits, kernel_bits = None, ()
    if own_only:
        known = not weights or _is_elementwise(weights, calls)
        binary = real = 0 if known else None
    elif isinstance(layer, _MAC_LAYERS):
        binary, real, input_bits, kernel_bits = _mac_layer_counts(layer, calls)
    elif not layer.weights or isinstance(layer, _NO_MAC_LAYERS) or _is_elementwise(
            layer.weights, calls):
        binary = real = 0
    else:
        binary = real = None
    first = calls[0] if calls else (None, None, None)
    return LayerProfile(
        name=name, class_name=type(layer).__name__, input_bits=input_bits,
        kernel_bits=kernel_bits, input_shape=first[1], output_shape=first[2], params=params,
        binary_macs=binary, float_macs=real, calls=len(calls),
    )


# -------------------------------------------------------------------------------- formatting


def _human(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.3f} {unit}"
    return f"{n:g}"


def _number(n: float) -> str:
    """An integer with thousands separators; a fraction (1-bit weights in bytes, BOPs/64) with
    the decimals it has (at most 6: sizes are multiples of 1/8, BOPs/64 of 1/64)."""
    if float(n).is_integer():
        return f"{int(n):,}"
    return f"{n:,.6f}".rstrip("0")


def _bytes(n: float) -> str:
    for unit, scale in (("MiB", 2 ** 20), ("KiB", 2 ** 10)):
        if n >= scale:
            return f"{_number(n)} B ({n / scale:.2f} {unit})"
    return f"{_number(n)} B"


def _count(n: int | None) -> str:
    return "?" if n is None else f"{n:,}"


TABLE_WIDTH = 100  # columns of the default `kbnn.summary` table


def _bits(r: LayerProfile) -> str:
    if r.input_bits is None:
        return "-"
    return "/".join(str(b) for b in (r.input_bits, *r.kernel_bits))


def _wrap_name(text: str, width: int) -> list[str]:
    """`name (Class)` in lines of at most `width` characters: the class on a line of its own
    (indented by 2) when both do not fit, a name longer than `width` cut into pieces."""
    if len(text) <= width:
        return [text]
    name, _, rest = text.partition(" (")
    pieces = [name[i:i + width] for i in range(0, len(name), width)] or [""]
    tail, step = ("(" + rest if rest else ""), max(width - 2, 1)
    while tail:
        pieces.append("  " + tail[:step])
        tail = tail[step:]
    return pieces


def _format(p: ModelProfile, wide: bool = False) -> list[str]:
    precisions = sorted({b for r in p.layers for b in r.params} | {1, FLOAT_BITS})
    names = [f"{r.name} ({r.class_name})" + (f" x{r.calls} calls" if r.calls > 1 else "")
             for r in p.layers]
    if wide:
        header = (["Layer (type)", "In bits", "Kernel bits", "Output shape (batch 1)"]
                  + [f"Params {b}b" for b in precisions]
                  + ["Memory (B)", "Binary MACs", "Float MACs"])
        body = [[name,
                 "-" if r.input_bits is None else str(r.input_bits),
                 "/".join(str(b) for b in r.kernel_bits) or "-",
                 "-" if r.output_shape is None else str(r.output_shape)]
                + [f"{r.params.get(b, 0):,}" for b in precisions]
                + [_number(r.memory_bytes), _count(r.binary_macs), _count(r.float_macs)]
                for name, r in zip(names, p.layers)]
        left = 4
    else:
        header = (["Layer (type)", "Bits in/w", "Output shape"]
                  + [f"Params {b}b" for b in precisions] + ["Binary MACs", "Float MACs"])
        body = [[name, _bits(r), "-" if r.output_shape is None else str(r.output_shape)]
                + [f"{r.params.get(b, 0):,}" for b in precisions]
                + [_count(r.binary_macs), _count(r.float_macs)]
                for name, r in zip(names, p.layers)]
        left = 3
    widths = [max(len(row[i]) for row in [header] + body) for i in range(len(header))]
    if not wide:  # the first column takes what the others leave of TABLE_WIDTH
        others = sum(widths[1:]) + 2 * (len(widths) - 1)
        widths[0] = min(widths[0], max(len(header[0]), TABLE_WIDTH - others))

    def line(cells):
        return "  ".join(c.ljust(w) if i < left else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    rows = []
    for row in body:
        first, *more = _wrap_name(row[0], widths[0])
        rows.append(line([first, *row[1:]]))
        rows.extend(more)
    rule = "-" * len(line(header))
    lines = [f'Model: "{p.name}"', rule, line(header), rule]
    lines += rows
    lines += [
        rule,
        (f"Total parameters: {p.total_params:,} (binary: {p.binary_params:,}, "
         f"other: {p.float_params:,})"),
        f"Model size (binary weights at 1 bit): {_bytes(p.size_bytes)}",
        f"Float-32 equivalent size: {_bytes(p.float32_size_bytes)}",
        f"Compression ratio: {p.compression_ratio:.2f}x",
        f"BOPs (binary MACs): {p.bops:,} ({_human(p.bops)})",
        f"FLOPs (float MACs): {p.flops:,} ({_human(p.flops)})",
        f"OPs = BOPs/64 + FLOPs: {_number(p.ops)} ({_human(p.ops)})",
        f"Binary MAC fraction: {100 * p.binary_mac_fraction:.2f} %",
    ]
    if not wide:
        lines.append("Shapes for a batch of 1; bits: input/kernel(s). Memory per layer: "
                     "wide=True (kbnn summary --wide).")
    if p.unknown_mac_layers:
        lines.append("Unknown MACs (not in the totals): " + ", ".join(p.unknown_mac_layers))
    lines.append(rule)
    return lines
