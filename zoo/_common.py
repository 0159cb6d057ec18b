"""Shared parts of the kbnn.zoo builders: the keras.applications arguments (checks, input,
head; `Application` holds one call's), the checks of the binary options, widths, and loading
weights.

Every builder has the keras.applications signature::

    Builder(include_top=True, weights=None, input_tensor=None, input_shape=None, pooling=None,
            classes=1000, classifier_activation="softmax", name=None, *, <model options>)

and checks its arguments the way keras.applications does (Keras-style ValueErrors naming the
argument and echoing the value). See docs/zoo.md.
"""

from __future__ import annotations

import importlib.util
import math
import numbers
import os
import warnings
from collections.abc import Callable, Sequence

import keras

from kbnn.blocks._common import check_pad_values, check_quantizer

__all__ = [
    "DEFAULT_SIZE",
    "Application",
    "ModelSpec",
    "build_input",
    "check_arguments",
    "check_binary_options",
    "check_block_options",
    "check_width_multiplier",
    "finish_model",
    "global_average_pool",
    "scaled",
    "stage_widths",
    "top",
]

DEFAULT_SIZE = 224
IMAGENET_CLASSES = 1000
_WEIGHT_SUFFIXES = (".keras", ".weights.h5")
_POOLING = (None, "avg", "max")


class ModelSpec:
    """What the shared checks need to know about one architecture.

    Args:
        architecture: the registry name (`kbnn.zoo.list_models()`), also the name the weights
            registry knows the architecture by.
        default_name: the model name when `name=None`.
        min_size: the smallest input height/width the architecture supports.
    """

    def __init__(self, architecture: str, default_name: str, min_size: int = 1):
        self.architecture = architecture
        self.default_name = default_name
        self.min_size = min_size


def _weights_registry():
    """`kbnn.zoo.weights` when it is installed, else None (then only local files load)."""
    if importlib.util.find_spec("kbnn.zoo.weights") is None:
        return None
    return importlib.import_module("kbnn.zoo.weights")


def _is_local_file(weights) -> bool:
    return isinstance(weights, (str, os.PathLike)) and os.path.isfile(os.fspath(weights))


def _named_weights(weights) -> bool:
    """True for a named set of pre-trained weights (e.g. "imagenet"): not a local file and
    not a URL."""
    return (isinstance(weights, str) and not _is_local_file(weights)
            and "://" not in weights)


def _check_weights(spec: ModelSpec, weights) -> None:
    if weights is None:
        return
    if not isinstance(weights, (str, os.PathLike)):
        raise ValueError(  # noqa: TRY004 (bad argument value: ValueError by convention)
            f"Invalid value for argument `weights` of {spec.architecture}. Expected None "
            "(random initialization), the name of a set of pre-trained weights, or the path to "
            f"a weights file. Received weights={weights!r}.")
    if _weights_registry() is not None:
        return  # the registry checks names and files when it loads them
    path = os.fspath(weights)
    if not (_is_local_file(weights) and path.endswith(_WEIGHT_SUFFIXES)):
        raise ValueError(
            f"Invalid value for argument `weights` of {spec.architecture}. Expected None "
            f"(random initialization) or the path to an existing {' or '.join(_WEIGHT_SUFFIXES)} "
            "file (named pre-trained weights need the weights registry `kbnn.zoo.weights`, "
            f"which is not installed). Received weights={weights!r}.")


def check_arguments(spec: ModelSpec, *, include_top, weights, input_tensor, input_shape,
                    pooling, classes, classifier_activation, name) -> tuple:
    """Check the keras.applications arguments; return the input shape (H, W, C) to build.

    The rules of keras.applications: named pre-trained weights with ``include_top=True`` need
    ``classes=1000``, a 224x224x3 input and a softmax or no classifier activation;
    ``include_top=True`` needs a static input shape; without `input_shape` and `input_tensor`
    the input is 224x224x3 with the top and (None, None, 3) without it.
    """
    owner = spec.architecture
    if not isinstance(include_top, bool):
        raise ValueError(  # noqa: TRY004 (bad argument value: ValueError by convention)
            f"Invalid value for argument `include_top` of {owner}. Expected True or False. "
            f"Received include_top={include_top!r}.")
    _check_weights(spec, weights)
    named = _named_weights(weights)
    if named and weights == "digits":  # 8x8 digits weights: their own options, not ImageNet's
        from .digits import digits_options

        digits_options(owner, {"input_shape": input_shape, "classes": classes,
                               "classifier_activation": classifier_activation})
        named = False
    if include_top:
        if isinstance(classes, bool) or not isinstance(classes, int) or classes < 1:
            raise ValueError(
                f"Invalid value for argument `classes` of {owner}. Expected a strictly "
                f"positive integer. Received classes={classes!r}.")
        if named and classes != IMAGENET_CLASSES:
            raise ValueError(
                f"Invalid value for argument `classes` of {owner}. If using "
                f"`weights={weights!r}` with `include_top=True`, `classes` should be "
                f"{IMAGENET_CLASSES}. Received classes={classes!r}.")
        if named:
            try:
                activation = keras.activations.get(classifier_activation)
            except (TypeError, ValueError):
                activation = None if classifier_activation is None else object()
            if activation not in (keras.activations.get("softmax"),
                                  keras.activations.get(None)):
                raise ValueError(
                    f"Invalid value for argument `classifier_activation` of {owner}. Only None "
                    "and 'softmax' are allowed when using pre-trained weights with "
                    f"`include_top=True`. Received classifier_activation="
                    f"{classifier_activation!r}.")
        else:
            try:
                keras.activations.get(classifier_activation)
            except (TypeError, ValueError):
                raise ValueError(
                    f"Invalid value for argument `classifier_activation` of {owner}. Expected "
                    "an activation name, a callable or None. Received classifier_activation="
                    f"{classifier_activation!r}.") from None
    elif pooling not in _POOLING:
        raise ValueError(
            f"Invalid value for argument `pooling` of {owner}. Expected one of {_POOLING}. "
            f"Received pooling={pooling!r}.")
    if name is not None and (not isinstance(name, str) or not name or name.startswith("_")):
        raise ValueError(
            f"Invalid value for argument `name` of {owner}. Expected None or a non-empty string "
            f"that does not start with '_'. Received name={name!r}.")

    if input_tensor is not None:
        tensor_shape = tuple(input_tensor.shape)
        if len(tensor_shape) != 4:
            raise ValueError(
                f"Invalid value for argument `input_tensor` of {owner}. Expected a 4-D tensor "
                f"(batch, height, width, channels). Received a tensor of shape {tensor_shape}.")
        if input_shape is None:
            input_shape = tensor_shape[1:]
    return _input_shape(spec, input_shape, include_top, named, weights)


def _input_shape(spec, input_shape, include_top, named, weights) -> tuple:
    owner = spec.architecture
    default = (DEFAULT_SIZE, DEFAULT_SIZE, 3)
    if input_shape is None:
        return default if include_top else (None, None, 3)
    try:
        shape = tuple(None if d is None else int(d) for d in input_shape)
        valid = len(shape) == 3 and all(d is None or d > 0 for d in shape) and \
            all(d is None or (isinstance(d, numbers.Integral) and not isinstance(d, bool))
                for d in input_shape)
    except (TypeError, ValueError):
        shape, valid = (), False
    if not valid or shape[-1] is None:
        raise ValueError(
            f"Invalid value for argument `input_shape` of {owner}. Expected a tuple of three "
            "integers (height, width, channels), channels-last, height and width possibly None. "
            f"Received input_shape={input_shape!r}.")
    if named and include_top and shape != default:
        raise ValueError(
            f"Invalid value for argument `input_shape` of {owner}. When setting "
            f"`include_top=True` and loading `weights={weights!r}`, `input_shape` should be "
            f"{default}. Received input_shape={input_shape!r}.")
    if named and shape[-1] != 3:
        raise ValueError(
            f"Invalid value for argument `input_shape` of {owner}. The input must have 3 "
            f"channels with pre-trained weights. Received input_shape={input_shape!r}.")
    if include_top and None in shape:
        raise ValueError(
            f"Invalid value for argument `input_shape` of {owner}. If `include_top` is True, "
            f"you should specify a static `input_shape`. Received input_shape={input_shape!r}.")
    if any(d is not None and d < spec.min_size for d in shape[:2]):
        raise ValueError(
            f"Invalid value for argument `input_shape` of {owner}. Input size must be at least "
            f"{spec.min_size}x{spec.min_size}. Received input_shape={input_shape!r}.")
    return shape


def check_width_multiplier(owner: str, width_multiplier) -> float:
    """`width_multiplier` as a float > 0, else a Keras-style ValueError."""
    ok = (not isinstance(width_multiplier, bool) and isinstance(width_multiplier, (int, float))
          and math.isfinite(width_multiplier) and width_multiplier > 0)
    if not ok:
        raise ValueError(
            f"Invalid value for argument `width_multiplier` of {owner}. Expected a number > 0 "
            f"(1.0 is the published width). Received width_multiplier={width_multiplier!r}.")
    return float(width_multiplier)


def check_binary_options(architecture: str, width_multiplier, pad_values, input_quantizer,
                         kernel_quantizer) -> tuple:
    """The options of a binary builder, checked in this order with Keras-style errors naming
    `architecture`: `width_multiplier` (`check_width_multiplier`), `pad_values` and the two
    quantizers. Returns (width_multiplier, pad_values, input_quantizer, kernel_quantizer), the
    quantizers resolved; a builder that hands the arguments to blocks (one quantizer per layer)
    passes on the arguments as given instead."""
    width_multiplier = check_width_multiplier(architecture, width_multiplier)
    pad_values = check_pad_values(architecture, pad_values)
    input_quantizer = check_quantizer(architecture, "input_quantizer", input_quantizer)
    kernel_quantizer = check_quantizer(architecture, "kernel_quantizer", kernel_quantizer)
    return width_multiplier, pad_values, input_quantizer, kernel_quantizer


def check_block_options(spec: ModelSpec, width_multiplier, block: Callable, **options) -> float:
    """`width_multiplier` checked (`check_width_multiplier`), then the options of the builder's
    block checked once, before building: one ``block(1, **options)`` is made and dropped, so the
    errors are the block's (Keras-style, naming it). Returns the width multiplier."""
    width_multiplier = check_width_multiplier(spec.architecture, width_multiplier)
    block(1, **options, name=f"{spec.default_name}_argument_check")
    return width_multiplier


def scaled(channels: int, width_multiplier: float, multiple: int = 1) -> int:
    """`channels * width_multiplier` rounded to the nearest multiple of `multiple` (at least
    `multiple`)."""
    return max(multiple, round(channels * width_multiplier / multiple) * multiple)


def build_input(input_tensor, input_shape):
    """(the tensor the network starts from, the model's inputs), as keras.applications."""
    if input_tensor is None:
        image = keras.Input(shape=input_shape, name="input")
        return image, image
    if not keras.backend.is_keras_tensor(input_tensor):
        image = keras.Input(tensor=input_tensor, shape=input_shape, name="input")
        return image, image
    return input_tensor, keras.utils.get_source_inputs(input_tensor)


def global_average_pool(x, name: str):
    """Global average pooling as AveragePooling2D over the whole map + Flatten when the size is
    static (larq-zoo's `global_pool`: it runs faster than a MEAN op on LCE), else
    GlobalAveragePooling2D. Layers `name` (and `name + "_flatten"`)."""
    height, width = x.shape[1], x.shape[2]
    if height is None or width is None:
        return keras.layers.GlobalAveragePooling2D(name=name)(x)
    x = keras.layers.AveragePooling2D(pool_size=(height, width), name=name)(x)
    return keras.layers.Flatten(name=f"{name}_flatten")(x)


def top(x, *, include_top: bool, pooling, classes: int, classifier_activation,
        before_classifier: Callable | None = None, kernel_initializer="glorot_uniform"):
    """The keras.applications head: with the top, global average pooling ("avg_pool"),
    `before_classifier` (extra layers on the pooled features) and Dense "predictions";
    without it, `pooling` None (4-D features), "avg" ("avg_pool") or "max" ("max_pool")."""
    if include_top:
        x = global_average_pool(x, "avg_pool")
        if before_classifier is not None:
            x = before_classifier(x)
        return keras.layers.Dense(classes, activation=classifier_activation,
                                  kernel_initializer=kernel_initializer, name="predictions")(x)
    if pooling == "avg":
        return global_average_pool(x, "avg_pool")
    if pooling == "max":
        return keras.layers.GlobalMaxPooling2D(name="max_pool")(x)
    return x


def finish_model(spec: ModelSpec, inputs, outputs, *, name, weights) -> keras.Model:
    """The functional model, named `name` (or the architecture's default), with `weights`
    loaded: through `kbnn.zoo.weights.load_weights` when the registry is installed, else
    `model.load_weights` on a local .keras / .weights.h5 file."""
    model = keras.Model(inputs, outputs, name=name or spec.default_name)
    if weights is None:
        return model
    registry = _weights_registry()
    if registry is not None and weights == "digits" and not _is_local_file(weights):
        from .digits import DIGITS_MODELS

        # Keras warns about each layer it cannot match before it raises: those warnings are
        # shown only if the weights load; a mismatch is reported by the error below alone.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                registry.load_weights(model, weights, architecture=spec.architecture)
            except ValueError as err:
                options = DIGITS_MODELS[spec.architecture].options
                raise ValueError(
                    f"Invalid value for argument `weights` of {spec.architecture}: "
                    f"weights='digits' need the builder options {options!r} "
                    f"(kbnn.zoo.get({spec.architecture!r}, weights='digits') sets them) "
                    f"[{err}].") from None
        for warning in caught:
            warnings.warn_explicit(warning.message, warning.category, warning.filename,
                                   warning.lineno)
    elif registry is not None:
        registry.load_weights(model, weights, architecture=spec.architecture)
    else:
        model.load_weights(os.fspath(weights))
    return model


class Application:
    """One builder call's keras.applications arguments, in the builder's order: `input()` checks
    them (`check_arguments`) and returns the tensor the network starts from, `top(x)` adds the
    head (`top`), `model(outputs)` makes the model and loads the weights (`finish_model`)."""

    def __init__(self, spec: ModelSpec, include_top, weights, input_tensor, input_shape,
                 pooling, classes, classifier_activation, name):
        self.spec = spec
        self.arguments = {"include_top": include_top, "weights": weights,
                          "input_tensor": input_tensor, "input_shape": input_shape,
                          "pooling": pooling, "classes": classes,
                          "classifier_activation": classifier_activation, "name": name}
        self._inputs = None

    def input(self):
        """Check the arguments; the image tensor (a new `keras.Input` "input" or
        `input_tensor`)."""
        shape = check_arguments(self.spec, **self.arguments)
        image, self._inputs = build_input(self.arguments["input_tensor"], shape)
        return image

    def top(self, x, **options):
        """`top` with this call's `include_top`, `pooling`, `classes` and
        `classifier_activation` (`options`: `before_classifier`, `kernel_initializer`)."""
        head = {key: self.arguments[key]
                for key in ("include_top", "pooling", "classes", "classifier_activation")}
        return top(x, **head, **options)

    def model(self, outputs) -> keras.Model:
        """The model from `input()`'s inputs to `outputs`, named and with its weights loaded."""
        return finish_model(self.spec, self._inputs, outputs, name=self.arguments["name"],
                            weights=self.arguments["weights"])


def stage_widths(base: Sequence[int], width_multiplier: float, multiple: int = 1) -> list[int]:
    """Every width of `base` scaled by `width_multiplier`, keeping the ratios between them:
    the first is rounded (`scaled`), the others are that times their ratio to the first."""
    first = scaled(base[0], width_multiplier, multiple)
    return [first * c // base[0] if c % base[0] == 0 else scaled(c, width_multiplier, multiple)
            for c in base]
