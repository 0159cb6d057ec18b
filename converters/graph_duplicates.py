"""Binary convolutions the TFLite converter will merge: identical computations in the frozen
export graph.

TFLite's converter eliminates common subexpressions: two binary convs that read the same
tensor with the same constant ±1 kernel and the same attributes become one `LceBconv2d`. The
converter's count check must not read such a merge as "LCE left a binary layer in float".
`merged_binary_ops` counts the merges by value numbering of the graph (a node's number is its
op, its attributes, its constant value and its inputs' numbers; names do not count).
"""

from __future__ import annotations

import hashlib

import numpy as np
import tensorflow as tf

__all__ = ["merged_binary_ops"]

#: Ops that LCE turns into `LceBconv2d` when their filter is a constant of ±1.
BINARY_CANDIDATE_OPS = ("Conv2D", "MatMul", "DepthwiseConv2dNative")


def _const_value(node) -> np.ndarray | None:
    if node.op != "Const":
        return None
    return tf.make_ndarray(node.attr["value"].tensor)


def _input_name(name: str) -> str:
    return name.split(":")[0].lstrip("^")


def _binary_kernel_digest(node, nodes: dict) -> bytes | None:
    """A digest of the node's constant kernel if it is a binary candidate (a conv or matmul
    whose filter is a constant of ±1), else None."""
    if node.op not in BINARY_CANDIDATE_OPS or len(node.input) < 2:
        return None
    source = nodes.get(_input_name(node.input[1]))
    while source is not None and source.op == "Identity" and source.input:
        source = nodes.get(_input_name(source.input[0]))
    value = _const_value(source) if source is not None else None
    if value is None or value.size == 0 or not np.all(np.abs(value) == 1.0):
        return None
    return hashlib.blake2b(np.ascontiguousarray(value).tobytes() + str(value.shape).encode(),
                           digest_size=16).digest()


def _value_numbers(targets: list[str], nodes: dict) -> dict[str, bytes]:
    """Structural hash of each target node and of everything upstream (iterative DFS)."""
    numbers: dict[str, bytes] = {}
    stack = list(targets)
    while stack:
        name = stack[-1]
        if name in numbers:
            stack.pop()
            continue
        node = nodes.get(name)
        if node is None:  # an input of the graph outside it: its name is its identity
            numbers[name] = hashlib.blake2b(name.encode(), digest_size=16).digest()
            stack.pop()
            continue
        data_inputs = [i for i in node.input if not i.startswith("^")]
        pending = [_input_name(i) for i in data_inputs if _input_name(i) not in numbers]
        if pending:
            stack.extend(pending)
            continue
        digest = hashlib.blake2b(node.op.encode(), digest_size=16)
        if node.op in ("Placeholder", "PlaceholderWithDefault"):
            digest.update(node.name.encode())
        for key in sorted(node.attr):
            if not key.startswith("_"):
                digest.update(key.encode())
                digest.update(node.attr[key].SerializeToString(deterministic=True))
        for i in data_inputs:
            digest.update(numbers[_input_name(i)])
            digest.update(i.partition(":")[2].encode())
        numbers[name] = digest.digest()
        stack.pop()
    return numbers


def merged_binary_ops(graph_def) -> int:
    """How many binary-candidate ops (a conv or matmul with a constant ±1 kernel) compute
    exactly what another one computes, so that the TFLite converter keeps one of them."""
    nodes = {node.name: node for node in graph_def.node}
    by_kernel: dict[bytes, list[str]] = {}
    for node in graph_def.node:
        digest = _binary_kernel_digest(node, nodes)
        if digest is not None:
            by_kernel.setdefault(digest, []).append(node.name)
    # Only ops with the same kernel can be identical: number the graph above those alone.
    candidates = [name for names in by_kernel.values() if len(names) > 1 for name in names]
    if not candidates:
        return 0
    numbers = _value_numbers(candidates, nodes)
    distinct = {numbers[name] for name in candidates}
    return len(candidates) - len(distinct)
