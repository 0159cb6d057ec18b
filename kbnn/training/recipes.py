"""Training recipes of published binary networks, with their sources: ReActNet-A (arXiv
2003.03488), BNext-T (arXiv 2211.12933) and the Bi-Real Net 18 baseline (arXiv 1808.00278).

Each function returns a `Recipe`, a frozen dataclass of the published settings (optimizer,
learning-rate schedule, epochs, batch size, weight decay, augmentation, teachers, two-step flag)
whose methods build the Keras objects: `learning_rate_schedule`, `build_optimizer`,
`callbacks` and `build_distiller`. The values come from the official code (named in
`sources`), which is where the papers' ImageNet runs are specified in full; `notes` lists
where kbnn's Keras form differs from the PyTorch original. See docs/training.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import keras
from keras import ops

from kbnn.checks import check_non_negative, check_positive_int
from kbnn.training.distill import AssistantTeacherSchedule, Distiller, DistributionLoss

__all__ = ["EpochCosineDecay", "EpochLinearDecay", "Recipe", "bireal_net_18", "bnext_t",
           "is_conv_kernel", "reactnet_a"]

_Schedule = keras.optimizers.schedules.LearningRateSchedule


# ------------------------------------------------------------------------- schedules

@keras.saving.register_keras_serializable(package="kbnn")
class EpochLinearDecay(_Schedule):
    """Linear decay to 0, constant within an epoch, as PyTorch's
    ``LambdaLR(lambda epoch: 1 - epoch / epochs)`` stepped at the start of every epoch (the
    official code of ReActNet and Bi-Real Net calls ``scheduler.step()`` before the first
    batch of each epoch):

        lr(step) = initial_learning_rate * max(0, 1 - (floor(step / steps_per_epoch) + offset)
                                                      / epochs)

    With ``offset=1`` (that code) epoch e (from 0) trains at ``lr0 * (1 - (e + 1) / epochs)``:
    the first epoch already below lr0, the last one at 0. ``offset=0`` starts at lr0.

    Args:
        initial_learning_rate: lr0.
        epochs: the number of epochs the rate decays over.
        steps_per_epoch: optimizer steps per epoch.
        offset: 1 (the official code) or 0.
    """

    def __init__(self, initial_learning_rate, epochs, steps_per_epoch, offset=1):
        self.initial_learning_rate = check_non_negative(
            "EpochLinearDecay", "initial_learning_rate", initial_learning_rate)
        self.epochs = check_positive_int("EpochLinearDecay", "epochs", epochs)
        self.steps_per_epoch = check_positive_int("EpochLinearDecay", "steps_per_epoch",
                                                   steps_per_epoch)
        if offset not in (0, 1) or isinstance(offset, bool):
            raise ValueError(
                "Invalid value for argument `offset` of EpochLinearDecay. Expected 0 or 1. "
                f"Received offset={offset!r}.")
        self.offset = int(offset)

    def __call__(self, step):
        epoch = ops.floor(ops.cast(step, "float32") / float(self.steps_per_epoch))
        fraction = 1.0 - (epoch + float(self.offset)) / float(self.epochs)
        return self.initial_learning_rate * ops.maximum(fraction, 0.0)

    def get_config(self) -> dict:
        return {"initial_learning_rate": self.initial_learning_rate, "epochs": self.epochs,
                "steps_per_epoch": self.steps_per_epoch, "offset": self.offset}


@keras.saving.register_keras_serializable(package="kbnn")
class EpochCosineDecay(_Schedule):
    """Cosine decay with a linear warmup prefix, constant within an epoch: timm's
    ``CosineLRScheduler(t_initial=epochs, warmup_t=warmup_epochs, warmup_lr_init=...,
    lr_min=..., warmup_prefix=True)`` stepped with the epoch index at the start of every epoch,
    as BNext's official code does. For epoch e (from 0):

        e <  W: lr = warmup_lr + e * (lr0 - warmup_lr) / W
        e >= W: t = e - W;  lr = min_lr + 0.5 (lr0 - min_lr)(1 + cos(pi t / epochs)) if t < epochs
                            else min_lr

    Args:
        initial_learning_rate: lr0 (the peak).
        epochs: t_initial, the length of the cosine (after the warmup).
        steps_per_epoch: optimizer steps per epoch.
        warmup_epochs: W (>= 0).
        warmup_learning_rate: the rate of epoch 0.
        min_learning_rate: the floor of the cosine.
    """

    def __init__(self, initial_learning_rate, epochs, steps_per_epoch, warmup_epochs=0,
                 warmup_learning_rate=0.0, min_learning_rate=0.0):
        owner = "EpochCosineDecay"
        self.initial_learning_rate = check_non_negative(owner, "initial_learning_rate",
                                                         initial_learning_rate)
        self.epochs = check_positive_int(owner, "epochs", epochs)
        self.steps_per_epoch = check_positive_int(owner, "steps_per_epoch", steps_per_epoch)
        if isinstance(warmup_epochs, bool) or not isinstance(warmup_epochs, int) or (
                warmup_epochs < 0):
            raise ValueError(
                f"Invalid value for argument `warmup_epochs` of {owner}. Expected an integer "
                f">= 0. Received warmup_epochs={warmup_epochs!r}.")
        self.warmup_epochs = warmup_epochs
        self.warmup_learning_rate = check_non_negative(owner, "warmup_learning_rate",
                                                        warmup_learning_rate)
        self.min_learning_rate = check_non_negative(owner, "min_learning_rate",
                                                     min_learning_rate)

    def __call__(self, step):
        epoch = ops.floor(ops.cast(step, "float32") / float(self.steps_per_epoch))
        lr0, low = self.initial_learning_rate, self.min_learning_rate
        warmup = float(self.warmup_epochs)
        if self.warmup_epochs:
            warming = self.warmup_learning_rate + epoch * (
                (lr0 - self.warmup_learning_rate) / warmup)
        else:
            warming = ops.convert_to_tensor(lr0, "float32")
        t = epoch - warmup
        cosine = low + 0.5 * (lr0 - low) * (1.0 + ops.cos(math.pi * t / float(self.epochs)))
        cosine = ops.where(t < float(self.epochs), cosine, low)
        return ops.where(epoch < warmup, warming, cosine)

    def get_config(self) -> dict:
        return {"initial_learning_rate": self.initial_learning_rate, "epochs": self.epochs,
                "steps_per_epoch": self.steps_per_epoch, "warmup_epochs": self.warmup_epochs,
                "warmup_learning_rate": self.warmup_learning_rate,
                "min_learning_rate": self.min_learning_rate}


@keras.saving.register_keras_serializable(package="kbnn")
def is_conv_kernel(variable) -> bool:
    """True for a rank-4 variable (a 2-D convolution kernel, depthwise kernels included): the
    official ReActNet and BNext code puts the parameters with ``p.ndimension() == 4`` in the
    weight-decay group of the conv weights."""
    return len(tuple(variable.shape)) == 4


# --------------------------------------------------------------------------- recipe

@dataclass(frozen=True)
class Recipe:
    """A published training recipe and the builders of its Keras objects.

    Attributes:
        name: the recipe's name.
        model: the architecture it trains.
        sources: where each value comes from (papers with arXiv ids, official code files).
        optimizer: "adam" or "adamw".
        learning_rate: the initial (peak) learning rate.
        schedule: "linear" (`EpochLinearDecay`, offset 1) or "cosine" (`EpochCosineDecay`).
        epochs: training epochs (of each step, for a two-step recipe).
        batch_size: the global batch size.
        conv_weight_decay: weight decay of the convolution kernels (`is_conv_kernel`).
        other_weight_decay: weight decay of every other variable.
        step2_weight_decay: weight decay of every variable in step 2 (two-step recipes).
        two_step: whether the recipe trains in two steps (`to_step2`).
        teacher: the (main) teacher.
        assistant_teachers: BNext's consecutive assistant teachers, in order.
        teacher_weighting: how the Distiller combines several teachers.
        ground_truth_weight: the weight of the label loss in the Distiller.
        label_smoothing: the label smoothing of a label loss.
        gradient_clip_norm: the clipping of the gradients' global norm, or None.
        warmup_epochs, warmup_learning_rate, min_learning_rate: the cosine schedule's warmup
            and floor.
        train_augmentation, eval_preprocessing: the data pipeline, as in the official code.
        mixed_precision: whether the official runs use automatic mixed precision.
        notes: where kbnn's Keras form differs from the original.
    """

    name: str
    model: str
    sources: tuple[str, ...]
    optimizer: str
    learning_rate: float
    schedule: str
    epochs: int
    batch_size: int
    conv_weight_decay: float
    other_weight_decay: float
    two_step: bool
    step2_weight_decay: float | None = None
    teacher: str | None = None
    assistant_teachers: tuple[str, ...] = ()
    teacher_weighting: str = "mean"
    ground_truth_weight: float = 0.0
    label_smoothing: float = 0.0
    gradient_clip_norm: float | None = None
    warmup_epochs: int = 0
    warmup_learning_rate: float = 0.0
    min_learning_rate: float = 0.0
    beta_1: float = 0.9
    beta_2: float = 0.999
    epsilon: float = 1e-8
    train_augmentation: tuple[str, ...] = ()
    eval_preprocessing: tuple[str, ...] = ()
    mixed_precision: bool = False
    notes: tuple[str, ...] = field(default=())

    def learning_rate_schedule(self, steps_per_epoch: int) -> _Schedule:
        """The learning-rate schedule over optimizer steps, for `steps_per_epoch` steps per
        epoch (e.g. ``ceil(1281167 / batch_size)`` on ImageNet)."""
        if self.schedule == "linear":
            return EpochLinearDecay(self.learning_rate, self.epochs, steps_per_epoch, offset=1)
        if self.schedule == "cosine":
            return EpochCosineDecay(self.learning_rate, self.epochs, steps_per_epoch,
                                    warmup_epochs=self.warmup_epochs,
                                    warmup_learning_rate=self.warmup_learning_rate,
                                    min_learning_rate=self.min_learning_rate)
        raise ValueError(f"Recipe {self.name!r}: unknown schedule {self.schedule!r}.")

    def _adam(self, schedule, weight_decay: float, name: str | None = None):
        kwargs = {"learning_rate": schedule, "beta_1": self.beta_1, "beta_2": self.beta_2,
                  "epsilon": self.epsilon}
        if self.gradient_clip_norm is not None:
            kwargs["global_clipnorm"] = self.gradient_clip_norm
        if name is not None:
            kwargs["name"] = name
        if self.optimizer == "adamw":
            return keras.optimizers.AdamW(weight_decay=weight_decay, **kwargs)
        return keras.optimizers.Adam(weight_decay=weight_decay or None, **kwargs)

    def build_optimizer(self, model, steps_per_epoch: int, step: int = 1):
        """The optimizer of the recipe for `model` (built), with its learning-rate schedule.

        * Step 2 of a two-step recipe: one optimizer, weight decay `step2_weight_decay` on
          every variable (0: none).
        * Otherwise, when the two weight-decay groups have the same decay: one optimizer.
        * When only the conv kernels are decayed (ReActNet step 1): one optimizer with
          `weight_decay` = `conv_weight_decay` and every other variable excluded
          (`exclude_from_weight_decay`, set before the first step; Keras does not save it).
        * Two non-zero decays (BNext): a `kbnn.optimizers.CaseOptimizer` giving the conv
          kernels (`is_conv_kernel`) to one optimizer and the rest to another, each with its
          own `weight_decay` and the same schedule (saved with the optimizer).

        Args:
            model: the model to train (its variables define the groups).
            steps_per_epoch: optimizer steps per epoch (for the schedule).
            step: 1, or 2 for the second step of a two-step recipe.
        """
        from kbnn.optimizers import CaseOptimizer

        if step not in (1, 2):
            raise ValueError(f"Invalid value for argument `step` of build_optimizer. Expected "
                             f"1 or 2. Received step={step!r}.")
        if step == 2 and not self.two_step:
            raise ValueError(f"Recipe {self.name!r} trains in one step: step=2 does not apply.")
        schedule = self.learning_rate_schedule(steps_per_epoch)
        if step == 2:
            return self._adam(schedule, self.step2_weight_decay or 0.0)
        conv, other = self.conv_weight_decay, self.other_weight_decay
        if conv == other:
            return self._adam(schedule, conv)
        if other == 0.0:
            optimizer = self._adam(schedule, conv)
            optimizer.exclude_from_weight_decay(
                var_list=[v for v in model.trainable_variables if not is_conv_kernel(v)])
            return optimizer
        if conv == 0.0:
            optimizer = self._adam(schedule, other)
            optimizer.exclude_from_weight_decay(
                var_list=[v for v in model.trainable_variables if is_conv_kernel(v)])
            return optimizer
        return CaseOptimizer(
            (is_conv_kernel, self._adam(schedule, conv, name=f"{self.optimizer}_conv")),
            default_optimizer=self._adam(schedule, other, name=f"{self.optimizer}_other"))

    def callbacks(self) -> list:
        """The callbacks the recipe needs during `fit`: BNext's `AssistantTeacherSchedule`
        when it has assistant teachers (the learning rate is scheduled by the optimizer)."""
        if self.assistant_teachers:
            return [AssistantTeacherSchedule(self.epochs)]
        return []

    def build_distiller(self, student, teacher, assistant_teachers=(), **kwargs) -> Distiller:
        """A `Distiller` with the recipe's distillation settings (`DistributionLoss`,
        `teacher_weighting`, `ground_truth_weight`) for `student`, the main `teacher` model and
        the `assistant_teachers` models (BNext; in the order of `self.assistant_teachers`).
        `kwargs` go to `Distiller` (e.g. ``teacher_from_logits=False``)."""
        if self.teacher is None:
            raise ValueError(f"Recipe {self.name!r} has no teacher: it trains on labels only.")
        if len(tuple(assistant_teachers)) != len(self.assistant_teachers):
            raise ValueError(
                f"Recipe {self.name!r} uses {len(self.assistant_teachers)} assistant teachers "
                f"({', '.join(self.assistant_teachers) or 'none'}); received "
                f"{len(tuple(assistant_teachers))}.")
        kwargs.setdefault("distillation_loss", DistributionLoss())
        return Distiller(student, teacher, assistant_teachers=list(assistant_teachers) or None,
                         teacher_weighting=self.teacher_weighting,
                         ground_truth_weight=self.ground_truth_weight, **kwargs)


_KERAS_WEIGHT_DECAY = (
    "The official code uses PyTorch's Adam(weight_decay=...), which adds weight_decay * w to "
    "the gradient (L2); Keras' `weight_decay` is decoupled (w -= lr * weight_decay * w, the "
    "AdamW form). The value is the paper's; for the coupled form add an L2 kernel regularizer "
    "of weight_decay / 2 to the conv kernels instead.")

_TORCH_EPSILON = ("Adam's epsilon is PyTorch's default 1e-8 (Keras' default is 1e-7).")


def reactnet_a(epochs: int = 128) -> Recipe:
    """ReActNet-A (Liu, Shen, Savvides, Cheng, arXiv 2003.03488), trained in two steps with
    distillation from a ResNet-34, as the official code runs it (`liuzechun/ReActNet`,
    `mobilenet/1_step1/run.sh`, `mobilenet/2_step2/run.sh`, `train.py`, `utils/KD_loss.py`).

    Args:
        epochs: 128 (lr 1.25e-3, the default run) or 256 (lr 5e-4, the alternative run that
            the scripts' comment says reaches similar accuracy).
    """
    if epochs not in (128, 256):
        raise ValueError("Invalid value for argument `epochs` of reactnet_a. Expected 128 or "
                         f"256 (the two official runs). Received epochs={epochs!r}.")
    return Recipe(
        name=f"ReActNet-A ({epochs} epochs per step)",
        model="ReActNet-A",
        sources=(
            ("Liu, Shen, Savvides, Cheng, ReActNet, arXiv 2003.03488 (two-step "
             "training, distributional loss from a real-valued teacher)"),
            ("liuzechun/ReActNet mobilenet/1_step1/run.sh and mobilenet/2_step2/run.sh: batch "
             "256, lr 1.25e-3 for 128 epochs (or 5e-4 for 256), weight decay 1e-5 (step 1) "
             "and 0 (step 2)"),
            ("liuzechun/ReActNet mobilenet/*/train.py: Adam, decay on the 4-D (conv) weights "
             "only, LambdaLR(1 - epoch/epochs) stepped each epoch, teacher torchvision "
             "resnet34 (pretrained), DistributionLoss only, RandomResizedCrop(224, (0.08, 1)) "
             "+ Lighting(0.1) + horizontal flip"),
        ),
        optimizer="adam",
        learning_rate=1.25e-3 if epochs == 128 else 5e-4,
        schedule="linear",
        epochs=epochs,
        batch_size=256,
        conv_weight_decay=1e-5,
        other_weight_decay=0.0,
        two_step=True,
        step2_weight_decay=0.0,
        teacher="ResNet-34 (torchvision, ImageNet-pretrained)",
        train_augmentation=("RandomResizedCrop(224, scale=(0.08, 1.0))", "Lighting(0.1)",
                            "RandomHorizontalFlip()", "Normalize(ImageNet mean, std)"),
        eval_preprocessing=("Resize(256)", "CenterCrop(224)", "Normalize(ImageNet mean, std)"),
        notes=(_KERAS_WEIGHT_DECAY, _TORCH_EPSILON,
               ("Step 2 starts from the step-1 weights: kbnn.training.to_step2(step1_model, "
                "'scaled_sign').")),
    )


def bnext_t() -> Recipe:
    """BNext-Tiny (Guo, Bethge, Meinel, Yang, arXiv 2211.12933) with diversified consecutive
    knowledge distillation, as the official code runs it (`hpi-xnor/BNext`,
    `src/script/BNext-Tiny/run_*_assistant_teacher_num_1_aa.sh`,
    `src/train_assistant_group_amp.py`)."""
    return Recipe(
        name="BNext-T",
        model="BNext-T",
        sources=(
            "Guo, Bethge, Meinel, Yang, BNext, arXiv 2211.12933",
            ("hpi-xnor/BNext src/script/BNext-Tiny/run_*_assistant_teacher_num_1_aa.sh: batch "
             "512, lr 1e-3, 512 epochs, 1 assistant teacher (EfficientNet-B0), mixup 0, "
             "cutmix 0"),
            ("hpi-xnor/BNext src/train_assistant_group_amp.py: AdamW with weight decay 1e-8 on "
             "the 4-D (conv) weights and 1e-3 on the others; timm CosineLRScheduler(t_initial="
             "epochs, warmup_t=5, lr_min=1e-7, warmup_lr_init=1e-5, warmup_prefix=True) "
             "stepped each epoch; clip_grad_norm_(5); AMP; main teacher EfficientNet-B2; "
             "hard-knowledge teacher weighting with two teachers; RandAugment "
             "'rand-m7-mstd0.5-inc1'"),
        ),
        optimizer="adamw",
        learning_rate=1e-3,
        schedule="cosine",
        epochs=512,
        batch_size=512,
        conv_weight_decay=1e-8,
        other_weight_decay=1e-3,
        two_step=False,
        teacher="EfficientNet-B2 (timm, ImageNet-pretrained)",
        assistant_teachers=("EfficientNet-B0 (timm, ImageNet-pretrained)",),
        teacher_weighting="hard_knowledge",
        gradient_clip_norm=5.0,
        warmup_epochs=5,
        warmup_learning_rate=1e-5,
        min_learning_rate=1e-7,
        train_augmentation=(("RandomResizedCrop(224, scale=(0.08, 1.0), ratio=(3/4, 4/3), "
                            "bicubic)"), "RandomHorizontalFlip(0.5)",
                            "RandAugment('rand-m7-mstd0.5-inc1')",
                            "Normalize(ImageNet mean, std)"),
        eval_preprocessing=("Resize to 224 / 0.95 (crop_pct 0.95, bicubic)", "CenterCrop(224)",
                            "Normalize(ImageNet mean, std)"),
        mixed_precision=True,
        notes=(
            ("The conv kernels and the other variables go to two AdamW optimizers (a "
             "kbnn.optimizers.CaseOptimizer) with the same schedule; the gradient clipping "
             "(global norm 5) then applies to each group's norm, not to the joint norm."),
            _TORCH_EPSILON,
            ("BNext's binarizers anneal a temperature tau <- 0.9 tau after every epoch; that "
             "belongs to the model's quantizers (kbnn.training.QuantizerSchedule), not to "
             "this recipe."),
        ),
    )


def bireal_net_18() -> Recipe:
    """The Bi-Real Net 18 baseline (Liu et al., arXiv 1808.00278) trained
    from scratch as the official PyTorch code does (`liuzechun/Bi-Real-net`,
    `pytorch_implementation/BiReal18_34/train.py`): one step, no teacher."""
    return Recipe(
        name="Bi-Real Net 18",
        model="Bi-Real Net 18",
        sources=(
            "Liu et al., Bi-Real Net, arXiv 1808.00278",
            ("liuzechun/Bi-Real-net pytorch_implementation/BiReal18_34/train.py defaults: "
             "batch 512, 256 epochs, Adam lr 1e-3, weight decay 0, LambdaLR(1 - epoch/epochs) "
             "stepped each epoch, label smoothing 0.1 (CrossEntropyLabelSmooth), "
             "RandomResizedCrop(224, (0.08, 1)) + Lighting(0.1) + horizontal flip"),
        ),
        optimizer="adam",
        learning_rate=1e-3,
        schedule="linear",
        epochs=256,
        batch_size=512,
        conv_weight_decay=0.0,
        other_weight_decay=0.0,
        two_step=False,
        label_smoothing=0.1,
        ground_truth_weight=1.0,
        train_augmentation=("RandomResizedCrop(224, scale=(0.08, 1.0))", "Lighting(0.1)",
                            "RandomHorizontalFlip()", "Normalize(ImageNet mean, std)"),
        eval_preprocessing=("Resize(256)", "CenterCrop(224)", "Normalize(ImageNet mean, std)"),
        notes=(_TORCH_EPSILON,
               ("Train on labels: keras.losses.CategoricalCrossentropy(label_smoothing=0.1) "
                "on one-hot labels.")),
    )
