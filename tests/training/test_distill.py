"""DistributionLoss against numpy (and the hand-computed KD reference point), and the Distiller's
loss of one step against the same loss computed by hand from the teachers' and the student's
outputs: one teacher, several teachers, BNext's hard-knowledge weighting, consecutive assistant
teachers, the ground-truth term; fit with jit on and off."""

import keras
import numpy as np
import pytest

import kbnn
from kbnn.training import AssistantTeacherSchedule, Distiller, DistributionLoss

# Hand-computed reference point (numpy, independent of kbnn): student logits [1, 0, -1],
# teacher logits [2, 0, 0] -> soft cross-entropy 0.727127, KL 0.061554.
KD_STUDENT = np.array([[1.0, 0.0, -1.0]], np.float32)
KD_TEACHER = np.array([[2.0, 0.0, 0.0]], np.float32)
KD_CROSS_ENTROPY = 0.727127
KD_KL = 0.061554


def np_log_softmax(z):
    z = np.asarray(z, np.float64)
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def np_soft_ce(teacher, student, temperature=1.0):
    """Per-sample -sum softmax(t/T) log softmax(s/T)."""
    p = np.exp(np_log_softmax(np.asarray(teacher) / temperature))
    return -(p * np_log_softmax(np.asarray(student) / temperature)).sum(-1)


def np_kl(teacher, student, temperature=1.0):
    log_p = np_log_softmax(np.asarray(teacher) / temperature)
    return (np.exp(log_p) * (log_p - np_log_softmax(np.asarray(student) / temperature))).sum(-1)


# ---------------------------------------------------------------------- DistributionLoss

def test_reference_point():
    assert float(DistributionLoss()(KD_TEACHER, KD_STUDENT)) == pytest.approx(
        KD_CROSS_ENTROPY, abs=1e-6)
    assert float(DistributionLoss(kind="kl")(KD_TEACHER, KD_STUDENT)) == pytest.approx(
        KD_KL, abs=1e-6)
    assert np_soft_ce(KD_TEACHER, KD_STUDENT)[0] == pytest.approx(KD_CROSS_ENTROPY, abs=1e-6)


@pytest.mark.parametrize("temperature", [1.0, 4.0])
@pytest.mark.parametrize("kind", ["cross_entropy", "kl"])
def test_matches_numpy(rng, temperature, kind):
    teacher = rng.normal(size=(6, 5)).astype(np.float32) * 3
    student = rng.normal(size=(6, 5)).astype(np.float32) * 3
    weights = rng.uniform(size=6).astype(np.float32)
    per_sample = (np_soft_ce if kind == "cross_entropy" else np_kl)(teacher, student,
                                                                     temperature)
    per_sample = per_sample * temperature**2
    loss = DistributionLoss(temperature=temperature, kind=kind)
    np.testing.assert_allclose(float(loss(teacher, student)), per_sample.mean(), rtol=1e-5)
    np.testing.assert_allclose(float(loss(teacher, student, sample_weight=weights)),
                               (per_sample * weights).mean(), rtol=1e-5)
    none = DistributionLoss(temperature=temperature, kind=kind, reduction="none")
    np.testing.assert_allclose(np.asarray(none(teacher, student)), per_sample, rtol=1e-5,
                               atol=1e-6)


def test_probabilities_and_gradient(rng):
    teacher = rng.normal(size=(4, 3)).astype(np.float32)
    student = rng.normal(size=(4, 3)).astype(np.float32)
    as_probs = DistributionLoss(from_logits=False)
    probs = [np.exp(np_log_softmax(z)).astype(np.float32) for z in (teacher, student)]
    np.testing.assert_allclose(float(as_probs(*probs)), np_soft_ce(teacher, student).mean(),
                               rtol=1e-5)
    # Gradient w.r.t. the student logits: (softmax(s) - softmax(t)) / batch; none to the teacher.
    import tensorflow as tf

    t, s = tf.constant(teacher), tf.constant(student)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([t, s])
        value = DistributionLoss()(t, s)
    expected = (np.exp(np_log_softmax(student)) - np.exp(np_log_softmax(teacher))) / 4
    np.testing.assert_allclose(tape.gradient(value, s).numpy(), expected, atol=1e-6)
    assert tape.gradient(value, t) is None or not np.any(tape.gradient(value, t).numpy())


def test_serialization_and_errors():
    loss = DistributionLoss(temperature=2.0, kind="kl", from_logits=False)
    restored = keras.losses.deserialize(keras.losses.serialize(loss))
    assert isinstance(restored, DistributionLoss)
    assert (restored.temperature, restored.kind, restored.from_logits) == (2.0, "kl", False)
    with pytest.raises(ValueError, match="`temperature`"):
        DistributionLoss(temperature=0)
    with pytest.raises(ValueError, match="`kind`"):
        DistributionLoss(kind="js")


# ---------------------------------------------------------------------------- Distiller

def dense_model(seed, units=5, binary=False, name=None):
    """A model without batch norm, so training and inference outputs agree."""
    keras.utils.set_random_seed(seed)
    quantizers = {"input_quantizer": "ste_sign", "kernel_quantizer": "ste_sign"} if binary else {}
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="tanh"),
                             kbnn.layers.QuantDense(units, **quantizers)], name=name)


def data(rng, n=16, classes=5):
    return (rng.normal(size=(n, 4)).astype(np.float32),
            rng.integers(0, classes, size=n).astype(np.int64))


def outputs(model, x):
    return np.asarray(model(x, training=False), np.float64)


def one_step_loss(distiller, x, y=None):
    """The loss `fit` reports for one batch (computed before the update)."""
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    distiller.compile(keras.optimizers.SGD(0.0),
                      loss=loss if distiller.ground_truth_weight else None)
    return distiller.train_on_batch(x, y, return_dict=True)


def test_one_teacher_equals_hand_computed(rng):
    x, y = data(rng)
    student, teacher = dense_model(0, binary=True), dense_model(1)
    distiller = Distiller(student, teacher)
    expected = np_soft_ce(outputs(teacher, x), outputs(student, x)).mean()
    logs = one_step_loss(distiller, x, y)
    assert logs["loss"] == pytest.approx(expected, rel=1e-5)
    assert logs["distillation_loss"] == pytest.approx(expected, rel=1e-5)
    # compute_loss directly, and call() returning the student's outputs
    np.testing.assert_allclose(outputs(distiller, x), outputs(student, x))
    direct = distiller.compute_loss(x, y, distiller(x, training=True))
    assert float(direct) == pytest.approx(expected, rel=1e-5)
    assert not teacher.trainable
    assert [v.path for v in distiller.trainable_variables] == [
        v.path for v in student.trainable_variables]


def test_mean_of_teachers_and_ground_truth(rng):
    x, y = data(rng)
    student, t1, t2 = dense_model(0, binary=True), dense_model(1), dense_model(2)
    distiller = Distiller(student, [t1, t2], distillation_weight=0.9, ground_truth_weight=0.1,
                          temperature=2.0)
    s = outputs(student, x)
    kd = 4.0 * (np_soft_ce(outputs(t1, x), s, 2.0).mean()
                + np_soft_ce(outputs(t2, x), s, 2.0).mean()) / 2
    ce = -np_log_softmax(s)[np.arange(len(y)), y].mean()
    logs = one_step_loss(distiller, x, y)
    assert logs["distillation_loss"] == pytest.approx(kd, rel=1e-5)
    assert logs["ground_truth_loss"] == pytest.approx(ce, rel=1e-5)
    assert logs["loss"] == pytest.approx(0.9 * kd + 0.1 * ce, rel=1e-5)


def np_hard_knowledge(teachers, student, per_sample=False):
    """BNext's weighting: alpha = softmax over teachers of the per-sample soft CE;
    mean_b sum_j alpha_bj L_j / n (L_j the batch mean, or per sample)."""
    losses = np.stack([np_soft_ce(t, student) for t in teachers], axis=-1)  # (batch, n)
    alpha = np.exp(losses - losses.max(-1, keepdims=True))
    alpha = alpha / alpha.sum(-1, keepdims=True)
    n = len(teachers)
    if per_sample:
        return (alpha * losses).sum(-1).mean() / n
    return (alpha * losses.mean(0, keepdims=True)).sum(-1).mean() / n


@pytest.mark.parametrize("weighting", ["hard_knowledge", "hard_knowledge_per_sample"])
def test_hard_knowledge_with_consecutive_assistants(rng, weighting):
    x, y = data(rng)
    student, main = dense_model(0, binary=True), dense_model(1)
    assistants = [dense_model(2), dense_model(3)]
    distiller = Distiller(student, main, assistant_teachers=assistants,
                          teacher_weighting=weighting)
    s = outputs(student, x)
    for index, assistant in enumerate(assistants):
        distiller.assistant_index.assign(index)
        expected = np_hard_knowledge([outputs(assistant, x), outputs(main, x)], s,
                                     per_sample=weighting.endswith("per_sample"))
        assert one_step_loss(distiller, x, y)["loss"] == pytest.approx(expected, rel=1e-5)


def test_assistant_schedule_switches_as_the_official_code():
    schedule = AssistantTeacherSchedule(128)
    # BNext's official code: assistant k while epoch / (E / A) < k + 1.
    for assistants in (1, 2, 3):
        for epoch in range(128):
            official = next((k for k in range(assistants)
                             if epoch / (128 / assistants) < k + 1), assistants - 1)
            assert schedule.index(epoch, assistants) == official


@pytest.mark.parametrize("jit_compile", [False, True])
def test_fit_switches_assistants(rng, jit_compile):
    x, y = data(rng, n=32)
    student = dense_model(0, binary=True)
    assistants = [dense_model(2), dense_model(3), dense_model(4)]
    distiller = Distiller(student, dense_model(1), assistant_teachers=assistants,
                          teacher_weighting="hard_knowledge")
    distiller.compile(keras.optimizers.Adam(0.01), metrics=["accuracy"],
                      jit_compile=jit_compile)
    history = distiller.fit(x, y, batch_size=16, epochs=6, verbose=0,
                            callbacks=[AssistantTeacherSchedule(6)])
    assert history.history["assistant_index"] == [0, 0, 1, 1, 2, 2]
    assert set(history.history) >= {"loss", "distillation_loss", "accuracy"}
    assert all(np.isfinite(history.history["loss"]))
    # the student was trained, the teachers were not
    for teacher in [distiller.teachers[0], *assistants]:
        assert not teacher.trainable_variables


def test_probability_outputs(rng):
    x, _ = data(rng)
    student = dense_model(0, binary=True)
    teacher = keras.Sequential([dense_model(1), keras.layers.Softmax()])
    distiller = Distiller(student, teacher, teacher_from_logits=False)
    expected = np_soft_ce(outputs(teacher.layers[0], x), outputs(student, x)).mean()
    assert float(distiller.compute_loss(x, None, distiller(x))) == pytest.approx(expected,
                                                                                  rel=1e-4)


def test_student_regularization_loss_is_added(rng):
    x, y = data(rng)
    keras.utils.set_random_seed(0)
    student = keras.Sequential([keras.Input((4,)), keras.layers.Dense(
        5, kernel_regularizer=keras.regularizers.L2(0.5))])
    teacher = dense_model(1)
    distiller = Distiller(student, teacher)
    kernel = student.layers[0].kernel.numpy()
    expected = (np_soft_ce(outputs(teacher, x), outputs(student, x)).mean()
                + 0.5 * np.sum(kernel.astype(np.float64) ** 2))
    assert one_step_loss(distiller, x, y)["loss"] == pytest.approx(expected, rel=1e-5)


def test_errors(rng):
    student, teacher = dense_model(0), dense_model(1)
    with pytest.raises(ValueError, match="at least one teacher"):
        Distiller(student)
    with pytest.raises(TypeError, match="`teachers`"):
        Distiller(student, "resnet34")
    with pytest.raises(ValueError, match="at least two active teachers"):
        Distiller(student, teacher, teacher_weighting="hard_knowledge")
    with pytest.raises(ValueError, match="`teacher_weighting`"):
        Distiller(student, teacher, teacher_weighting="max")
    with pytest.raises(ValueError, match="temperature"):
        Distiller(student, teacher, distillation_loss=DistributionLoss(), temperature=2.0)
    with pytest.raises(ValueError, match="no `loss`"):
        Distiller(student, teacher, ground_truth_weight=0.5).compile("adam")
    with pytest.warns(UserWarning, match="not used"):
        Distiller(student, teacher).compile("adam", loss="mse")
    with pytest.raises(ValueError, match="assistant_teachers"):
        x, y = data(rng)
        distiller = Distiller(student, teacher)
        distiller.compile("adam")
        distiller.fit(x, y, epochs=1, verbose=0, callbacks=[AssistantTeacherSchedule(2)])


def test_config_round_trip():
    distiller = Distiller(dense_model(0, binary=True), dense_model(1),
                          assistant_teachers=[dense_model(2), dense_model(3)],
                          teacher_weighting="hard_knowledge", ground_truth_weight=0.25)
    restored = Distiller.from_config(distiller.get_config())
    assert restored.ground_truth_weight == 0.25
    assert restored.teacher_weighting == "hard_knowledge"
    assert len(restored.assistant_teachers) == 2
    assert isinstance(restored.distillation_loss, DistributionLoss)


def test_distiller_saves_and_resumes(rng, tmp_path):
    x, y = data(rng)
    distiller = Distiller(dense_model(0, binary=True), dense_model(1),
                          assistant_teachers=[dense_model(2), dense_model(3)],
                          teacher_weighting="hard_knowledge", ground_truth_weight=0.5)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    distiller.compile(keras.optimizers.Adam(0.01), loss=loss)
    distiller.fit(x, y, epochs=2, verbose=0, callbacks=[AssistantTeacherSchedule(2)])
    distiller.save(tmp_path / "distiller.keras")
    restored = keras.models.load_model(tmp_path / "distiller.keras")
    assert isinstance(restored, Distiller) and restored.compiled
    assert int(restored.assistant_index.numpy()) == 1
    np.testing.assert_array_equal(outputs(restored, x), outputs(distiller, x))
    # same optimizer state: one more step gives the same loss and weights
    a = distiller.train_on_batch(x, y, return_dict=True)
    b = restored.train_on_batch(x, y, return_dict=True)
    assert a["loss"] == pytest.approx(b["loss"], rel=1e-6)
    for u, v in zip(distiller.student.weights, restored.student.weights):
        np.testing.assert_allclose(u.numpy(), v.numpy(), rtol=1e-6, atol=1e-7)
