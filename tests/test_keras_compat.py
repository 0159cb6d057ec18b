"""Each use of private Keras / TensorFlow API in `kbnn._keras_compat`, checked against what Keras
does publicly. A failure here means a Keras (or TensorFlow) release moved a private attribute: the
message carries the version."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from kbnn import _keras_compat as compat
from kbnn._keras_compat import kernel_variable

VERSION = f"(Keras {keras.__version__})"


def _built(layer, shape):
    layer.build(shape)
    return layer


@pytest.mark.parametrize("layer, shape", [
    (keras.layers.Dense(4), (None, 6)),
    (keras.layers.Conv2D(4, 3), (None, 5, 5, 2)),
    (keras.layers.Conv1D(4, 3), (None, 5, 2)),
])
def test_lora_kernel_gives_the_stored_variable(layer, shape):
    layer = _built(layer, shape)
    plain = kernel_variable(layer)
    assert isinstance(plain, keras.Variable) and plain is layer.kernel
    layer.enable_lora(2)
    assert not isinstance(layer.kernel, keras.Variable), VERSION  # a computed tensor
    variable = kernel_variable(layer)
    assert variable is plain, VERSION
    assert any(variable is w for w in layer.weights), VERSION
    assert tuple(variable.shape) == tuple(layer.kernel.shape)


@pytest.mark.parametrize("layer, shape", [
    (keras.layers.DepthwiseConv2D(3), (None, 5, 5, 2)),
    (keras.layers.Conv2DTranspose(4, 3), (None, 5, 5, 2)),
])
def test_plain_kernel_attribute_is_returned(layer, shape):
    layer = _built(layer, shape)
    assert kernel_variable(layer) is layer.kernel
    assert isinstance(kernel_variable(layer), keras.Variable)


def test_layers_without_kernel_give_none():
    assert kernel_variable(keras.layers.Dense(3)) is None  # not built
    assert kernel_variable(_built(keras.layers.BatchNormalization(), (None, 3))) is None


# ------------------------------------------------------------------------- the other helpers


class _Holder(keras.layers.Layer):
    """A custom layer holding a Dense and a list of two Denses."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.first = keras.layers.Dense(3, name="first")
        self.more = [keras.layers.Dense(3, name="second"), keras.layers.Dense(3, name="third")]

    def call(self, x):
        return self.more[1](self.more[0](self.first(x)))


def _functional():
    inp = keras.Input((4,), name="x")
    hidden = keras.layers.Dense(5, name="d1")(inp)
    out = keras.layers.BatchNormalization(name="bn")(_Holder(name="holder")(hidden))
    return keras.Model(inp, out)


def test_flatten_layers_walks_attributes_and_lists():
    model = _functional()
    names = [layer.name for layer in compat.flatten_layers(model)]
    assert names[0] == model.name, VERSION
    assert {"d1", "holder", "first", "second", "third", "bn"} <= set(names), (names, VERSION)
    assert [l.name for l in compat.flatten_layers(model.get_layer("holder"), False, False)] == [
        "first", "second", "third"], VERSION


def test_input_signature_is_what_export_uses():
    signature = compat.input_signature(_functional())
    flat = tf.nest.flatten(signature)
    assert len(flat) == 1 and tuple(flat[0].shape) == (None, 4), VERSION


def test_model_input_structure_and_input_shapes():
    model = _functional()
    structure = compat.model_input_structure(model)
    assert tuple(tf.nest.flatten(structure)[0].shape) == (None, 4), VERSION
    assert compat.layer_input_shapes(model.get_layer("d1")) == [(None, 4)], VERSION
    built = keras.layers.Dense(2)
    built.build((None, 7))
    assert compat.layer_input_shapes(built) == [(None, 7)], VERSION
    assert compat.layer_input_shapes(keras.layers.Dense(2)) == []


def test_register_constraint_alias_makes_the_string_resolve():
    class _Clip(keras.constraints.Constraint):
        def __call__(self, w):
            return keras.ops.clip(w, -0.5, 0.5)

    compat.register_constraint_alias("kbnn_test_clip", _Clip)
    assert isinstance(keras.constraints.get("kbnn_test_clip"), _Clip), VERSION
    layer = keras.layers.Dense(2, kernel_constraint="kbnn_test_clip")
    assert isinstance(layer.kernel_constraint, _Clip), VERSION


def test_keras_call_error_origin_unwraps_the_layer_error():
    class _Fails(keras.layers.Layer):
        def call(self, x):
            raise KeyError("original problem")

    with pytest.raises(Exception) as info:
        _Fails(name="fails")(np.zeros((1, 2), "float32"))
    original, where = compat.keras_call_error_origin(info.value)
    assert isinstance(original, KeyError) and "original problem" in str(original), VERSION
    assert where is None or "_Fails" in where, (where, VERSION)


def test_functional_nodes_and_call_functional_with_a_substitute():
    model = _functional()
    assert compat.is_functional(model) and not compat.is_functional(_Holder()), VERSION
    nodes = compat.functional_nodes(model)
    assert [op.name for op, _, _ in nodes] == ["d1", "holder", "bn"], VERSION
    d1_out = nodes[0][2][0]
    assert any(t is d1_out for t in nodes[1][1]), VERSION  # holder reads d1's output
    x = np.random.default_rng(0).normal(size=(3, 4)).astype("float32")
    bn = model.get_layer("bn")
    identity = compat.call_functional(model, x, lambda op: (lambda y, **k: y) if op is bn else None)
    expected = model.get_layer("holder")(model.get_layer("d1")(x))
    np.testing.assert_allclose(np.asarray(identity), np.asarray(expected), rtol=1e-6)
    plain = compat.call_functional(model, x, lambda op: None)
    np.testing.assert_allclose(np.asarray(plain), np.asarray(model(x, training=False)), rtol=1e-6)
    seq = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="only")])
    assert compat.is_functional(seq), VERSION
    assert [op.name for op, _, _ in compat.functional_nodes(seq)] == ["only"], VERSION


def test_recording_ops_reports_open_layer_calls():
    model = _functional()
    seen = []
    with compat.recording_ops(lambda calls, inputs, outputs: seen.append(
            [layer.name for layer, _ in calls])):
        tf.function(lambda x: model(x, training=False)).get_concrete_function(
            tf.TensorSpec((1, 4)))
    innermost = {names[-1] for names in seen if names}
    assert {"d1", "first", "second", "third", "bn"} <= innermost, (innermost, VERSION)
    assert any(names[:2] == [model.name, "holder"] for names in seen), VERSION
    # The callback is removed when the block ends.
    count = len(seen)
    tf.function(lambda x: model(x)).get_concrete_function(tf.TensorSpec((1, 4)))
    assert len(seen) == count


def test_freeze_and_lce_convert_graph_give_a_running_flatbuffer():
    from larq_compute_engine.tflite.python.interpreter import Interpreter

    dense = keras.layers.Dense(3)
    dense.build((None, 4))
    function = tf.function(lambda x: dense(x), input_signature=[tf.TensorSpec((1, 4))])
    graph_def, inputs, outputs = compat.freeze_concrete_function(function.get_concrete_function())
    assert not [n for n in graph_def.node if n.op in ("VarHandleOp", "ReadVariableOp")], VERSION
    assert [tuple(t.shape) for t in inputs] == [(1, 4)] and len(outputs) == 1, VERSION
    flatbuffer = compat.lce_convert_graph(
        graph_def.SerializeToString(), [compat.tensor_name(t) for t in inputs],
        [t.dtype for t in inputs], [t.shape.as_list() for t in inputs],
        [compat.tensor_name(t) for t in outputs], quantize=False, target="arm")
    x = np.random.default_rng(0).normal(size=(1, 4)).astype("float32")
    expected = x @ np.asarray(dense.kernel) + np.asarray(dense.bias)
    np.testing.assert_allclose(Interpreter(flatbuffer).predict(x), expected, rtol=1e-5)


# ------------------------------------------------------- optimizer slots and activation names


def test_register_activation_alias_adds_a_name_keras_resolves():
    from keras.src import activations as keras_activations

    def identity(x):
        return x

    try:
        compat.register_activation_alias("kbnn_test_identity", identity)
        assert keras.activations.get("kbnn_test_identity") is identity, VERSION
        compat.register_activation_alias("relu", identity)  # a Keras name keeps Keras' function
        assert keras.activations.get("relu") is keras.activations.relu, VERSION
    finally:
        keras_activations.ALL_OBJECTS_DICT.pop("kbnn_test_identity", None)


def test_optimizer_variable_key_and_index():
    variables = [keras.Variable(np.zeros(2, "float32")), keras.Variable(np.zeros(3, "float32"))]
    optimizer = keras.optimizers.SGD()
    optimizer.build(variables)
    assert [compat.optimizer_variable_index(optimizer, v) for v in variables] == [0, 1], VERSION
    # update_step receives the backend variable: it has the same key and index.
    backend_variable = variables[1].value
    assert (compat.optimizer_variable_key(optimizer, backend_variable)
            == compat.optimizer_variable_key(optimizer, variables[1])), VERSION
    assert compat.optimizer_variable_index(optimizer, backend_variable) == 1, VERSION
    assert (compat.optimizer_variable_key(optimizer, variables[0])
            != compat.optimizer_variable_key(optimizer, variables[1])), VERSION


def test_freeze_falls_back_for_graphs_with_function_calls():
    from larq_compute_engine.tflite.python.interpreter import Interpreter

    dense = keras.layers.Dense(3)
    dense.build((None, 4))

    @tf.function
    def inner(x):
        return dense(x) * 2.0

    function = tf.function(lambda x: inner(x) + 1.0, input_signature=[tf.TensorSpec((1, 4))])
    concrete = function.get_concrete_function()
    assert compat._freeze_reads(concrete) is None, VERSION  # a call: not frozen node by node
    graph_def, inputs, outputs = compat.freeze_concrete_function(concrete)
    flatbuffer = compat.lce_convert_graph(
        graph_def.SerializeToString(), [compat.tensor_name(t) for t in inputs],
        [t.dtype for t in inputs], [t.shape.as_list() for t in inputs],
        [compat.tensor_name(t) for t in outputs], quantize=False, target="arm")
    x = np.random.default_rng(1).normal(size=(1, 4)).astype("float32")
    expected = 2.0 * (x @ np.asarray(dense.kernel) + np.asarray(dense.bias)) + 1.0
    np.testing.assert_allclose(Interpreter(flatbuffer).predict(x), expected, rtol=1e-5)


def test_multi_worker_fit_fixes_patch_and_restore_the_trainer():
    from keras.src.backend.tensorflow import trainer as tf_trainer

    reduce, build = tf_trainer.reduce_per_replica, tf_trainer.TensorFlowTrainer._maybe_symbolic_build
    with compat.multi_worker_fit_fixes():
        assert tf_trainer.reduce_per_replica is not reduce, VERSION
        assert tf_trainer.TensorFlowTrainer._maybe_symbolic_build is not build, VERSION
    assert tf_trainer.reduce_per_replica is reduce, VERSION
    assert tf_trainer.TensorFlowTrainer._maybe_symbolic_build is build, VERSION
