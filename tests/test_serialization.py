"""Every class registered under package "kbnn" survives `.keras` save/load.

The test enumerates `keras.saving.get_custom_objects()` at collection time (after importing every
kbnn module), so a class added anywhere in kbnn is covered without editing this file. Each kind
gets a tiny usage: layers and quantizers in a functional model (identical outputs after load),
constraints/regularizers/initializers in a Dense layer, losses/metrics/optimizers through
`compile`, callbacks through their config. A class that cannot be built from its defaults needs
an entry in `ARG_HINTS` (by argument name) or `RECIPES` (by registered name).
"""

from __future__ import annotations

import importlib
import inspect
import json
import pkgutil
from dataclasses import dataclass, field

import keras
import numpy as np
import pytest

import kbnn


def _import_every_kbnn_module() -> dict[str, str]:
    """Import kbnn and all its sub-modules so every class registers; return import errors."""
    errors = {}
    for package_name in ("kbnn", "kbnn.zoo", "kbnn.converters"):
        try:
            package = importlib.import_module(package_name)
        except Exception as exc:  # noqa: BLE001 (reported by test_every_kbnn_module_imports)
            errors[package_name] = repr(exc)
            continue
        for info in pkgutil.walk_packages(package.__path__, package_name + "."):
            try:
                importlib.import_module(info.name)
            except ModuleNotFoundError as exc:
                if (exc.name or "").split(".")[0] in ("kbnn", "zoo", "converters"):
                    errors[info.name] = repr(exc)
                # else: an optional third-party dependency that is not installed
            except Exception as exc:  # noqa: BLE001 (reported by test_every_kbnn_module_imports)
                errors[info.name] = repr(exc)
    return errors


IMPORT_ERRORS = _import_every_kbnn_module()
REGISTERED = sorted(k for k in keras.saving.get_custom_objects() if k.startswith("kbnn>"))


@dataclass
class Recipe:
    """How to build and exercise one registered object."""

    kwargs: dict = field(default_factory=dict)
    input_shape: tuple = (2, 6, 6, 4)  # layers and quantizers: (batch, H, W, C)


# Values for required constructor arguments, by argument name.
ARG_HINTS = {
    "filters": 4,
    "units": 3,
    "kernel_size": 3,
    "out_channels": 8,  # ReActNet-style blocks: 4 input channels doubled
    "channels": 4,
}

# Per-class recipes (registered name -> Recipe), for what ARG_HINTS cannot express.
RECIPES = {
    "kbnn>QuantConv1D": Recipe({"padding": "causal", "pad_values": 1.0, "input_quantizer": "ste_sign",
                                     "kernel_quantizer": "ste_sign"}, input_shape=(2, 7, 4)),
    "kbnn>QuantConv2D": Recipe({"padding": "same", "pad_values": 1.0, "strides": 2,
                                    "input_quantizer": "ste_sign", "kernel_quantizer": "ste_sign"}),
    "kbnn>QuantDepthwiseConv2D": Recipe({"padding": "same", "pad_values": 1.0, "depth_multiplier": 2,
                                             "input_quantizer": "ste_sign",
                                             "depthwise_quantizer": "ste_sign"}),
    "kbnn>QuantSeparableConv2D": Recipe({"padding": "same", "input_quantizer": "ste_sign",
                                             "depthwise_quantizer": "ste_sign",
                                             "pointwise_quantizer": "ste_sign"}),
    "kbnn>QuantDense": Recipe({"input_quantizer": "ste_sign", "kernel_quantizer": "ste_sign"},
                              input_shape=(2, 5)),
    "kbnn>QuantizerSchedule": Recipe({
        "variables": "tau",
        "schedule": keras.optimizers.schedules.ExponentialDecay(1.0, 1, 0.9),
        "update_freq": "step"}),
    "kbnn>AssistantTeacherSchedule": Recipe({"total_epochs": 6}),
    "kbnn>EpochCosineDecay": Recipe({"initial_learning_rate": 0.1, "epochs": 5,
                                     "steps_per_epoch": 3}),
    "kbnn>EpochLinearDecay": Recipe({"initial_learning_rate": 0.1, "epochs": 5,
                                     "steps_per_epoch": 3}),
    "kbnn>CaseOptimizer": Recipe({"default_optimizer": keras.optimizers.Adam(0.01)}),
    "kbnn>InfoRecoupling": Recipe(input_shape=[(2, 6, 6, 8), (2, 6, 6, 8)]),
    "kbnn>ChannelReplicate": Recipe({"beta": 2}),
    "kbnn>FeatureDistillation": Recipe({"loss": "mse", "student_layers": ["s1", "s2"],
                                        "teacher_layers": ["t1", "t2"], "weight": 0.5,
                                        "teacher": 1, "name": "features"}),
}

# Constructor arguments that are live objects, not configuration: a predicate or metric bound
# to a model cannot store the model in its config (it is bound again after loading).
LIVE_ARGUMENTS = {
    "kbnn>BinaryPredicate": {"model"},
    "kbnn>FlipRatio": {"model"},
    "kbnn>AssistantTeacherSchedule": {"distiller"},
}


def _no_recipe(name: str, reason: str = ""):
    pytest.fail(f"no construction recipe for {name}: add one to tests/test_serialization.py"
                + (f" ({reason})" if reason else ""))


def _tiny_model(name: str):
    inputs = keras.Input((4,))
    return keras.Model(inputs, keras.layers.Dense(3, name=f"{name}_dense")(inputs), name=name)


def _tiny_binary_model(name: str):
    inputs = keras.Input((4,))
    dense = kbnn.layers.QuantDense(3, input_quantizer="ste_sign", kernel_quantizer="ste_sign")
    return keras.Model(inputs, dense(inputs), name=name)


# Recipes whose arguments are models, built when used.
MODEL_RECIPES = {
    "kbnn>Distiller": lambda: Recipe({"student": _tiny_model("student"),
                                      "teachers": [_tiny_model("teacher")],
                                      "feature_losses": [("mse", "student_dense",
                                                          "teacher_dense", 0.5)]}),
    "kbnn>BinaryPredicate": lambda: Recipe({"model": _tiny_model("predicated")}),
    "kbnn>FlipRatio": lambda: Recipe({"model": _tiny_binary_model("flipping")}),
}


def _construct(name: str):
    cls = keras.saving.get_custom_objects()[name]
    recipe = MODEL_RECIPES[name]() if name in MODEL_RECIPES else RECIPES.get(name, Recipe())
    kwargs = dict(recipe.kwargs)
    for param in inspect.signature(cls.__init__).parameters.values():
        if (param.name == "self" or param.default is not param.empty or param.name in kwargs
                or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD)):
            continue
        if param.name not in ARG_HINTS:
            _no_recipe(name, f"required argument `{param.name}`")
        kwargs[param.name] = ARG_HINTS[param.name]
    try:
        return cls(**kwargs), recipe
    except Exception as exc:  # noqa: BLE001 (any failure means the recipe is missing/wrong)
        _no_recipe(name, f"{type(cls).__name__}(**{kwargs}) raised {exc!r}")


def _normalise(value):
    """A config as the .keras JSON stores it (tuples become lists)."""
    return json.loads(json.dumps(value, default=lambda v: v.tolist() if hasattr(v, "tolist")
                                 else repr(v)))


def _save_and_load(model, tmp_path, compile=False):
    path = tmp_path / "model.keras"
    model.save(path)
    return keras.saving.load_model(path, compile=compile)


def _perturb_weights(model, rng):
    """Move every float variable off its initial value, so a load that silently re-initialises
    (instead of restoring) cannot give identical outputs."""
    for variable in model.weights:
        if "float" in str(variable.dtype):
            shift = rng.uniform(0.05, 0.3, size=variable.shape).astype(variable.dtype)
            variable.assign(keras.ops.convert_to_numpy(variable) + shift)


def _flat(outputs):
    return [keras.ops.convert_to_numpy(o) for o in keras.tree.flatten(outputs)]


# ----------------------------------------------------------------------------- per kind
def _roundtrip_layer(obj, recipe, tmp_path, rng):
    shapes = recipe.input_shape  # static shapes: weight quantizers need them
    if isinstance(shapes, list):  # a layer called on a list of tensors
        inputs = [keras.Input(batch_shape=shape) for shape in shapes]
        x = [rng.normal(size=shape).astype("float32") for shape in shapes]
    else:
        inputs = keras.Input(batch_shape=shapes)
        x = rng.normal(size=shapes).astype("float32")
    model = keras.Model(inputs, obj(inputs))
    _perturb_weights(model, rng)
    expected = _flat(model(x, training=False))
    loaded = _save_and_load(model, tmp_path)
    restored = loaded.get_layer(obj.name)
    assert type(restored) is type(obj)
    assert _normalise(restored.get_config()) == _normalise(obj.get_config())
    assert len(restored.weights) == len(obj.weights)
    for a, b in zip(obj.weights, restored.weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
    actual = _flat(loaded(x, training=False))
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        np.testing.assert_array_equal(a, e)


def _dense_model(**layer_kwargs):
    inputs = keras.Input((4,))
    return keras.Model(inputs, keras.layers.Dense(3, name="dense", **layer_kwargs)(inputs))


def _roundtrip_in_dense(obj, argument, tmp_path, rng):
    model = _dense_model(**{argument: obj})
    _perturb_weights(model, rng)
    loaded = _save_and_load(model, tmp_path)
    restored = getattr(loaded.get_layer("dense"), argument)
    assert type(restored) is type(obj)
    assert _normalise(restored.get_config()) == _normalise(obj.get_config())
    return model, loaded, restored


def _roundtrip_constraint(obj, recipe, tmp_path, rng):
    _, _, restored = _roundtrip_in_dense(obj, "kernel_constraint", tmp_path, rng)
    w = rng.normal(size=(4, 3)).astype("float32") * 3
    np.testing.assert_array_equal(_flat(restored(w)), _flat(obj(w)))


def _roundtrip_regularizer(obj, recipe, tmp_path, rng):
    model, loaded, restored = _roundtrip_in_dense(obj, "kernel_regularizer", tmp_path, rng)
    w = rng.normal(size=(4, 3)).astype("float32")
    np.testing.assert_array_equal(_flat(restored(w)), _flat(obj(w)))
    x = rng.normal(size=(2, 4)).astype("float32")
    model(x)
    loaded(x)
    np.testing.assert_array_equal(_flat(loaded.losses), _flat(model.losses))


def _roundtrip_initializer(obj, recipe, tmp_path, rng):
    _roundtrip_in_dense(obj, "kernel_initializer", tmp_path, rng)


def _compiled_pair(tmp_path, rng, **compile_kwargs):
    model = _dense_model(activation="softmax")
    model.compile(**{"optimizer": "sgd", "loss": "categorical_crossentropy", **compile_kwargs})
    x = rng.normal(size=(8, 4)).astype("float32")
    y = keras.ops.convert_to_numpy(keras.ops.one_hot(rng.integers(0, 3, size=8), 3))
    model.train_on_batch(x, y)  # creates optimizer and metric state
    loaded = _save_and_load(model, tmp_path, compile=True)
    return model, loaded, x, y


def _roundtrip_loss(obj, recipe, tmp_path, rng):
    model, loaded, x, y = _compiled_pair(tmp_path, rng, loss=obj)
    assert type(loaded.loss) is type(obj)
    assert _normalise(loaded.loss.get_config()) == _normalise(obj.get_config())
    y_pred = keras.ops.convert_to_numpy(model(x))
    np.testing.assert_array_equal(_flat(loaded.loss(y, y_pred)), _flat(obj(y, y_pred)))


def _roundtrip_metric(obj, recipe, tmp_path, rng):
    model, loaded, x, y = _compiled_pair(tmp_path, rng, metrics=[obj])
    expected = model.evaluate(x, y, verbose=0, return_dict=True)
    actual = loaded.evaluate(x, y, verbose=0, return_dict=True)
    assert obj.name in actual
    assert actual == expected


def _roundtrip_optimizer(obj, recipe, tmp_path, rng):
    model, loaded, x, y = _compiled_pair(tmp_path, rng, optimizer=obj)
    assert type(loaded.optimizer) is type(obj)
    assert _normalise(loaded.optimizer.get_config()) == _normalise(obj.get_config())
    model.train_on_batch(x, y)
    loaded.train_on_batch(x, y)
    for a, b in zip(_flat(model.get_weights()), _flat(loaded.get_weights())):
        np.testing.assert_array_equal(a, b)


def _roundtrip_config_only(obj, recipe, tmp_path, rng):
    """Objects that a .keras file does not hold (callbacks): the config must round-trip
    through JSON and rebuild the same object."""
    serialized = json.loads(json.dumps(keras.saving.serialize_keras_object(obj)))
    restored = keras.saving.deserialize_keras_object(serialized)
    assert type(restored) is type(obj)
    assert _normalise(restored.get_config()) == _normalise(obj.get_config())


def _roundtrip_schedule(obj, recipe, tmp_path, rng):
    """A learning-rate schedule: the config round trip, and the same values at several steps
    after it (an optimizer holding it is saved with this config)."""
    _roundtrip_config_only(obj, recipe, tmp_path, rng)
    restored = type(obj).from_config(obj.get_config())
    for step in (0, 1, 4, 7, 14):
        np.testing.assert_array_equal(_flat(restored(step)), _flat(obj(step)))


def _roundtrip_distiller(obj, recipe, tmp_path, rng):
    """The Distiller saves (student and teachers) and gives the student's outputs again."""
    x = rng.normal(size=(3, 4)).astype("float32")
    expected = _flat(obj(x))
    path = tmp_path / "distiller.keras"
    obj.save(path)
    loaded = keras.saving.load_model(path, compile=False)
    assert type(loaded) is type(obj)
    for a, e in zip(_flat(loaded(x)), expected):
        np.testing.assert_array_equal(a, e)


KINDS = [
    (kbnn.training.Distiller, _roundtrip_distiller),
    (keras.optimizers.schedules.LearningRateSchedule, _roundtrip_schedule),
    (keras.layers.Layer, _roundtrip_layer),  # quantizers, layers, blocks, models
    (keras.constraints.Constraint, _roundtrip_constraint),
    (keras.regularizers.Regularizer, _roundtrip_regularizer),
    (keras.initializers.Initializer, _roundtrip_initializer),
    (keras.losses.Loss, _roundtrip_loss),
    (keras.metrics.Metric, _roundtrip_metric),
    (keras.optimizers.Optimizer, _roundtrip_optimizer),
    (keras.callbacks.Callback, _roundtrip_config_only),
    (object, _roundtrip_config_only),  # plain objects with a config (predicates)
]


def test_every_kbnn_module_imports():
    assert not IMPORT_ERRORS, IMPORT_ERRORS


def test_the_core_classes_are_registered():
    for name in ("SteSign", "ApproxSign", "WeightClip", "QuantConv1D", "QuantConv2D",
                 "QuantDepthwiseConv2D", "QuantSeparableConv2D", "QuantDense"):
        assert f"kbnn>{name}" in REGISTERED


@pytest.mark.parametrize("name", REGISTERED)
def test_keras_file_round_trip(name, tmp_path, rng):
    registered = keras.saving.get_custom_objects()[name]
    if not isinstance(registered, type):  # a registered function
        serialized = json.loads(json.dumps(keras.saving.serialize_keras_object(registered)))
        assert keras.saving.deserialize_keras_object(serialized) is registered
        return
    for base, roundtrip in KINDS:
        if issubclass(registered, base):
            break
    else:
        _no_recipe(name, f"unknown kind {registered.__mro__}")
    obj, recipe = _construct(name)
    if name in LIVE_ARGUMENTS:  # bound to a live object: its config must still round-trip
        roundtrip = _roundtrip_config_only
    roundtrip(obj, recipe, tmp_path, rng)


@pytest.mark.parametrize("name", [n for n in REGISTERED
                                  if isinstance(keras.saving.get_custom_objects()[n], type)])
def test_get_config_covers_every_constructor_argument(name):
    """Every named argument of the kbnn constructors (the class and its kbnn bases) is a key of
    get_config(); arguments of Keras parents are checked by the layer tests."""
    cls = keras.saving.get_custom_objects()[name]
    obj, _ = _construct(name)
    config = obj.get_config()
    required = set()
    for klass in cls.__mro__:
        if klass.__module__.split(".")[0] in ("kbnn", "zoo", "converters") \
                and "__init__" in vars(klass):
            params = inspect.signature(klass.__init__).parameters.values()
            required |= {p.name for p in params if p.name != "self"
                         and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
            if not any(p.kind == p.VAR_KEYWORD for p in params):
                break  # a constructor without **kwargs passes nothing else to its bases
    missing = required - set(config) - LIVE_ARGUMENTS.get(name, set())
    assert not missing, f"{name}.get_config() lacks {sorted(missing)}"
    if name in LIVE_ARGUMENTS:
        return  # rebuilt from its config it is unbound; its own tests cover binding again
    rebuilt = type(obj).from_config(config)
    assert _normalise(rebuilt.get_config()) == _normalise(config)


@pytest.mark.parametrize(
    "obj",
    [
        keras.constraints.MaxNorm(0.5),
        keras.regularizers.L1L2(l1=0.1, l2=0.2),
        keras.initializers.RandomNormal(stddev=0.3, seed=3),
        keras.losses.CategoricalCrossentropy(label_smoothing=0.2),
        keras.metrics.CategoricalAccuracy(name="acc"),
        keras.optimizers.Adam(0.01),
    ],
    ids=lambda o: type(o).__name__,
)
def test_harness_handles_every_kind(obj, tmp_path, rng):
    """The per-kind round trips above, exercised on Keras' own objects, so they are known to
    work before a kbnn class of that kind is registered."""
    roundtrip = next(fn for base, fn in KINDS if isinstance(obj, base))
    roundtrip(obj, Recipe(), tmp_path, rng)


@keras.saving.register_keras_serializable(package="kbnn_tests")
class _ShiftSign(kbnn.quantizers.Quantizer):
    """Test-only binarizer with a per-channel variable: sign(x - t)."""

    precision = 1

    def build(self, input_shape):
        self.t = self.add_weight(shape=(input_shape[-1],), initializer="zeros", name="t")

    def call(self, inputs, training=None):
        return kbnn.quantizers.binary_sign(inputs - self.t)


@pytest.mark.parametrize("pad_values", [0.0, 1.0])
def test_layer_restores_the_variables_of_its_quantizers(pad_values, tmp_path, rng):
    """A quantizer's own variables (here a threshold per input channel) are saved with the layer
    that owns the quantizer; a reloaded layer gives the same output."""
    layer = kbnn.layers.QuantConv2D(3, 3, padding="same", pad_values=pad_values,
                                    input_quantizer=_ShiftSign(), kernel_quantizer="ste_sign")
    inputs = keras.Input(batch_shape=(2, 5, 5, 4))
    model = keras.Model(inputs, layer(inputs))
    layer.input_quantizer.t.assign(rng.normal(size=4).astype("float32"))
    x = rng.normal(size=(2, 5, 5, 4)).astype("float32")
    loaded = _save_and_load(model, tmp_path)
    restored = loaded.get_layer(layer.name).input_quantizer
    assert isinstance(restored, _ShiftSign)
    np.testing.assert_array_equal(restored.t.numpy(), layer.input_quantizer.t.numpy())
    np.testing.assert_array_equal(loaded(x).numpy(), model(x).numpy())
