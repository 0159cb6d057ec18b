"""Every use of private Keras / TensorFlow API in kbnn, in one place.

Keras 3 and TensorFlow offer no public way to do the few things below. Each function names the
private attribute it reads and is covered by `tests/test_keras_compat.py`, which fails loudly (with
the Keras version) when a release moves it. Nothing here changes a layer; the only write is
`register_constraint_alias`, which adds a name to Keras' table of constraint aliases.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import keras

__all__ = [
    "call_functional",
    "flatten_layers",
    "freeze_concrete_function",
    "functional_nodes",
    "input_signature",
    "is_functional",
    "keras_call_error_origin",
    "kernel_variable",
    "layer_input_shapes",
    "lce_convert_graph",
    "model_input_structure",
    "multi_worker_fit_fixes",
    "optimizer_variable_index",
    "optimizer_variable_key",
    "recording_ops",
    "register_activation_alias",
    "register_constraint_alias",
    "tensor_name",
]


def flatten_layers(layer, include_self: bool = True, recursive: bool = True) -> list:
    """The layers tracked by `layer` (its attributes, lists and dicts of layers), depth first,
    each once (`Layer._flatten_layers`; Keras has no public recursive walk)."""
    return list(layer._flatten_layers(include_self=include_self, recursive=recursive))


def input_signature(model) -> Any:
    """The input signature `model.export` would use (`keras.src.export.export_utils`)."""
    from keras.src.export.export_utils import get_input_signature

    return get_input_signature(model)


def model_input_structure(model) -> Any:
    """The nested structure of a functional model's `Input` tensors (`Function._inputs_struct`),
    or None for models without one."""
    return getattr(model, "_inputs_struct", None)


def layer_input_shapes(layer) -> list[tuple]:
    """The input shapes `layer` was called with in functional graphs (`Layer._inbound_nodes`),
    else the shape it was built with (the public `get_build_config`), else []."""
    shapes = []
    for node in getattr(layer, "_inbound_nodes", None) or []:
        tensors = node.input_tensors
        if tensors:
            shapes.append(tuple(tensors[0].shape))
    if shapes:
        return shapes
    config = layer.get_build_config() if layer.built else None
    shape = (config or {}).get("input_shape")
    if isinstance(shape, (tuple, list)) and all(d is None or isinstance(d, int) for d in shape):
        return [tuple(shape)]
    return []


def kernel_variable(layer):
    """The kernel variable of a built Keras conv/dense layer, or None when it has none.

    Keras' `kernel` of `Dense`, `EinsumDense` and the convolutions is a property that returns a
    computed tensor, not the variable, when LoRA is enabled (kernel + LoRA update) or the layer is
    int4-quantized (unpacked); the variable is then the stored `_kernel`. Layers with a plain
    `kernel` attribute (depthwise, transposed convolutions) return it as is.
    """
    kernel = getattr(layer, "kernel", None)
    if kernel is None or isinstance(kernel, keras.Variable):
        return kernel
    stored = getattr(layer, "_kernel", None)
    return stored if isinstance(stored, keras.Variable) else kernel


def register_constraint_alias(name: str, cls) -> None:
    """Make ``kernel_constraint=name`` resolve to `cls`: `keras.constraints.get` looks strings up
    only in its module table (`keras.src.constraints.ALL_OBJECTS_DICT`)."""
    from keras.src import constraints as keras_constraints

    keras_constraints.ALL_OBJECTS_DICT.setdefault(name, cls)


def keras_call_error_origin(err: BaseException) -> tuple[BaseException, str | None]:
    """The exception a layer call raised first, and the innermost Keras call it was raised in.

    Keras re-raises an error from a layer call as a new exception of the same type, marked with
    ``_keras_call_info_injected``, whose text starts with "Exception encountered when calling
    X.call()"; the original is its ``__context__``.
    """
    import re

    ansi = re.compile(r"\x1b\[[0-9;]*m")
    pattern = re.compile(r"Exception encountered when calling (.+?)\.\s*\n")
    where = None
    while getattr(err, "_keras_call_info_injected", False) and err.__context__ is not None:
        found = pattern.search(ansi.sub("", str(err)))
        where = found.group(1) if found else where
        err = err.__context__
    return err, where


def is_functional(model) -> bool:
    """True for a functional model (or a Sequential one built on an Input) whose graph of layer
    calls can be run node by node."""
    from keras.src.models.functional import Functional

    if isinstance(model, keras.Sequential):
        return getattr(model, "_functional", None) is not None
    return isinstance(model, Functional)


def functional_nodes(model) -> list[tuple[Any, list, list]]:
    """The layer calls of a functional (or built Sequential) model's graph, in execution order:
    ``(layer, flat input KerasTensors, flat output KerasTensors)`` per call
    (`Function._nodes_by_depth`; input layers left out)."""
    graph = model._functional if isinstance(model, keras.Sequential) else model
    found = []
    for depth in sorted(graph._nodes_by_depth, reverse=True):
        for node in graph._nodes_by_depth[depth]:
            if node.operation is None or node.is_input:
                continue
            found.append((node.operation, list(node.input_tensors), list(node.outputs)))
    return found


def call_functional(model, inputs, substitute: Callable[[Any], Callable | None]):
    """Run a functional (or built Sequential) model's graph in inference mode, calling
    ``substitute(layer)`` instead of a layer wherever it returns a callable.

    Nested functional models are run the same way. This is `Functional.call` with its own
    `operation_fn` (`Function._run_through_graph`, `keras.src.models.functional.operation_fn`).
    """
    from keras.src.models.functional import operation_fn as keras_operation_fn

    graph = model._functional if isinstance(model, keras.Sequential) else model

    def operation_fn(operation):
        replacement = substitute(operation)
        if replacement is not None:
            return replacement
        if is_functional(operation):
            return lambda *args, **kwargs: call_functional(operation, args[0], substitute)
        return keras_operation_fn(operation, training=False)

    if isinstance(inputs, (list, tuple)) and len(inputs) == 1 and len(graph.inputs) == 1:
        inputs = inputs[0]
    outputs = graph._run_through_graph(graph._standardize_inputs(inputs),
                                       operation_fn=operation_fn)
    if isinstance(outputs, (list, tuple)) and len(outputs) == 1:
        return outputs[0]
    return outputs


@contextlib.contextmanager
def recording_ops(callback: Callable[[list, Any, Any], None]) -> Iterator[None]:
    """Call ``callback(calls, inputs, outputs)`` for every TensorFlow op created (traced) or
    run on this thread while the block runs. `calls` lists the layer calls that are open,
    outermost first, as ``(layer, token)`` pairs: `token` is an opaque hashable object that is
    the same for every op of one call and differs between two calls of the same layer (keep a
    reference to it while you compare tokens).

    Uses TensorFlow's op callbacks (`tensorflow.python.framework.op_callbacks`, thread-local)
    and Keras' stack of open name scopes (``name_scope_stack`` in
    `keras.src.backend.common.global_state`, whose entries record their `caller`).
    """
    from keras.src.backend.common import global_state
    from tensorflow.python.framework import op_callbacks

    def on_op(op_type, inputs, attrs, outputs, op_name=None, graph=None):
        stack = global_state.get_global_attribute("name_scope_stack") or []
        callback([(scope.caller, scope) for scope in stack if scope.caller is not None],
                 inputs, outputs)

    op_callbacks.add_op_callback(on_op)
    try:
        yield
    finally:
        op_callbacks.remove_op_callback(on_op)


def freeze_concrete_function(function) -> tuple[Any, list, list]:
    """``(graph_def, inputs, outputs)`` of a concrete function with its captured variables and
    tensors folded into constants: the graph LCE converts without writing a SavedModel.

    A function whose graph only reads its variables (`ReadVariableOp`) and calls no other
    function is frozen directly on its GraphDef, node by node (no Grappler pass and no second
    function graph, which cost several times the size of the model's constants); anything else
    goes through TensorFlow's `convert_variables_to_constants_v2`
    (`tensorflow.python.framework.convert_to_constants`).
    """
    import tensorflow as tf

    frozen = _freeze_reads(function)
    if frozen is not None:
        return frozen
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    converted = convert_variables_to_constants_v2(function, lower_control_flow=False)
    inputs = [t for t in converted.inputs if t.dtype != tf.resource]
    return converted.graph.as_graph_def(), inputs, list(converted.outputs)


_CALL_OPS = ("PartitionedCall", "StatefulPartitionedCall", "If", "StatelessIf", "While",
             "StatelessWhile", "Case")


def _freeze_reads(function):
    """Freeze by replacing each captured placeholder with a constant (a variable's value for
    the `ReadVariableOp`s that read it); None when the graph does something else with them."""
    import tensorflow as tf

    graph = function.graph
    captured = {internal.op.name: external
                for external, internal in zip(function.captured_inputs, graph.internal_captures)}
    graph_def = graph.as_graph_def()
    if graph_def.library.function or any(n.op in _CALL_OPS for n in graph_def.node):
        return None
    nodes = []
    for node in graph_def.node:
        source = node.input[0].split(":")[0] if node.input else None
        if node.name in captured:
            value = captured[node.name]
            if value.dtype == tf.resource:
                continue  # its ReadVariableOps become constants below
            nodes.append(_const_node(node.name, value.numpy()))
        elif source in captured and captured[source].dtype == tf.resource:
            if node.op != "ReadVariableOp":
                return None
            variable = _variable_of(function, captured[source])
            if variable is None:
                return None
            nodes.append(_const_node(node.name, variable.numpy()))
        else:
            nodes.append(node)
    del graph_def.node[:]
    graph_def.node.extend(nodes)
    inputs = [t for t in function.inputs if t.dtype != tf.resource]
    return graph_def, inputs, list(function.outputs)


def _variable_of(function, handle):
    for variable in function.variables:
        if variable.handle is handle:
            return variable
    return None


def _const_node(name: str, value):
    import tensorflow as tf

    node = tf.compat.v1.NodeDef(name=name, op="Const")
    node.attr["dtype"].type = tf.as_dtype(value.dtype).as_datatype_enum
    node.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(value))
    return node


def tensor_name(tensor) -> str:
    """A graph tensor's name as converters expect it ("op" for output 0, else "op:i")."""
    op, index = tensor.name.rsplit(":", 1)
    return op if index == "0" else tensor.name


def lce_convert_graph(graph_def: bytes, input_names: list, input_dtypes: list,
                      input_shapes: list, output_names: list, *, quantize: bool,
                      target: str) -> bytes:
    """LCE's converter on a serialised frozen GraphDef
    (`larq_compute_engine.mlir._tf_tfl_flatbuffer`, what `larq_compute_engine.convert_keras_model`
    falls back to). Inputs need static shapes; dtypes as `tf.DType`; `quantize` lowers
    fake-quant ops to int8."""
    from larq_compute_engine.mlir._tf_tfl_flatbuffer import convert_graphdef_to_tflite_flatbuffer
    from tensorflow.core.framework.types_pb2 import DataType

    return convert_graphdef_to_tflite_flatbuffer(
        graph_def, list(input_names), [DataType.Name(d.as_datatype_enum) for d in input_dtypes],
        [list(s) for s in input_shapes], list(output_names), bool(quantize), target, None)


def register_activation_alias(name: str, fn) -> None:
    """Make ``activation=name`` resolve to `fn`: `keras.activations.get` looks strings up only
    in its module table (`keras.src.activations.ALL_OBJECTS_DICT`). A name Keras already has
    keeps Keras' function."""
    from keras.src import activations as keras_activations

    keras_activations.ALL_OBJECTS_DICT.setdefault(name, fn)


def optimizer_variable_key(optimizer, variable) -> Any:
    """The key a Keras optimizer identifies a model variable by (`BaseOptimizer._var_key`): the
    same for a `keras.Variable`, its backend variable and, under `tf.distribute`, every
    replica's component."""
    return optimizer._var_key(variable)


def optimizer_variable_index(optimizer, variable) -> int:
    """The position of `variable` in the list a built optimizer was built with
    (`BaseOptimizer._get_variable_index`, the seam Keras' own optimizers use to find a slot)."""
    return optimizer._get_variable_index(variable)


@contextlib.contextmanager
def multi_worker_fit_fixes():
    """Work around two Keras 3 bugs that stop `Model.fit` / `evaluate` under
    `tf.distribute.MultiWorkerMirroredStrategy` (keras-team/keras#20585, tensorflow#72388):

    * `TensorFlowTrainer._maybe_symbolic_build` reduces the first data batch across the workers
      with ``strategy.reduce("MEAN", (x, y))``, which the collective strategy cannot do for a
      tuple; the batch is only needed for its shapes, so the local replica's values are used.
    * `reduce_per_replica` averages the per-replica metric scalars with
      ``strategy.reduce("MEAN", v, axis=0)``, invalid for a scalar; ``axis=None`` is used.

    Both are private Keras (``keras.src.backend.tensorflow.trainer``); the patches are undone
    when the block ends. tests/test_keras_compat.py and tests/training/test_multiworker.py fail loudly when a Keras release
    moves them."""
    import tensorflow as tf
    from keras.src import tree
    from keras.src.backend.tensorflow import trainer as tf_trainer

    original_reduce = tf_trainer.reduce_per_replica
    original_build = tf_trainer.TensorFlowTrainer._maybe_symbolic_build

    def reduce_per_replica(values, strategy, reduction):
        if reduction in ("auto", "mean") and tf_trainer._collective_all_reduce_multi_worker(
                strategy):
            def mean(v):
                if isinstance(v, (tf.distribute.DistributedValues, tf.Tensor)):
                    return strategy.reduce("MEAN", v, axis=None)
                return v

            return tree.map_structure(mean, values)
        return original_reduce(values, strategy, reduction)

    def maybe_symbolic_build(self, iterator=None, data_batch=None):
        if self._distribute_strategy is None:
            return
        if iterator is not None:
            for _, _, it in iterator:
                batch = next(it)
                data_batch = tree.map_structure(
                    lambda v: (self.distribute_strategy.experimental_local_results(v)[0]
                               if isinstance(v, tf.distribute.DistributedValues) else v),
                    batch)
                break
        with self.distribute_strategy.scope():
            self._symbolic_build(data_batch=data_batch)
        return

    tf_trainer.reduce_per_replica = reduce_per_replica
    tf_trainer.TensorFlowTrainer._maybe_symbolic_build = maybe_symbolic_build
    try:
        yield
    finally:
        tf_trainer.reduce_per_replica = original_reduce
        tf_trainer.TensorFlowTrainer._maybe_symbolic_build = original_build
