"""Knowledge distillation for binary students: ReActNet's `DistributionLoss` (Liu, Shen,
Savvides, Cheng, arXiv 2003.03488) and the `Distiller` model, which trains a student against
one or more frozen teachers, with BNext's consecutive assistant teachers and per-sample teacher
weighting (Guo, Bethge, Meinel, Yang, arXiv 2211.12933). See docs/training.md."""

from __future__ import annotations

import copy
import math
import numbers
import warnings

import keras
import tensorflow as tf
from keras import ops

from kbnn.checks import check_bool

__all__ = ["TEACHER_WEIGHTINGS", "AssistantTeacherSchedule", "Distiller", "DistributionLoss",
           "FeatureDistillation"]

#: The values of `Distiller(teacher_weighting=...)`.
TEACHER_WEIGHTINGS = ("mean", "hard_knowledge", "hard_knowledge_per_sample")
_KINDS = ("cross_entropy", "kl")
# log(p) of a probability p is taken as log(max(p, _EPSILON)) (Keras' backend epsilon).
_EPSILON = 1e-7


def _check_real(owner: str, name: str, value, low: float, low_inclusive: bool) -> float:
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    ok = ok and math.isfinite(value) and (value >= low if low_inclusive else value > low)
    if not ok:
        bound = ">=" if low_inclusive else ">"
        raise ValueError(
            f"Invalid value for argument `{name}` of {owner}. Expected a finite number "
            f"{bound} {low:g}. Received {name}={value!r}.")
    return float(value)


def _log_probabilities(probabilities):
    """log(p) with p clipped to [epsilon, 1]: logits whose softmax is p (for p summing to 1)."""
    return ops.log(ops.clip(probabilities, _EPSILON, 1.0))


def soft_cross_entropy(teacher_logits, student_logits, temperature: float = 1.0):
    """Per-sample ``-sum_c softmax(t / T)_c * log_softmax(s / T)_c`` over the last axis (no
    gradient to the teacher), ReActNet's `DistributionLoss` before the batch mean."""
    teacher = ops.stop_gradient(teacher_logits)
    if temperature != 1.0:
        teacher = teacher / temperature
        student_logits = student_logits / temperature
    soft_labels = ops.softmax(teacher, axis=-1)
    return -ops.sum(soft_labels * ops.log_softmax(student_logits, axis=-1), axis=-1)


@keras.saving.register_keras_serializable(package="kbnn")
class DistributionLoss(keras.losses.Loss):
    """ReActNet's distributional loss (Liu et al., "ReActNet: Towards Precise Binary Neural
    Network with Generalized Activation Functions", arXiv 2003.03488; the official
    code's `utils/KD_loss.py::DistributionLoss`): the cross-entropy from the teacher's softmax
    to the student's,

        L = mean_i  -sum_c softmax(z_teacher_i)_c * log softmax(z_student_i)_c,

    with no gradient to the teacher. The paper writes it as the KL divergence
    ``sum_c p_teacher_c log(p_teacher_c / p_student_c)``, which differs from it by the
    teacher's entropy, a constant for the student (same gradient): ``kind="kl"`` gives that
    value. BNext (arXiv 2211.12933) uses the same loss for each of its teachers.

    Called as ``loss(teacher_outputs, student_outputs, sample_weight=None)``: the teacher's
    outputs take the place of `y_true`.

    Args:
        temperature: T > 0. Both logit vectors are divided by T and the loss is multiplied by
            T^2 (Hinton, Vinyals, Dean, arXiv 1503.02531), so gradients keep their scale. The
            official ReActNet and BNext code has no temperature (T = 1, the default).
        kind: "cross_entropy" (the official code, default) or "kl" (the paper's form).
        from_logits: True (default) when both arguments are logits; False when both are
            probabilities (e.g. a Keras model ending in softmax): they are turned into logits
            by log(p) (clipped at 1e-7), whose softmax is p again.
        reduction: a Keras loss reduction ("sum_over_batch_size", the batch mean, by default).
        name: the loss name.
        dtype: the dtype the loss is computed in (float32 by default, also under mixed
            precision).

    Reference value: student logits [1, 0, -1] and teacher logits [2, 0, 0] give 0.727127
    (cross-entropy) and 0.061554 (KL).
    """

    def __init__(self, temperature=1.0, kind="cross_entropy", from_logits=True,
                 reduction="sum_over_batch_size", name="distribution_loss", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.temperature = _check_real("DistributionLoss", "temperature", temperature, 0.0,
                                       False)
        if kind not in _KINDS:
            raise ValueError(
                "Invalid value for argument `kind` of DistributionLoss. Expected one of "
                f"{', '.join(repr(k) for k in _KINDS)}. Received kind={kind!r}.")
        self.kind = kind
        self.from_logits = check_bool("DistributionLoss", "from_logits", from_logits)

    def call(self, y_true, y_pred):
        teacher, student = y_true, y_pred
        if not self.from_logits:
            teacher, student = _log_probabilities(teacher), _log_probabilities(student)
        temperature = self.temperature
        loss = soft_cross_entropy(teacher, student, temperature)
        if self.kind == "kl":
            scaled = ops.stop_gradient(teacher) / temperature
            loss = loss + ops.sum(ops.softmax(scaled, axis=-1)
                                  * ops.log_softmax(scaled, axis=-1), axis=-1)
        return loss * (temperature * temperature)

    def get_config(self) -> dict:
        dtype = self.dtype_policy.name if getattr(self, "dtype_policy", None) else None
        return {"dtype": dtype, **super().get_config(), "temperature": self.temperature,
                "kind": self.kind, "from_logits": self.from_logits}


class _FunctionLoss(keras.losses.Loss):
    """A loss function ``fn(y_true, y_pred) -> per-sample losses`` as a reduced Keras `Loss`
    (what `compile` does with a loss given as a string or a function)."""

    def __init__(self, fn, name=None):
        super().__init__(name=name or getattr(fn, "__name__", "loss"))
        self.fn = fn

    def call(self, y_true, y_pred):
        return self.fn(y_true, y_pred)


def _as_loss(loss):
    if loss is None:
        return None
    if isinstance(loss, (list, tuple, dict)):
        raise ValueError(  # noqa: TRY004 (bad argument value: ValueError by convention)
            "Invalid value for argument `loss` of Distiller.compile. Expected one loss (the "
            "ground-truth loss of the student's single output): a name, a function or a "
            f"keras.losses.Loss. Received loss={loss!r}.")
    obj = keras.losses.get(loss)
    if isinstance(obj, type):
        obj = obj()
    if isinstance(obj, keras.losses.Loss):
        return obj
    if callable(obj):
        return _FunctionLoss(obj)
    raise ValueError(  # pragma: no cover - keras.losses.get raises first
        f"Invalid value for argument `loss` of Distiller.compile. Received loss={loss!r}.")


def _as_models(argument: str, value) -> list:
    if value is None:
        return []
    models = list(value) if isinstance(value, (list, tuple)) else [value]
    for i, model in enumerate(models):
        if not isinstance(model, keras.Model):
            raise TypeError(
                f"Invalid value for argument `{argument}` of Distiller. Expected a keras.Model "
                f"or a list of them. Received {argument}[{i}]={model!r} (of type "
                f"{type(model).__name__}).")
    return models


def _layer_names(argument: str, value) -> tuple[list, bool]:
    """A layer name or a list of them -> (names, given as a list)."""
    if isinstance(value, str):
        return [value], False
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value):
        return list(value), True
    raise ValueError(
        f"Invalid value for argument `{argument}` of FeatureDistillation. Expected a layer name "
        f"or a non-empty list of layer names. Received {argument}={value!r}.")


@keras.saving.register_keras_serializable(package="kbnn")
class FeatureDistillation:
    """One feature-level distillation term of a `Distiller` (``Distiller(...,
    feature_losses=[...])``): ``weight * loss(teacher_features, student_features)``, where the
    features are the outputs of named layers of the student and of one of the teachers, taken
    from the same forward passes as the logits (the student's from its training-mode pass, the
    teacher's in inference mode, without gradient).

    For example DIR-Net's RBD over two blocks, and LCR-BNN's loss over three:

        FeatureDistillation(RepresentationDistillation(), ["s_b1", "s_b2"], ["t_b1", "t_b2"])
        FeatureDistillation(LipschitzRetentionLoss(), ["stem", "b1", "b2"],
                            weight=8 / (256 * 1e4))

    Args:
        loss: a Keras loss called as ``loss(teacher_features, student_features)`` (a
            `keras.losses.Loss`, e.g. `RepresentationDistillation` or
            `LipschitzRetentionLoss`, a loss name or a loss function).
        student_layers: the name of a top-level layer of the student, or a list of names.
            The loss receives what is named: one tensor for a name, a list of tensors (in the
            order given) for a list.
        teacher_layers: the same for the teacher, with as many names as `student_layers`;
            None (default) uses the student's names (twin architectures with the same layer
            names).
        weight: the weight of the term (>= 0, default 1.0).
        teacher: the index, in the Distiller's `teachers`, of the teacher whose layers are named
            (default 0; assistant teachers cannot be used).
        name: the name of the term in the training logs (default: the loss's name).
    """

    def __init__(self, loss, student_layers, teacher_layers=None, weight=1.0, teacher=0,
                 name=None):
        if loss is None or isinstance(loss, (list, tuple, dict)):
            raise ValueError(
                "Invalid value for argument `loss` of FeatureDistillation. Expected one loss: a "
                f"keras.losses.Loss, a loss name or a loss function. Received loss={loss!r}.")
        self.loss_identifier = loss
        self.loss = loss if isinstance(loss, keras.losses.Loss) else _as_loss(loss)
        names, as_list = _layer_names("student_layers", student_layers)
        self.student_layers = names if as_list else names[0]
        if teacher_layers is None:
            teacher_layers = self.student_layers
        t_names, t_as_list = _layer_names("teacher_layers", teacher_layers)
        if len(t_names) != len(names) or t_as_list != as_list:
            raise ValueError(
                "Invalid value for argument `teacher_layers` of FeatureDistillation. Expected "
                "as many teacher layers as student layers, given the same way (one name, or a "
                f"list). Received student_layers={student_layers!r} and "
                f"teacher_layers={teacher_layers!r}.")
        self.teacher_layers = t_names if t_as_list else t_names[0]
        self.weight = _check_real("FeatureDistillation", "weight", weight, 0.0, True)
        if not (isinstance(teacher, numbers.Integral) and not isinstance(teacher, bool)
                and teacher >= 0):
            raise ValueError(
                "Invalid value for argument `teacher` of FeatureDistillation. Expected the index "
                f"(an integer >= 0) of one of the Distiller's `teachers`. Received "
                f"teacher={teacher!r}.")
        self.teacher = int(teacher)
        if name is not None and not (isinstance(name, str) and name):
            raise ValueError(
                "Invalid value for argument `name` of FeatureDistillation. Expected a non-empty "
                f"string or None. Received name={name!r}.")
        self.name = name if name is not None else self.loss.name

    @property
    def student_layer_names(self) -> list:
        return _layer_names("student_layers", self.student_layers)[0]

    @property
    def teacher_layer_names(self) -> list:
        return _layer_names("teacher_layers", self.teacher_layers)[0]

    def __call__(self, teacher_features: list, student_features: list):
        """``loss(teacher_features, student_features)`` (before `weight`), the features given
        as lists in the order of the names."""
        if not isinstance(self.student_layers, list):
            teacher_features, student_features = teacher_features[0], student_features[0]
        return self.loss(teacher_features, student_features)

    def get_config(self) -> dict:
        return {"loss": keras.saving.serialize_keras_object(self.loss_identifier),
                "student_layers": self.student_layers, "teacher_layers": self.teacher_layers,
                "weight": self.weight, "teacher": self.teacher, "name": self.name}

    @classmethod
    def from_config(cls, config: dict, custom_objects=None) -> FeatureDistillation:
        config = dict(config)
        loss = config.pop("loss")
        if not isinstance(loss, str):
            loss = keras.saving.deserialize_keras_object(loss, custom_objects=custom_objects)
        return cls(loss, **config)

    def __repr__(self) -> str:
        return (f"FeatureDistillation({self.loss.name!r}, student_layers="
                f"{self.student_layers!r}, teacher_layers={self.teacher_layers!r}, "
                f"weight={self.weight:g}, teacher={self.teacher})")


def _as_feature_losses(value) -> list:
    if value is None:
        return []
    if isinstance(value, (FeatureDistillation, dict)) or not isinstance(value, (list, tuple)):
        raise ValueError(  # noqa: TRY004 (bad argument value: ValueError by convention)
            "Invalid value for argument `feature_losses` of Distiller. Expected a list of "
            "FeatureDistillation objects, dicts of their arguments or tuples (loss, "
            "student_layers[, teacher_layers[, weight]]). "
            f"Received feature_losses={value!r}.")
    specs = []
    for i, item in enumerate(value):
        if isinstance(item, FeatureDistillation):
            specs.append(item)
            continue
        try:
            if isinstance(item, dict):
                if item.get("class_name") == "FeatureDistillation":  # serialised
                    specs.append(keras.saving.deserialize_keras_object(item))
                else:
                    specs.append(FeatureDistillation(**item))
            elif isinstance(item, tuple) and 2 <= len(item) <= 4:
                specs.append(FeatureDistillation(*item))
            else:
                raise ValueError(
                    "Expected a FeatureDistillation, a dict of its arguments or a tuple (loss, "
                    f"student_layers[, teacher_layers[, weight]]). Received {item!r}.")
        except (TypeError, ValueError) as error:
            raise ValueError(
                f"Invalid value for argument `feature_losses` of Distiller: "
                f"feature_losses[{i}]: {error}") from error
    return specs


def _model_structure(owner: str, model) -> tuple:
    """(input structure, output structure) of a functional or Sequential model."""
    try:
        return model.input, model.output
    except (AttributeError, ValueError) as error:
        raise ValueError(
            f"Invalid value for argument `feature_losses` of Distiller: the {owner} "
            f"{model.name!r} has no symbolic inputs and outputs, so its layers' outputs cannot "
            "be read. Feature losses need a functional or Sequential model built on a "
            "keras.Input.") from error


def _layer_outputs(owner: str, index: int, model, names: list) -> list:
    outputs = []
    for name in names:
        layer = next((lay for lay in model.layers if lay.name == name), None)
        if layer is None:
            available = ", ".join(repr(lay.name) for lay in model.layers)
            raise ValueError(
                f"Invalid value for argument `feature_losses` of Distiller: "
                f"feature_losses[{index}] names the {owner} layer {name!r}, which the {owner} "
                f"{model.name!r} does not have (top-level layers only). Its layers: "
                f"{available}.")
        try:
            outputs.append(layer.output)
        except (AttributeError, ValueError) as error:
            raise ValueError(
                f"Invalid value for argument `feature_losses` of Distiller: "
                f"feature_losses[{index}] names the {owner} layer {name!r}, whose output is not "
                f"defined (a layer called more than once, or not called): {error}") from error
    return outputs


class _Holder:
    """Plain attributes out of Keras' tracking: the derived feature models (their layers are the
    student's and the teachers', tracked there) and the features of the last forward passes."""


def _num_replicas() -> int:
    """The number of replicas of the current `tf.distribute` strategy (1 outside one)."""
    return int(tf.distribute.get_strategy().num_replicas_in_sync)


@keras.saving.register_keras_serializable(package="kbnn")
class Distiller(keras.Model):
    """A student trained against frozen teachers, as a `keras.Model` for `fit`.

    ``Distiller(student, teachers)`` calls the student (``distiller(x)`` returns the student's
    outputs) and overrides `compute_loss`, the Keras 3 training seam, so `fit`, `evaluate`,
    `jit_compile` and `tf.distribute` strategies work as for any model. Each step runs every
    active teacher in inference mode (``training=False``, no gradient; the teachers are set
    ``trainable = False``) on the same inputs and computes

        loss = distillation_weight * KD + ground_truth_weight * GT + the student's own losses

    where GT is the loss given to `compile` (labels vs the student's outputs; optional) and KD
    combines one distillation loss per active teacher (`DistributionLoss` by default, the loss
    of ReActNet, arXiv 2003.03488, and BNext, arXiv 2211.12933):

    * ``teacher_weighting="mean"``: KD = mean over the active teachers of L_j. With one teacher
      this is ReActNet's training loss (the official code adds no label term).
    * ``"hard_knowledge"``: BNext's weighting as in its official code
      (`hpi-xnor/BNext`, `src/train_assistant_group_amp.py`): per sample b, c_bj is the soft
      cross-entropy of the student to teacher j and ``alpha_b = softmax_j(c_b)`` (no gradient),
      so the teacher the student fits worse weighs more; KD = mean_b sum_j alpha_bj L_j / n,
      with L_j the batch-mean loss of teacher j and n the number of active teachers (the code's
      reduction flag compares "instance" with its default "Instance", so L_j stays the batch
      mean and only alpha is per sample). Under a `tf.distribute` strategy the means are
      those of each replica's batch, as in the official code under DistributedDataParallel.
    * ``"hard_knowledge_per_sample"``: the same with the per-sample loss,
      KD = mean_b sum_j alpha_bj l_bj / n (what the flag names).

    Consecutive assistant teachers (BNext's "diversified consecutive KD"): the active teachers
    of a step are the current assistant (one of `assistant_teachers`) plus every model of
    `teachers`. `AssistantTeacherSchedule(total_epochs)` switches the assistant during `fit`:
    assistant k for the epochs [k E / A, (k + 1) E / A) of E epochs with A assistants, as the
    official code does. The choice is the non-trainable variable `assistant_index`, read
    inside the compiled step (only the current assistant runs).

    Feature losses: each `FeatureDistillation` of `feature_losses` adds
    ``weight * loss(teacher_features, student_features)`` to the loss, the features being the
    outputs of named layers of the student and of a teacher (e.g. DIR-Net's
    `RepresentationDistillation` or LCR-BNN's `LipschitzRetentionLoss` over block outputs).
    The student's features come from the same training-mode forward pass as its outputs, and a
    teacher runs once per step for its outputs and its features.

    Save and convert the student: ``distiller.student.save("student.keras")`` (or
    `save_student`), ``kbnn.converters.convert(distiller.student)``. The distiller itself
    saves and loads too (its config holds the student and the teachers; its compile config the
    ground-truth loss), so training can resume, but it is a training device, not the model to
    deploy.

    Args:
        student: the model to train (a `keras.Model`, built or not), returning logits unless
            ``student_from_logits=False``.
        teachers: a model or a list of models, always active (BNext's main teacher). Any Keras
            model: a `keras.applications` network, a zoo model, a trained float net. Their
            outputs must have the student's shape.
        assistant_teachers: models of which one at a time is active, switched by
            `AssistantTeacherSchedule` (BNext's assistants); default none.
        distillation_loss: a Keras loss called as ``loss(teacher_outputs, student_outputs,
            sample_weight)``; default ``DistributionLoss(temperature)``.
        temperature: the temperature of the default `DistributionLoss` (default 1.0). Set it on
            the loss instead when passing `distillation_loss`.
        distillation_weight: the weight of KD (>= 0, default 1.0).
        ground_truth_weight: the weight of the compiled loss (>= 0, default 0.0: ReActNet and
            BNext train on the teachers' outputs only). A weight > 0 needs ``compile(loss=...)``.
        teacher_weighting: "mean" (default), "hard_knowledge" or "hard_knowledge_per_sample"
            (see above; the two BNext forms need at least two active teachers).
        student_from_logits, teacher_from_logits: False when that model's outputs are
            probabilities (e.g. a `keras.applications` model with a softmax head): they are
            turned into logits by log(p) before the losses.
        feature_losses: a list of feature-level terms: `FeatureDistillation` objects, dicts of
            their arguments, or tuples ``(loss, student_layers[, teacher_layers[, weight]])``.
            The named layers must be top-level layers of a functional or Sequential student
            and teacher. Default none.
        name: the model name.
    """

    def __init__(self, student, teachers=None, *, assistant_teachers=None,
                 distillation_loss=None, temperature=None, distillation_weight=1.0,
                 ground_truth_weight=0.0, teacher_weighting="mean", student_from_logits=True,
                 teacher_from_logits=True, feature_losses=None, name="distiller", **kwargs):
        super().__init__(name=name, **kwargs)
        if not isinstance(student, keras.Model):
            raise TypeError(
                "Invalid value for argument `student` of Distiller. Expected a keras.Model. "
                f"Received student={student!r} (of type {type(student).__name__}).")
        teachers = _as_models("teachers", teachers)
        assistants = _as_models("assistant_teachers", assistant_teachers)
        if not teachers and not assistants:
            raise ValueError(
                "Distiller needs at least one teacher: pass `teachers` (and/or "
                "`assistant_teachers`). Received neither.")
        if any(m is student for m in teachers + assistants):
            raise ValueError("Distiller: the student cannot also be one of its teachers.")
        if teacher_weighting not in TEACHER_WEIGHTINGS:
            raise ValueError(
                "Invalid value for argument `teacher_weighting` of Distiller. Expected one of "
                f"{', '.join(repr(w) for w in TEACHER_WEIGHTINGS)}. "
                f"Received teacher_weighting={teacher_weighting!r}.")
        active = len(teachers) + (1 if assistants else 0)
        if teacher_weighting != "mean" and active < 2:
            raise ValueError(
                f"Distiller: teacher_weighting={teacher_weighting!r} weighs the teachers "
                f"against each other and needs at least two active teachers per step; this "
                f"distiller has {active} (the teachers, plus one assistant at a time).")
        if distillation_loss is None:
            distillation_loss = DistributionLoss(1.0 if temperature is None else temperature)
        elif temperature is not None:
            raise ValueError(
                "Distiller: pass `temperature` only with the default distillation loss; set "
                "it on the `distillation_loss` you pass instead (e.g. "
                f"DistributionLoss(temperature={temperature!r})).")
        if not isinstance(distillation_loss, keras.losses.Loss):
            distillation_loss = _as_loss(distillation_loss)
        self.distillation_weight = _check_real("Distiller", "distillation_weight",
                                               distillation_weight, 0.0, True)
        self.ground_truth_weight = _check_real("Distiller", "ground_truth_weight",
                                               ground_truth_weight, 0.0, True)
        self.student_from_logits = check_bool("Distiller", "student_from_logits",
                                               student_from_logits)
        self.teacher_from_logits = check_bool("Distiller", "teacher_from_logits",
                                               teacher_from_logits)
        self.teacher_weighting = teacher_weighting
        self.distillation_loss = distillation_loss
        self.student = student
        for model in teachers + assistants:
            model.trainable = False
        self.teachers = teachers
        self.assistant_teachers = assistants
        self.assistant_index = self.add_weight(
            name="assistant_index", shape=(), dtype="int32", initializer="zeros",
            trainable=False, aggregation="only_first_replica")
        self._ground_truth_loss = None
        self._ground_truth_identifier = None
        self.distillation_loss_tracker = keras.metrics.Mean(name="distillation_loss")
        self.ground_truth_loss_tracker = keras.metrics.Mean(name="ground_truth_loss")
        self.feature_losses = _as_feature_losses(feature_losses)
        self._features = _Holder()
        self._build_feature_models()
        taken = {"loss", "distillation_loss", "ground_truth_loss"}
        self.feature_loss_trackers = []
        for spec in self.feature_losses:
            name = spec.name
            while name in taken:
                name += "_"
            taken.add(name)
            self.feature_loss_trackers.append(keras.metrics.Mean(name=name))

    def _build_feature_models(self) -> None:
        """The student (and each teacher with named layers) as one functional model returning
        ``[outputs, [features of spec 0], [features of spec 1], ...]``, sharing its layers."""
        holder = self._features
        holder.student_model, holder.teacher_models, holder.last = None, {}, {}
        if not self.feature_losses:
            return
        for i, spec in enumerate(self.feature_losses):
            if spec.teacher >= len(self.teachers):
                raise ValueError(
                    f"Invalid value for argument `feature_losses` of Distiller: "
                    f"feature_losses[{i}] reads teacher {spec.teacher}, but the Distiller has "
                    f"{len(self.teachers)} model(s) in `teachers` (assistant teachers cannot "
                    "be used for feature losses).")
        inputs, outputs = _model_structure("student", self.student)
        features = [_layer_outputs("student", i, self.student, spec.student_layer_names)
                    for i, spec in enumerate(self.feature_losses)]
        holder.student_model = keras.Model(inputs, [outputs, features],
                                           name=f"{self.student.name}_features")
        for j in sorted({spec.teacher for spec in self.feature_losses}):
            teacher = self.teachers[j]
            inputs, outputs = _model_structure("teacher", teacher)
            features = [_layer_outputs("teacher", i, teacher, spec.teacher_layer_names)
                        if spec.teacher == j else []
                        for i, spec in enumerate(self.feature_losses)]
            holder.teacher_models[j] = keras.Model(inputs, [outputs, features],
                                                   name=f"{teacher.name}_features")

    # ------------------------------------------------------------------------- model

    def call(self, inputs, training=None):
        """The student's outputs. In training, with feature losses, the student's features of
        the same forward pass are kept for `compute_loss`."""
        model = self._features.student_model
        if model is None or not training:
            return self.student(inputs, training=training)
        outputs, features = model(inputs, training=training)
        last = self._features.last
        while len(last) >= 8:  # outputs computed but never given to compute_loss
            last.pop(next(iter(last)))
        key = keras.tree.flatten(outputs)[0]
        last[id(key)] = (key, features)
        return outputs

    def _student_features(self, x, y_pred, training) -> list:
        """The student's features of the forward pass that gave `y_pred` (run again when
        `y_pred` does not come from `call` in training)."""
        key = keras.tree.flatten(y_pred)[0]
        entry = self._features.last.pop(id(key), None)
        if entry is not None and entry[0] is key:
            return entry[1]
        return self._features.student_model(x, training=training)[1]

    def compute_output_shape(self, input_shape):
        return self.student.compute_output_shape(input_shape)

    def save_student(self, filepath, **kwargs):
        """Save the student (the model to deploy) with ``student.save(filepath, **kwargs)``."""
        self.student.save(filepath, **kwargs)

    @property
    def metrics(self):
        trackers = [self.distillation_loss_tracker]
        if self.ground_truth_weight > 0:
            trackers.append(self.ground_truth_loss_tracker)
        trackers += list(getattr(self, "feature_loss_trackers", []))
        own = (self.distillation_loss_tracker, self.ground_truth_loss_tracker,
               *getattr(self, "feature_loss_trackers", []))
        return [m for m in super().metrics if not any(m is t for t in own)] + trackers

    # ------------------------------------------------------------------------ compile

    def compile(self, optimizer="rmsprop", loss=None, loss_weights=None, metrics=None,
                weighted_metrics=None, **kwargs):
        """`keras.Model.compile`; `loss` is the ground-truth loss of the student's outputs,
        weighted by `ground_truth_weight` (the distillation loss is set on the Distiller).
        The metrics are computed on the student's outputs."""
        if loss_weights is not None:
            raise ValueError(
                "Distiller.compile does not take `loss_weights`: weigh the ground-truth loss "
                "with Distiller(ground_truth_weight=...). "
                f"Received loss_weights={loss_weights!r}.")
        ground_truth = _as_loss(loss)
        if ground_truth is None and self.ground_truth_weight > 0:
            raise ValueError(
                f"Distiller {self.name!r} has ground_truth_weight="
                f"{self.ground_truth_weight:g} but compile() received no `loss`: pass the "
                "ground-truth loss, e.g. loss='sparse_categorical_crossentropy'.")
        if ground_truth is not None and self.ground_truth_weight == 0:
            warnings.warn(
                f"Distiller {self.name!r}: the compiled loss {loss!r} is not used, because "
                "ground_truth_weight is 0 (set Distiller(ground_truth_weight=...) to train "
                "on the labels too).", stacklevel=2)
        self._ground_truth_loss = ground_truth
        self._ground_truth_identifier = loss
        super().compile(optimizer=optimizer, loss=None, metrics=metrics,
                        weighted_metrics=weighted_metrics, **kwargs)

    def get_compile_config(self) -> dict:
        """`keras.Model.get_compile_config` with the ground-truth loss given to `compile`."""
        config = super().get_compile_config()
        if config and self._ground_truth_identifier is not None:
            config["loss"] = keras.saving.serialize_keras_object(self._ground_truth_identifier)
        return config

    def compile_from_config(self, config):
        """Compile again from `get_compile_config` (what `keras.models.load_model` does)."""
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)
        if self.optimizer is not None and self.built:
            self.optimizer.build(self.trainable_variables)

    # -------------------------------------------------------------------------- loss

    def _as_logits(self, outputs, from_logits: bool):
        outputs = ops.cast(outputs, "float32")
        return outputs if from_logits else _log_probabilities(outputs)

    def _run_teachers(self, x) -> tuple[list, dict]:
        """The active teachers' outputs (assistant first) and, per teacher with named layers,
        its features per spec, from one inference-mode pass each."""
        outputs, features = [], {}
        for j, t in enumerate(self.teachers):
            model = self._features.teacher_models.get(j)
            if model is None:
                out = t(x, training=False)
            else:
                out, features[j] = model(x, training=False)
            outputs.append(ops.stop_gradient(ops.cast(out, "float32")))
        return self._with_assistant(x, outputs), features

    def _teacher_outputs(self, x) -> list:
        outputs = [ops.stop_gradient(ops.cast(t(x, training=False), "float32"))
                   for t in self.teachers]
        return self._with_assistant(x, outputs)

    def _with_assistant(self, x, outputs: list) -> list:
        assistants = self.assistant_teachers
        if len(assistants) == 1:
            assistant = assistants[0](x, training=False)
        elif assistants:
            branches = [(lambda inputs, model=model: ops.cast(model(inputs, training=False),
                                                              "float32"))
                        for model in assistants]
            index = ops.clip(ops.convert_to_tensor(self.assistant_index), 0,
                             len(assistants) - 1)
            assistant = ops.switch(index, branches, x)
        if assistants:
            outputs.insert(0, ops.stop_gradient(ops.cast(assistant, "float32")))
        return outputs

    def distillation_term(self, x, student_outputs, teacher_outputs=None):
        """The KD term of the loss for inputs `x` and the student's outputs (before
        `distillation_weight`), combined over the active teachers by `teacher_weighting`
        (`teacher_outputs`: the active teachers' outputs, computed from `x` when None)."""
        student = self._as_logits(student_outputs, self.student_from_logits)
        if teacher_outputs is None:
            teacher_outputs = self._teacher_outputs(x)
        teachers = [self._as_logits(t, self.teacher_from_logits) for t in teacher_outputs]
        n = float(len(teachers))
        loss = self.distillation_loss
        if self.teacher_weighting == "mean":
            return ops.sum(ops.stack([loss(t, student) for t in teachers])) / n
        # BNext's per-sample weights: softmax over the teachers of the student's soft
        # cross-entropy to each (temperature 1), no gradient.
        fits = ops.stack([soft_cross_entropy(t, student) for t in teachers], axis=-1)
        alpha = ops.stop_gradient(ops.softmax(fits, axis=-1))
        terms = []
        for j, teacher in enumerate(teachers):
            if self.teacher_weighting == "hard_knowledge":
                terms.append(ops.mean(alpha[..., j]) * loss(teacher, student))
            else:
                terms.append(loss(teacher, student, sample_weight=alpha[..., j]))
        return ops.sum(ops.stack(terms)) / n

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """distillation_weight * KD + ground_truth_weight * compiled loss + the weighted
        feature losses + the student's own losses (regularizers, `add_loss`)."""
        if y_pred is None:
            y_pred = self(x, training=training)
        replicas = float(_num_replicas())
        teacher_outputs, teacher_features = self._run_teachers(x)
        distillation = self.distillation_term(x, y_pred, teacher_outputs)
        self.distillation_loss_tracker.update_state(distillation * replicas)
        total = self.distillation_weight * distillation
        if self.feature_losses:
            student_features = self._student_features(x, y_pred, training)
            for i, (spec, tracker) in enumerate(zip(self.feature_losses,
                                                    self.feature_loss_trackers)):
                teacher = [ops.stop_gradient(ops.cast(f, "float32"))
                           for f in teacher_features[spec.teacher][i]]
                student = [ops.cast(f, "float32") for f in student_features[i]]
                value = spec(teacher, student)
                tracker.update_state(value * replicas)
                total = total + spec.weight * value
        if self.ground_truth_weight > 0:
            if self._ground_truth_loss is None:
                raise ValueError(
                    f"Distiller {self.name!r} has ground_truth_weight="
                    f"{self.ground_truth_weight:g} but no compiled loss: compile it with "
                    "loss=... .")
            if y is None:
                raise ValueError(
                    f"Distiller {self.name!r} has ground_truth_weight="
                    f"{self.ground_truth_weight:g}, so it needs labels: fit(x, y).")
            ground_truth = self._ground_truth_loss(y, ops.cast(y_pred, "float32"),
                                                   sample_weight)
            self.ground_truth_loss_tracker.update_state(ground_truth * replicas)
            total = total + self.ground_truth_weight * ground_truth
        if self.losses:
            # The base class sums the additional losses (scaled for tf.distribute): no loss
            # was given to its compile().
            total = total + super().compute_loss(x, y, y_pred, sample_weight, training)
        return total

    # ---------------------------------------------------------------------- config

    def get_config(self) -> dict:
        serialize = keras.saving.serialize_keras_object
        return {
            "name": self.name,
            "student": serialize(self.student),
            "teachers": [serialize(t) for t in self.teachers],
            "assistant_teachers": [serialize(t) for t in self.assistant_teachers],
            "distillation_loss": serialize(self.distillation_loss),
            "temperature": None,  # held by distillation_loss
            "distillation_weight": self.distillation_weight,
            "ground_truth_weight": self.ground_truth_weight,
            "teacher_weighting": self.teacher_weighting,
            "student_from_logits": self.student_from_logits,
            "teacher_from_logits": self.teacher_from_logits,
            "feature_losses": [serialize(spec) for spec in self.feature_losses],
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = copy.deepcopy(config)  # Keras' deserialisation consumes nested configs

        def deserialize(value):
            return keras.saving.deserialize_keras_object(value, custom_objects=custom_objects)

        student = deserialize(config.pop("student"))
        teachers = [deserialize(t) for t in config.pop("teachers", [])]
        assistants = [deserialize(t) for t in config.pop("assistant_teachers", [])]
        loss = config.pop("distillation_loss", None)
        features = [deserialize(spec) for spec in config.pop("feature_losses", None) or []]
        return cls(student, teachers, assistant_teachers=assistants, feature_losses=features,
                   distillation_loss=deserialize(loss) if loss is not None else None,
                   **config)


@keras.saving.register_keras_serializable(package="kbnn")
class AssistantTeacherSchedule(keras.callbacks.Callback):
    """Switches a `Distiller`'s assistant teacher during `fit`, as BNext's consecutive
    assistant teachers (arXiv 2211.12933; official code `hpi-xnor/BNext`,
    `src/train_assistant_group_amp.py`): with A assistants and E epochs, assistant k is active
    for the epochs [k E / A, (k + 1) E / A), i.e. ``k = min(floor(epoch A / E), A - 1)``
    (epochs counted from 0).

    Args:
        total_epochs: E, the number of epochs of the whole training run (not of one `fit` call
            when training is split across calls: pass `initial_epoch` to `fit` then).
        distiller: the Distiller; None means the model being fitted.
    """

    def __init__(self, total_epochs: int, distiller=None):
        super().__init__()
        if not (isinstance(total_epochs, numbers.Integral) and not isinstance(total_epochs, bool)
                and total_epochs > 0):
            raise ValueError(
                "Invalid value for argument `total_epochs` of AssistantTeacherSchedule. "
                f"Expected a strictly positive integer. Received total_epochs={total_epochs!r}.")
        self.total_epochs = int(total_epochs)
        self.distiller = distiller

    def _target(self) -> Distiller:
        target = self.distiller if self.distiller is not None else self.model
        if not isinstance(target, Distiller):
            raise ValueError(  # noqa: TRY004 (bad argument value: ValueError by convention)
                "AssistantTeacherSchedule needs a kbnn.training.Distiller (fit the Distiller, "
                f"or pass distiller=...). Received {type(target).__name__}.")
        if not target.assistant_teachers:
            raise ValueError(
                f"AssistantTeacherSchedule: Distiller {target.name!r} has no "
                "`assistant_teachers` to switch.")
        return target

    def index(self, epoch: int, assistants: int) -> int:
        """The assistant active during `epoch` (from 0) of `total_epochs`."""
        return min(int(epoch) * assistants // self.total_epochs, assistants - 1)

    def on_train_begin(self, logs=None):
        self._target()

    def on_epoch_begin(self, epoch, logs=None):
        target = self._target()
        target.assistant_index.assign(self.index(epoch, len(target.assistant_teachers)))

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["assistant_index"] = int(ops.convert_to_numpy(self._target().assistant_index))

    def get_config(self) -> dict:
        """The schedule; the Distiller it drives is bound again when training starts."""
        return {"total_epochs": self.total_epochs}

    @classmethod
    def from_config(cls, config: dict) -> AssistantTeacherSchedule:
        return cls(**config)
