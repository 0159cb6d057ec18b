"""The recipes hold the published values (typed here from the official code that each recipe
names in its sources), and the optimizers and schedules they build give the expected
learning rate at the first, a middle and the last step (computed by hand), the weight-decay
groups the code uses, and the callbacks and distiller of the recipe."""

import dataclasses
import math

import keras
import numpy as np
import pytest

import kbnn
from kbnn.training import (
    AssistantTeacherSchedule,
    Distiller,
    EpochCosineDecay,
    EpochLinearDecay,
    Recipe,
    bireal_net_18,
    bnext_t,
    is_conv_kernel,
    reactnet_a,
)

STEPS = 10  # steps per epoch in these tests


def model():
    keras.utils.set_random_seed(0)
    return keras.Sequential([
        keras.Input((8, 8, 3)),
        keras.layers.Conv2D(4, 3, name="stem"),
        keras.layers.BatchNormalization(name="bn"),
        kbnn.layers.QuantConv2D(4, 3, input_quantizer="ste_sign", name="binary"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(10, name="fc"),
    ])


def lr_at(optimizer, step) -> float:
    optimizer.iterations.assign(step)
    return float(keras.ops.convert_to_numpy(optimizer.learning_rate))


# ------------------------------------------------------------------------------ values

def test_reactnet_a_values():
    recipe = reactnet_a()
    # ReActNet (arXiv 2003.03488), official run.sh / train.py: Adam lr 1.25e-3, 128 epochs,
    # batch 256, linear decay to 0; wd 1e-5 on the conv weights in step 1, 0 in step 2;
    # ResNet-34 teacher, DistributionLoss only; two steps.
    assert (recipe.optimizer, recipe.learning_rate, recipe.epochs, recipe.batch_size) == (
        "adam", 1.25e-3, 128, 256)
    assert (recipe.beta_1, recipe.beta_2) == (0.9, 0.999)
    assert recipe.schedule == "linear"
    assert (recipe.conv_weight_decay, recipe.other_weight_decay) == (1e-5, 0.0)
    assert recipe.two_step and recipe.step2_weight_decay == 0.0
    assert "ResNet-34" in recipe.teacher and recipe.assistant_teachers == ()
    assert recipe.ground_truth_weight == 0.0
    assert recipe.train_augmentation[:3] == (
        "RandomResizedCrop(224, scale=(0.08, 1.0))", "Lighting(0.1)", "RandomHorizontalFlip()")
    assert recipe.eval_preprocessing[:2] == ("Resize(256)", "CenterCrop(224)")
    assert any("2003.03488" in s for s in recipe.sources)
    long = reactnet_a(256)  # the alternative official run
    assert (long.learning_rate, long.epochs) == (5e-4, 256)
    with pytest.raises(ValueError, match="`epochs`"):
        reactnet_a(100)


def test_bnext_t_values():
    recipe = bnext_t()
    # BNext (arXiv 2211.12933), official Tiny script / train_assistant_group_amp.py: AdamW lr
    # 1e-3, wd 1e-8 on the 4-D weights and 1e-3 on the rest, timm cosine (t_initial=epochs,
    # warmup 5 epochs from 1e-5, lr_min 1e-7), 512 epochs, batch 512, grad-norm clip 5, AMP,
    # RandAugment rand-m7-mstd0.5-inc1, assistant EfficientNet-B0 + main EfficientNet-B2.
    assert (recipe.optimizer, recipe.learning_rate, recipe.epochs, recipe.batch_size) == (
        "adamw", 1e-3, 512, 512)
    assert (recipe.conv_weight_decay, recipe.other_weight_decay) == (1e-8, 1e-3)
    assert recipe.schedule == "cosine"
    assert (recipe.warmup_epochs, recipe.warmup_learning_rate, recipe.min_learning_rate) == (
        5, 1e-5, 1e-7)
    assert recipe.gradient_clip_norm == 5.0 and recipe.mixed_precision
    assert not recipe.two_step
    assert "EfficientNet-B2" in recipe.teacher
    assert len(recipe.assistant_teachers) == 1 and "EfficientNet-B0" in recipe.assistant_teachers[0]
    assert recipe.teacher_weighting == "hard_knowledge"
    assert any("rand-m7-mstd0.5-inc1" in a for a in recipe.train_augmentation)
    assert any("2211.12933" in s for s in recipe.sources)


def test_bireal_net_18_values():
    recipe = bireal_net_18()
    # Bi-Real Net (arXiv 1808.00278), official PyTorch code: Adam lr 1e-3, linear decay over
    # 256 epochs, batch 512, wd 0, from scratch (no teacher, one step), label smoothing 0.1.
    assert (recipe.optimizer, recipe.learning_rate, recipe.epochs, recipe.batch_size) == (
        "adam", 1e-3, 256, 512)
    assert (recipe.conv_weight_decay, recipe.other_weight_decay) == (0.0, 0.0)
    assert recipe.schedule == "linear" and not recipe.two_step
    assert recipe.teacher is None and recipe.label_smoothing == 0.1
    assert any("1808.00278" in s for s in recipe.sources)
    assert isinstance(recipe, Recipe) and dataclasses.is_dataclass(recipe)


# ------------------------------------------------------------------------- schedules

def test_linear_decay_by_hand():
    # PyTorch LambdaLR(1 - epoch / E) stepped before each epoch: epoch e runs at
    # lr0 * (1 - (e + 1) / E).
    lr0, epochs = 1.25e-3, 128
    optimizer = reactnet_a().build_optimizer(model(), STEPS)
    assert lr_at(optimizer, 0) == pytest.approx(lr0 * (1 - 1 / 128), rel=1e-6)
    assert lr_at(optimizer, STEPS - 1) == pytest.approx(lr0 * (1 - 1 / 128), rel=1e-6)
    assert lr_at(optimizer, 64 * STEPS) == pytest.approx(lr0 * (1 - 65 / 128), rel=1e-6)
    assert lr_at(optimizer, epochs * STEPS - 1) == 0.0
    step2 = reactnet_a().build_optimizer(model(), STEPS, step=2)
    assert lr_at(step2, 64 * STEPS + 5) == pytest.approx(lr0 * (1 - 65 / 128), rel=1e-6)
    bireal = bireal_net_18().build_optimizer(model(), STEPS)
    assert lr_at(bireal, 0) == pytest.approx(1e-3 * (1 - 1 / 256), rel=1e-6)
    assert lr_at(bireal, 128 * STEPS) == pytest.approx(1e-3 * (1 - 129 / 256), rel=1e-6)
    assert lr_at(bireal, 256 * STEPS - 1) == 0.0


def test_cosine_with_warmup_by_hand():
    # timm CosineLRScheduler(t_initial=512, warmup_t=5, warmup_lr_init=1e-5, lr_min=1e-7,
    # warmup_prefix=True) at epoch e.
    optimizer = bnext_t().build_optimizer(model(), STEPS)
    for case in optimizer.optimizers:
        assert lr_at(case, 0) == pytest.approx(1e-5, rel=1e-6)
        assert lr_at(case, 2 * STEPS + 3) == pytest.approx(1e-5 + 2 * (1e-3 - 1e-5) / 5,
                                                           rel=1e-5)
        assert lr_at(case, 5 * STEPS) == pytest.approx(1e-3, rel=1e-6)
        middle = 1e-7 + 0.5 * (1e-3 - 1e-7) * (1 + math.cos(math.pi * 256 / 512))
        assert lr_at(case, 261 * STEPS) == pytest.approx(middle, rel=1e-5)
        end = 1e-7 + 0.5 * (1e-3 - 1e-7) * (1 + math.cos(math.pi * 506 / 512))
        assert lr_at(case, 512 * STEPS - 1) == pytest.approx(end, rel=1e-4)


def test_schedules_serialize_and_check_arguments():
    for schedule in (EpochLinearDecay(1e-3, 10, 5, offset=0),
                     EpochCosineDecay(1e-3, 10, 5, warmup_epochs=2, warmup_learning_rate=1e-5,
                                      min_learning_rate=1e-7)):
        restored = keras.optimizers.schedules.deserialize(
            keras.optimizers.schedules.serialize(schedule))
        assert restored.get_config() == schedule.get_config()
        values = [float(restored(s)) for s in (0, 12, 49)]
        assert values == [float(schedule(s)) for s in (0, 12, 49)]
    assert float(EpochLinearDecay(1e-3, 10, 5, offset=0)(0)) == pytest.approx(1e-3)
    assert float(EpochCosineDecay(1e-3, 10, 5)(10 * 5 + 7)) == 0.0  # past t_initial: lr_min
    with pytest.raises(ValueError, match="`epochs`"):
        EpochLinearDecay(1e-3, 0, 5)
    with pytest.raises(ValueError, match="`offset`"):
        EpochLinearDecay(1e-3, 10, 5, offset=2)
    with pytest.raises(ValueError, match="`warmup_epochs`"):
        EpochCosineDecay(1e-3, 10, 5, warmup_epochs=-1)


# ------------------------------------------------------------------- weight-decay groups

def one_step_change(recipe, step=1):
    """Relative change of each variable after one step with zero gradients (only weight decay
    moves a variable then: Adam's update of a zero gradient is 0)."""
    net = model()
    optimizer = recipe.build_optimizer(net, STEPS, step=step)
    variables = net.trainable_variables
    for v in variables:
        v.assign(np.ones(v.shape, np.float32))
    optimizer.apply_gradients([(keras.ops.zeros_like(v), v) for v in variables])
    return {v.path.split("/")[-2] + "/" + v.name: 1.0 - float(np.mean(v.numpy()))
            for v in variables}


def test_reactnet_decays_only_conv_kernels():
    # the recipe's grouping, with a decay large enough to see in float32
    recipe = dataclasses.replace(reactnet_a(), conv_weight_decay=0.5, learning_rate=0.1)
    change = one_step_change(recipe)
    lr = 0.1 * (1 - 1 / 128)
    assert change["stem/kernel"] == pytest.approx(lr * 0.5, rel=1e-4)
    assert change["binary/kernel"] == pytest.approx(lr * 0.5, rel=1e-4)
    assert change["fc/kernel"] == 0.0 and change["fc/bias"] == 0.0
    assert change["bn/gamma"] == 0.0 and change["stem/bias"] == 0.0
    step2 = one_step_change(dataclasses.replace(recipe, step2_weight_decay=0.0), step=2)
    assert all(value == 0.0 for value in step2.values())
    optimizer = reactnet_a().build_optimizer(model(), STEPS)
    assert isinstance(optimizer, keras.optimizers.Adam)
    assert optimizer.weight_decay == pytest.approx(1e-5) and optimizer.epsilon == 1e-8


def test_bnext_two_decay_groups():
    recipe = dataclasses.replace(bnext_t(), conv_weight_decay=0.25, other_weight_decay=0.5,
                                 warmup_epochs=0, learning_rate=0.1, min_learning_rate=0.0)
    change = one_step_change(recipe)
    assert change["stem/kernel"] == pytest.approx(0.1 * 0.25, rel=1e-4)
    assert change["binary/kernel"] == pytest.approx(0.1 * 0.25, rel=1e-4)
    for name in ("fc/kernel", "fc/bias", "bn/gamma", "stem/bias"):
        assert change[name] == pytest.approx(0.1 * 0.5, rel=1e-4), name
    optimizer = bnext_t().build_optimizer(model(), STEPS)
    assert isinstance(optimizer, kbnn.optimizers.CaseOptimizer)
    conv, other = optimizer.optimizers
    assert isinstance(conv, keras.optimizers.AdamW) and isinstance(other, keras.optimizers.AdamW)
    assert conv.weight_decay == pytest.approx(1e-8) and other.weight_decay == pytest.approx(1e-3)
    assert conv.global_clipnorm == other.global_clipnorm == 5.0
    assert optimizer.predicates == [is_conv_kernel]


def test_callbacks_and_distiller():
    assert reactnet_a().callbacks() == [] and bireal_net_18().callbacks() == []
    (schedule,) = bnext_t().callbacks()
    assert isinstance(schedule, AssistantTeacherSchedule) and schedule.total_epochs == 512

    def logits(seed):
        keras.utils.set_random_seed(seed)
        return keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Flatten(),
                                 keras.layers.Dense(10)])

    distiller = bnext_t().build_distiller(logits(0), logits(1), [logits(2)])
    assert isinstance(distiller, Distiller)
    assert distiller.teacher_weighting == "hard_knowledge"
    assert len(distiller.teachers) == 1 and len(distiller.assistant_teachers) == 1
    single = reactnet_a().build_distiller(logits(0), logits(1))
    assert single.teacher_weighting == "mean" and single.ground_truth_weight == 0.0
    with pytest.raises(ValueError, match="assistant"):
        bnext_t().build_distiller(logits(0), logits(1))
    with pytest.raises(ValueError, match="no teacher"):
        bireal_net_18().build_distiller(logits(0), logits(1))
    with pytest.raises(ValueError, match="one step"):
        bnext_t().build_optimizer(model(), STEPS, step=2)
