"""Read a TFLite flatbuffer with TensorFlow's generated schema module (no private guesses).

`read_flatbuffer(buf)` returns plain Python records of the operators and tensors of the main
subgraph; custom-op options (LCE's flexbuffer maps) are decoded with `flatbuffers.flexbuffers`.
Bytes that are not a TFLite flatbuffer raise `ValueError("not a valid TFLite flatbuffer: ...")`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from flatbuffers import flexbuffers
from tensorflow.lite.python import schema_py_generated as schema

__all__ = ["Graph", "Operator", "Tensor", "invalid_flatbuffer", "read_flatbuffer"]

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
        return _read(buf)
    except Exception as err:  # the generated parser fails with struct/index/type errors
        raise invalid_flatbuffer(err) from err


def _read(buf: bytes) -> Graph:
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(bytearray(buf), 0))
    if not model.subgraphs:
        raise ValueError("it has no subgraph")
    graph = model.subgraphs[0]
    codes = model.operatorCodes
    tensors = []
    for i, t in enumerate(graph.tensors):
        data = model.buffers[t.buffer].data if t.buffer < len(model.buffers) else None
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
        for op in graph.operators
    ]
    return Graph(operators=ops, tensors=tensors, inputs=[int(i) for i in graph.inputs],
                 outputs=[int(i) for i in graph.outputs], size=len(buf))
