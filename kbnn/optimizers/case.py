"""`CaseOptimizer`, which gives each trainable variable to one of several optimizers, and the
predicates that pick a model's binary weights (`binary_predicate`). See docs/training.md."""

from __future__ import annotations

import warnings

import keras

from kbnn import _keras_compat as compat

__all__ = ["BinaryPredicate", "CaseOptimizer", "binary_predicate", "binary_variables",
           "is_binary_variable"]


def _variable_name(variable) -> str:
    return str(getattr(variable, "path", None) or getattr(variable, "name", variable))


def _same_variable(a, b) -> bool:
    if a is b:
        return True
    value_a, value_b = getattr(a, "value", a), getattr(b, "value", b)
    return value_a is b or value_b is a or (value_a is value_b and value_a is not None)


# ------------------------------------------------------------------------------- predicates

def _binary_quantized_weights(model) -> list:
    """The `QuantizedWeight` entries (see `QuantizedLayerMixin.quantized_weights`) of the
    binary weights of `model` (see `binary_variables`): one per variable, the first found, in
    layer order. The layers must be built."""
    from kbnn.layers.base import QuantizedLayerMixin

    found = []
    for layer in compat.flatten_layers(model, include_self=True, recursive=True):
        if not isinstance(layer, QuantizedLayerMixin):
            continue
        for weight in layer.quantized_weights().values():
            if weight.is_binary and not any(weight.variable is w.variable for w in found):
                found.append(weight)
    return found


def binary_variables(model) -> list:
    """The binary weights of `model`: every variable that some kbnn quantized layer of the model
    (at any depth: blocks, nested models) quantizes with a quantizer of precision 1, read from
    the layers' `quantized_weights()` map. Each variable once, in layer order. The layers must
    be built."""
    return [weight.variable for weight in _binary_quantized_weights(model)]


def is_binary_variable(variable, model) -> bool:
    """True when `variable` is a binary weight of `model` (see `binary_variables`)."""
    return any(_same_variable(variable, v) for v in binary_variables(model))


@keras.saving.register_keras_serializable(package="kbnn")
class BinaryPredicate:
    """A `CaseOptimizer` predicate: ``predicate(variable)`` is True for the binary weights of
    the model it is bound to (`binary_variables(model)`, read when first called, so the model
    may be built after the predicate is made).

    Its config holds no model: a predicate restored from a config (by `keras.models.load_model`)
    is unbound and raises when called. A restored `CaseOptimizer` does not call it: it routes by
    the table saved with it (see `CaseOptimizer`).
    """

    def __init__(self, model=None):
        self.model = model
        self._variables = None

    def __call__(self, variable) -> bool:
        if self._variables is None:
            if self.model is None:
                raise ValueError(
                    "This binary_predicate has no model: it was restored from a config, which "
                    "does not hold the model. Use kbnn.optimizers.binary_predicate(model) "
                    f"(received a call for variable {_variable_name(variable)!r}).")
            self._variables = binary_variables(self.model)
        return any(_same_variable(variable, v) for v in self._variables)

    def __repr__(self) -> str:
        model = "no model" if self.model is None else f"model {self.model.name!r}"
        return f"binary_predicate({model})"

    def get_config(self) -> dict:
        return {}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def binary_predicate(model) -> BinaryPredicate:
    """A predicate for `CaseOptimizer` that is True for the binary weights of `model`.

    Example::

        optimizer = kbnn.optimizers.CaseOptimizer(
            (kbnn.optimizers.binary_predicate(model), kbnn.optimizers.Bop()),
            default_optimizer=keras.optimizers.Adam(0.01))
    """
    return BinaryPredicate(model)


# ---------------------------------------------------------------------------- CaseOptimizer

class _Cases:
    """The predicates, held in a plain object so that TensorFlow's automatic tracking neither
    wraps them nor follows a model a predicate holds."""

    def __init__(self, predicates: list):
        self.predicates = predicates


class _Routing:
    """Which sub-optimizer owns each variable an optimizer was built with (a plain object, so
    TensorFlow's automatic tracking does not wrap it)."""

    def __init__(self, variables: list, owners: list[int]):
        self.variables = variables
        self.owners = owners
        self.by_key: dict = {}


@keras.saving.register_keras_serializable(package="kbnn")
class CaseOptimizer(keras.optimizers.Optimizer):
    """Gives each trainable variable to exactly one of several optimizers.

    ``CaseOptimizer((predicate_1, optimizer_1), (predicate_2, optimizer_2), ...,
    default_optimizer=None)``: a variable goes to the optimizer whose predicate
    (``predicate(variable) -> bool``) is True for it, or to `default_optimizer` when none is.
    A variable claimed by two predicates, or by none when there is no default optimizer, is a
    ValueError naming the variable (its path). Each optimizer is built on its own variables and
    applies its own updates, schedules and constraints; `iterations` counts the steps of the
    CaseOptimizer. Modelled on larq's `CaseOptimizer` (Geiger & Team Plumerai, "Larq", JOSS
    2020), written the way Keras' `LossScaleOptimizer` wraps its inner optimizer: it delegates
    `apply`, so it works under `model.fit` (with or without `jit_compile`), inside
    `keras.optimizers.LossScaleOptimizer` (mixed precision) and under `tf.distribute`.

    Typical use, Bop for the binary weights and Adam for everything else::

        optimizer = kbnn.optimizers.CaseOptimizer(
            (kbnn.optimizers.binary_predicate(model), kbnn.optimizers.Bop()),
            default_optimizer=keras.optimizers.Adam(0.01))
        model.compile(optimizer, loss=...)

    Saving: the config holds every optimizer and predicate (Keras-serialised, so a predicate
    must be a registered or importable module-level function, or an object with `get_config`
    registered with `keras.saving.register_keras_serializable`; a lambda is saved as code and
    loads only with ``safe_mode=False``) and, once built, the routing table: for the i-th
    variable the optimizer was built with, the index of its optimizer and the variable's shape.
    A CaseOptimizer restored from a config builds on a variable list of the same length and
    shapes (the same model, as `keras.models.load_model` does) by that table, without calling
    the predicates; so predicates bound to a model, such as `binary_predicate(model)`, need no
    model after loading. Any other variable list is routed by the predicates.

    Args:
        *optimizers: ``(predicate, optimizer)`` pairs; `optimizer` is a Keras optimizer instance
            (or a name such as ``"adam"``), each instance used once.
        default_optimizer: the optimizer of the variables no predicate claims, or None.
        name: the optimizer's name.
        loss_scale_factor: as in `keras.optimizers.Optimizer`: the loss is multiplied by it and
            the gradients divided by it before they reach the sub-optimizers (whose own
            `loss_scale_factor` must be None).

    The other `keras.optimizers.Optimizer` arguments (clipping, weight decay, EMA, gradient
    accumulation) belong to the sub-optimizers. `optimizers` lists every sub-optimizer (the
    default last), the attribute Keras' callbacks look for: `keras.callbacks.LearningRateScheduler`
    and `ReduceLROnPlateau` set the learning rate of each (Bop ignores its own). `learning_rate`
    reads and sets the default optimizer's learning rate (an AttributeError without a default
    optimizer); that is what the callbacks use through a `LossScaleOptimizer`. To schedule one
    sub-optimizer's hyperparameter, use `kbnn.optimizers.HyperparameterScheduler`.
    """

    def __init__(self, *optimizers, default_optimizer=None, name=None, loss_scale_factor=None,
                 **kwargs):
        if kwargs:
            names = ", ".join(f"`{k}`" for k in kwargs)
            raise ValueError(
                f"CaseOptimizer does not take the argument(s) {names}: set them on the "
                f"optimizers it routes to. Received {kwargs!r}.")
        predicates, routed = [], []
        for i, pair in enumerate(optimizers):
            if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
                raise ValueError(
                    "Invalid value for argument `optimizers` of CaseOptimizer. Expected "
                    f"(predicate, optimizer) pairs. Received optimizers[{i}]={pair!r}.")
            predicate, optimizer = pair
            if not callable(predicate):
                raise TypeError(
                    "Invalid value for argument `optimizers` of CaseOptimizer. Expected a "
                    "callable predicate(variable) -> bool as the first item of each pair. "
                    f"Received optimizers[{i}][0]={predicate!r}.")
            predicates.append(predicate)
            routed.append(self._check_optimizer(f"optimizers[{i}][1]", optimizer))
        if default_optimizer is not None:
            default_optimizer = self._check_optimizer("default_optimizer", default_optimizer)
        if not routed and default_optimizer is None:
            raise ValueError(
                "CaseOptimizer needs at least one (predicate, optimizer) pair or a "
                "`default_optimizer`. Received neither.")
        everything = routed + ([default_optimizer] if default_optimizer is not None else [])
        for i, optimizer in enumerate(everything):
            if any(optimizer is other for other in everything[:i]):
                raise ValueError(
                    f"CaseOptimizer received the optimizer {optimizer.name!r} twice: each "
                    "optimizer instance can own one set of variables only. Pass a new "
                    "instance for each case.")
        super().__init__(learning_rate=0.0, name=name, loss_scale_factor=loss_scale_factor)
        self._cases = _Cases(predicates)
        self._case_optimizers = routed
        self.default_optimizer = default_optimizer
        self._routing = None
        self._restored_routing = None

    @staticmethod
    def _check_optimizer(argument: str, optimizer):
        if isinstance(optimizer, str):
            optimizer = keras.optimizers.get(optimizer)
        if not isinstance(optimizer, keras.optimizers.Optimizer):
            raise TypeError(
                f"Invalid value for argument `{argument}` of CaseOptimizer. Expected a "
                f"keras.optimizers.Optimizer. Received {argument}={optimizer!r}.")
        if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
            raise TypeError(
                f"Invalid value for argument `{argument}` of CaseOptimizer: a "
                "LossScaleOptimizer scales the loss, which only the outermost optimizer can "
                "do. Wrap the CaseOptimizer instead: "
                "keras.optimizers.LossScaleOptimizer(CaseOptimizer(...)).")
        if optimizer.loss_scale_factor is not None:
            raise ValueError(
                f"Invalid value for argument `{argument}` of CaseOptimizer: its "
                f"`loss_scale_factor` is {optimizer.loss_scale_factor!r}, but only the "
                "outermost optimizer scales the loss. Set `loss_scale_factor` on the "
                "CaseOptimizer.")
        return optimizer

    # ----------------------------------------------------------------------- the cases

    @property
    def predicates(self) -> list:
        """The predicates, in the order of the (predicate, optimizer) pairs."""
        return list(self._cases.predicates)

    @property
    def optimizers(self) -> list:
        """Every optimizer: those of the (predicate, optimizer) pairs in order, then the default
        optimizer if there is one. (Keras' callbacks, such as `LearningRateScheduler`, treat an
        optimizer with an `optimizers` list as several optimizers.)"""
        default = [self.default_optimizer] if self.default_optimizer is not None else []
        return list(self._case_optimizers) + default

    def _describe(self, index: int) -> str:
        if index == len(self._case_optimizers):
            return f"default_optimizer {self.default_optimizer.name!r}"
        predicate = self._cases.predicates[index]
        shown = getattr(predicate, "__name__", None) or repr(predicate)
        optimizer = self._case_optimizers[index]
        return f"case {index} ({shown}, {type(optimizer).__name__} {optimizer.name!r})"

    def _owner(self, variable) -> int:
        claims = [i for i, predicate in enumerate(self._cases.predicates)
                  if predicate(variable)]
        if len(claims) > 1:
            raise ValueError(
                f"CaseOptimizer {self.name!r}: variable {_variable_name(variable)!r} is claimed "
                f"by {len(claims)} predicates: "
                + "; ".join(self._describe(i) for i in claims)
                + ". Each trainable variable must be claimed by at most one predicate.")
        if claims:
            return claims[0]
        if self.default_optimizer is None:
            raise ValueError(
                f"CaseOptimizer {self.name!r}: variable {_variable_name(variable)!r} is claimed "
                "by no predicate and there is no `default_optimizer`. Pass "
                "default_optimizer=... or a predicate that claims it.")
        return len(self._case_optimizers)

    def _restored_owners(self, var_list) -> list[int] | None:
        table = self._restored_routing
        if table is None or len(table) != len(var_list):
            return None
        for (owner, shape), variable in zip(table, var_list):
            if tuple(shape) != tuple(variable.shape) or not 0 <= owner < len(self.optimizers):
                return None
        return [int(owner) for owner, _ in table]

    def build(self, var_list):
        """Route every variable, then build each optimizer on its own variables."""
        if self.built:
            return
        var_list = list(var_list)
        owners = self._restored_owners(var_list)
        if owners is None:
            owners = [self._owner(v) for v in var_list]
        routing = _Routing(var_list, owners)
        for index, optimizer in enumerate(self.optimizers):
            subset = [v for v, owner in zip(var_list, owners) if owner == index]
            if not subset and var_list:
                warnings.warn(
                    f"CaseOptimizer {self.name!r}: {self._describe(index)} received no "
                    "variable.", stacklevel=2)
            if not optimizer.built:
                optimizer.build(subset)
        for variable, owner in zip(var_list, owners):
            routing.by_key[compat.optimizer_variable_key(self, variable)] = owner
        self._routing = routing
        super().build(var_list)

    def routing(self) -> dict[str, str]:
        """Variable path -> the name of the optimizer that owns it (after `build`)."""
        if self._routing is None:
            return {}
        optimizers = self.optimizers
        return {_variable_name(v): optimizers[owner].name
                for v, owner in zip(self._routing.variables, self._routing.owners)}

    @property
    def variables(self):
        found = list(super().variables)
        for optimizer in self.optimizers:
            found.extend(optimizer.variables)
        return found

    # ---------------------------------------------------------------------- applying

    def apply(self, grads, trainable_variables=None):
        """Split the (gradient, variable) pairs by owner and apply each optimizer to its own
        pairs; variables without a gradient are left out (with a warning, as Keras does)."""
        grads = list(grads)
        if not grads:
            return
        if trainable_variables is None:
            if not self.built:
                raise ValueError(
                    "When passing `grads` without `variables`, the optimizer must already be "
                    "built on a list of variables. Call `optimizer.build(trainable_variables)` "
                    "first.")
            trainable_variables = self._routing.variables
        trainable_variables = list(trainable_variables)
        if len(grads) != len(trainable_variables):
            raise ValueError(
                f"CaseOptimizer {self.name!r} received {len(grads)} gradients for "
                f"{len(trainable_variables)} variables.")
        if not self.built:
            with keras.name_scope(self.name, caller=self):
                self.build(trainable_variables)
        cases = [([], []) for _ in self.optimizers]
        missing = []
        for grad, variable in zip(grads, trainable_variables):
            owner = self._routing.by_key.get(compat.optimizer_variable_key(self, variable))
            if owner is None:
                raise ValueError(
                    f"CaseOptimizer {self.name!r} received the unknown variable "
                    f"{_variable_name(variable)!r}: it can only apply gradients to the "
                    "variables it was built with. Create a new optimizer for other variables.")
            if grad is None:
                missing.append(_variable_name(variable))
                continue
            cases[owner][0].append(grad)
            cases[owner][1].append(variable)
        if len(missing) == len(grads):
            raise ValueError("No gradients provided for any variable.")
        if missing:
            warnings.warn(f"Gradients do not exist for variables {missing} when minimizing "
                          "the loss.", stacklevel=2)
        scale = self.loss_scale_factor
        with keras.name_scope(self.name, caller=self):
            for optimizer, (case_grads, case_variables) in zip(self.optimizers, cases):
                if not case_grads:
                    continue
                if scale is not None:
                    case_grads = [g / scale for g in case_grads]
                optimizer.apply(case_grads, case_variables)
        self.iterations.assign_add(1)

    def stateless_apply(self, optimizer_variables, grads, trainable_variables):
        raise NotImplementedError(
            "CaseOptimizer does not implement stateless_apply (the TensorFlow backend uses "
            "`apply`).")

    def finalize_variable_values(self, var_list):
        """Let each optimizer finalise its own variables (e.g. write its EMA averages)."""
        if self._routing is None:
            return
        for index, optimizer in enumerate(self.optimizers):
            optimizer.finalize_variable_values(
                [v for v, owner in zip(self._routing.variables, self._routing.owners)
                 if owner == index])

    # ------------------------------------------------------------------ learning rate

    def _default_or_raise(self):
        if self.default_optimizer is None:
            raise AttributeError(
                f"CaseOptimizer {self.name!r} has no default optimizer, so it has no single "
                "learning rate: read or set `learning_rate` on one of its `optimizers`.")
        return self.default_optimizer

    @property
    def learning_rate(self):
        return self._default_or_raise().learning_rate

    @learning_rate.setter
    def learning_rate(self, learning_rate):
        self._default_or_raise().learning_rate = learning_rate

    # -------------------------------------------------------------------- serialising

    def get_config(self) -> dict:
        serialize = keras.saving.serialize_keras_object
        config = {
            "name": self.name,
            "loss_scale_factor": self.loss_scale_factor,
            "optimizers": [[serialize(p), serialize(o)]
                           for p, o in zip(self._cases.predicates, self._case_optimizers)],
            "default_optimizer": (serialize(self.default_optimizer)
                                  if self.default_optimizer is not None else None),
            "routing": None,
        }
        if self._routing is not None:
            config["routing"] = [[int(owner), [int(d) for d in v.shape]]
                                 for v, owner in zip(self._routing.variables,
                                                     self._routing.owners)]
        elif self._restored_routing is not None:
            config["routing"] = [[o, list(s)] for o, s in self._restored_routing]
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)

        def deserialize(value):
            return keras.saving.deserialize_keras_object(value, custom_objects=custom_objects)

        pairs = [(deserialize(p), deserialize(o)) for p, o in config.pop("optimizers", [])]
        default = config.pop("default_optimizer", None)
        routing = config.pop("routing", None)
        optimizer = cls(*pairs, default_optimizer=deserialize(default) if default else None,
                        **config)
        if routing is not None:
            optimizer._restored_routing = [(int(o), tuple(s)) for o, s in routing]
        return optimizer
