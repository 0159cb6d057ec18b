"""`inspect(flatbuffer) -> ModelReport`: what a converted model contains."""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field

from .flatbuffer import Graph, invalid_flatbuffer, read_flatbuffer

__all__ = ["LCE_OPS", "ModelReport", "flatbuffer_bytes", "inspect"]

LCE_OPS = ("LceQuantize", "LceBconv2d", "LceDequantize", "LceBMaxPool2d")
_LABELS = {0: "SAME", 1: "VALID"}
_COMPUTE = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")
_ACT = {0: "NONE", 1: "RELU", 2: "RELU_N1_TO_1", 3: "RELU6"}


@dataclass
class ModelReport:
    """Summary of a TFLite flatbuffer.

    Attributes:
        op_counts: operator name -> count (LCE custom ops by name, builtins by enum name).
        op_sequence: operator names in execution order.
        n_binary_convs: number of LceBconv2d ops.
        bconvs: per LceBconv2d: its options plus ``filter_shape``, ``output_dtype`` and
            ``tensor_names`` (input, output).
        float_tensors: names of the activation (non-constant) tensors kept in float32.
        int8_tensors: names of the int8 activation tensors.
        size_bytes: flatbuffer size.
        bitpacked_weight_bytes: bytes of the bitpacked LceBconv2d filters.
        float_weight_bytes: bytes of the float32 constant tensors.
        float_compute_ops: CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED ops with float32 input
            (what stays float in an int8 model).
        input_dtypes / output_dtypes: model input and output tensor types.
        custom_ops: custom (non-builtin) operators: name -> the output tensor name of each
            occurrence. Only the `LCE_OPS` run in LCE's interpreter; any other is unresolved.
    """

    op_counts: dict[str, int]
    op_sequence: list[str]
    n_binary_convs: int
    bconvs: list[dict]
    float_tensors: list[str]
    int8_tensors: list[str]
    size_bytes: int
    bitpacked_weight_bytes: int
    float_weight_bytes: int
    float_compute_ops: list[str] = field(default_factory=list)
    input_dtypes: list[str] = field(default_factory=list)
    output_dtypes: list[str] = field(default_factory=list)
    custom_ops: dict[str, list[str]] = field(default_factory=dict)

    @property
    def foreign_custom_ops(self) -> dict[str, list[str]]:
        """The custom ops that are not LCE ops (the LCE interpreter cannot run them)."""
        return {name: outs for name, outs in self.custom_ops.items() if name not in LCE_OPS}

    def count(self, op: str) -> int:
        return self.op_counts.get(op, 0)

    def table(self) -> str:
        """A plain-text table of the operators and sizes."""
        width = max([len(k) for k in self.op_counts] + [8])
        lines = [f"{'operator':<{width}}  count", f"{'-' * width}  -----"]
        lines += [f"{op:<{width}}  {n:5d}" for op, n in sorted(self.op_counts.items(),
                                                              key=lambda kv: (-kv[1], kv[0]))]
        lines += [
            "",
            f"binary convolutions (LceBconv2d): {self.n_binary_convs}",
            f"flatbuffer size:                  {self.size_bytes:,} bytes",
            f"bitpacked weights:                {self.bitpacked_weight_bytes:,} bytes",
            f"float32 weights:                  {self.float_weight_bytes:,} bytes",
            (f"inputs / outputs:                 {', '.join(self.input_dtypes)} / "
            f"{', '.join(self.output_dtypes)}"),
            f"float32 activation tensors:       {len(self.float_tensors)}",
            f"int8 activation tensors:          {len(self.int8_tensors)}",
        ]
        if self.foreign_custom_ops:
            lines.append("non-LCE custom ops (unresolved):  "
                         + ", ".join(sorted(self.foreign_custom_ops)))
        for i, b in enumerate(self.bconvs):
            lines.append(
                f"  bconv {i}: filter {b['filter_shape']} padding {_LABELS.get(b.get('padding'))} "
                f"pad_values {b.get('pad_values')} stride {b.get('stride_height')}x"
                f"{b.get('stride_width')} act {_ACT.get(b.get('fused_activation_function'))} "
                f"out {b['output_dtype']}"
            )
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


def _report(graph: Graph) -> ModelReport:
    tensors = graph.tensors
    seq = [op.name for op in graph.operators]
    bconvs, packed = [], 0
    for op in graph.operators:
        if op.name == "LceBconv2d":
            filt = tensors[op.inputs[1]]
            packed += filt.nbytes
            bconvs.append({**op.options, "filter_shape": filt.shape,
                           "output_dtype": tensors[op.outputs[0]].dtype,
                           "tensor_names": (tensors[op.inputs[0]].name,
                                            tensors[op.outputs[0]].name)})
    activations = [t for t in tensors if not t.is_constant]
    float_compute = [op.name for op in graph.operators if op.name in _COMPUTE
                     and op.inputs and tensors[op.inputs[0]].dtype == "FLOAT32"]
    custom: dict[str, list[str]] = {}
    for op in graph.operators:
        if op.custom:
            custom.setdefault(op.name, []).append(tensors[op.outputs[0]].name if op.outputs else "")
    return ModelReport(
        op_counts=dict(Counter(seq)),
        op_sequence=seq,
        n_binary_convs=len(bconvs),
        bconvs=bconvs,
        float_tensors=[t.name for t in activations if t.dtype == "FLOAT32"],
        int8_tensors=[t.name for t in activations if t.dtype == "INT8"],
        size_bytes=graph.size,
        bitpacked_weight_bytes=packed,
        float_weight_bytes=sum(t.nbytes for t in tensors if t.is_constant and t.dtype == "FLOAT32"),
        float_compute_ops=float_compute,
        input_dtypes=[tensors[i].dtype for i in graph.inputs],
        output_dtypes=[tensors[i].dtype for i in graph.outputs],
        custom_ops=custom,
    )


def flatbuffer_bytes(flatbuffer, owner: str) -> bytes:
    """The bytes of `flatbuffer`: bytes-like, an object with ``__bytes__`` (a
    `ConversionResult`) or the path of a .tflite file (str or os.PathLike).

    Raises:
        TypeError: anything else (a Keras model, an array, ...), saying what to pass.
        FileNotFoundError: a path that is not an existing file.
    """
    if isinstance(flatbuffer, (bytes, bytearray, memoryview)):
        return bytes(flatbuffer)
    if isinstance(flatbuffer, (str, os.PathLike)):
        path = os.fspath(flatbuffer)
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"Invalid value for argument `flatbuffer` of {owner}: no file {path!r}. "
                "Expected the bytes of a TFLite flatbuffer (what convert returns) or the path "
                "of a .tflite file.")
        with open(path, "rb") as f:
            return f.read()
    if hasattr(type(flatbuffer), "__bytes__"):
        return bytes(flatbuffer)
    raise TypeError(
        f"Invalid value for argument `flatbuffer` of {owner}. Expected the bytes of a TFLite "
        "flatbuffer (what kbnn.converters.convert returns) or the path of a .tflite file. "
        f"Received an object of type {type(flatbuffer).__name__}.")


def inspect(flatbuffer) -> ModelReport:
    """Operator histogram, binary conv count, float tensors and sizes of a flatbuffer.

    Args:
        flatbuffer: the flatbuffer bytes (what `convert` returns, or a `ConversionResult`) or
            the path of a .tflite file.

    Raises:
        TypeError: `flatbuffer` is neither bytes nor a path (e.g. a Keras model).
        FileNotFoundError: a path that is not an existing file.
        ValueError: "not a valid TFLite flatbuffer: ..." for bytes that are not one, or whose
            structure is broken (truncated, padded, offsets outside the buffer).
    """
    graph = read_flatbuffer(flatbuffer_bytes(flatbuffer, "inspect"))
    try:
        return _report(graph)
    except (IndexError, KeyError, TypeError) as err:  # tensor indices out of range
        raise invalid_flatbuffer(err) from err
