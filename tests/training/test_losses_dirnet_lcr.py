"""Feature losses between a binary student and a full-precision teacher (docs/methods.md,
sections 'DIR-Net' and 'LCR-BNN'): `RepresentationDistillation` (DIR-Net's RBD, arXiv 2109.12338)
and `LipschitzRetentionLoss` (LCR-BNN, arXiv 2207.06540) against numpy, their gradients (none to
the teacher), configs, and training with `model.fit` on digits, the student then converting with
`convert(strict=True)`. Every expected value is computed here with numpy or by hand."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from methods2_helpers import (
    assert_converts_and_agrees,
    assert_round_trip_exact,
    fit_digits,
)

from kbnn.blocks import BiRealBlock
from kbnn.data import load_digits_split
from kbnn.training import (
    Distiller,
    EDESchedule,
    FeatureDistillation,
    LipschitzRetentionLoss,
    RepresentationDistillation,
)
from kbnn.training.losses import lipschitz_constants, retention_matrix

# ------------------------------------------------------------------- representation (RBD)


def _np_rbd(teacher, student, weights=None):
    weights = weights or [1.0] * len(student)
    total = 0.0
    for w, t, s in zip(weights, teacher, student):
        t = t.reshape(len(t), -1)
        s = s.reshape(len(s), -1)
        t = t / np.linalg.norm(t, axis=1, keepdims=True)
        s = s / np.linalg.norm(s, axis=1, keepdims=True)
        total = total + w * ((s - t) ** 2).sum(axis=1)
    return total / sum(weights)


def test_representation_distillation_matches_numpy(rng):
    teacher = [rng.normal(size=(4, 3, 3, 5)), rng.normal(size=(4, 7))]
    student = [rng.normal(size=(4, 3, 3, 5)), rng.normal(size=(4, 7))]
    loss = RepresentationDistillation()
    np.testing.assert_allclose(float(loss(teacher, student)), _np_rbd(teacher, student).mean(),
                               rtol=1e-5)
    weighted = RepresentationDistillation(pair_weights=[1.0, 3.0])
    np.testing.assert_allclose(float(weighted(teacher, student)),
                               _np_rbd(teacher, student, [1.0, 3.0]).mean(), rtol=1e-5)
    raw = RepresentationDistillation(normalize=False, reduction=None)
    expected = np.mean([((s - t) ** 2).reshape(4, -1).mean(axis=1)
                        for t, s in zip(teacher, student)], axis=0)
    np.testing.assert_allclose(np.asarray(raw(teacher, student)), expected, rtol=1e-5)


def test_representation_distillation_by_hand():
    # one 2-vector pair: t = (1, 0), s = (3, 4) -> s/|s| = (0.6, 0.8): 0.4^2 + 0.8^2 = 0.8
    loss = RepresentationDistillation()
    assert float(loss(np.array([[1.0, 0.0]]), np.array([[3.0, 4.0]]))) == pytest.approx(0.8)
    # the same direction is distance 0 whatever the scale
    assert float(loss(np.array([[1.0, 2.0]]), np.array([[5.0, 10.0]]))) == pytest.approx(0.0,
                                                                                        abs=1e-7)


def test_representation_distillation_gradient_goes_to_the_student_only(rng):
    t = tf.constant(rng.normal(size=(3, 6)))
    s = tf.constant(rng.normal(size=(3, 6)))
    loss = RepresentationDistillation(reduction="sum", dtype="float64")
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([t, s])
        value = loss(t, s)
    assert tape.gradient(value, t) is None
    sn, tn = s.numpy(), t.numpy()
    norm = np.linalg.norm(sn, axis=1, keepdims=True)
    diff = sn / norm - tn / np.linalg.norm(tn, axis=1, keepdims=True)
    # d/ds ||s/|s| - t_hat||^2 = 2 (I/|s| - s s^T/|s|^3) (s/|s| - t_hat)
    expected = 2 * (diff / norm - sn * (sn * diff).sum(axis=1, keepdims=True) / norm ** 3)
    np.testing.assert_allclose(tape.gradient(value, s).numpy(), expected, rtol=1e-6)


def test_representation_distillation_arguments():
    loss = RepresentationDistillation(normalize=False, pair_weights=[0.5, 2.0], name="rbd")
    assert RepresentationDistillation.from_config(loss.get_config()).get_config() == \
        loss.get_config()
    with pytest.raises(ValueError, match="`pair_weights` of RepresentationDistillation"):
        RepresentationDistillation(pair_weights=[-1.0])
    with pytest.raises(ValueError, match="`normalize` of RepresentationDistillation"):
        RepresentationDistillation(normalize=1)
    with pytest.raises(ValueError, match="as many teacher features as student features"):
        RepresentationDistillation()([np.ones((2, 3))], [np.ones((2, 3))] * 2)
    with pytest.raises(ValueError, match="same shape"):
        RepresentationDistillation()(np.ones((2, 3)), np.ones((2, 4)))


# ------------------------------------------------------------------------------------ LCR

def test_retention_matrix_pools_like_pytorch_by_hand(rng):
    """5x5 -> 2x2 adaptive pooling: rows/cols 0..2 and 2..4 (PyTorch's floor/ceil bins)."""
    f_in = rng.normal(size=(2, 5, 5, 3))
    f_out = rng.normal(size=(2, 2, 2, 4))
    bins = [slice(0, 3), slice(2, 5)]
    pooled = np.stack([np.stack([f_in[:, r, c].mean(axis=(1, 2)) for c in bins], 1)
                       for r in bins], 1)  # (2, 2, 2, 3)
    expected = np.einsum("nijc,nijd->ncd", pooled, f_out) / 4
    np.testing.assert_allclose(np.asarray(retention_matrix(f_in, f_out)), expected, rtol=1e-6)


def _np_rm(f_in, f_out):
    n, h, w, c = f_in.shape
    ho, wo = f_out.shape[1:3]
    pooled = f_in.reshape(n, ho, h // ho, wo, w // wo, c).mean(axis=(2, 4))
    return np.einsum("nijc,nijd->ncd", pooled, f_out) / (ho * wo)


def _np_lipschitz(f_in, f_out, method="power_iteration", iterations=1):
    rm = _np_rm(f_in, f_out)
    if method == "svd":
        return np.linalg.svd(rm, compute_uv=False)[:, 0]
    k = rm @ rm.transpose(0, 2, 1)
    v = np.ones((len(k), k.shape[1], 1))
    for _ in range(iterations):
        m = k @ v
        norm = np.linalg.norm(m, axis=1, keepdims=True)
        v = m / norm
    return np.sqrt(norm[:, 0, 0])


def test_lipschitz_constant_official_estimate_and_exact_norm(rng):
    f_in, f_out = rng.normal(size=(3, 8, 8, 4)), rng.normal(size=(3, 4, 4, 6))
    one = np.asarray(lipschitz_constants(f_in, f_out))
    # the official code: sqrt(||K 1||), K = RM RM^T
    rm = _np_rm(f_in, f_out)
    k = rm @ rm.transpose(0, 2, 1)
    np.testing.assert_allclose(one, np.sqrt(np.linalg.norm(k.sum(axis=2), axis=1)), rtol=1e-6)
    exact = np.asarray(lipschitz_constants(f_in, f_out, "svd"))
    np.testing.assert_allclose(exact, np.linalg.svd(rm, compute_uv=False)[:, 0], rtol=1e-6)
    many = np.asarray(lipschitz_constants(f_in, f_out, power_iterations=50))
    np.testing.assert_allclose(many, exact, rtol=1e-4)  # power iteration converges to it


@pytest.mark.parametrize("method", ["power_iteration", "svd"])
def test_lcr_loss_weights_deeper_pairs_more(method, rng):
    shapes = [(4, 8, 8, 3), (4, 8, 8, 5), (4, 4, 4, 6)]
    teacher = [rng.normal(size=s) for s in shapes]
    student = [rng.normal(size=s) for s in shapes]
    loss = LipschitzRetentionLoss(method=method, reduction=None)
    per_sample = np.asarray(loss(teacher, student))
    sigma = [[_np_lipschitz(f[i], f[i + 1], method) for i in range(2)]
             for f in (teacher, student)]
    # N = 3 features, 2 pairs: weights 1/2^(N-1-i) = 1/4, 1/2
    expected = ((sigma[1][0] - sigma[0][0]) ** 2 / 4 + (sigma[1][1] - sigma[0][1]) ** 2 / 2)
    np.testing.assert_allclose(per_sample, expected, rtol=1e-4)
    mean = LipschitzRetentionLoss(method=method)(teacher, student)
    np.testing.assert_allclose(float(mean), expected.mean(), rtol=1e-4)


def test_lcr_gradient_goes_to_the_student_only(rng):
    teacher = [tf.constant(rng.normal(size=(2, 4, 4, 3))) for _ in range(2)]
    student = [tf.constant(rng.normal(size=(2, 4, 4, 3))) for _ in range(2)]
    for method in ("power_iteration", "svd"):
        loss = LipschitzRetentionLoss(method=method, dtype="float64")
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(teacher + student)
            value = loss(teacher, student)
        assert all(tape.gradient(value, t) is None for t in teacher)
        grads = [tape.gradient(value, s).numpy() for s in student]
        assert all(np.all(np.isfinite(g)) and np.any(g != 0) for g in grads)


def test_lcr_edge_cases_and_arguments():
    loss = LipschitzRetentionLoss(method="svd", power_iterations=3, name="lcr")
    assert LipschitzRetentionLoss.from_config(loss.get_config()).get_config() == \
        loss.get_config()
    assert float(LipschitzRetentionLoss()(np.ones((2, 3)), np.ones((2, 3)))) == 0.0  # no pair
    with pytest.raises(ValueError, match="`method` of LipschitzRetentionLoss"):
        LipschitzRetentionLoss(method="eig")
    with pytest.raises(ValueError, match="`power_iterations` of LipschitzRetentionLoss"):
        LipschitzRetentionLoss(power_iterations=0)
    small, large = np.ones((1, 2, 2, 3)), np.ones((1, 4, 4, 3))
    with pytest.raises(ValueError, match="does not grow"):
        LipschitzRetentionLoss()([small, large], [small, large])


# --------------------------------------------------------------------- training with fit

def _features_model(input_quantizer, kernel_quantizer, name, activation=None):
    """stem (8x8x32) -> BiRealBlock(32) -> BiRealBlock(64, s2) -> logits. The block outputs
    (the features) are the layers named `{name}_stem_bn`, `{name}_b1`, `{name}_b2`; the float
    teacher gets an activation after each block (its blocks are linear otherwise), and its
    features are those activations, `{name}_b1_act` and `{name}_b2_act`."""
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(32, 3, padding="same", use_bias=False, name=f"{name}_stem")(inputs)
    stem = keras.layers.BatchNormalization(momentum=0.9, name=f"{name}_stem_bn")(x)
    b1 = BiRealBlock(32, input_quantizer=input_quantizer, kernel_quantizer=kernel_quantizer,
                     name=f"{name}_b1")(stem)
    if activation:
        b1 = keras.layers.Activation(activation, name=f"{name}_b1_act")(b1)
    b2 = BiRealBlock(64, strides=2, input_quantizer=input_quantizer,
                     kernel_quantizer=kernel_quantizer, name=f"{name}_b2")(b1)
    if activation:
        b2 = keras.layers.Activation(activation, name=f"{name}_b2_act")(b2)
    logits = keras.layers.Dense(10, name=f"{name}_fc")(
        keras.layers.GlobalAveragePooling2D()(b2))
    return keras.Model(inputs, logits, name=name)


STUDENT_FEATURES = ["student_stem_bn", "student_b1", "student_b2"]
TEACHER_FEATURES = ["teacher_stem_bn", "teacher_b1_act", "teacher_b2_act"]


def _features(model, names, x):
    extractor = keras.Model(model.input, [model.get_layer(n).output for n in names])
    return extractor(x, training=False)


@pytest.fixture(scope="module")
def teacher():
    """The full-precision twin, trained briefly on digits (3 epochs)."""
    keras.utils.set_random_seed(0)
    model = _features_model(None, None, "teacher", activation="hard_tanh")
    run = fit_digits(model, epochs=3)
    assert run.accuracy > 0.9, run.accuracy
    return model


@pytest.mark.parametrize("case", ["lcr", "rbd"])
def test_feature_losses_train_with_fit_and_the_student_converts(case, teacher, tmp_path):
    """`Distiller(feature_losses=...)` with the labels' cross-entropy and no logit
    distillation (the methods' own recipes): LCR over IR-Net's binarizers (the official base,
    alpha = 8 / (batch 1e4) as in its training), RBD over DIR-Net's with EDESchedule."""
    keras.utils.set_random_seed(1)
    if case == "lcr":
        student = _features_model("ede_sign", "libra_weight", "student")
        feature_loss, weight = LipschitzRetentionLoss(), 8.0 / (64 * 1e4)
    else:
        student = _features_model("dte_sign", "imb_weight", "student")
        feature_loss, weight = RepresentationDistillation(), 1.0
    trainer = Distiller(student, teacher, distillation_weight=0.0, ground_truth_weight=1.0,
                        feature_losses=[FeatureDistillation(feature_loss, STUDENT_FEATURES,
                                                            TEACHER_FEATURES, weight)])
    data = load_digits_split()
    steps = 3 * -(-len(data.x_train) // 64)
    schedule = keras.optimizers.schedules.PolynomialDecay(1e-2, steps, 0.0)
    trainer.compile(keras.optimizers.Adam(schedule),
                    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = data.x_test[:64]
    before = float(feature_loss(_features(teacher, TEACHER_FEATURES, x),
                                _features(student, STUDENT_FEATURES, x)))
    history = trainer.fit(data.x_train, data.y_train, batch_size=64, epochs=3, verbose=0,
                          callbacks=[EDESchedule()])
    losses = history.history["loss"]
    assert losses[-1] < 0.5 * losses[0], losses
    assert feature_loss.name in history.history
    accuracy = np.mean(np.argmax(student.predict(data.x_test, verbose=0), -1) == data.y_test)
    assert accuracy > 0.8, accuracy
    after = float(feature_loss(_features(teacher, TEACHER_FEATURES, x),
                               _features(student, STUDENT_FEATURES, x)))
    if case == "rbd":
        assert after < before, (before, after)  # the student's features moved to the teacher's
    assert np.isfinite(after)
    assert_round_trip_exact(student, tmp_path)
    _, _, ops = assert_converts_and_agrees(student, strict=True)
    assert ops.count("LceBconv2d") == 2
