"""`Distiller(feature_losses=...)`: feature-level terms over named layers of the student and a
teacher (`FeatureDistillation`). The loss of one step is checked against the same loss computed
here with numpy from the models' weights (forward passes, RBD, MSE and LCR written out by hand),
the student's batch norm is updated once per step (its features come from the same forward
pass), configs and `.keras` files round-trip, and bad arguments raise errors naming the argument
and the unknown layer."""

import itertools

import keras
import numpy as np
import pytest

from kbnn.training import (
    Distiller,
    FeatureDistillation,
    LipschitzRetentionLoss,
    RepresentationDistillation,
)


def mlp(seed, prefix, batch_norm=False):
    """Input(4) -> Dense(6, tanh) 'a' -> Dense(6, tanh) 'b' [-> BN 'bn'] -> Dense(5) 'o'."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((4,))
    a = keras.layers.Dense(6, activation="tanh", name=f"{prefix}a")(inputs)
    b = keras.layers.Dense(6, activation="tanh", name=f"{prefix}b")(a)
    if batch_norm:
        b = keras.layers.BatchNormalization(name=f"{prefix}bn")(b)
    logits = keras.layers.Dense(5, name=f"{prefix}o")(b)
    return keras.Model(inputs, logits, name=f"{prefix}model")


def np_forward(model, prefix, x):
    """The activations of `mlp` (without batch norm) in numpy from its weights."""
    x = np.asarray(x, np.float64)
    feats = {}
    for name, act in (("a", np.tanh), ("b", np.tanh), ("o", lambda z: z)):
        kernel, bias = (np.asarray(w, np.float64) for w in model.get_layer(prefix + name)
                        .get_weights())
        x = act(x @ kernel + bias)
        feats[name] = x
    return feats


def np_log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def np_soft_ce(teacher, student):
    return -(np.exp(np_log_softmax(teacher)) * np_log_softmax(student)).sum(-1)


def np_rbd(teacher, student):
    """Per sample: mean over the pairs of || s/|s| - t/|t| ||^2."""
    total = 0.0
    for t, s in zip(teacher, student):
        t = t / np.linalg.norm(t, axis=1, keepdims=True)
        s = s / np.linalg.norm(s, axis=1, keepdims=True)
        total = total + ((s - t) ** 2).sum(1)
    return total / len(student)


def np_lcr_svd(teacher, student):
    """LCR on (batch, C) vectors: each retention matrix a b^T is rank one, so its spectral norm
    is |a| |b|; N = 3 maps give l = (ds_0)^2 / 4 + (ds_1)^2 / 2."""
    def sigmas(maps):
        return [np.linalg.norm(u, axis=1) * np.linalg.norm(v, axis=1)
                for u, v in itertools.pairwise(maps)]
    s, t = sigmas(student), sigmas(teacher)
    return (s[0] - t[0]) ** 2 / 4 + (s[1] - t[1]) ** 2 / 2


@pytest.fixture
def x(rng):
    return rng.normal(size=(16, 4)).astype(np.float32)


def make_distiller(**kwargs):
    student, teacher = mlp(0, "s"), mlp(1, "t")
    specs = [
        FeatureDistillation(RepresentationDistillation(), ["sa", "sb"], ["ta", "tb"],
                            weight=0.5),
        ("mse", "sb", "tb", 2.0),
        {"loss": LipschitzRetentionLoss(method="svd"), "student_layers": ["sa", "sb", "so"],
         "teacher_layers": ["ta", "tb", "to"], "weight": 0.25, "name": "lcr"},
    ]
    return Distiller(student, teacher, feature_losses=specs, **kwargs), student, teacher


def expected_terms(student, teacher, x):
    s, t = np_forward(student, "s", x), np_forward(teacher, "t", x)
    return {
        "distillation_loss": np_soft_ce(t["o"], s["o"]).mean(),
        "representation_distillation": np_rbd([t["a"], t["b"]], [s["a"], s["b"]]).mean(),
        "mean_squared_error": ((s["b"] - t["b"]) ** 2).mean(),
        "lcr": np_lcr_svd([t["a"], t["b"], t["o"]], [s["a"], s["b"], s["o"]]).mean(),
    }


@pytest.mark.parametrize("jit_compile", [False, True])
def test_loss_of_one_step_equals_numpy(x, jit_compile):
    distiller, student, teacher = make_distiller(distillation_weight=0.75)
    terms = expected_terms(student, teacher, x)
    total = (0.75 * terms["distillation_loss"] + 0.5 * terms["representation_distillation"]
             + 2.0 * terms["mean_squared_error"] + 0.25 * terms["lcr"])
    distiller.compile(keras.optimizers.SGD(0.0), jit_compile=jit_compile)
    logs = distiller.train_on_batch(x, None, return_dict=True)
    for name, value in terms.items():
        assert logs[name] == pytest.approx(value, rel=1e-4), name
    assert logs["loss"] == pytest.approx(total, rel=1e-4)
    # compute_loss called directly, with outputs that did not come from a training-mode call
    # (the student's features are computed again)
    direct = distiller.compute_loss(x, None, student(x, training=False), training=False)
    assert float(direct) == pytest.approx(total, rel=1e-4)
    assert not distiller._features.last  # nothing left over
    assert [v.path for v in distiller.trainable_variables] == [
        v.path for v in student.trainable_variables]


def test_gradient_of_the_feature_term(x):
    """With only the MSE feature term, one SGD step moves the student's first kernel by
    -lr * d(mse)/dW, written out in numpy; the teacher does not move."""
    student, teacher = mlp(0, "s"), mlp(1, "t")
    distiller = Distiller(student, teacher, distillation_weight=0.0,
                          feature_losses=[("mse", "sa", "ta")])
    kernel, bias = (np.asarray(w, np.float64) for w in student.get_layer("sa").get_weights())
    t_a = np_forward(teacher, "t", x)["a"]
    a = np.tanh(x @ kernel + bias)
    d_a = 2.0 * (a - t_a) / a.size
    grad = x.astype(np.float64).T @ (d_a * (1 - a**2))
    teacher_before = [w.copy() for w in teacher.get_weights()]
    distiller.compile(keras.optimizers.SGD(0.1))
    distiller.train_on_batch(x, None)
    np.testing.assert_allclose(student.get_layer("sa").get_weights()[0], kernel - 0.1 * grad,
                               rtol=1e-4, atol=1e-6)
    for before, after in zip(teacher_before, teacher.get_weights()):
        np.testing.assert_array_equal(before, after)


def test_batch_norm_updates_once_per_step(x):
    """The student's features come from its own training-mode forward pass: its batch norm's
    moving mean moves once, 0.9 * 0 + 0.1 * batch mean (Keras' momentum 0.99 is set to 0.9)."""
    student = mlp(0, "s", batch_norm=True)
    student.get_layer("sbn").momentum = 0.9
    teacher = mlp(1, "t", batch_norm=True)
    distiller = Distiller(student, teacher, feature_losses=[("mse", "sbn", "tbn")])
    b = np_forward(student, "s", x)["b"]  # the batch norm's input (its layers a, b come first)
    distiller.compile(keras.optimizers.SGD(0.0))
    distiller.train_on_batch(x, None)
    np.testing.assert_allclose(student.get_layer("sbn").moving_mean.numpy(),
                               0.1 * b.mean(0), rtol=1e-4, atol=1e-6)


def test_single_name_gives_a_tensor_and_a_list_gives_a_list(x):
    seen = []

    def loss(teacher, student):
        seen.append((type(teacher).__name__, type(student).__name__))
        return keras.ops.mean(keras.ops.square(
            (teacher if not isinstance(teacher, list) else teacher[0])
            - (student if not isinstance(student, list) else student[0])), axis=-1)

    student, teacher = mlp(0, "s"), mlp(1, "t")
    single = FeatureDistillation(loss, "sa", "ta")
    listed = FeatureDistillation(loss, ["sa"], ["ta"])
    assert single([np.ones((2, 3))], [np.zeros((2, 3))]) is not None
    assert listed([np.ones((2, 3))], [np.zeros((2, 3))]) is not None
    assert seen[0][0] != "list" and seen[1][0] == "list"
    distiller = Distiller(student, teacher, feature_losses=[single, listed])
    distiller.compile(keras.optimizers.SGD(0.0))
    logs = distiller.train_on_batch(x, None, return_dict=True)
    s, t = np_forward(student, "s", x), np_forward(teacher, "t", x)
    mse = ((s["a"] - t["a"]) ** 2).mean()
    # two terms named after the function ("loss"): the logs get distinct names
    names = [tr.name for tr in distiller.feature_loss_trackers]
    assert len(set(names)) == 2 and "loss" not in names
    for name in names:
        assert logs[name] == pytest.approx(mse, rel=1e-4)


def test_same_layer_names_by_default_and_second_teacher(x):
    student, t0, t1 = mlp(0, "s"), mlp(1, "s"), mlp(2, "s")  # twins: same layer names
    distiller = Distiller(student, [t0, t1], distillation_weight=0.0,
                          feature_losses=[FeatureDistillation("mse", "sb", teacher=1)])
    assert distiller.feature_losses[0].teacher_layers == "sb"
    distiller.compile(keras.optimizers.SGD(0.0))
    logs = distiller.train_on_batch(x, None, return_dict=True)
    s, t = np_forward(student, "s", x), np_forward(t1, "s", x)
    assert logs["loss"] == pytest.approx(((s["b"] - t["b"]) ** 2).mean(), rel=1e-4)


def test_configs_round_trip(x, tmp_path):
    spec = FeatureDistillation(RepresentationDistillation(pair_weights=[1.0, 3.0]),
                               ["sa", "sb"], ["ta", "tb"], weight=0.5, name="rbd")
    again = FeatureDistillation.from_config(spec.get_config())
    assert again.get_config() == spec.get_config()
    assert again.loss.pair_weights == [1.0, 3.0]
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(spec))
    assert isinstance(restored, FeatureDistillation) and restored.name == "rbd"

    distiller, _, _ = make_distiller()
    copy = Distiller.from_config(distiller.get_config())
    assert [s.get_config() for s in copy.feature_losses] == [
        s.get_config() for s in distiller.feature_losses]

    distiller.compile(keras.optimizers.Adam(0.01))
    distiller.fit(x, None, batch_size=8, epochs=1, verbose=0)
    distiller.save(tmp_path / "distiller.keras")
    loaded = keras.models.load_model(tmp_path / "distiller.keras")
    assert isinstance(loaded, Distiller) and len(loaded.feature_losses) == 3
    terms = expected_terms(distiller.student, distiller.teachers[0], x)
    total = (terms["distillation_loss"] + 0.5 * terms["representation_distillation"]
             + 2.0 * terms["mean_squared_error"] + 0.25 * terms["lcr"])
    assert float(loaded.compute_loss(x, None, loaded(x, training=True))) == pytest.approx(
        total, rel=1e-4)
    a = distiller.train_on_batch(x, None, return_dict=True)
    b = loaded.train_on_batch(x, None, return_dict=True)
    assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)


def test_errors():
    student, teacher = mlp(0, "s"), mlp(1, "t")
    rbd = RepresentationDistillation()
    with pytest.raises(ValueError, match=r"feature_losses\[1\] names the student layer 'nope'"):
        Distiller(student, teacher, feature_losses=[("mse", "sa", "ta"), (rbd, ["sa", "nope"],
                                                                          ["ta", "tb"])])
    with pytest.raises(ValueError, match=r"feature_losses\[0\] names the teacher layer 'sb'.*"
                                         r"'ta', 'tb'"):
        Distiller(student, teacher, feature_losses=[(rbd, ["sb"])])  # teacher names default
    with pytest.raises(ValueError, match=r"feature_losses\[0\] reads teacher 1"):
        Distiller(student, teacher, feature_losses=[FeatureDistillation(rbd, "sa", "ta",
                                                                        teacher=1)])
    with pytest.raises(ValueError, match="`teacher_layers` of FeatureDistillation"):
        FeatureDistillation(rbd, ["sa", "sb"], ["ta"])
    with pytest.raises(ValueError, match="`teacher_layers` of FeatureDistillation"):
        FeatureDistillation(rbd, ["sa"], "ta")
    with pytest.raises(ValueError, match="`student_layers` of FeatureDistillation"):
        FeatureDistillation(rbd, [])
    with pytest.raises(ValueError, match="`weight` of FeatureDistillation"):
        FeatureDistillation(rbd, "sa", weight=-1.0)
    with pytest.raises(ValueError, match="`teacher` of FeatureDistillation"):
        FeatureDistillation(rbd, "sa", teacher=-1)
    with pytest.raises(ValueError, match="`loss` of FeatureDistillation"):
        FeatureDistillation([rbd], "sa")
    with pytest.raises(ValueError, match=r"`feature_losses` of Distiller: feature_losses\[0\]"):
        Distiller(student, teacher, feature_losses=[("mse",)])
    with pytest.raises(ValueError, match="`feature_losses` of Distiller"):
        Distiller(student, teacher, feature_losses=FeatureDistillation(rbd, "sa", "ta"))

    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__(name="subclassed")
            self.dense = keras.layers.Dense(5, name="dense")

        def call(self, inputs):
            return self.dense(inputs)

    with pytest.raises(ValueError, match="no symbolic inputs and outputs"):
        Distiller(Subclassed(), teacher, feature_losses=[("mse", "dense", "to")])
