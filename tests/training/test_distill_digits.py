"""A float conv net trained briefly on scikit-learn's digits teaches a binary student through the
Distiller (distillation loss only, no labels): the student reaches well above chance (10%),
round-trips through a .keras file and converts strictly with kbnn.converters."""

import time

import keras
import numpy as np
import pytest
from digits_helpers import accuracy, digits_convnet

import kbnn
from kbnn.data import load_digits_split
from kbnn.training import Distiller, DistributionLoss


def float_teacher() -> keras.Model:
    return keras.Sequential([
        keras.Input((8, 8, 1)),
        keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
        keras.layers.MaxPooling2D(2),
        keras.layers.Conv2D(64, 3, padding="same", activation="relu"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(10),  # logits
    ], name="teacher")


def binary_student() -> keras.Model:
    binary = {"input_quantizer": "ste_sign", "kernel_quantizer": "ste_sign", "use_bias": False}
    float_stem = keras.layers.Conv2D(32, 3, padding="same", use_bias=False)
    return digits_convnet(float_stem, binary, softmax=False, name="student")  # logits


@pytest.fixture(scope="module")
def trained():
    keras.utils.set_random_seed(0)
    split = load_digits_split()
    start = time.perf_counter()
    teacher = float_teacher()
    teacher.compile(keras.optimizers.Adam(0.01),
                    keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    teacher.fit(split.x_train, split.y_train, batch_size=64, epochs=8, verbose=0)
    student = binary_student()
    distiller = Distiller(student, teacher, distillation_loss=DistributionLoss())
    distiller.compile(keras.optimizers.Adam(0.01), metrics=["accuracy"])
    history = distiller.fit(split.x_train, split.y_train, batch_size=64, epochs=10, verbose=0)
    return split, teacher, student, distiller, history, time.perf_counter() - start


def test_student_learns_from_teacher(trained):
    split, teacher, student, distiller, history, elapsed = trained
    teacher_accuracy = accuracy(teacher, split.x_test, split.y_test)
    student_accuracy = accuracy(student, split.x_test, split.y_test)
    print(f"teacher {teacher_accuracy:.3f}, student {student_accuracy:.3f}, {elapsed:.1f} s")
    assert teacher_accuracy > 0.9
    assert student_accuracy > 0.8  # chance is 0.1; no label was used
    losses = history.history["distillation_loss"]
    assert losses[-1] < losses[0]
    assert elapsed < 60
    # evaluate() reports the distillation loss against the teacher, and the student's metrics
    logs = distiller.evaluate(split.x_test, split.y_test, verbose=0, return_dict=True)
    assert logs["accuracy"] == pytest.approx(student_accuracy, abs=1e-6)


def test_student_round_trips_and_converts(trained, tmp_path):
    split, _, student, distiller, _, _ = trained
    path = tmp_path / "student.keras"
    distiller.save_student(path)
    restored = keras.models.load_model(path)
    np.testing.assert_array_equal(restored.predict(split.x_test, verbose=0),
                                  student.predict(split.x_test, verbose=0))
    result = kbnn.converters.convert(restored, strict=True, return_report=True)
    assert result.report.n_binary_convs == 3  # two binary convs and the binary dense
    assert not result.warnings
