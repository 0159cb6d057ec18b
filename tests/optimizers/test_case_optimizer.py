"""CaseOptimizer: routing (which optimizer changed which variable), the double-claim and
unclaimed errors, binary_predicate, learning-rate delegation, fit with and without XLA, mixed
precision (LossScaleOptimizer around it) and .keras save/load with its state."""

import re
import tempfile
import warnings
from pathlib import Path

import keras
import numpy as np
import pytest
from optimizer_helpers import (
    bop_adam,
    conv_model,
    data,
    dense_model,
    is_bias,
    is_kernel,
)

import kbnn
from kbnn.optimizers import (
    BinaryPredicate,
    Bop,
    CaseOptimizer,
    binary_predicate,
    binary_variables,
    is_binary_variable,
)


def by_path(model):
    return {v.path: v for v in model.trainable_variables}


# ----------------------------------------------------------------------------- predicates

def test_binary_variables_read_the_quantized_weights_map():
    model = conv_model()
    found = binary_variables(model)
    quant = [layer for layer in model.layers if isinstance(layer, kbnn.layers.QuantizedLayerMixin)]
    assert [v.path for v in found] == [layer.kernel.path for layer in quant]
    assert all(is_binary_variable(v, model) for v in found)
    others = [v for v in model.trainable_variables if all(v is not b for b in found)]
    assert others and not any(is_binary_variable(v, model) for v in others)


def test_non_binary_quantizer_is_not_binary():
    model = keras.Sequential([keras.Input((4,)), kbnn.layers.QuantDense(3, kernel_quantizer=None)])
    assert binary_variables(model) == []


def test_binary_predicate_reads_the_model_when_first_called():
    model = keras.Sequential([kbnn.layers.QuantDense(3, kernel_quantizer="ste_sign")])
    predicate = binary_predicate(model)  # the model is not built yet
    model.build((None, 4))
    assert predicate(model.layers[0].kernel) and not predicate(model.layers[0].bias)
    restored = BinaryPredicate.from_config(predicate.get_config())
    with pytest.raises(ValueError, match="no model"):
        restored(model.layers[0].kernel)


# ------------------------------------------------------------------------------- routing

def test_each_optimizer_changes_only_its_own_variables():
    model = dense_model()
    variables = by_path(model)
    before = {p: v.numpy().copy() for p, v in variables.items()}
    bop = Bop(threshold=0.0, gamma=1.0)
    bias_sgd = keras.optimizers.SGD(0.1, name="bias_sgd")
    default_sgd = keras.optimizers.SGD(1.0, name="default_sgd")
    optimizer = CaseOptimizer((binary_predicate(model), bop), (is_bias, bias_sgd),
                              default_optimizer=default_sgd)
    grads = [np.ones(v.shape, np.float32) for v in model.trainable_variables]
    optimizer.apply(grads, model.trainable_variables)

    assert optimizer.routing() == {
        "dense_model/binary_dense/kernel": "Bop",
        "dense_model/binary_dense/bias": "bias_sgd",
        "dense_model/bn/gamma": "default_sgd",
        "dense_model/bn/beta": "default_sgd",
        "dense_model/float_dense/kernel": "default_sgd",
        "dense_model/float_dense/bias": "bias_sgd",
    }
    # Bop (m = g = 1): every +1 weight flips to -1, -1 weights stay.
    kernel = before["dense_model/binary_dense/kernel"]
    np.testing.assert_array_equal(variables["dense_model/binary_dense/kernel"].numpy(),
                                  -np.ones_like(kernel))
    for path in ("dense_model/binary_dense/bias", "dense_model/float_dense/bias"):
        np.testing.assert_allclose(variables[path].numpy(), before[path] - 0.1, rtol=1e-6)
    for path in ("dense_model/bn/gamma", "dense_model/bn/beta", "dense_model/float_dense/kernel"):
        np.testing.assert_allclose(variables[path].numpy(), before[path] - 1.0, rtol=1e-6,
                                   atol=1e-6)
    assert [int(o.iterations.numpy()) for o in (optimizer, bop, bias_sgd, default_sgd)] == [1] * 4
    # The state of every sub-optimizer is part of the CaseOptimizer's variables.
    assert all(any(v is w for w in optimizer.variables) for v in bop.variables)


def test_optimizer_with_no_gradient_is_skipped():
    model = dense_model(batch_norm=False)
    bop, sgd = Bop(threshold=0.0, gamma=1.0), keras.optimizers.SGD(0.5)
    optimizer = CaseOptimizer((binary_predicate(model), bop), default_optimizer=sgd)
    variables = model.trainable_variables
    grads = [None if v.path.endswith("binary_dense/kernel") else np.ones(v.shape, "float32")
             for v in variables]
    with pytest.warns(UserWarning, match="binary_dense/kernel"):
        optimizer.apply(grads, variables)
    assert int(bop.iterations.numpy()) == 0 and int(sgd.iterations.numpy()) == 1
    with pytest.raises(ValueError, match="No gradients"):
        optimizer.apply([None] * len(variables), variables)


def test_a_variable_claimed_twice_is_an_error_naming_it():
    model = dense_model()
    optimizer = CaseOptimizer((binary_predicate(model), Bop()),
                              (is_kernel, keras.optimizers.SGD()),
                              default_optimizer=keras.optimizers.Adam())
    with pytest.raises(ValueError, match=re.escape("'dense_model/binary_dense/kernel'")) as err:
        optimizer.build(model.trainable_variables)
    assert "claimed by 2 predicates" in str(err.value)
    assert "binary_predicate" in str(err.value) and "is_kernel" in str(err.value)


def test_an_unclaimed_variable_without_default_is_an_error_naming_it():
    model = dense_model()
    optimizer = CaseOptimizer((binary_predicate(model), Bop()), (is_bias, keras.optimizers.SGD()))
    with pytest.raises(ValueError, match=re.escape("'dense_model/bn/gamma'")) as err:
        optimizer.apply([np.ones(v.shape, "float32") for v in model.trainable_variables],
                        model.trainable_variables)
    assert "no predicate" in str(err.value) and "default_optimizer" in str(err.value)


def test_unknown_variable_is_an_error():
    model = dense_model()
    optimizer = CaseOptimizer(default_optimizer=keras.optimizers.SGD())
    optimizer.build(model.trainable_variables)
    stranger = keras.Variable(np.zeros(2, np.float32), name="stranger")
    with pytest.raises(ValueError, match="unknown variable"):
        optimizer.apply([np.ones(2, np.float32)], [stranger])


def test_optimizer_claiming_nothing_warns():
    model = dense_model()
    optimizer = CaseOptimizer((is_bias, keras.optimizers.SGD()),
                              (lambda v: False, keras.optimizers.SGD(name="idle")),
                              default_optimizer=keras.optimizers.Adam())
    with pytest.warns(UserWarning, match="received no variable"):
        optimizer.build(model.trainable_variables)


@pytest.mark.parametrize("args, kwargs, error, match", [
    ((), {}, ValueError, "at least one"),
    (("adam",), {}, ValueError, "pairs"),
    (((1, keras.optimizers.SGD()),), {}, TypeError, "predicate"),
    (((is_bias, 3),), {}, TypeError, "optimizers\\[0\\]\\[1\\]"),
    (((is_bias, keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD())),), {}, TypeError,
     "LossScaleOptimizer"),
    (((is_bias, keras.optimizers.SGD(loss_scale_factor=8.0)),), {}, ValueError,
     "loss_scale_factor"),
    ((), {"default_optimizer": keras.optimizers.SGD(), "clipnorm": 1.0}, ValueError, "clipnorm"),
])
def test_invalid_arguments(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        CaseOptimizer(*args, **kwargs)


def test_the_same_optimizer_twice_is_an_error():
    sgd = keras.optimizers.SGD()
    with pytest.raises(ValueError, match="twice"):
        CaseOptimizer((is_bias, sgd), default_optimizer=sgd)


def test_learning_rate_is_the_default_optimizers():
    adam = keras.optimizers.Adam(0.01)
    optimizer = CaseOptimizer((is_bias, Bop()), default_optimizer=adam)
    assert float(optimizer.learning_rate.numpy()) == pytest.approx(0.01)
    optimizer.learning_rate = 0.5
    assert float(adam.learning_rate.numpy()) == pytest.approx(0.5)
    with pytest.raises(AttributeError, match="no default optimizer"):
        _ = CaseOptimizer((is_bias, Bop())).learning_rate


# ------------------------------------------------------------------------ training paths

@pytest.mark.parametrize("jit_compile", [False, True])
def test_fit_with_and_without_xla(jit_compile):
    x, y = data()
    model = conv_model()
    binary = binary_variables(model)
    initial_signs = [np.where(v.numpy() >= 0, 1.0, -1.0) for v in binary]
    float_before = [v.numpy().copy() for v in model.trainable_variables[-2:]]
    optimizer = bop_adam(model)
    model.compile(optimizer, "sparse_categorical_crossentropy", jit_compile=jit_compile)
    history = model.fit(x, y, batch_size=16, epochs=2, verbose=0, shuffle=False)
    assert np.all(np.isfinite(history.history["loss"]))
    assert int(optimizer.iterations.numpy()) == 8
    assert all(set(np.unique(v.numpy())) <= {-1.0, 1.0} for v in binary)
    assert sum(int(np.sum(v.numpy() != s)) for v, s in zip(binary, initial_signs)) > 0
    assert all(np.any(v.numpy() != b) for v, b in zip(model.trainable_variables[-2:],
                                                       float_before))


def test_xla_and_eager_graphs_agree():
    results = []
    for jit in (False, True):
        x, y = data()
        model = conv_model()
        model.compile(bop_adam(model), "sparse_categorical_crossentropy", jit_compile=jit)
        model.fit(x, y, batch_size=16, epochs=1, verbose=0, shuffle=False)
        results.append(model)
    eager, xla = results
    for a, b in zip(binary_variables(eager), binary_variables(xla)):
        assert np.mean(a.numpy() == b.numpy()) > 0.99
    for a, b in zip(eager.trainable_variables[-2:], xla.trainable_variables[-2:]):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-3)


def test_learning_rate_scheduler_drives_every_optimizer():
    x, y = data(32)
    model = conv_model()
    optimizer = bop_adam(model, lr=0.01)
    model.compile(optimizer, "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=2, verbose=0,
              callbacks=[keras.callbacks.LearningRateScheduler(lambda epoch, lr: 0.1 * lr)])
    # Keras' callbacks treat an optimizer with an `optimizers` list as several optimizers.
    assert optimizer.optimizers == [optimizer.optimizers[0], optimizer.default_optimizer]
    assert float(optimizer.default_optimizer.learning_rate.numpy()) == pytest.approx(1e-4)


def test_sub_optimizer_ema_is_finalised_by_fit():
    x, y = data(32)
    model = conv_model()
    adam = keras.optimizers.Adam(0.01, use_ema=True)
    optimizer = CaseOptimizer((binary_predicate(model), Bop()), default_optimizer=adam)
    model.compile(optimizer, "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=1, verbose=0)  # fit ends with finalize_variable_values
    float_vars = [v for v in model.trainable_variables
                  if not is_binary_variable(v, model)]
    for variable, average in zip(float_vars, adam._model_variables_moving_average):
        np.testing.assert_array_equal(variable.numpy(), average.numpy())


# ----------------------------------------------------------------- mixed precision, saving

def _save_load_and_step(model, x, y):
    with tempfile.TemporaryDirectory() as folder:
        path = str(Path(folder) / "model.keras")
        model.save(path)
        loaded = keras.models.load_model(path)
    np.testing.assert_equal([np.asarray(v) for v in model.optimizer.variables],
                            [np.asarray(v) for v in loaded.optimizer.variables])
    model.train_on_batch(x, y)
    loaded.train_on_batch(x, y)
    for a, b in zip(model.weights, loaded.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
    for a, b in zip(model.optimizer.variables, loaded.optimizer.variables):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=a.path)
    return loaded


def test_save_and_load_keep_the_state():
    x, y = data()
    model = conv_model()
    model.compile(bop_adam(model), "sparse_categorical_crossentropy")
    model.fit(x, y, batch_size=16, epochs=2, verbose=0)
    loaded = _save_load_and_step(model, x[:16], y[:16])
    optimizer = loaded.optimizer
    assert isinstance(optimizer, CaseOptimizer)
    assert list(optimizer.routing().values()) == list(model.optimizer.routing().values())
    # The restored predicate has no model: the restored routing table was used.
    assert isinstance(optimizer.predicates[0], BinaryPredicate)
    assert optimizer.predicates[0].model is None
    assert int(optimizer.iterations.numpy()) == int(model.optimizer.iterations.numpy()) == 9


def test_mixed_precision_fit_save_and_load():
    keras.mixed_precision.set_global_policy("mixed_float16")
    x, y = data()
    model = conv_model(output_dtype="float32")
    model.compile(bop_adam(model), "sparse_categorical_crossentropy")
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert isinstance(model.optimizer.inner_optimizer, CaseOptimizer)
    history = model.fit(x, y, batch_size=16, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    assert all(set(np.unique(v.numpy())) <= {-1.0, 1.0} for v in binary_variables(model))
    loaded = _save_load_and_step(model, x[:16], y[:16])
    assert isinstance(loaded.optimizer.inner_optimizer, CaseOptimizer)


def test_explicit_loss_scale_optimizer_in_float32():
    x, y = data()
    model = conv_model()
    optimizer = keras.optimizers.LossScaleOptimizer(bop_adam(model), initial_scale=2.0 ** 10)
    model.compile(optimizer, "sparse_categorical_crossentropy")
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    _save_load_and_step(model, x[:16], y[:16])


def test_config_round_trip_routes_the_same_way():
    model = dense_model()
    optimizer = CaseOptimizer((is_bias, keras.optimizers.SGD(0.1)), (is_kernel, Bop()),
                              default_optimizer=keras.optimizers.Adam(), name="cases")
    restored = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(optimizer))
    assert isinstance(restored, CaseOptimizer) and restored.name == "cases"
    assert restored.predicates == [is_bias, is_kernel]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        optimizer.build(model.trainable_variables)
        restored.build(model.trainable_variables)
    assert restored.routing() == optimizer.routing()
    assert optimizer.get_config()["routing"][0] == [1, [4, 6]]


def test_routing_table_is_ignored_for_another_variable_list():
    model, other = dense_model(), dense_model(batch_norm=False)
    optimizer = CaseOptimizer((binary_predicate(model), Bop()),
                              default_optimizer=keras.optimizers.SGD())
    optimizer.build(model.trainable_variables)
    restored = CaseOptimizer.from_config(optimizer.get_config())
    with pytest.raises(ValueError, match="no model"):  # the predicates are called
        restored.build(other.trainable_variables)
