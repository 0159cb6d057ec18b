"""larq 0.14's public API on kbnn and Keras 3 (larq: Geiger & Team Plumerai, "Larq: An
Open-Source Library for Training Binarized Neural Networks", JOSS 2020).

A larq training script ports by changing its imports::

    import kbnn.compat.larq as lq     # instead of: import larq as lq

``lq.layers``, ``lq.quantizers``, ``lq.constraints``, ``lq.math``, ``lq.optimizers``,
``lq.callbacks``, ``lq.metrics``, ``lq.models``, ``lq.activations``, ``lq.context`` and
``lq.utils`` hold larq's public names, each mapped onto its kbnn equivalent. A model built
through them is a plain kbnn model: ``lq.layers.QuantConv2D(...)`` returns a
`kbnn.layers.QuantConv2D`, so it saves, loads and converts with kbnn alone. The names larq has
and kbnn cannot provide raise `NotImplementedError` saying why and what to use. Every name,
and where kbnn differs on purpose (heaviside(0) = 1, the summary's counting convention, Bop
writing +-1 into its variables, ...), is listed in docs/migrating-from-larq.md.

``lq.optimizers.Bop.is_binary_variable`` (larq's model-free predicate) is True for the binary
weights of the layers made through ``lq.layers`` (kbnn keeps no quantized variables that know
their precision). For models built otherwise (``kbnn.layers``, ``kbnn.zoo``) use
``kbnn.optimizers.binary_predicate(model)``.
"""

from __future__ import annotations

import contextlib
import sys
import types
import weakref
from collections.abc import Callable

import keras

import kbnn
from kbnn import activations as _activations
from kbnn import constraints as _constraints
from kbnn import quantizers as _kq
from kbnn.optimizers.case import _same_variable

__all__ = ["activations", "callbacks", "constraints", "context", "layers", "math", "metrics",
           "models", "optimizers", "quantizers", "utils"]

#: The larq release whose public API this module maps.
LARQ_VERSION = "0.14"


def _namespace(name: str, doc: str) -> types.ModuleType:
    """A sub-module ``kbnn.compat.larq.<name>`` (also importable by that name)."""
    module = types.ModuleType(f"{__name__}.{name}", doc)
    sys.modules[module.__name__] = module
    return module


def _unsupported(where: str, why: str, instead: str):
    """A callable named like larq's, raising NotImplementedError with the reason."""

    def unsupported(*args, **kwargs):
        raise NotImplementedError(
            f"{where} is not supported by kbnn.compat.larq: {why}. {instead} "
            "(see docs/migrating-from-larq.md).")

    unsupported.__name__ = where.rsplit(".", 1)[-1]
    unsupported.__qualname__ = unsupported.__name__
    unsupported.__doc__ = f"Not supported: {why}. {instead}"
    return unsupported


# =============================================================================== quantizers

@keras.saving.register_keras_serializable(package="kbnn.compat")
class FunctionQuantizer(_kq.Quantizer):
    """A plain function ``x -> y`` used as a quantizer, as larq allows (``input_quantizer=
    my_function``). kbnn quantizers are `Quantizer` layers, so the function is wrapped.

    It has no binary form (`binary_form` is None), so the converter cannot lower a layer that
    uses it to an LCE binary op: prefer a kbnn quantizer class. `precision` is the function's
    ``precision`` attribute (as set by ``lq.utils.set_precision``), else 32. Saving stores the
    function with `keras.saving.serialize_keras_object` (a registered or importable function;
    a lambda loads only with ``safe_mode=False``).
    """

    def __init__(self, function: Callable, precision: int | None = None, **kwargs):
        super().__init__(**kwargs)
        if not callable(function):
            raise TypeError(
                "Invalid value for argument `function` of FunctionQuantizer. Expected a "
                f"callable x -> y. Received function={function!r}.")
        self.function = function
        self.precision = int(precision if precision is not None
                             else getattr(function, "precision", None) or 32)

    def call(self, inputs, training=None):
        return self.function(inputs)

    def get_config(self) -> dict:
        return {**super().get_config(),
                "function": keras.saving.serialize_keras_object(self.function),
                "precision": self.precision}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["function"] = keras.saving.deserialize_keras_object(config["function"])
        return cls(**config)


# larq's string names (its aliases and class names) -> kbnn classes.
_QUANTIZER_NAMES: dict[str, type] = {
    "ste_sign": _kq.SteSign, "SteSign": _kq.SteSign,
    "approx_sign": _kq.ApproxSign, "ApproxSign": _kq.ApproxSign,
    "swish_sign": _kq.SwishSign, "SwishSign": _kq.SwishSign,
    "ste_heaviside": _kq.SteHeaviside, "SteHeaviside": _kq.SteHeaviside,
    "magnitude_aware_sign": _kq.MagnitudeAwareSign,
    "MagnitudeAwareSign": _kq.MagnitudeAwareSign,
    "ste_tern": _kq.SteTern, "SteTern": _kq.SteTern,
    "dorefa_quantizer": _kq.DoReFa, "DoReFa": _kq.DoReFa, "DoReFaQuantizer": _kq.DoReFa,
    "noop": _kq.NoOp, "NoOp": _kq.NoOp, "NoOpQuantizer": _kq.NoOp,
}
# larq's quantizer functions (exported here as kbnn's) -> the kbnn class with that training
# form, so that a layer given the function stays binary and convertible.
_QUANTIZER_FUNCTIONS: dict[Callable, type] = {
    _kq.ste_sign: _kq.SteSign,
    _kq.approx_sign: _kq.ApproxSign,
    _kq.swish_sign: _kq.SwishSign,
    _kq.ste_heaviside: _kq.SteHeaviside,
    _kq.ste_tern: _kq.SteTern,
    _kq.magnitude_aware_sign: _kq.MagnitudeAwareSign,
}


def _get_quantizer(identifier):
    """larq's `quantizers.get` on kbnn: None, a larq or kbnn name, a config dict, a
    `Quantizer` instance or class, or a function (larq's functions map to their kbnn class,
    others are wrapped in a `FunctionQuantizer`)."""
    if identifier is None:
        return None
    if isinstance(identifier, str) and identifier in _QUANTIZER_NAMES:
        return _QUANTIZER_NAMES[identifier]()
    if isinstance(identifier, dict) and identifier.get("class_name") in _QUANTIZER_NAMES \
            and "module" not in identifier:
        cls = _QUANTIZER_NAMES[identifier["class_name"]]
        return cls.from_config(dict(identifier.get("config") or {}))
    if isinstance(identifier, (str, dict, _kq.Quantizer)) or (
            isinstance(identifier, type) and issubclass(identifier, _kq.Quantizer)):
        return _kq.get(identifier)
    if callable(identifier):
        known = next((cls for fn, cls in _QUANTIZER_FUNCTIONS.items() if fn is identifier), None)
        return known() if known is not None else FunctionQuantizer(identifier)
    raise ValueError(
        f"Could not interpret quantization function identifier: {identifier!r}. Expected "
        "None, a quantizer name (e.g. 'ste_sign'), a config dict, a Quantizer, or a "
        "function.")


def _get_kernel_quantizer(identifier):
    """larq's `get_kernel_quantizer`: `get` (kbnn has no per-quantizer training metrics to
    add; use `kbnn.metrics.FlipRatio(model)`)."""
    return _get_quantizer(identifier)


def _serialize_quantizer(quantizer, use_legacy_format=False):
    return _kq.serialize(quantizer)


def _deserialize_quantizer(name, custom_objects=None, use_legacy_format=False):
    if isinstance(name, str):
        return _get_quantizer(name)
    if isinstance(name, dict) and name.get("class_name") in _QUANTIZER_NAMES \
            and "module" not in name:
        return _get_quantizer(name)
    return _kq.deserialize(name, custom_objects=custom_objects)


quantizers = _namespace("quantizers", "larq.quantizers on kbnn.quantizers.")
quantizers.Quantizer = _kq.Quantizer
quantizers.SteSign = _kq.SteSign
quantizers.ApproxSign = _kq.ApproxSign
quantizers.SwishSign = _kq.SwishSign
quantizers.SteHeaviside = _kq.SteHeaviside
quantizers.MagnitudeAwareSign = _kq.MagnitudeAwareSign
quantizers.SteTern = _kq.SteTern
quantizers.DoReFa = _kq.DoReFa
quantizers.DoReFaQuantizer = _kq.DoReFa
quantizers.NoOp = _kq.NoOp
quantizers.NoOpQuantizer = _kq.NoOp
quantizers.ste_sign = _kq.ste_sign
quantizers.approx_sign = _kq.approx_sign
quantizers.swish_sign = _kq.swish_sign
quantizers.ste_tern = _kq.ste_tern
quantizers.ste_heaviside = _kq.ste_heaviside
quantizers.QuantizerType = _kq.Quantizer | Callable
quantizers.get = _get_quantizer
quantizers.get_kernel_quantizer = _get_kernel_quantizer
quantizers.serialize = _serialize_quantizer
quantizers.deserialize = _deserialize_quantizer
quantizers.FunctionQuantizer = FunctionQuantizer
quantizers.__all__ = ["ApproxSign", "DoReFa", "DoReFaQuantizer", "MagnitudeAwareSign", "NoOp",
                      "NoOpQuantizer", "Quantizer", "SteHeaviside", "SteSign", "SteTern",
                      "SwishSign"]


# =================================================================================== layers

# The live layers made through `lq.layers`, whose binary weights
# `lq.optimizers.Bop.is_binary_variable` recognises.
_TRACKED_LAYERS: weakref.WeakSet = weakref.WeakSet()
_QUANTIZER_ARGUMENTS = ("input_quantizer", "kernel_quantizer", "depthwise_quantizer",
                        "pointwise_quantizer")


def _layer_kwargs(name: str, kwargs: dict) -> dict:
    kwargs = dict(kwargs)
    metrics = kwargs.pop("metrics", None)
    if metrics:
        raise NotImplementedError(
            f"lq.layers.{name}(metrics={metrics!r}) is not supported by kbnn.compat.larq: kbnn "
            "has no per-layer training metrics. Track the flip ratio of all binary weights "
            "with model.compile(..., metrics=[kbnn.metrics.FlipRatio(model)]) (see "
            "docs/migrating-from-larq.md).")
    for argument in _QUANTIZER_ARGUMENTS:
        if argument in kwargs:
            kwargs[argument] = _get_quantizer(kwargs[argument])
    return kwargs


class _LarqLayerType(type):
    """The type of the `lq.layers` classes: calling one returns an instance of the kbnn class
    it maps (``lq.layers.QuantConv2D(...)`` is a `kbnn.layers.QuantConv2D`), with larq's
    quantizer identifiers resolved, and records it for `Bop.is_binary_variable`. A subclass
    defined by a user instantiates normally (it is a subclass of the kbnn class)."""

    def __call__(cls, *args, **kwargs):
        target = cls.__dict__.get("_kbnn_class")
        if target is None:
            return super().__call__(*args, **kwargs)
        layer = target(*args, **_layer_kwargs(cls.__name__, kwargs))
        _TRACKED_LAYERS.add(layer)
        return layer

    def __instancecheck__(cls, instance):
        target = cls.__dict__.get("_kbnn_class")
        if target is not None:
            return isinstance(instance, target)
        return super().__instancecheck__(instance)

    def __subclasscheck__(cls, subclass):
        target = cls.__dict__.get("_kbnn_class")
        if target is not None:
            return issubclass(subclass, target)
        return super().__subclasscheck__(subclass)


def _larq_layer(kbnn_class: type) -> type:
    def __init__(self, *args, **kwargs):
        kbnn_class.__init__(self, *args, **_layer_kwargs(type(self).__name__, kwargs))
        _TRACKED_LAYERS.add(self)

    namespace = {
        "_kbnn_class": kbnn_class,
        "__init__": __init__,
        "__doc__": f"larq's {kbnn_class.__name__} on kbnn: returns a "
                   f"`kbnn.layers.{kbnn_class.__name__}` ({kbnn_class.__doc__.splitlines()[0]})",
        "__module__": f"{__name__}.layers",
    }
    return _LarqLayerType(kbnn_class.__name__, (kbnn_class,), namespace)


def _unsupported_layer(name: str, why: str, instead: str) -> type:
    def __init__(self, *args, **kwargs):
        raise NotImplementedError(
            f"lq.layers.{name} is not supported by kbnn.compat.larq: {why}. {instead} "
            "(see docs/migrating-from-larq.md).")

    return type(name, (), {"__init__": __init__, "__module__": f"{__name__}.layers",
                           "__doc__": f"Not supported: {why}. {instead}"})


layers = _namespace("layers", "larq.layers on kbnn.layers.")
layers.QuantDense = _larq_layer(kbnn.layers.QuantDense)
layers.QuantConv1D = _larq_layer(kbnn.layers.QuantConv1D)
layers.QuantConv2D = _larq_layer(kbnn.layers.QuantConv2D)
layers.QuantDepthwiseConv2D = _larq_layer(kbnn.layers.QuantDepthwiseConv2D)
layers.QuantSeparableConv2D = _larq_layer(kbnn.layers.QuantSeparableConv2D)
_NO_BINARY_OP = "LCE has no binary op for it and kbnn has no quantized form of it"
layers.QuantConv3D = _unsupported_layer(
    "QuantConv3D", _NO_BINARY_OP, "Use keras.layers.Conv3D (float)")
layers.QuantConv2DTranspose = _unsupported_layer(
    "QuantConv2DTranspose", _NO_BINARY_OP, "Use keras.layers.Conv2DTranspose (float)")
layers.QuantConv3DTranspose = _unsupported_layer(
    "QuantConv3DTranspose", _NO_BINARY_OP, "Use keras.layers.Conv3DTranspose (float)")
layers.QuantSeparableConv1D = _unsupported_layer(
    "QuantSeparableConv1D", _NO_BINARY_OP,
    "Use keras.layers.SeparableConv1D (float) or lq.layers.QuantConv1D")
layers.QuantLocallyConnected1D = _unsupported_layer(
    "QuantLocallyConnected1D", "Keras 3 has no LocallyConnected layers",
    "Use lq.layers.QuantConv1D")
layers.QuantLocallyConnected2D = _unsupported_layer(
    "QuantLocallyConnected2D", "Keras 3 has no LocallyConnected layers",
    "Use lq.layers.QuantConv2D")
layers.__all__ = ["QuantConv1D", "QuantConv2D", "QuantConv2DTranspose", "QuantConv3D",
                  "QuantConv3DTranspose", "QuantDense", "QuantDepthwiseConv2D",
                  "QuantLocallyConnected1D", "QuantLocallyConnected2D", "QuantSeparableConv1D",
                  "QuantSeparableConv2D"]


# =============================================================================== optimizers

def tracked_binary_variables() -> list:
    """The binary weights of the live, built layers made through ``lq.layers``: what
    ``lq.optimizers.Bop.is_binary_variable`` is True for."""
    found = []
    for layer in list(_TRACKED_LAYERS):
        if not layer.built:
            continue
        for weight in layer.quantized_weights().values():
            if weight.is_binary and not any(weight.variable is v for v in found):
                found.append(weight.variable)
    return found


@keras.saving.register_keras_serializable(package="kbnn.compat")
class LarqBinaryVariablePredicate:
    """larq's ``Bop.is_binary_variable(variable)``: True for a binary weight of a layer made
    through ``lq.layers`` (`tracked_binary_variables`). larq reads the precision of its
    quantized variable instead; kbnn variables carry none, so layers made otherwise are not
    recognised: use ``kbnn.optimizers.binary_predicate(model)`` for them."""

    def __call__(self, variable) -> bool:
        return any(_same_variable(variable, v) for v in tracked_binary_variables())

    def __repr__(self) -> str:
        return "lq.optimizers.Bop.is_binary_variable"

    def get_config(self) -> dict:
        return {}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


class _LarqOptimizerType(type):
    """Calling ``lq.optimizers.Bop(...)`` returns a `kbnn.optimizers.Bop`."""

    def __call__(cls, *args, **kwargs):
        target = cls.__dict__.get("_kbnn_class")
        if target is None:
            return super().__call__(*args, **kwargs)
        return target(*args, **kwargs)

    def __instancecheck__(cls, instance):
        target = cls.__dict__.get("_kbnn_class")
        if target is not None:
            return isinstance(instance, target)
        return super().__instancecheck__(instance)


class _Bop(kbnn.optimizers.Bop, metaclass=_LarqOptimizerType):
    """larq's Bop on kbnn: ``lq.optimizers.Bop(threshold=1e-8, gamma=1e-4)`` returns a
    `kbnn.optimizers.Bop` (which writes exactly +-1 into the binary weights; larq keeps its
    latent value), and ``lq.optimizers.Bop.is_binary_variable`` is larq's predicate for
    `CaseOptimizer` (see `LarqBinaryVariablePredicate`)."""

    _kbnn_class = kbnn.optimizers.Bop
    is_binary_variable = LarqBinaryVariablePredicate()


_Bop.__name__ = _Bop.__qualname__ = "Bop"
_Bop.__module__ = f"{__name__}.optimizers"

optimizers = _namespace("optimizers", "larq.optimizers on kbnn.optimizers.")
optimizers.Bop = _Bop
optimizers.CaseOptimizer = kbnn.optimizers.CaseOptimizer
optimizers.__all__ = ["Bop", "CaseOptimizer"]


# ========================================================================= the other names

class HyperparameterScheduler(kbnn.optimizers.HyperparameterScheduler):
    """larq's HyperparameterScheduler: kbnn's, plus larq's `log_name` (the name the value is
    logged under at the end of every epoch; default the hyperparameter's name)."""

    def __init__(self, schedule, hyperparameter, optimizer=None, update_freq="epoch",
                 verbose=0, log_name=None):
        super().__init__(schedule, hyperparameter, optimizer=optimizer,
                         update_freq=update_freq, verbose=verbose)
        self.log_name = log_name or hyperparameter

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs[self.log_name] = self.current_value()


HyperparameterScheduler.__module__ = f"{__name__}.callbacks"

callbacks = _namespace("callbacks", "larq.callbacks on kbnn.optimizers.")
callbacks.HyperparameterScheduler = HyperparameterScheduler

constraints = _namespace("constraints", "larq.constraints on kbnn.constraints.")
constraints.WeightClip = _constraints.WeightClip
constraints.weight_clip = _constraints.WeightClip

activations = _namespace("activations", "larq.activations on kbnn.activations.")
activations.hard_tanh = _activations.hard_tanh
activations.leaky_tanh = _activations.leaky_tanh

metrics = _namespace("metrics", "larq.metrics on kbnn.metrics.")
metrics.FlipRatio = kbnn.metrics.FlipRatio


def _sign(x):
    """sign(x) in {-1, +1} with sign(0) = +1, as larq's `math.sign` (kbnn's `binary_sign`:
    NaN gives +1, where larq gives NaN)."""
    return _kq.binary_sign(x)


def _heaviside(x):
    """The Heaviside step in {0, 1} with **heaviside(0) = 1** (kbnn's convention sign(0) = +1,
    the same as `SteHeaviside` and LCE). larq's `math.heaviside` gives 0 at 0."""
    return 0.5 * _kq.binary_sign(x) + 0.5


math = _namespace("math", "larq.math with kbnn's sign convention.")
math.sign = _sign
math.heaviside = _heaviside


def _summary(model, print_fn=None, include_macs=True):
    """larq's `models.summary` on `kbnn.summary`: kbnn's table and totals (Bi-Real Net's
    BOPs/FLOPs/OPs convention, docs/migrating-from-larq.md). `include_macs` is accepted for
    compatibility: kbnn's table always has the MACs."""
    kbnn.summary(model, print_fn=print_fn)


models = _namespace("models", "larq.models on kbnn.summary.")
models.summary = _summary
models.__all__ = ["summary"]

_NO_QUANTIZED_VARIABLES = ("kbnn has no quantized variables: a layer's weights are always the "
                           "latent (float) weights, and the quantized values are computed in "
                           "`call`")
context = _namespace("context", "larq.context: not supported by kbnn.")
context.quantized_scope = _unsupported(
    "lq.context.quantized_scope", _NO_QUANTIZED_VARIABLES,
    "Read a layer's quantized weights with layer.quantized_weights()[argument] and apply its "
    "quantizer (`QuantizedWeight.value()`, `quantizer(...)`)")
context.should_quantize = _unsupported(
    "lq.context.should_quantize", _NO_QUANTIZED_VARIABLES, "See lq.context.quantized_scope")
_NO_METRICS_SCOPE = "kbnn has no per-quantizer training metrics"
_FLIP_RATIO = "Use model.compile(..., metrics=[kbnn.metrics.FlipRatio(model)])"
context.metrics_scope = _unsupported("lq.context.metrics_scope", _NO_METRICS_SCOPE,
                                     _FLIP_RATIO)
context.get_training_metrics = _unsupported("lq.context.get_training_metrics",
                                            _NO_METRICS_SCOPE, _FLIP_RATIO)
context.__all__ = ["get_training_metrics", "metrics_scope", "quantized_scope",
                   "should_quantize"]


def _memory_as_readable_str(num_bits: int) -> str:
    """larq's `utils.memory_as_readable_str`: num_bits / 8 bytes in B, KiB, MiB or GiB, two
    decimals."""
    suffixes = ["B", "KiB", "MiB", "GiB"]
    num_bytes = num_bits / 8
    for i, suffix in enumerate(suffixes):
        rounded = num_bytes / (1024**i)
        if rounded < 1024:
            break
    return f"{rounded:,.2f} {suffix}"


def _register_keras_custom_object(cls):
    """larq's `utils.register_keras_custom_object`: register `cls` with Keras so a saved
    model finds it (`keras.saving.register_keras_serializable()`, package "Custom")."""
    return keras.saving.register_keras_serializable()(cls)


def _register_alias(name: str):
    """larq's `utils.register_alias`: `name` resolves to the class in Keras' custom objects
    and, for a `Quantizer` subclass, in ``lq.quantizers.get`` (and so in the quantizer
    arguments of ``lq.layers``)."""

    def register(cls):
        keras.saving.get_custom_objects()[name] = cls
        if isinstance(cls, type) and issubclass(cls, _kq.Quantizer):
            _QUANTIZER_NAMES[name] = cls
        return cls

    return register


def _set_precision(precision: int = 32):
    """larq's `utils.set_precision`: sets ``function.precision`` (read by `FunctionQuantizer`
    when the function is used as a quantizer)."""

    def decorator(function):
        function.precision = precision
        return function

    return decorator


@contextlib.contextmanager
def _patch_object(obj, name, value):
    """larq's `utils.patch_object`: temporarily set ``obj.name = value``."""
    old = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, old)


utils = _namespace("utils", "larq.utils on Keras 3.")
utils.memory_as_readable_str = _memory_as_readable_str
utils.register_keras_custom_object = _register_keras_custom_object
utils.register_alias = _register_alias
utils.set_precision = _set_precision
utils.patch_object = _patch_object
