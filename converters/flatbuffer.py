"""Read a TFLite flatbuffer with TensorFlow's generated schema module (no private guesses).

`read_flatbuffer(buf)` returns plain Python records of the operators and tensors of the main
subgraph; custom-op options (LCE's flexbuffer maps) are decoded with `flatbuffers.flexbuffers`.
Bytes that are not a TFLite flatbuffer raise `ValueError("not a valid TFLite flatbuffer: ...")`.

Before anything is read, the buffer's structure is verified (`verify_structure`), as the
flatbuffers C++ verifier that TFLite runs does: every table, vtable, vector and string the
reader touches must lie inside the buffer, with valid offsets and sizes. The generated Python
reader does no such check: a truncated file padded with zeros would read as empty fields. The
records are then checked against each other (operator, tensor and buffer indices in range,
constant data as large as its shape and type say).
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field

import numpy as np
from flatbuffers import flexbuffers
from tensorflow.lite.python import schema_py_generated as schema

__all__ = ["Graph", "Operator", "Tensor", "invalid_flatbuffer", "read_flatbuffer",
           "verify_structure"]

_IDENTIFIER = b"TFL3"  # the TFLite file identifier, bytes 4-8


def _enum_names(enum_cls) -> dict[int, str]:
    return {v: k for k, v in vars(enum_cls).items() if not k.startswith("_") and isinstance(v, int)}


_BUILTIN = _enum_names(schema.BuiltinOperator)
_TYPES = _enum_names(schema.TensorType)


@dataclass
class Tensor:
    index: int
    name: str
    dtype: str
    shape: tuple[int, ...]
    nbytes: int  # bytes of constant data (0 for activations)
    scale: tuple[float, ...] = ()
    zero_point: tuple[int, ...] = ()

    @property
    def is_constant(self) -> bool:
        return self.nbytes > 0


@dataclass
class Operator:
    name: str
    inputs: list[int]
    outputs: list[int]
    options: dict = field(default_factory=dict)
    custom: bool = False  # a custom op (name from its custom code), not a TFLite builtin


@dataclass
class Graph:
    operators: list[Operator]
    tensors: list[Tensor]
    inputs: list[int]
    outputs: list[int]
    size: int


def _opcode_name(code) -> str:
    if code.customCode:
        custom = code.customCode
        return custom.decode() if isinstance(custom, bytes) else str(custom)
    builtin = max(int(code.builtinCode), int(code.deprecatedBuiltinCode))
    return _BUILTIN.get(builtin, f"BUILTIN_{builtin}")


def _custom_options(op) -> dict:
    raw = op.customOptions
    if raw is None or len(raw) == 0:
        return {}
    try:
        value = flexbuffers.Loads(bytes(np.asarray(raw, np.uint8)))
    except (ValueError, TypeError, IndexError, KeyError):  # not a flexbuffer map
        return {}
    return dict(value) if isinstance(value, dict) else {}


def _decode(value) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else str(value)


def invalid_flatbuffer(why) -> ValueError:
    """The error for bytes that are not a (readable) TFLite flatbuffer; `why` is a message or
    the exception the parser raised."""
    if isinstance(why, BaseException):
        kind = type(why)
        kind = kind.__name__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__name__}"
        text = " ".join(str(why).split())
        why = f"{kind}: {text}" if text else kind
    return ValueError(f"not a valid TFLite flatbuffer: {why}")


# ------------------------------------------------------------------ structure verification

# Field slots (vtable entry index) of the TFLite schema tables the verifier walks; the same
# numbers as the accessors of `schema_py_generated` (``self._tab.Offset(4 + 2 * slot)``).
_MODEL = {"operator_codes": 1, "subgraphs": 2, "description": 3, "buffers": 4,
          "metadata_buffer": 5, "metadata": 6, "signature_defs": 7}
_OPERATOR_CODE = {"custom_code": 1}
_SUBGRAPH = {"tensors": 0, "inputs": 1, "outputs": 2, "operators": 3, "name": 4}
_TENSOR = {"shape": 0, "type": 1, "buffer": 2, "name": 3, "quantization": 4,
           "shape_signature": 7}
_QUANTIZATION = {"min": 0, "max": 1, "scale": 2, "zero_point": 3}
_OPERATOR = {"opcode_index": 0, "inputs": 1, "outputs": 2, "builtin_options": 4,
             "custom_options": 5, "mutating_variable_inputs": 7, "intermediates": 8}
_BUFFER = {"data": 0, "offset": 1, "size": 2}
_METADATA = {"name": 0}
_SIGNATURE_DEF = {"inputs": 0, "outputs": 1, "signature_key": 2}
_TENSOR_MAP = {"name": 0}


class _StructureError(ValueError):
    pass


class _Verifier:
    """Bounds and offset checks of the flatbuffers format (tables, vtables, vectors, strings)
    for the parts of the TFLite schema that `read_flatbuffer` reads."""

    def __init__(self, buf: bytes):
        self.buf = buf
        self.n = len(buf)

    def fail(self, what: str, message: str):
        raise _StructureError(f"{what}: {message}")

    def scalar(self, fmt: str, pos: int, what: str):
        size = struct.calcsize(fmt)
        if pos < 0 or pos + size > self.n:
            self.fail(what, f"{size} bytes at offset {pos} lie outside the {self.n}-byte buffer")
        return struct.unpack_from(fmt, self.buf, pos)[0]

    def table(self, pos: int, what: str) -> tuple[int, int, int, int]:
        """(table, vtable, vtable size, table size) of the table at `pos`, checked."""
        if pos % 4:
            self.fail(what, f"table at offset {pos} is not 4-byte aligned")
        vtable = pos - self.scalar("<i", pos, what)
        if vtable < 0 or vtable % 2 or vtable + 4 > self.n:
            self.fail(what, f"vtable offset {vtable} of the table at {pos} is invalid")
        vsize, tsize = (self.scalar("<H", vtable, what), self.scalar("<H", vtable + 2, what))
        if vsize < 4 or vsize % 2 or vtable + vsize > self.n:
            self.fail(what, f"vtable at offset {vtable} has an invalid size {vsize}")
        if tsize < 4 or pos + tsize > self.n:
            self.fail(what, f"table at offset {pos} has an invalid size {tsize}")
        return pos, vtable, vsize, tsize

    def field(self, table, slot: int, size: int, what: str) -> int | None:
        pos, vtable, vsize, tsize = table
        entry = 4 + 2 * slot
        if entry + 2 > vsize:
            return None
        offset = self.scalar("<H", vtable + entry, what)
        if offset == 0:
            return None
        if offset < 4 or offset + size > tsize:
            self.fail(what, f"field at {offset} lies outside its {tsize}-byte table")
        return pos + offset

    def reference(self, table, slot: int, what: str) -> int | None:
        """The position an offset field points to (None when the field is absent)."""
        pos = self.field(table, slot, 4, what)
        if pos is None:
            return None
        return self.target(pos, what)

    def target(self, pos: int, what: str) -> int:
        """Where the offset stored at `pos` points (offsets point forward, never 0)."""
        offset = self.scalar("<I", pos, what)
        if offset == 0:
            self.fail(what, f"zero offset at {pos}")
        if pos + offset >= self.n:
            self.fail(what, f"offset {offset} at {pos} points outside the {self.n}-byte buffer")
        return pos + offset

    def vector(self, table, slot: int, element_size: int, what: str) -> tuple[int, int] | None:
        """(start of the elements, length) of a vector field, checked."""
        pos = self.reference(table, slot, what)
        if pos is None:
            return None
        if pos % 4:
            self.fail(what, f"vector at offset {pos} is not 4-byte aligned")
        length = self.scalar("<I", pos, what)
        if pos + 4 + length * element_size > self.n:
            self.fail(what, f"vector of {length} elements at offset {pos} runs past the end of "
                            f"the {self.n}-byte buffer")
        return pos + 4, length

    def string(self, table, slot: int, what: str) -> None:
        vector = self.vector(table, slot, 1, what)
        if vector is not None:
            start, length = vector
            if start + length >= self.n or self.buf[start + length] != 0:
                self.fail(what, f"string at offset {start - 4} is not NUL-terminated")

    def tables(self, table, slot: int, what: str) -> list:
        vector = self.vector(table, slot, 4, what)
        if vector is None:
            return []
        start, length = vector
        out = []
        for i in range(length):
            out.append(self.table(self.target(start + 4 * i, f"{what}[{i}]"), f"{what}[{i}]"))
        return out


def verify_structure(buf: bytes) -> None:
    """Check the flatbuffer structure of a TFLite model before it is read.

    Raises:
        ValueError: naming the first table, vector or string that is not inside the buffer or
            whose offsets are invalid (e.g. a truncated file, or one padded with zeros).
    """
    v = _Verifier(bytes(buf))
    model = v.table(v.target(0, "root offset"), "model")
    for i, code in enumerate(v.tables(model, _MODEL["operator_codes"], "operator_codes")):
        v.string(code, _OPERATOR_CODE["custom_code"], f"operator_codes[{i}].custom_code")
    subgraphs = v.tables(model, _MODEL["subgraphs"], "subgraphs")
    for g, graph in enumerate(subgraphs):
        where = f"subgraphs[{g}]"
        for i, tensor in enumerate(v.tables(graph, _SUBGRAPH["tensors"], f"{where}.tensors")):
            at = f"{where}.tensors[{i}]"
            v.vector(tensor, _TENSOR["shape"], 4, f"{at}.shape")
            v.vector(tensor, _TENSOR["shape_signature"], 4, f"{at}.shape_signature")
            v.field(tensor, _TENSOR["type"], 1, f"{at}.type")
            v.field(tensor, _TENSOR["buffer"], 4, f"{at}.buffer")
            v.string(tensor, _TENSOR["name"], f"{at}.name")
            quant = v.reference(tensor, _TENSOR["quantization"], f"{at}.quantization")
            if quant is not None:
                q = v.table(quant, f"{at}.quantization")
                for name in ("min", "max", "scale"):
                    v.vector(q, _QUANTIZATION[name], 4, f"{at}.quantization.{name}")
                v.vector(q, _QUANTIZATION["zero_point"], 8, f"{at}.quantization.zero_point")
        for name in ("inputs", "outputs"):
            v.vector(graph, _SUBGRAPH[name], 4, f"{where}.{name}")
        for i, op in enumerate(v.tables(graph, _SUBGRAPH["operators"], f"{where}.operators")):
            at = f"{where}.operators[{i}]"
            v.field(op, _OPERATOR["opcode_index"], 4, f"{at}.opcode_index")
            for name in ("inputs", "outputs", "intermediates"):
                v.vector(op, _OPERATOR[name], 4, f"{at}.{name}")
            v.vector(op, _OPERATOR["custom_options"], 1, f"{at}.custom_options")
            v.vector(op, _OPERATOR["mutating_variable_inputs"], 1,
                     f"{at}.mutating_variable_inputs")
            options = v.reference(op, _OPERATOR["builtin_options"], f"{at}.builtin_options")
            if options is not None:
                v.table(options, f"{at}.builtin_options")
        v.string(graph, _SUBGRAPH["name"], f"{where}.name")
    v.string(model, _MODEL["description"], "description")
    for i, buffer in enumerate(v.tables(model, _MODEL["buffers"], "buffers")):
        v.vector(buffer, _BUFFER["data"], 1, f"buffers[{i}].data")
        v.field(buffer, _BUFFER["offset"], 8, f"buffers[{i}].offset")
        v.field(buffer, _BUFFER["size"], 8, f"buffers[{i}].size")
    v.vector(model, _MODEL["metadata_buffer"], 4, "metadata_buffer")
    for i, entry in enumerate(v.tables(model, _MODEL["metadata"], "metadata")):
        v.string(entry, _METADATA["name"], f"metadata[{i}].name")
    for i, sig in enumerate(v.tables(model, _MODEL["signature_defs"], "signature_defs")):
        for name in ("inputs", "outputs"):
            for j, item in enumerate(v.tables(sig, _SIGNATURE_DEF[name],
                                              f"signature_defs[{i}].{name}")):
                v.string(item, _TENSOR_MAP["name"], f"signature_defs[{i}].{name}[{j}].name")
        v.string(sig, _SIGNATURE_DEF["signature_key"], f"signature_defs[{i}].signature_key")


# Bytes per element of the fixed-size tensor types (others, e.g. STRING or INT4, not checked).
_ITEMSIZE = {"FLOAT32": 4, "FLOAT16": 2, "INT32": 4, "UINT8": 1, "INT64": 8, "BOOL": 1,
             "INT16": 2, "COMPLEX64": 8, "INT8": 1, "FLOAT64": 8, "COMPLEX128": 16,
             "UINT64": 8, "UINT32": 4, "UINT16": 2, "BFLOAT16": 2}


def _check_records(graph: Graph, n_buffers: int, buffer_of: list[int],
                   sparse: set[int]) -> None:
    """Indices in range and constant data as large as shape and type say (sparse tensors,
    whose data is compressed, excepted)."""
    n = len(graph.tensors)
    for t in graph.tensors:
        if not 0 <= buffer_of[t.index] < max(n_buffers, 1):
            raise ValueError(f"tensor {t.index} ({t.name!r}) refers to buffer "
                             f"{buffer_of[t.index]} of {n_buffers}")
        itemsize = _ITEMSIZE.get(t.dtype)
        if t.nbytes and itemsize and t.index not in sparse and all(d >= 0 for d in t.shape):
            expected = math.prod(t.shape) * itemsize
            if t.nbytes != expected:
                raise ValueError(
                    f"constant tensor {t.index} ({t.name!r}) holds {t.nbytes} bytes, but its "
                    f"shape {t.shape} and type {t.dtype} need {expected}")
    for i, op in enumerate(graph.operators):
        if not all(-1 <= k < n for k in op.inputs) or not all(0 <= k < n for k in op.outputs):
            raise ValueError(f"operator {i} ({op.name}) refers to tensors {op.inputs} -> "
                             f"{op.outputs}, outside the {n} tensors of the subgraph")
    for k in graph.inputs + graph.outputs:
        if not 0 <= k < n:
            raise ValueError(f"subgraph input/output {k} is outside its {n} tensors")


def read_flatbuffer(buf: bytes) -> Graph:
    """Operators and tensors of subgraph 0 of a TFLite flatbuffer.

    Raises:
        ValueError: "not a valid TFLite flatbuffer: ..." for bytes without the TFLite file
            identifier or that the schema cannot parse (truncated or corrupt files).
    """
    buf = bytes(buf)
    if len(buf) < 8 or buf[4:8] != _IDENTIFIER:
        raise invalid_flatbuffer(f"{len(buf)} bytes without the {_IDENTIFIER.decode()!r} file "
                                 "identifier at offset 4")
    try:
        verify_structure(buf)
    except _StructureError as err:
        raise invalid_flatbuffer(f"broken structure at {err}") from None
    try:
        return _read(buf)
    except Exception as err:  # the generated parser fails with struct/index/type errors
        raise invalid_flatbuffer(err) from err


def _read(buf: bytes) -> Graph:
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(bytearray(buf), 0))
    if not model.subgraphs:
        raise ValueError("it has no subgraph")
    graph = model.subgraphs[0]
    codes = model.operatorCodes or []
    buffers = model.buffers or []
    for op in graph.operators or []:
        if not 0 <= op.opcodeIndex < len(codes):
            raise ValueError(f"an operator has opcode index {op.opcodeIndex} of {len(codes)} "
                             "operator codes")
    tensors = []
    for i, t in enumerate(graph.tensors or []):
        data = buffers[t.buffer].data if t.buffer < len(buffers) else None
        quant = t.quantization
        scale = tuple(float(s) for s in quant.scale) if quant is not None and quant.scale is not None else ()
        zp = tuple(int(z) for z in quant.zeroPoint) if quant is not None and quant.zeroPoint is not None else ()
        tensors.append(Tensor(
            index=i, name=_decode(t.name), dtype=_TYPES.get(t.type, str(t.type)),
            shape=tuple(int(d) for d in (t.shape if t.shape is not None else ())),
            nbytes=0 if data is None else len(data), scale=scale, zero_point=zp,
        ))
    ops = [
        Operator(
            name=_opcode_name(codes[op.opcodeIndex]),
            inputs=[int(i) for i in (op.inputs if op.inputs is not None else [])],
            outputs=[int(i) for i in (op.outputs if op.outputs is not None else [])],
            options=_custom_options(op),
            custom=bool(codes[op.opcodeIndex].customCode),
        )
        for op in graph.operators or []
    ]
    result = Graph(operators=ops, tensors=tensors,
                   inputs=[int(i) for i in (graph.inputs if graph.inputs is not None else [])],
                   outputs=[int(i) for i in (graph.outputs if graph.outputs is not None else [])],
                   size=len(buf))
    graph_tensors = graph.tensors or []
    _check_records(result, len(buffers), [int(t.buffer) for t in graph_tensors],
                   {i for i, t in enumerate(graph_tensors) if t.sparsity is not None})
    return result
