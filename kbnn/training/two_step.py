"""Two-step training of binary networks and per-variable weight decay.

ReActNet (Liu et al., arXiv 2003.03488) and AdamBNN (Liu et al., "How Do Adam and Training
Strategies Help BNNs Optimization?", ICML 2021, arXiv 2106.11309) train in two steps: step 1
with binary activations and real-valued weights, step 2 with binary weights too, starting from
the step-1 weights, and no weight decay on the binary weights in step 2. `to_step2` turns a
step-1 model into its step-2 model (rebuilt from its config with kernel quantizers set, every
weight carried over); `to_step1` goes the other way. `weight_decay_exclusions` and
`exclude_binary_weights_from_decay` keep Keras' decoupled weight decay off the binary latent
weights. See docs/training.md.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import keras

from kbnn import _keras_compat as compat
from kbnn import quantizers as kq
from kbnn.optimizers.case import binary_variables

__all__ = ["exclude_binary_weights_from_decay", "replace_weight_quantizers", "to_step1",
           "to_step2", "weight_decay_exclusions"]


# ---------------------------------------------------------------------------- configs

def _layer_class(entry: dict):
    """The class a serialised layer entry names, or None when it is not a registered class."""
    name = entry.get("registered_name") or entry.get("class_name")
    if not isinstance(name, str):
        return None
    cls = keras.saving.get_registered_object(name)
    return cls if isinstance(cls, type) else None


def _weight_arguments(cls) -> tuple[str, ...]:
    """The weight-quantizer arguments of a kbnn quantized layer or block class, else ()."""
    from kbnn.blocks._common import BinaryBlock
    from kbnn.layers.base import QuantizedLayerMixin

    if issubclass(cls, QuantizedLayerMixin):
        return tuple(cls.quantized_weight_attributes)
    if issubclass(cls, BinaryBlock):
        return ("kernel_quantizer",)
    return ()


def _binary_input(config: dict) -> bool:
    value = config.get("input_quantizer")
    if value is None:
        return False
    quantizer = kq.get(value, argument="input_quantizer")
    return quantizer is not None and quantizer.precision == 1


def _edit_configs(node, edit: Callable[[type, dict], bool]) -> int:
    """Apply ``edit(cls, config)`` to every serialised kbnn quantized layer or block in the
    nested config `node` (models inside models included); return how many it changed."""
    changed = 0
    if isinstance(node, dict):
        config = node.get("config")
        if "class_name" in node and isinstance(config, dict):
            cls = _layer_class(node)
            if cls is not None and _weight_arguments(cls) and edit(cls, config):
                changed += 1
        for value in node.values():
            changed += _edit_configs(value, edit)
    elif isinstance(node, (list, tuple)):
        for value in node:
            changed += _edit_configs(value, edit)
    return changed


def _serialized_quantizer(identifier, argument: str):
    quantizer = kq.get(identifier, argument=argument)
    if quantizer is None:
        return None
    serialized = kq.serialize(quantizer)
    serialized.pop("build_config", None)
    serialized.get("config", {}).pop("name", None)  # each layer gets its own name
    return serialized


# ------------------------------------------------------------------------ rebuilding

def _same_quantizer(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if type(a) is not type(b):
        return False

    def config(q):
        return {k: v for k, v in q.get_config().items() if k != "name"}

    return config(a) == config(b)


def _quantized_layers(model) -> list:
    from kbnn.layers.base import QuantizedLayerMixin

    return [layer for layer in compat.flatten_layers(model, include_self=True, recursive=True)
            if isinstance(layer, QuantizedLayerMixin)]


def _copy_weights(source, target) -> None:
    """Assign every weight of `source` to the same weight of `target` (rebuilt from source's
    config with some quantizers changed); the weights of changed quantizers are left out
    (dropped, or kept at their initial values)."""
    old_layers, new_layers = _quantized_layers(source), _quantized_layers(target)
    if len(old_layers) != len(new_layers):
        raise ValueError(  # pragma: no cover - same config, same layers
            f"Cannot carry the weights of {source.name!r} over: it has {len(old_layers)} "
            f"quantized layers and its rebuilt model {len(new_layers)}.")
    skip_old, skip_new = set(), set()
    for old, new in zip(old_layers, new_layers):
        for argument in ("input_quantizer", *new.quantized_weight_attributes):
            a, b = getattr(old, argument, None), getattr(new, argument, None)
            if not _same_quantizer(a, b):
                skip_old.update(id(w) for w in (a.weights if a is not None else []))
                skip_new.update(id(w) for w in (b.weights if b is not None else []))
    old_weights = [w for w in source.weights if id(w) not in skip_old]
    new_weights = [w for w in target.weights if id(w) not in skip_new]
    if len(old_weights) != len(new_weights):
        raise ValueError(
            f"Cannot carry the weights of {source.name!r} over to its rebuilt model: "
            f"{len(old_weights)} weights against {len(new_weights)}.")
    for old, new in zip(old_weights, new_weights):
        if tuple(old.shape) != tuple(new.shape):
            raise ValueError(
                f"Cannot carry weight {old.path!r} of shape {tuple(old.shape)} over to "
                f"{new.path!r} of shape {tuple(new.shape)}.")
        new.assign(old)


def _rebuild(model, edit: Callable[[type, dict], bool], what: str) -> keras.Model:
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"Invalid value for argument `model` of {what}. Expected a keras.Model. "
            f"Received model={model!r} (of type {type(model).__name__}).")
    if not model.built:
        raise ValueError(
            f"{what}: model {model.name!r} is not built; build it (or call it on data) first, "
            "so that its weights can be carried over.")
    serialized = keras.saving.serialize_keras_object(model)
    serialized.pop("compile_config", None)
    serialized = copy.deepcopy(serialized)
    if _edit_configs(serialized.get("config"), edit) == 0:
        raise ValueError(
            f"{what}: no layer of model {model.name!r} was changed: it has no kbnn quantized "
            "layer or block that the selection picks (see the function's docstring).")
    rebuilt = keras.saving.deserialize_keras_object(serialized)
    if not rebuilt.built:
        rebuilt.build_from_config(serialized.get("build_config") or {})
    _copy_weights(model, rebuilt)
    return rebuilt


def replace_weight_quantizers(model, weight_quantizer, *, select: Callable[[dict], bool]):
    """A copy of `model` in which every kbnn quantized layer or block whose config
    ``select(config)`` accepts gets `weight_quantizer` for each of its weight-quantizer
    arguments (``kernel_quantizer``; a depthwise layer's ``depthwise_quantizer``; a separable
    layer's ``depthwise_quantizer`` and ``pointwise_quantizer``; a block's
    ``kernel_quantizer``).

    The copy is rebuilt from the model's config (nested models and kbnn blocks included) and
    receives every weight of `model` (the float kernels become the latent weights); the weights
    of quantizers that changed are left out (a new quantizer keeps its initial values). The
    model must be built and serialisable (functional, Sequential, or a subclass with
    `get_config`). Not compiled.

    Args:
        model: the model to copy.
        weight_quantizer: anything `kbnn.quantizers.get` accepts, or None (float weights).
        select: ``select(config) -> bool`` on the layer's config dict (its "name", its
            "input_quantizer", ...).
    """
    serialized = _serialized_quantizer(weight_quantizer, "weight_quantizer")

    def edit(cls, config):
        if not select(config):
            return False
        for argument in _weight_arguments(cls):
            config[argument] = copy.deepcopy(serialized)
        return True

    return _rebuild(model, edit, "replace_weight_quantizers")


def to_step2(step1_model, kernel_quantizer, *, select: Callable[[dict], bool] | None = None):
    """The step-2 model of two-step training (ReActNet, arXiv 2003.03488; AdamBNN,
    arXiv 2106.11309): binary weights too, starting from the step-1 weights.

    Every kbnn quantized layer and block of `step1_model` (at any depth) that binarizes its
    input (an input quantizer of precision 1) and has no weight quantizer gets
    `kernel_quantizer` on its weights (`kernel_quantizer`, or a depthwise layer's
    `depthwise_quantizer`, ...). Layers with a float input (the stem, the classifier) and layers
    that already quantize their weights are left alone. The model is rebuilt from its config and
    every step-1 weight is carried over exactly: the step-1 float kernels become the latent
    weights of the binary kernels.

    Args:
        step1_model: a built step-1 model (binary activations, real-valued weights).
        kernel_quantizer: the weight binarizer of step 2, e.g. "scaled_sign" (ReActNet's
            mean|W| * sign(W)) or "ste_sign"; anything `kbnn.quantizers.get` accepts.
        select: an optional ``select(config) -> bool`` on each candidate layer's config, to
            binarize fewer layers (e.g. ``lambda c: c["name"] != "last_conv"``).

    Returns:
        A new, uncompiled model. Compile it with a fresh optimizer (step 2 uses no weight
        decay on the binary weights: see `exclude_binary_weights_from_decay`).
    """
    if kernel_quantizer is None:
        raise ValueError(
            "Invalid value for argument `kernel_quantizer` of to_step2. Expected the weight "
            "binarizer of step 2, such as 'scaled_sign' or 'ste_sign'. Received None.")
    resolved = kq.get(kernel_quantizer, argument="kernel_quantizer", owner="to_step2")

    def candidate(config):
        return _binary_input(config) and (select is None or select(config))

    def edit(cls, config):
        arguments = _weight_arguments(cls)
        if not candidate(config) or any(config.get(a) is not None for a in arguments):
            return False
        for argument in arguments:
            config[argument] = _serialized_quantizer(resolved, "kernel_quantizer")
        return True

    return _rebuild(step1_model, edit, "to_step2")


def to_step1(model, *, select: Callable[[dict], bool] | None = None):
    """The step-1 model of two-step training for a binary `model`: binary activations with
    real-valued weights. Every kbnn quantized layer and block that binarizes its input loses its
    weight quantizers (set to None); the latent weights become the float weights. The inverse
    of `to_step2`, e.g. to start two-step training from a zoo architecture:
    ``step1 = to_step1(kbnn.zoo.ReActNetA(...))``.

    Args:
        model: a built model.
        select: an optional ``select(config) -> bool`` on each candidate layer's config.
    """

    def edit(cls, config):
        arguments = _weight_arguments(cls)
        if not _binary_input(config) or (select is not None and not select(config)):
            return False
        if all(config.get(a) is None for a in arguments):
            return False
        for argument in arguments:
            config[argument] = None
        return True

    return _rebuild(model, edit, "to_step1")


# ------------------------------------------------------------------------ weight decay

def weight_decay_exclusions(model) -> list:
    """The variables to keep out of weight decay in a binary model: its binary latent weights,
    i.e. every variable that a kbnn quantized layer (at any depth) quantizes with a binary
    quantizer, from the layers' `quantized_weights()` map (`kbnn.optimizers.binary_variables`).

    Decay pulls latent weights towards 0, where their sign flips easily; AdamBNN
    (arXiv 2106.11309) finds step 2 best without it. Pass the list to an optimizer with
    ``optimizer.exclude_from_weight_decay(var_list=...)``, or use
    `exclude_binary_weights_from_decay`.
    """
    return binary_variables(model)


def exclude_binary_weights_from_decay(optimizer, model, var_names=None):
    """Configure `optimizer` (any Keras optimizer with `weight_decay`, e.g. AdamW) to apply no
    weight decay to the binary latent weights of `model` (`weight_decay_exclusions`), and none
    to the variables whose name contains one of `var_names` (Keras' `exclude_from_weight_decay`
    semantics: the call replaces any earlier exclusions). Call it before the optimizer is built
    (before the first step). Returns the optimizer.

    Keras does not save these exclusions with the optimizer: after `keras.models.load_model`,
    call this again before training further (or route the variables with
    `kbnn.optimizers.CaseOptimizer` to two optimizers with different `weight_decay`, which is
    saved).
    """
    if not isinstance(optimizer, keras.optimizers.Optimizer):
        raise TypeError(
            "Invalid value for argument `optimizer` of exclude_binary_weights_from_decay. "
            f"Expected a keras.optimizers.Optimizer. Received optimizer={optimizer!r}.")
    if optimizer.built:
        raise ValueError(
            f"exclude_binary_weights_from_decay: optimizer {optimizer.name!r} is already built; "
            "weight-decay exclusions must be set before its first step.")
    optimizer.exclude_from_weight_decay(var_list=weight_decay_exclusions(model),
                                        var_names=var_names)
    return optimizer
